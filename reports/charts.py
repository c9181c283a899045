"""The reports' charts: matplotlib (Agg) figures rendered to PNG bytes.

Every chart draws only what its table can support: the callers leave out rows whose
intervals are too wide to read (see :class:`reports.settings.ReportSettings`).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from reports.model import Chart

BAND_COLOURS = {"hot": "#d62728", "warm": "#ff7f0e", "cold": "#1f77b4"}
BLUE = "#1f77b4"
GREY = "#7f7f7f"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _percent_axes(ax: plt.Axes, *, x: bool = False, y: bool = True) -> None:
    if x:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    if y:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(alpha=0.3)


def reliability_chart(table: pd.DataFrame) -> Chart:
    """Predicted against observed conversion per equal-mass bin, with the Wilson band."""
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    top = float(max(table["ci_high"].max(), table["mean_predicted"].max()) * 1.08) or 1.0
    ax.plot([0, top], [0, top], color=GREY, linestyle="--", label="perfect calibration")
    ax.fill_between(
        table["mean_predicted"],
        table["ci_low"],
        table["ci_high"],
        color=BLUE,
        alpha=0.18,
        label="95% interval of the observed rate",
    )
    ax.errorbar(
        table["mean_predicted"],
        table["observed"],
        yerr=[table["observed"] - table["ci_low"], table["ci_high"] - table["observed"]],
        fmt="o-",
        color=BLUE,
        capsize=3,
        label="observed conversion",
    )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted probability (mean of the bin)")
    ax.set_ylabel("observed conversion")
    ax.set_title("Reliability: predicted vs observed")
    _percent_axes(ax, x=True)
    ax.legend(loc="upper left", fontsize=8)
    return Chart(
        "reliability",
        "Reliability diagram",
        _png(fig),
        "Observed conversion against the predicted probability in equal-mass bins, with 95% "
        "intervals; points on the dashed line are perfectly calibrated.",
    )


def group_calibration_chart(summary: pd.DataFrame) -> Chart:
    """Per group: the mean prediction (diamond) against the observed rate with its interval."""
    rows = summary.reset_index(drop=True)
    labels = [f"{by}: {group}" for by, group in zip(rows["by"], rows["group"], strict=True)]
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    colours = ["#d62728" if s == "off" else BLUE for s in rows["status"]]
    observed = rows["observed"].to_numpy(dtype=float)
    low = rows["ci_low"].to_numpy(dtype=float)
    high = rows["ci_high"].to_numpy(dtype=float)
    for i in range(len(rows)):
        ax.errorbar(
            observed[i : i + 1],
            y[i : i + 1],
            xerr=[[observed[i] - low[i]], [high[i] - observed[i]]],
            fmt="none",
            ecolor=colours[i],
            capsize=2,
        )
    ax.scatter(rows["observed"], y, color=colours, label="observed (95% interval)", zorder=3)
    ax.scatter(
        rows["mean_predicted"], y, marker="D", color="black", s=18, label="predicted", zorder=4
    )
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("conversion")
    _percent_axes(ax, x=True, y=False)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Predicted vs observed per group (red: flagged)")
    return Chart(
        "groups",
        "Calibration per channel, segment and band",
        _png(fig),
        "For each channel, segment and band: the mean predicted probability and the observed "
        "conversion with its 95% interval; flagged groups in red.",
    )


def band_chart(table: pd.DataFrame) -> Chart:
    """Conversion per band with its interval, the average rate as a line."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    colours = [BAND_COLOURS.get(b, BLUE) for b in table["band"]]
    ax.bar(table["band"], table["conversion"], color=colours, alpha=0.85)
    ax.errorbar(
        table["band"],
        table["conversion"],
        yerr=[table["conversion"] - table["ci_low"], table["ci_high"] - table["conversion"]],
        fmt="none",
        ecolor="black",
        capsize=4,
    )
    for x, (rate, lift) in enumerate(zip(table["conversion"], table["lift"], strict=True)):
        if np.isfinite(lift):
            ax.annotate(
                f"{rate:.1%}\n×{lift:.1f}",
                (x, rate),
                ha="center",
                va="bottom",
                xytext=(14, 2),
                textcoords="offset points",
                fontsize=9,
            )
    _percent_axes(ax)
    ax.set_ylabel("actual conversion (95% interval)")
    ax.set_title("Conversion per band (× lift over the average)")
    return Chart(
        "bands",
        "Conversion per band",
        _png(fig),
        "Actual conversion of each band with its 95% interval and its lift over the average.",
    )


def weekly_band_chart(weekly: pd.DataFrame) -> Chart:
    """Conversion per band and week; only the weeks whose interval is readable."""
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    for band, rows in weekly.groupby("band", sort=False):
        rows = rows.sort_values("week")
        colour = BAND_COLOURS.get(str(band), BLUE)
        x = pd.to_datetime(rows["week"])
        ax.plot(x, rows["conversion"], "o-", color=colour, label=str(band), markersize=3)
        ax.fill_between(x, rows["ci_low"], rows["ci_high"], color=colour, alpha=0.15)
    _percent_axes(ax)
    ax.set_ylabel("actual conversion (95% interval)")
    ax.set_title("Conversion per band, week by week")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return Chart(
        "bands_weekly",
        "Conversion per band and week",
        _png(fig),
        "Each band's weekly conversion with its 95% interval (weeks with too few leads left "
        "out): a drifting band leaves its usual level.",
    )


