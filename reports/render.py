"""HTML pages and CSV files of the reports (Jinja2; no asset outside the page).

The same template serves the web pages (charts inline as data URIs, filter form, CSV links
to the routes) and the static export (charts as PNG files beside the page, CSV files).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import pandas as pd

from reports.model import Chart, ColumnFormat, Report, Table

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1d2733; background: #f6f7f9; }
header { background: #1f3a5f; color: white; padding: 12px 24px; display: flex; gap: 24px;
         align-items: center; flex-wrap: wrap; }
header a { color: #dbe7f5; text-decoration: none; }
header a.current { color: white; font-weight: 600; border-bottom: 2px solid white; }
header .brand { font-weight: 700; font-size: 18px; margin-right: 12px; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 26px; margin: 12px 0; }
h2 { font-size: 20px; margin-top: 32px; border-bottom: 1px solid #d5dbe3; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.intro { color: #3c4a5c; }
.notice { background: #fff4e5; border-left: 4px solid #f0a020; padding: 8px 12px; margin: 8px 0; }
form.filters { background: white; padding: 10px 14px; border-radius: 6px; display: flex;
               gap: 14px; align-items: end; flex-wrap: wrap; border: 1px solid #d5dbe3; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #55657a; }
figure { background: white; border: 1px solid #d5dbe3; border-radius: 6px; padding: 8px;
         margin: 12px 0; display: inline-block; max-width: 100%; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #55657a; }
.table-wrap { overflow-x: auto; background: white; border: 1px solid #d5dbe3;
              border-radius: 6px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eef1f4; text-align: right;
         white-space: nowrap; }
th { background: #eef2f7; position: sticky; top: 0; }
td.text, th.text { text-align: left; white-space: normal; }
tr.flag td { background: #fde8e8; }
.download { font-size: 12px; margin-left: 8px; }
.more { font-size: 12px; color: #55657a; }
"""

_PAGE = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ report.title }} - leadscore reports</title>
<style>{{ style }}</style></head>
<body>
<header><span class="brand">leadscore reports</span>
{% for name, title, href in nav %}<a href="{{ href }}"{% if name == report.name %}
 class="current"{% endif %}>{{ title }}</a>{% endfor %}
{% if logout %}<a href="{{ logout }}" style="margin-left:auto">log out</a>{% endif %}
</header>
<main>
<h1>{{ report.title }}</h1>
{% for text in report.intro %}<p class="intro">{{ text }}</p>{% endfor %}
{% if form %}
<form class="filters" method="get">
<label>created from<input type="date" name="start" value="{{ form.start }}"></label>
<label>to<input type="date" name="end" value="{{ form.end }}"></label>
<label>channel<select name="channel"><option value="">all channels</option>
{% for c in form.channels %}<option value="{{ c }}"{% if c == form.channel %} selected{% endif %}>
{{ c }}</option>{% endfor %}</select></label>
<label>scores<select name="scores">
<option value="holdout"{% if form.scores == "holdout" %} selected{% endif %}>
champion on held-out leads</option>
<option value="served"{% if form.scores == "served" %} selected{% endif %}>
served by the API</option>
</select></label>
<button type="submit">apply</button>
</form>
{% endif %}
{% for section in report.sections %}
<section><h2>{{ section.title }}</h2>
{% for text in section.notices %}<div class="notice" role="note">{{ text }}</div>{% endfor %}
{% for text in section.paragraphs %}<p>{{ text }}</p>{% endfor %}
{% for chart in section.charts %}
<figure><img src="{{ chart_src(chart) }}" alt="{{ chart.alt }}" data-chart="{{ chart.name }}">
<figcaption>{{ chart.title }}</figcaption></figure>
{% endfor %}
{% for table in section.tables %}
<h3>{{ table.title }}<a class="download" href="{{ csv_href(table) }}"
 download>download CSV</a></h3>
