"""Ingest: contract coercion, Great Expectations rules, quarantine and merge by key.

One ingest of small hand-built files (CSV, gzipped CSV and Parquet) is shared by most tests:
building the Great Expectations context costs seconds, the ingest itself much less.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from leadscore.contracts import EVENTS, LEADS, OUTCOMES, STAGE_CHANGES
from pipelines.ingest import (
    IngestError,
    IngestReport,
    contract_dtypes,
    ingest_tables,
    list_quarantine,
    load_table,
    read_table,
    replay_quarantine,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)

# Row numbers count data rows from 1 (a CSV's header is not a row).
LEADS_CSV = """\
lead_id,created_at,source_channel,industry,age,is_decision_maker,notes
1,2024-01-01T10:00:00Z,website,software,35,yes,first
2,2024-01-02 09:00:00,referral,,,false,
3,2024-01-03T10:00:00+02:00,webinar,retail,,1,
,2024-01-04T10:00:00Z,website,,,,
5,2024-01-05T10:00:00Z,fax,,,,
6,2031-01-01T00:00:00Z,website,,,,
7,2024-13-45,website,,,,
1,2024-01-01T10:00:00Z,website,software,35,yes,first
8,2024-01-06T10:00:00Z,website,,,,
8,2024-01-07T10:00:00Z,linkedin,,,,
9,2024-01-08T10:00:00Z,website,,150,maybe,
10,1999-12-31T00:00:00Z,website,,,,
"""

OUTCOMES_CSV = """\
lead_id,closed_at,result,amount
1,2024-03-01T00:00:00Z,won,1000
2,2023-12-01T00:00:00Z,lost,0
999,2024-03-01T00:00:00Z,won,5
3,2024-03-01T00:00:00Z,won,-5
"""

STAGE_CHANGES_CSV = """\
lead_id,changed_at,stage
1,2024-01-01T11:00:00Z,MQL
1,2024-01-05T11:00:00Z,SQL
1,2024-01-05T11:00:00Z,SQL
2,2023-06-01T00:00:00Z,MQL
"""


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3", "e4", "e5", "e2"],
            "lead_id": [1, 2, 999, 5, 3, 2],
            # naive timestamps in a Parquet file are taken as UTC
            "occurred_at": pd.to_datetime(["2024-02-01 10:00"] * 6),
            "event_type": [
                *("page_view", "email_open", "page_view"),
                *("page_view", "teleport", "email_open"),
            ],
            "channel": ["web", "email", "web", "web", "web", "email"],
        }
    )


@dataclass
class Run:
    report: IngestReport
    warehouse: Path
    quarantine_dir: Path
    sources: dict[str, Path]


def _ingest(root: Path, sources: dict[str, Path], now: datetime = NOW) -> IngestReport:
    return ingest_tables(
        sources=sources,
        warehouse_dir=root / "warehouse",
        quarantine_dir=root / "quarantine",
        now=now,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("ingest")
    raw = root / "raw"
    raw.mkdir()
    (raw / "leads.csv").write_text(LEADS_CSV)
    (raw / "outcomes.csv").write_text(OUTCOMES_CSV)
    with gzip.open(raw / "stage_changes.csv.gz", "wt") as f:
        f.write(STAGE_CHANGES_CSV)
    _events().to_parquet(raw / "events.parquet", index=False)
    sources = {
        "leads": raw / "leads.csv",
        "events": raw / "events.parquet",
        "stage_changes": raw / "stage_changes.csv.gz",
        "outcomes": raw / "outcomes.csv",
    }
    report = _ingest(root, sources)
    return Run(report, root / "warehouse", root / "quarantine", sources)


def test_good_rows_all_land_with_contract_dtypes(run: Run) -> None:
    # given: the shared ingest
    # when
    tables = {name: load_table(run.warehouse, name) for name in ("leads", "events", "outcomes")}
    stages = load_table(run.warehouse, "stage_changes")
    # then
    leads = tables["leads"].set_index("lead_id")
    assert sorted(leads.index) == [1, 2, 3]
    assert list(tables["leads"].columns) == LEADS.column_names
    assert tables["leads"].dtypes.to_dict() == contract_dtypes(LEADS)
    assert leads.loc[2, "created_at"] == pd.Timestamp("2024-01-02 09:00", tz="UTC")  # naive
    assert leads.loc[3, "created_at"] == pd.Timestamp("2024-01-03 08:00", tz="UTC")  # +02:00
    assert str(leads["created_at"].dtype) == "datetime64[us, UTC]"
    assert leads.sort_index()["is_decision_maker"].tolist() == [True, False, True]
    assert leads.loc[1, "age"] == 35 and pd.isna(leads.loc[2, "age"])
    assert leads.loc[2, "industry"] is None
    assert leads["utm_source"].isna().all()  # optional column missing from the file
    assert sorted(tables["events"]["event_id"]) == ["e1", "e2"]
    assert tables["events"].dtypes.to_dict() == contract_dtypes(EVENTS)
    assert tables["outcomes"]["lead_id"].tolist() == [1]
    assert tables["outcomes"].dtypes.to_dict() == contract_dtypes(OUTCOMES)
    assert len(stages) == 2
    assert stages.dtypes.to_dict() == contract_dtypes(STAGE_CHANGES)


def test_every_row_read_is_accepted_or_quarantined(run: Run) -> None:
    # given: the shared ingest
    # when
    counts = {
        name: (t.rows_read, t.rows_accepted, t.rows_quarantined)
        for name, t in run.report.tables.items()
    }
    quarantined = list_quarantine(run.quarantine_dir)
    # then
    assert counts == {
        "leads": (12, 3, 9),
        "events": (6, 2, 4),
        "stage_changes": (4, 2, 2),
        "outcomes": (4, 1, 3),
    }
    assert quarantined.groupby("table").size().to_dict() == {
        "events": 4,
        "leads": 9,
        "outcomes": 3,
        "stage_changes": 2,
    }
    assert quarantined["quarantine_id"].is_unique


@pytest.mark.parametrize(
    ("table", "row", "rules", "message", "original"),
    [
        ("leads", 4, "not_null:lead_id", "lead_id: missing value", {"lead_id": ""}),
        (
            "leads",
            5,
            "allowed_values:source_channel",
            "source_channel: 'fax' is not an allowed value",
            {"source_channel": "fax"},
        ),
        (
            "leads",
            6,
            "not_in_future:created_at",
            "created_at: '2031-01-01T00:00:00Z' is in the future",
            {"created_at": "2031-01-01T00:00:00Z"},
        ),
        (
            "leads",
            7,
            "parseable:created_at",
            "created_at: not a valid timestamp: '2024-13-45'",
            {"created_at": "2024-13-45", "lead_id": "7"},
        ),
        ("leads", 8, "duplicate_row", "exact duplicate of row 1", {"notes": "first"}),
        (
            "leads",
            9,
            "unique_key:lead_id",
            "key (lead_id) = ('8')",
            {"created_at": "2024-01-06T10:00:00Z"},
        ),
        (
            "leads",
            10,
            "unique_key:lead_id",
            "shared by rows that differ",
            {"source_channel": "linkedin"},
        ),
        (
            "leads",
            11,
            "parseable:is_decision_maker;range:age",
            "age: '150' is outside [16, 100]",
            {"is_decision_maker": "maybe", "age": "150"},
        ),
        (
            "leads",
            12,
            "not_before_2000:created_at",
            "is before 2000-01-01",
            {"created_at": "1999-12-31T00:00:00Z"},
        ),
        (
            "events",
            3,
            "lead_exists:lead_id",
            "lead_id: lead '999' is not among the accepted leads",
            {"event_id": "e3", "lead_id": 999},
        ),
        ("events", 4, "lead_exists:lead_id", "lead '5'", {"event_id": "e4"}),
        (
            "events",
            5,
            "allowed_values:event_type",
            "'teleport' is not an allowed value",
            {"event_type": "teleport", "occurred_at": "2024-02-01T10:00:00.000000"},
        ),
        ("events", 6, "duplicate_row", "exact duplicate of row 2", {"event_id": "e2"}),
        ("stage_changes", 3, "duplicate_row", "exact duplicate of row 2", {"stage": "SQL"}),
        (
            "stage_changes",
            4,
            "after_lead_created:changed_at",
            "changed_at: '2023-06-01T00:00:00Z' is before the lead's created_at",
            {"stage": "MQL"},
        ),
        (
            "outcomes",
            2,
            "after_lead_created:closed_at",
            "closed_at: '2023-12-01T00:00:00Z' is before the lead's created_at "
            "'2024-01-02 09:00:00+00:00'",
            {"result": "lost"},
        ),
        ("outcomes", 3, "lead_exists:lead_id", "lead '999'", {"lead_id": "999"}),
        ("outcomes", 4, "range:amount", "amount: '-5' is below the minimum 0", {"amount": "-5"}),
    ],
)
def test_bad_row_is_quarantined_with_rule_message_and_original_values(
    run: Run, table: str, row: int, rules: str, message: str, original: dict[str, object]
) -> None:
    # given: the shared ingest
    quarantined = list_quarantine(run.quarantine_dir)
    # when
    match = quarantined[(quarantined["table"] == table) & (quarantined["row_number"] == row)]
    # then
    assert len(match) == 1
    entry = match.iloc[0]
    assert entry["rules"] == rules
    assert message in entry["messages"]
    assert entry["source"] == str(run.sources[table])
    assert entry["quarantined_at"] == pd.Timestamp(NOW)
    stored = json.loads(entry["original_row"])
    assert original.items() <= stored.items()


def test_report_counts_rules_and_is_saved_with_a_summary(run: Run) -> None:
    # given: the shared ingest
    leads = run.report.tables["leads"]
    # when
    summary = run.report.summary()
    saved = list((run.warehouse / "_ingest_reports").glob("*.json"))
    # then
    assert leads.rule_counts["unique_key:lead_id"] == 2
    assert leads.rule_counts["duplicate_row"] == 1
    assert leads.extra_columns == ("notes",)
    assert run.report.quarantine_path == run.quarantine_dir / "quarantine.parquet"
    assert "extra columns ignored: notes" in summary
    assert "allowed_values:source_channel" in summary
    assert len(saved) == 1
    assert json.loads(saved[0].read_text()) == run.report.to_dict()


# --- Re-ingest, merge, append, bad files ------------------------------------------------------


def _write_leads(path: Path, rows: list[tuple[object, str, str]]) -> Path:
    pd.DataFrame(rows, columns=["lead_id", "created_at", "source_channel"]).to_csv(
        path, index=False
    )
    return path


def _write_events(path: Path, rows: list[tuple[str, int, str]]) -> Path:
    frame = pd.DataFrame(rows, columns=["event_id", "lead_id", "event_type"])
    frame["occurred_at"] = "2024-06-01T00:00:00Z"
    frame.to_csv(path, index=False)
    return path


def test_reingest_merges_by_key_and_appends_to_quarantine(tmp_path: Path) -> None:
    # given: a first ingest with one bad lead
    first = _ingest(
        tmp_path,
        {
            "leads": _write_leads(
                tmp_path / "leads1.csv",
                [
                    (1, "2024-01-01", "website"),
                    (2, "2024-01-02", "website"),
                    ("", "2024-01-03", "website"),
                ],
            ),
            "events": _write_events(
                tmp_path / "events1.csv", [("e1", 1, "page_view"), ("e2", 2, "page_view")]
            ),
        },
    )
    # when: a second file updates lead 2, adds lead 3 and has a bad row; its events update e2
    # and add e3 for lead 1, which is only in the warehouse
    second = _ingest(
        tmp_path,
        {
            "leads": _write_leads(
                tmp_path / "leads2.csv",
                [
                    (2, "2024-01-02", "partner"),
                    (3, "2024-01-04", "website"),
                    (4, "2024-01-04", "fax"),
                ],
            ),
            "events": _write_events(
                tmp_path / "events2.csv", [("e2", 2, "demo_request"), ("e3", 1, "email_open")]
            ),
        },
    )
    # then
    leads = load_table(tmp_path / "warehouse", "leads").set_index("lead_id")
    events = load_table(tmp_path / "warehouse", "events").set_index("event_id")
    quarantined = list_quarantine(tmp_path / "quarantine")
    assert sorted(leads.index) == [1, 2, 3]
    assert leads.loc[2, "source_channel"] == "partner"
    assert events["event_type"].to_dict() == {
        "e1": "page_view",
        "e2": "demo_request",
        "e3": "email_open",
    }
    assert second.tables["events"].rows_quarantined == 0
    assert second.tables["leads"].rows_stored == 3
    assert first.tables["leads"].rows_quarantined == 1
    assert quarantined["source"].tolist() == [
        str(tmp_path / "leads1.csv"),
        str(tmp_path / "leads2.csv"),
    ]
    assert quarantined["rules"].tolist() == ["not_null:lead_id", "allowed_values:source_channel"]
    assert len(list((tmp_path / "warehouse" / "_ingest_reports").glob("*.json"))) == 2


def test_file_missing_required_column_raises_and_leaves_warehouse_untouched(
    tmp_path: Path,
) -> None:
    # given: a warehouse and a quarantine holding a first ingest
    _ingest(
        tmp_path,
        {
            "leads": _write_leads(
                tmp_path / "leads.csv", [(1, "2024-01-01", "website"), ("", "2024-01-01", "x")]
            )
        },
    )
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    good_leads = _write_leads(tmp_path / "more_leads.csv", [(2, "2024-01-01", "website")])
    broken = tmp_path / "events.csv"
    pd.DataFrame({"event_id": ["e1"], "lead_id": [1], "event_type": ["page_view"]}).to_csv(
        broken, index=False
    )
    # when
    with pytest.raises(IngestError, match=r"events\.csv.*'events'.*occurred_at"):
        _ingest(tmp_path, {"leads": good_leads, "events": broken})
    # then
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before
    assert load_table(tmp_path / "warehouse", "leads")["lead_id"].tolist() == [1]


def test_sources_need_leads_somewhere_and_known_tables(tmp_path: Path) -> None:
    # given: an empty warehouse
    events = _write_events(tmp_path / "events.csv", [("e1", 1, "page_view")])
    # when / then
    with pytest.raises(IngestError, match="no leads"):
        _ingest(tmp_path, {"events": events})
    with pytest.raises(IngestError, match=r"unknown table.*deals"):
        _ingest(tmp_path, {"leads": events, "deals": events})


def test_new_events_alone_are_checked_against_the_stored_leads(tmp_path: Path) -> None:
    # given: lead 1 already stored
    _ingest(
        tmp_path, {"leads": _write_leads(tmp_path / "leads.csv", [(1, "2024-01-01", "website")])}
    )
    events = _write_events(
        tmp_path / "events.csv", [("e1", 1, "page_view"), ("e2", 7, "page_view")]
    )
    # when
    report = _ingest(tmp_path, {"events": events})
    # then: the event of the stored lead is accepted, the one of an unknown lead quarantined
    assert report.tables["events"].rows_accepted == 1
    assert report.tables["events"].rule_counts == {"lead_exists:lead_id": 1}
    assert load_table(tmp_path / "warehouse", "leads")["lead_id"].tolist() == [1]


def test_read_table_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    # given
    missing = tmp_path / "nope.csv"
    unsupported = tmp_path / "leads.xlsx"
    unsupported.write_text("x")
    corrupt = tmp_path / "leads.parquet"
    corrupt.write_text("not parquet")
    # when / then
    with pytest.raises(IngestError, match=r"nope\.csv: file not found"):
        read_table(missing)
    with pytest.raises(IngestError, match=r"leads\.xlsx: unsupported file type"):
        read_table(unsupported)
    with pytest.raises(IngestError, match=r"leads\.parquet: cannot read"):
        read_table(corrupt)


def test_csv_cells_are_read_as_written(tmp_path: Path) -> None:
    # given
    path = tmp_path / "t.csv"
    path.write_text("a,b\n007,NA\n,x\n")
    # when
    frame = read_table(path)
    # then
    assert frame.to_dict("list") == {"a": ["007", ""], "b": ["NA", "x"]}


def test_absent_tables_and_quarantine_read_back_empty_with_their_columns(tmp_path: Path) -> None:
    # given: an empty folder
    # when
    leads = load_table(tmp_path, "leads")
    quarantined = list_quarantine(tmp_path)
    # then
    assert leads.empty and leads.dtypes.to_dict() == contract_dtypes(LEADS)
    assert quarantined.empty and "original_row" in quarantined.columns
    with pytest.raises(KeyError, match="unknown table"):
        load_table(tmp_path, "deals")


def test_replay_of_contract_files_takes_events_once_their_lead_is_stored(tmp_path: Path) -> None:
    # given: events of a lead that is not in this export, and a lead with a bad channel
    _ingest(
        tmp_path,
        {
            "leads": _write_leads(
                tmp_path / "leads.csv", [(1, "2024-01-01", "website"), (2, "2024-01-01", "fax")]
            ),
            "events": _write_events(
                tmp_path / "events.csv", [("e1", 1, "page_view"), ("e2", 3, "demo_request")]
            ),
        },
    )
    # when: lead 3 arrives in a later export, and lead 2's channel is fixed in its file
    _ingest(tmp_path, {"leads": _write_leads(tmp_path / "more.csv", [(3, "2024-01-02", "event")])})
    _write_leads(tmp_path / "leads.csv", [(1, "2024-01-01", "website"), (2, "2024-01-01", "other")])
    report = replay_quarantine(
        warehouse_dir=tmp_path / "warehouse", quarantine_dir=tmp_path / "quarantine", now=NOW
    )
    # then
    assert (report.replayed, report.accepted, report.still_quarantined) == (2, 2, 0)
    assert sorted(load_table(tmp_path / "warehouse", "events")["event_id"]) == ["e1", "e2"]
    leads = load_table(tmp_path / "warehouse", "leads").set_index("lead_id")
    assert leads.loc[2, "source_channel"] == "other"
    assert set(list_quarantine(tmp_path / "quarantine")["status"]) == {"replayed"}
