"""The report pages: ``/reports/...`` on the scoring API.

Pages need an API key with the ``reports:read`` scope (or ``admin``): sent as a header like
every route, or, for a browser, through ``/reports/login``, which takes the key and sets an
HttpOnly, SameSite=Strict cookie accepted by these routes only. A page asked for without a
valid key by a browser is redirected to the login page.

This module stays light: the report computation (pandas, matplotlib, Feast, MLflow, training
helpers) is imported when a page is first built, never when the API starts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from leadscore.auth import REPORTS_READ, ApiKey
from leadscore.contracts import LEAD_CHANNELS
from serving.errors import (
    ForbiddenError,
    InvalidInputError,
    LeadscoreError,
    NotFoundError,
    UnauthorizedError,
)
from serving.security import key_store, require_scope

if TYPE_CHECKING:
    from reports.data import ReportData
    from reports.model import Report, ReportFilter

COOKIE = "leadscore_reports"
COOKIE_SECONDS = 8 * 3600
PREFIX = "/reports"
REPORTS: dict[str, tuple[str, str]] = {
    "calibration": (
        "Calibration",
        "Are the probabilities honest? Reliability diagram, ECE and Brier score, overall and "
        "per channel, segment and band, with flags.",
    ),
    "bands": (
        "Bands",
        "Leads, actual conversion with intervals, lift and share of conversions per band, "
        "week by week.",
    ),
    "channels": (
        "Channel conversion",
        "Lead -> MQL -> SQL -> won per channel, campaign and period; time to each stage; "
        "speed to lead.",
    ),
    "drift": (
        "Drift",
        "How far recent scoring moved from the training period (PSI per feature and for the "
        "score), and live performance against training.",
    ),
}
_CACHED_REPORTS = 32

router = APIRouter(prefix=PREFIX, tags=["reports"])
_check_key = require_scope(REPORTS_READ, cookie=COOKIE)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def reader(request: Request) -> ApiKey | None:
    """The dependency of every report route: a key with ``reports:read`` (header or cookie).

    A browser without a valid key is sent to the login page instead of a JSON error.
    """
    try:
        return await _check_key(request)
    except (UnauthorizedError, ForbiddenError):
        if _wants_html(request):
            target = f"{PREFIX}/login?next={quote(str(request.url.path), safe='/')}"
            raise HTTPException(status_code=303, headers={"Location": target}) from None
        raise


reader.scope = REPORTS_READ  # type: ignore[attr-defined]  # for the OpenAPI document
Reader = Annotated[ApiKey | None, Depends(reader)]


class _Reports:
    """The loaded report data (kept until the champion, warehouse or logs change) and the
    reports built from it (the last few, by name and filters)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[Any, ...] | None = None
        self.data: ReportData | None = None
        self.built: OrderedDict[tuple[Any, ...], Report] = OrderedDict()

    def report(self, request: Request, name: str, filters: ReportFilter) -> Report:
        from reports.build import build_report
        from reports.data import ReportData, fingerprint

        settings = request.app.state.settings
        with self.lock:
            key = fingerprint(settings)
            if key != self.key or self.data is None:
                self.key, self.data = key, ReportData(settings)
                self.built.clear()
            wanted = (name, filters)
            if wanted not in self.built:
                self.built[wanted] = build_report(name, self.data, filters)
                while len(self.built) > _CACHED_REPORTS:
                    self.built.popitem(last=False)
            self.built.move_to_end(wanted)
            return self.built[wanted]

    def channels(self) -> list[str]:
        return self.data.channels if self.data is not None else list(LEAD_CHANNELS)


_state_lock = threading.Lock()


def _reports(request: Request) -> _Reports:
    holder: _Reports | None = getattr(request.app.state, "reports", None)
    if holder is None:
        with _state_lock:
            holder = getattr(request.app.state, "reports", None)
            if holder is None:
                holder = _Reports()
                request.app.state.reports = holder
    return holder


def parse_filters(
    start: str | None, end: str | None, channel: str | None, scores: str | None = None
) -> ReportFilter:
    """The filters of a request; empty values mean "not set".

    Raises:
        InvalidInputError: A date that is not YYYY-MM-DD, a range that ends before it starts,
            an unknown channel or scores other than holdout or served, naming the field.
    """
    from reports.model import ReportFilter

    problems: dict[str, str] = {}
    days: dict[str, date | None] = {}
    for field, value in (("start", start), ("end", end)):
        days[field] = None
        if value:
            try:
                days[field] = date.fromisoformat(value)
            except ValueError:
                problems[field] = f"{value!r} is not a date (YYYY-MM-DD)"
    if channel and channel not in LEAD_CHANNELS:
        problems["channel"] = f"{channel!r} is not a channel; expected one of {LEAD_CHANNELS}"
    if scores and scores not in ("holdout", "served"):
        problems["scores"] = f"{scores!r} is not holdout or served"
    if not problems and days["start"] and days["end"] and days["start"] > days["end"]:
        problems["end"] = f"{days['end']} is before start {days['start']}"
    if problems:
        raise InvalidInputError(problems)
    return ReportFilter(
        start=days["start"],
        end=days["end"],
        channel=channel or None,
        scores="served" if scores == "served" else "holdout" if scores else None,
    )