<div class="table-wrap"><table data-table="{{ table.name }}">
<thead><tr>{% for c in cells[table.name].columns %}<th class="{{ c.cls }}">{{ c.title }}</th>
{% endfor %}</tr></thead>
<tbody>{% for row in cells[table.name].rows %}<tr{% if row.flag %} class="flag"{% endif %}>
{% for value, cls in row.items_ %}<td class="{{ cls }}">{{ value }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
{% if cells[table.name].hidden %}<p class="more">{{ cells[table.name].shown }} of
{{ cells[table.name].total }} rows shown; the CSV has them all.</p>{% endif %}
{% endfor %}
</section>
{% endfor %}
</main></body></html>
"""
)


@dataclass(frozen=True)
class FilterForm:
    """Current values of the filter form."""

    start: str
    end: str
    channel: str
    channels: Sequence[str]
    scores: str = "holdout"


def format_value(value: Any, fmt: ColumnFormat | None) -> str:
    """A cell as text: percentages, counts, days; missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value is pd.NaT:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        if fmt == "pct":
            return f"{float(value):.1%}"
        if fmt == "int":
            return f"{int(value):,}"
        if fmt == "float3":
            return f"{float(value):.3f}"
        if fmt == "float":
            return f"{float(value):.2f}"
        if fmt == "days":
            return f"{float(value):.1f} d"
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cells(table: Table) -> dict[str, object]:
    frame = table.frame
    shown = frame.head(table.max_rows)
    columns = [
        {"title": c.replace("_", " "), "cls": "" if c in table.formats else "text"}
        for c in frame.columns
    ]
    rows = []
    for record in shown.itertuples(index=False):
        values = [
            (format_value(v, table.formats.get(c)), "" if c in table.formats else "text")
            for c, v in zip(frame.columns, record, strict=True)
        ]
        flag = "status" in frame.columns and getattr(record, "status", "") in ("off", "moved")
        rows.append({"items_": values, "flag": flag})
    return {
        "columns": columns,
        "rows": rows,
        "hidden": len(frame) > len(shown),
        "shown": len(shown),
        "total": len(frame),
    }


def data_uri(chart: Chart) -> str:
    """The chart as an inline ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(chart.png).decode("ascii")


def render_report(
    report: Report,
    *,
    nav: Sequence[tuple[str, str, str]],
    chart_src: Callable[[Chart], str] = data_uri,
    csv_href: Callable[[Table], str],
    form: FilterForm | None = None,
    logout: str | None = None,
) -> str:
    """The report as one HTML page.

    Args:
        report: The report.
        nav: ``(name, title, href)`` of every report, for the header.
        chart_src: Where an ``<img>`` finds a chart (inline data URI by default).
        csv_href: Where a table's CSV is downloaded from.
        form: The filter form's values (None: no form, as in a static export).
        logout: Log-out link (web pages only).
    """
    return _PAGE.render(
        report=report,
        style=_STYLE,
        nav=nav,
        chart_src=chart_src,
        csv_href=csv_href,
        cells={t.name: _cells(t) for t in report.tables().values()},
        form=form,
        logout=logout,
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (``=HYPERLINK(...)`` in a campaign name)
    gets a leading apostrophe; numbers are left alone."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def table_csv(table: Table) -> str:
    """Every row of the table as CSV (full precision; text cells never start a formula)."""
    frame = table.frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(_inert)
    return frame.to_csv(index=False)


_LOGIN = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Log in - leadscore reports</title>
<style>{{ style }}
.login { max-width: 420px; margin: 80px auto; background: white; padding: 24px;
         border: 1px solid #d5dbe3; border-radius: 8px; }
.login input[type=password] { width: 100%; padding: 8px; margin: 8px 0 14px;
                              box-sizing: border-box; }
.error { color: #b3261e; }
</style></head>
<body><div class="login"><h1>leadscore reports</h1>
<p>Paste an API key with the <code>reports:read</code> scope
(<code>leadscore keys create --name marketing --scope reports:read</code>).</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="/reports/login">
<input type="hidden" name="next" value="{{ next_url }}">
<label for="key">API key</label>
<input type="password" id="key" name="key" autocomplete="off" autofocus required>
<button type="submit">log in</button></form>
<p class="more">The key is kept in a cookie for these pages only (HttpOnly, SameSite=Strict,
8 hours).</p></div></body></html>
"""
)

_INDEX = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>leadscore reports</title>
<style>{{ style }}
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr));
         gap: 16px; }
.card { background: white; border: 1px solid #d5dbe3; border-radius: 8px; padding: 16px; }
.card a { font-size: 18px; font-weight: 600; }
</style></head>
<body><header><span class="brand">leadscore reports</span>
{% for name, title, href in nav %}<a href="{{ href }}">{{ title }}</a>{% endfor %}
{% if logout %}<a href="{{ logout }}" style="margin-left:auto">log out</a>{% endif %}
</header><main><h1>Reports</h1><div class="cards">
{% for href, title, text in items %}<div class="card"><a href="{{ href }}">{{ title }}</a>
<p>{{ text }}</p></div>{% endfor %}
</div><p class="more">The first page after a new model, new data or new outcomes takes a while:
the scores are rebuilt from point-in-time features, then kept.</p></main></body></html>
"""
)


def login_html(*, next_url: str, error: str | None = None) -> str:
    """The login page."""
    return _LOGIN.render(style=_STYLE, next_url=next_url, error=error)


def index_html(
    items: Sequence[tuple[str, str, str]],
    *,
    nav: Sequence[tuple[str, str, str]],
    logout: str | None = None,
) -> str:
    """The list of reports: ``(href, title, description)`` each."""
    return _INDEX.render(style=_STYLE, items=items, nav=nav, logout=logout)
