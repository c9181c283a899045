"""Domain errors of the scoring service; each knows its HTTP status."""

from __future__ import annotations


class LeadscoreError(Exception):
    """Base of the errors the API turns into a JSON answer."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LeadNotFoundError(LeadscoreError):
    status_code = 404
    code = "lead_not_found"


class NoScoreError(LeadscoreError):
    """The lead was never scored by the API (nothing in the score log)."""

    status_code = 404
    code = "no_score"


class BatchTooLargeError(LeadscoreError):
    status_code = 413
    code = "batch_too_large"


class InvalidInputError(LeadscoreError):
    """Well-formed input that breaks a rule; ``problems`` maps each field to what is wrong."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in problems.items()))
        self.problems = problems


class NotReadyError(LeadscoreError):
    status_code = 503
    code = "not_ready"


class UnauthorizedError(LeadscoreError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401
    code = "unauthorized"


class ForbiddenError(LeadscoreError):
    """A valid API key without the route's scope."""

    status_code = 403
    code = "forbidden"


class NotFoundError(LeadscoreError):
    """A named resource (e.g. a webhook delivery) does not exist."""

    status_code = 404
    code = "not_found"


class StoreUnavailableError(LeadscoreError):
    """The online feature store cannot be reached; scoring by lead id waits for it."""

    status_code = 503
    code = "online_store_unavailable"


class TooManyFailuresError(LeadscoreError):
    """A client failed authentication too often: it waits ``retry_after`` seconds."""

    status_code = 429
    code = "too_many_failed_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
