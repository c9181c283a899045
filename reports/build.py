"""Build a report by name from :class:`reports.data.ReportData`, with the reader's filters."""

from __future__ import annotations

import pandas as pd

from reports.data import ReportData
from reports.model import REPORT_NAMES, Report, ReportFilter
from reports.settings import ScoreSource

TITLES: dict[str, str] = {
    "calibration": "Calibration",
    "bands": "Bands",
    "channels": "Channel conversion",
    "drift": "Drift",
}


def _by_channel(frame: pd.DataFrame, data: ReportData, channel: str | None) -> pd.DataFrame:
    if channel is None or frame.empty:
        return frame
    channel_of = data.leads.set_index("lead_id")["source_channel"]
    return frame[frame["lead_id"].map(channel_of) == channel]


def build_report(
    name: str,
    data: ReportData,
    filters: ReportFilter | None = None,
    *,
    scores: ScoreSource | None = None,
) -> Report:
    """The report ``name`` (``calibration``, ``bands``, ``channels`` or ``drift``).

    The date range selects leads by the day they were created (UTC) and the channel by their
    source channel; the drift report compares fixed periods (the training window and the last
    ``recent_days``), so only the channel applies to it. ``scores`` picks the scores of the
    calibration, band and channel reports (default: ``data.cfg.scores``).

    Raises:
        KeyError: Unknown report name.
        LookupError: No champion model (the calibration, band and drift reports need one).
    """
    from reports.bands import band_report
    from reports.calibration import calibration_report
    from reports.channels import channel_report
    from reports.drift import drift_report

    if name not in REPORT_NAMES:
        raise KeyError(f"report: {name!r} is not one of {', '.join(REPORT_NAMES)}")
    filters = filters or ReportFilter()
    scores = scores or filters.scores
    cfg = data.cfg
    if name in ("calibration", "bands"):
        scored = data.scores(scores)
        frame = filters.leads(scored.frame)
        build = calibration_report if name == "calibration" else band_report
        return build(frame, cfg, source=scored.description, filters=filters)
    if name == "channels":
        try:
            chosen = data.scores(scores)
            score_frame, source = chosen.frame, chosen.description
        except LookupError as e:
            score_frame, source = None, f"none ({e})"
        return channel_report(
            filters.leads(data.leads),
            data.stage_changes,
            data.outcomes,
            cfg,
            events=data.events,
            scores=score_frame,
            score_source=source,
            filters=filters,
        )
    train, recent, kinds, describe_train, describe_recent = data.drift_inputs
    return drift_report(
        _by_channel(train, data, filters.channel),
        _by_channel(recent, data, filters.channel),
        kinds,
        cfg,
        training_metrics=data.champion.metrics,
        live=_by_channel(data.live, data, filters.channel),
        describe_train=describe_train,
        describe_recent=describe_recent,
        filters=ReportFilter(channel=filters.channel),
    )