def ranked_rate_chart(table: pd.DataFrame, *, label: str, name: str, title: str) -> Chart:
    """Horizontal bars of a rate per group (sorted as given) with Wilson intervals."""
    rows = table.reset_index(drop=True)
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.35 * len(rows) + 1.4))
    ax.barh(y, rows["rate"], color=BLUE, alpha=0.8)
    ax.errorbar(
        rows["rate"],
        y,
        xerr=[rows["rate"] - rows["ci_low"], rows["ci_high"] - rows["rate"]],
        fmt="none",
        ecolor="black",
        capsize=2,
    )
    ax.set_yticks(y, rows[label].astype(str), fontsize=8)
    _percent_axes(ax, x=True, y=False)
    ax.set_xlabel("lead-to-won rate (95% interval)")
    ax.set_title(title)
    return Chart(name, title, _png(fig), f"{title}, with 95% intervals.")


def funnel_chart(table: pd.DataFrame) -> Chart:
    """Per channel: the share of leads reaching MQL, SQL and won (grouped bars)."""
    rows = table.reset_index(drop=True)
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    height = 0.27
    for k, (column, colour, text) in enumerate(
        (("mql", "#9ecae1", "MQL"), ("sql", "#4292c6", "SQL"), ("won", "#08519c", "won"))
    ):
        share = rows[column] / rows["leads"].where(rows["leads"] > 0)
        ax.barh(y + (1 - k) * height, share, height=height, color=colour, label=text)
    ax.set_yticks(y, rows["source_channel"].astype(str), fontsize=8)
    _percent_axes(ax, x=True, y=False)
    ax.set_xlabel("share of the channel's leads that reached the stage")
    ax.set_title("Funnel per channel: lead -> MQL -> SQL -> won")
    ax.legend(fontsize=8, loc="lower right")
    return Chart(
        "funnel",
        "Funnel per channel",
        _png(fig),
        "For each channel, the share of its leads that reached MQL, SQL and won.",
    )


def period_chart(table: pd.DataFrame, *, period: str) -> Chart:
    """Leads per period (bars) and the lead-to-won rate (line, right axis)."""
    fig, ax = plt.subplots(figsize=(8.0, 4.0))
    x = np.arange(len(table))
    ax.bar(x, table["leads"], color="#c6dbef", label="leads")
    ax.set_ylabel("leads")
    ax.set_xticks(x, table[period].astype(str), rotation=45, ha="right", fontsize=8)
    right = ax.twinx()
    right.plot(x, table["lead_to_won"], "o-", color="#08519c", label="lead-to-won")
    right.plot(x, table["lead_to_mql"], "s--", color="#6baed6", label="lead-to-MQL")
    right.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    right.set_ylabel("conversion")
    right.legend(fontsize=8, loc="upper left")
    ax.set_title(f"Leads and conversion per {period} (recent cohorts are still converting)")
    return Chart(
        f"by_{period}",
        f"Leads and conversion per {period}",
        _png(fig),
        f"Leads created per {period} and the share of them that reached MQL and won.",
    )


def psi_chart(table: pd.DataFrame, *, watch: float, alert: float) -> Chart:
    """PSI per feature (most moved first), with the watch and alert thresholds."""
    rows = table.reset_index(drop=True)
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * len(rows) + 1.4))
    colours = ["#d62728" if v >= alert else "#ff7f0e" if v >= watch else BLUE for v in rows["psi"]]
    ax.barh(y, rows["psi"], color=colours)
    ax.axvline(watch, color="#ff7f0e", linestyle="--", linewidth=1, label=f"watch ({watch})")
    ax.axvline(alert, color="#d62728", linestyle="--", linewidth=1, label=f"moved ({alert})")
    ax.set_yticks(y, rows["feature"].astype(str), fontsize=8)
    ax.set_xlabel("population stability index")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Shift between the training period and recent scoring")
    return Chart(
        "psi",
        "Population stability per feature",
        _png(fig),
        "Population stability index of each feature and of the score, most moved first.",
    )


def distribution_chart(
    expected: np.ndarray, actual: np.ndarray, *, name: str, title: str, xlabel: str
) -> Chart:
    """Two histograms on the same bins: the training period against recent scoring."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    values = np.concatenate([expected, actual])
    bins = list(np.histogram_bin_edges(values[np.isfinite(values)], bins=30))
    ax.hist(expected, bins=bins, density=True, alpha=0.5, color=GREY, label="training period")
    ax.hist(actual, bins=bins, density=True, alpha=0.5, color=BLUE, label="recent scoring")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return Chart(name, title, _png(fig), f"{title}: training period against recent scoring.")