def _report_or_error(request: Request, name: str, filters: ReportFilter) -> Report:
    if name not in REPORTS:
        raise NotFoundError(f"no report {name!r}; the reports are {', '.join(REPORTS)}")
    try:
        return _reports(request).report(request, name, filters)
    except LookupError as e:
        raise _Unavailable(str(e)) from e
    except (FileNotFoundError, ValueError) as e:
        raise _Unavailable(f"the report cannot be built: {e}") from e


class _Unavailable(LeadscoreError):
    status_code = 503
    code = "report_unavailable"


StartQuery = Annotated[str | None, Query(description="First day of lead creation (YYYY-MM-DD).")]
EndQuery = Annotated[str | None, Query(description="Last day of lead creation (YYYY-MM-DD).")]
ChannelQuery = Annotated[str | None, Query(description="Only leads of this source channel.")]
ScoresQuery = Annotated[
    str | None,
    Query(description="Scores of calibration, bands and channels: holdout (default) or served."),
]


def _filters(
    start: StartQuery = None,
    end: EndQuery = None,
    channel: ChannelQuery = None,
    scores: ScoresQuery = None,
) -> ReportFilter:
    """The filters of a report request (its query), checked: see :func:`parse_filters`."""
    return parse_filters(start, end, channel, scores)


# Any: ReportFilter is imported lazily (serving must not load the report code at start-up).
Filters = Annotated[Any, Depends(_filters)]


def _nav() -> list[tuple[str, str, str]]:
    return [(name, title, f"{PREFIX}/{name}") for name, (title, _) in REPORTS.items()]


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(next: str = f"{PREFIX}/") -> HTMLResponse:
    """The login form: paste an API key with the reports:read scope."""
    from reports.render import login_html

    return HTMLResponse(login_html(next_url=_safe_next(next)))


def _safe_next(target: str) -> str:
    """Only paths under /reports (no open redirect)."""
    return target if target.startswith(f"{PREFIX}/") and "//" not in target else f"{PREFIX}/"


@router.post("/login", response_class=HTMLResponse, include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the key and set the report cookie (HttpOnly, SameSite=Strict, path /reports)."""
    from reports.render import login_html

    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    key = (form.get("key") or [""])[0].strip()
    next_url = _safe_next((form.get("next") or [f"{PREFIX}/"])[0])
    problem = None
    if not key:
        problem = "Paste an API key."
    else:
        found = key_store(request.app).verify(key)
        if found is None:
            problem = "This API key is unknown or revoked."
        elif not found.allows(REPORTS_READ):
            problem = f"This API key lacks the {REPORTS_READ} scope."
    if problem:
        return HTMLResponse(login_html(next_url=next_url, error=problem), status_code=401)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/logout", include_in_schema=False)
def logout() -> Response:
    """Forget the report cookie."""
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


@router.get("/", response_class=HTMLResponse, summary="The list of reports")
def index(_: Reader) -> HTMLResponse:
    """Links to the four reports."""
    from reports.render import index_html

    items = [(f"{PREFIX}/{name}", title, text) for name, (title, text) in REPORTS.items()]
    return HTMLResponse(index_html(items, nav=_nav(), logout=f"{PREFIX}/logout"))


@router.get("/{name}", response_class=HTMLResponse, summary="A report as an HTML page")
def report_page(
    name: str,
    request: Request,
    _: Reader,
    filters: Filters,
) -> HTMLResponse:
    """The report ``name`` (calibration, bands, channels, drift) with charts and tables."""
    from reports.render import FilterForm, render_report

    report = _report_or_error(request, name, filters)
    query = filters.query()
    suffix = f"?{query}" if query else ""
    form = FilterForm(
        start=str(filters.start or ""),
        end=str(filters.end or ""),
        channel=filters.channel or "",
        channels=_reports(request).channels(),
        scores=filters.scores or "holdout",
    )
    html = render_report(
        report,
        nav=_nav(),
        csv_href=lambda table: f"{PREFIX}/{name}/{table.name}.csv{suffix}",
        form=form,
        logout=f"{PREFIX}/logout",
    )
    return HTMLResponse(html)


@router.get("/{name}/{table}.csv", summary="A report's table as CSV")
def report_csv(
    name: str,
    table: str,
    request: Request,
    _: Reader,
    filters: Filters,
) -> Response:
    """Every row of one table of the report, with the same filters as the page."""
    from reports.render import table_csv

    report = _report_or_error(request, name, filters)
    tables = report.tables()
    if table not in tables:
        raise NotFoundError(f"report {name} has no table {table!r}; it has {', '.join(tables)}")
    return Response(
        table_csv(tables[table]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-{table}.csv"'},
    )
