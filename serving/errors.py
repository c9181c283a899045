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


class NotReadyError(LeadscoreError):
    status_code = 503
    code = "not_ready"
