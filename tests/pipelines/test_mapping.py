"""Bring-your-own CRM exports: mapping files, their validation, ingest, quarantine and replay."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from leadscore.dataset import load_manifest
from pipelines.ingest import (
    IngestError,
    ingest_mapping,
    list_quarantine,
    load_attributes,
    load_table,
    replay_quarantine,
)
from pipelines.mapping import MappingError, load_mapping
from tests.services import PostgresParams, require_postgres, unique_name

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _ingest(mapping: Path, root: Path, now: datetime = NOW):
    return ingest_mapping(
        mapping, warehouse_dir=root / "warehouse", quarantine_dir=root / "quarantine", now=now
    )


FLAT_CSV = """
Id;Signed up;Lead Source;Sector;Plan;Seats;Newsletter;Won?;Call minutes
101;2026-01-05 09:30;Paid Search;Software;Pro;12;yes;Yes;30
102;2026-01-06 10:00;paid search;Select;pro ;3;no;No;4
103;2026-01-07 11:15;Google Ads;Retail;Basic;unknown;No;;12
104;2026-01-08 08:00;Trade-Show;software;BASIC;7;yes;maybe;9
105;2099-01-01 00:00;Website;Retail;Pro;5;yes;No;3
106;2026-01-09 08:00;Website;Software;Pro;-4;yes;No;3
"""

FLAT_MAPPING = """
name: flat-crm
sources:
  crm:
    path: crm.csv
missing_values: [Select, unknown]
post_outcome: [Call minutes]
tables:
  leads:
    source: crm
    lead_id: Id
    created_at: {column: Signed up, format: "%Y-%m-%d %H:%M", timezone: Europe/Lisbon}
    columns:
      source_channel:
        column: Lead Source
        values: {Google Ads: paid_search}
      industry: Sector
    attributes:
      plan: {column: Plan, kind: categorical, label: "plan {value}"}
      seats: {column: Seats, kind: numeric, min: 1, max: 100000}
      newsletter: {column: Newsletter, kind: flag}
  outcomes:
    source: crm
    result: {column: "Won?", won: ["yes"], lost: ["no"]}
    closed_at: {after_created_days: 30}
"""


def test_flat_export_maps_cleans_and_quarantines_with_reasons(tmp_path: Path) -> None:
    _write(tmp_path / "crm.csv", FLAT_CSV)
    mapping = _write(tmp_path / "mapping.yaml", FLAT_MAPPING)
    report = _ingest(mapping, tmp_path)

    leads = load_table(tmp_path / "warehouse", "leads").set_index("lead_id")
    # 105 lies in the future; 106 has an implausible seat count.
    assert sorted(leads.index) == [101, 102, 103, 104]
    # Categories spelled several ways land on the contract's value; placeholders are missing.
    assert leads.loc[[101, 102, 103, 104], "source_channel"].tolist() == [
        "paid_search",
        "paid_search",
        "paid_search",
        "trade_show",
    ]
    assert leads.loc[101, "industry"] == "software"
    assert pd.isna(leads.loc[102, "industry"])
    assert leads.loc[104, "industry"] == "software"
    # Local time (Lisbon, winter = UTC) to UTC.
    assert leads.loc[101, "created_at"] == pd.Timestamp("2026-01-05 09:30", tz="UTC")

    attrs = load_attributes(tmp_path / "warehouse").set_index("lead_id")
    assert attrs.loc[101, "plan"] == "pro" and attrs.loc[102, "plan"] == "pro"
    assert attrs.loc[104, "plan"] == "basic"
    assert pd.isna(attrs.loc[103, "seats"]) and attrs.loc[101, "seats"] == 12.0
    assert bool(attrs.loc[101, "newsletter"]) and not bool(attrs.loc[103, "newsletter"])

    outcomes = load_table(tmp_path / "warehouse", "outcomes").set_index("lead_id")
    # 103 has no answer yet (open); 104's "maybe" is neither won nor lost.
    assert sorted(outcomes.index) == [101, 102]
    assert outcomes.loc[101, "result"] == "won"
    assert outcomes.loc[101, "closed_at"] == pd.Timestamp("2026-02-04 09:30", tz="UTC")

    q = list_quarantine(tmp_path / "quarantine")
    by_table = {t: set(g["row_number"]) for t, g in q.groupby("table")}
    assert by_table == {"leads": {5, 6}, "outcomes": {4, 5, 6}}
    bad_leads = q[q.table == "leads"]
    lead_rules = dict(zip(bad_leads.row_number, bad_leads.rules, strict=True))
    assert lead_rules[5] == "not_in_future:created_at"
    assert lead_rules[6] == "range:seats"
    future = q[(q.table == "leads") & (q.row_number == 5)].iloc[0]
    # The quarantine keeps the row as the export holds it, under its own column names.
    assert json.loads(future["original_row"])["Signed up"] == "2099-01-01 00:00"
    assert future["mapping"] == str(mapping.resolve())
    maybe = q[(q.table == "outcomes") & (q.row_number == 4)].iloc[0]
    assert maybe["rules"] == "allowed_values:result" and "'maybe'" in maybe["messages"]
    assert report.tables["leads"].rule_counts == {
        "not_in_future:created_at": 1,
        "range:seats": 1,
    }

    manifest = load_manifest(tmp_path / "warehouse")
    assert [a.name for a in manifest.attributes] == ["plan", "seats", "newsletter"]
    assert manifest.post_outcome == ("Call minutes",)


def test_same_export_twice_changes_nothing_and_newer_export_updates(tmp_path: Path) -> None:
    _write(tmp_path / "crm.csv", FLAT_CSV)
    mapping = _write(tmp_path / "mapping.yaml", FLAT_MAPPING)
    _ingest(mapping, tmp_path)
    warehouse = tmp_path / "warehouse"
    before = {t: load_table(warehouse, t) for t in ("leads", "outcomes")}
    quarantine_before = list_quarantine(tmp_path / "quarantine")

    _ingest(mapping, tmp_path)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(load_table(warehouse, name), frame)
    assert len(list_quarantine(tmp_path / "quarantine")) == len(quarantine_before)

    # A newer export: lead 103 now won, lead 102 changed sector, a new lead 107.
    newer = FLAT_CSV.replace("103;2026-01-07 11:15;Google Ads;Retail;Basic;unknown;No;;12", "")
    newer = newer.replace("paid search;Select", "Website;Retail")
    newer += (
        "103;2026-01-07 11:15;Google Ads;Retail;Basic;unknown;No;yes;12\n"
        "107;2026-02-01 08:00;Partner;Media;Pro;40;no;;1\n"
    )
    _write(tmp_path / "crm.csv", newer)
    _ingest(mapping, tmp_path)
    leads = load_table(warehouse, "leads").set_index("lead_id")
    assert sorted(leads.index) == [101, 102, 103, 104, 107]
    assert leads.loc[102, "industry"] == "retail"
    outcomes = load_table(warehouse, "outcomes").set_index("lead_id")
    assert outcomes.loc[103, "result"] == "won"
    assert len(outcomes) == 3


LEADS_CSV = """
lead_ref,created,channel
1,2026-01-01T00:00:00Z,Webinar
2,2026-01-02T00:00:00Z,webinar
3,2026-06-01T00:00:00Z,Partner
4,2026-01-03T00:00:00Z,Partner
"""

DEALS_CSV = """
deal,lead,stage,close_date,value
d1,1,Closed Won,2026-02-01,5000
d2,99,Closed Lost,2026-02-01,0
d3,4,Closed Lost,2025-12-01,0
"""

JOINED_MAPPING = """
name: leads-and-deals
sources:
  leads: {path: leads.csv}
  deals: {path: deals.csv}
tables:
  leads:
    source: leads
    lead_id: lead_ref
    created_at: created
    columns:
      source_channel: channel
  outcomes:
    source: deals
    lead_id: lead
    result: {column: stage, won: [Closed Won], lost: [Closed Lost]}
    closed_at: close_date
    amount: value
    lost_without_outcome_after_days: 90
"""


def test_leads_and_deals_joined_by_id_with_a_maturity_window(tmp_path: Path) -> None:
    _write(tmp_path / "leads.csv", LEADS_CSV)
    _write(tmp_path / "deals.csv", DEALS_CSV)
    mapping = _write(tmp_path / "mapping.yaml", JOINED_MAPPING)
    report = _ingest(mapping, tmp_path)

    outcomes = load_table(tmp_path / "warehouse", "outcomes").set_index("lead_id")
    # 1 won by its deal; 2 has no deal and is older than 90 days: lost at created + 90 days;
    # 3 is younger than 90 days: open; 4's deal closed before the lead existed: quarantined,
    # and a lead with a (bad) deal row is never declared lost for want of one.
    assert sorted(outcomes.index) == [1, 2]
    assert outcomes.loc[1, "result"] == "won" and outcomes.loc[1, "amount"] == 5000.0
    assert outcomes.loc[2, "result"] == "lost"
    assert outcomes.loc[2, "closed_at"] == pd.Timestamp("2026-04-02", tz="UTC")
    q = list_quarantine(tmp_path / "quarantine").set_index("row_number")
    assert q.loc[2, "rules"] == "lead_exists:lead_id"
    assert q.loc[3, "rules"] == "after_lead_created:closed_at"
    assert report.tables["outcomes[2]"].rows_accepted == 1
    assert "no outcome within 90 days" in report.tables["outcomes[2]"].source

    # Once lead 2's deal arrives, the deal wins over the derived "lost".
    _write(tmp_path / "deals.csv", DEALS_CSV + "d4,2,Closed Won,2026-05-01,900\n")
    _ingest(mapping, tmp_path)
    outcomes = load_table(tmp_path / "warehouse", "outcomes").set_index("lead_id")
    assert outcomes.loc[2, "result"] == "won"


def test_full_tables_with_their_own_names_and_formats(tmp_path: Path) -> None:
    _write(
        tmp_path / "contacts.tsv",
        "id\tcreated\tsrc\n1\t01/02/2026 10:00\tReferral\n2\t03/02/2026 10:00\tEvent\n",
    )
    _write(
        tmp_path / "activity.csv",
        "activity_id|contact|when|what\n"
        "a1|1|2026-02-03T10:00:00Z|Pricing Page View\n"
        "a2|1|2026-02-04T10:00:00Z|Demo-Request\n"
        "a3|2|2026-02-04T10:00:00Z|fax\n",
    )
    _write(tmp_path / "stages.csv", "contact,at,stage\n1,2026-02-05T00:00:00Z,sql\n")
    mapping = _write(
        tmp_path / "mapping.yaml",
        """
        name: full
        sources:
          contacts: {path: contacts.tsv}
          activity: {path: activity.csv}
          stages: {path: stages.csv}
        tables:
          leads:
            source: contacts
            lead_id: id
            created_at: {column: created, format: "%d/%m/%Y %H:%M"}
            columns: {source_channel: src}
          events:
            source: activity
            columns: {event_id: activity_id, lead_id: contact, event_type: what}
            time: when
          stage_changes:
            source: stages
            columns: {lead_id: contact, stage: stage}
            time: at
        """,
    )
    _ingest(mapping, tmp_path)
    warehouse = tmp_path / "warehouse"
    events = load_table(warehouse, "events")
    assert events["event_type"].tolist() == ["pricing_page_view", "demo_request"]
    assert load_table(warehouse, "stage_changes")["stage"].tolist() == ["SQL"]
    leads = load_table(warehouse, "leads")
    assert leads["created_at"].tolist() == [
        pd.Timestamp("2026-02-01 10:00", tz="UTC"),
        pd.Timestamp("2026-02-03 10:00", tz="UTC"),
    ]
    q = list_quarantine(tmp_path / "quarantine")
    assert q["rules"].tolist() == ["allowed_values:event_type"]


def test_postgres_table_as_a_source(tmp_path: Path) -> None:
    import psycopg

    params: PostgresParams = require_postgres()
    schema = unique_name("crm")
    url = f"postgresql://{params.user}@{params.host}:{params.port}/{params.database}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
        conn.execute(
            f"create table {schema}.leads (id bigint, created timestamptz, channel text, "
            "employees integer, won boolean)"
        )
        conn.execute(
            f"insert into {schema}.leads values "
            "(1, '2026-01-01 00:00+00', 'LinkedIn', 40, true),"
            "(2, '2026-01-02 00:00+00', 'Fax', 5, false),"
            "(3, '2026-01-03 00:00+00', 'partner', null, null)"
        )
    try:
        mapping = _write(
            tmp_path / "mapping.yaml",
            f"""
            name: pg
            sources:
              crm: {{url: "{url}", table: {schema}.leads}}
            tables:
              leads:
                source: crm
                lead_id: id
                created_at: created
                columns: {{source_channel: channel}}
                attributes:
                  employees: {{kind: numeric, min: 1}}
              outcomes:
                source: crm
                result: {{column: won, won: ["true"], lost: ["false"]}}
                closed_at: {{after_created_days: 10}}
            """,
        )
        _ingest(mapping, tmp_path)
        leads = load_table(tmp_path / "warehouse", "leads")
        assert leads.set_index("lead_id")["source_channel"].to_dict() == {
            1: "linkedin",
            3: "partner",
        }
        assert load_attributes(tmp_path / "warehouse").set_index("lead_id")[
            "employees"
        ].to_dict() == {1: 40.0, 3: pytest.approx(float("nan"), nan_ok=True)}
        assert load_table(tmp_path / "warehouse", "outcomes")["result"].tolist() == ["won"]
        q = list_quarantine(tmp_path / "quarantine")
        assert set(q["rules"]) == {"allowed_values:source_channel", "lead_exists:lead_id"}
        assert q["source"].str.endswith(f"#{schema}.leads").all()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


def test_every_mapping_mistake_is_reported_with_its_place(tmp_path: Path) -> None:
    mapping = _write(
        tmp_path / "mapping.yaml",
        """
        name: broken
        sources:
          crm: {path: crm.csv, delimiter: ";;"}
        post_outcome: [Call minutes]
        tables:
          leads:
            source: crmm
            lead_id: Id
            created_at: {column: x, parts: {month: m, day: d, start_year: 2020}}
            columns:
              source_channel: {column: src, values: {Fax: fax_machine}}
              colour: c
            attributes:
              minutes: {column: Call minutes, kind: numeric}
              industry: {kind: categorical}
              plan: {kind: flag, min: 1}
          outcomes:
            source: other
            result: {column: y, won: [yes], lost: [yes]}
            closed_at: closed
            lost_without_outcome_after_days: -3
        """,
    )
    with pytest.raises(MappingError) as info:
        load_mapping(mapping)
    text = str(info.value)
    for expected in (
        "sources.crm: Value error, `delimiter` must be one character",
        "tables.leads.created_at",
        "tables.leads.attributes.plan",
        "tables.outcomes.result",
        "tables.outcomes.lost_without_outcome_after_days",
    ):
        assert expected in text, (expected, text)

    _write(
        mapping,
        """
        name: broken
        sources:
          crm: {path: crm.csv}
        post_outcome: [Call minutes]
        tables:
          leads:
            source: crmm
            lead_id: Id
            created_at: created
            columns:
              source_channel: {column: src, values: {Fax: fax_machine}}
              colour: c
            attributes:
              minutes: {column: Call minutes, kind: numeric}
              industry: {kind: categorical}
          outcomes:
            source: other
            result: {column: y, won: [yes], lost: [no]}
            closed_at: closed
        """,
    )
    with pytest.raises(MappingError) as info:
        load_mapping(mapping)
    text = str(info.value)
    for expected in (
        "tables.leads.source: 'crmm' is not among the sources (crm)",
        "tables.outcomes.source: 'other'",
        "tables.leads.columns.source_channel: ['fax_machine'] not allowed",
        "tables.leads.columns.colour: leads has no column 'colour'",
        "tables.leads.attributes.minutes: 'Call minutes' is declared post_outcome",
        "tables.leads.attributes.industry: 'industry' is already a contract column",
        "tables.outcomes.lead_id: required when outcomes come from another source",
    ):
        assert expected in text, (expected, text)


def test_a_missing_source_column_or_file_changes_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "crm.csv", FLAT_CSV)
    mapping = _write(tmp_path / "mapping.yaml", FLAT_MAPPING)
    _ingest(mapping, tmp_path)
    warehouse = tmp_path / "warehouse"
    files = {p.name: p.read_bytes() for p in warehouse.glob("*.parquet")}
    quarantine = (tmp_path / "quarantine" / "quarantine.parquet").read_bytes()

    _write(tmp_path / "crm.csv", FLAT_CSV.replace("Sector", "Branch"))
    with pytest.raises(MappingError, match=r"tables.leads.columns.industry: .* no column 'Sector'"):
        _ingest(mapping, tmp_path)
    (tmp_path / "crm.csv").unlink()
    with pytest.raises(IngestError, match="source 'crm'"):
        _ingest(mapping, tmp_path)
    assert {p.name: p.read_bytes() for p in warehouse.glob("*.parquet")} == files
    assert (tmp_path / "quarantine" / "quarantine.parquet").read_bytes() == quarantine


def test_replay_takes_back_rows_once_the_source_is_fixed(tmp_path: Path) -> None:
    _write(tmp_path / "crm.csv", FLAT_CSV)
    mapping = _write(tmp_path / "mapping.yaml", FLAT_MAPPING)
    _ingest(mapping, tmp_path)
    warehouse, quarantine = tmp_path / "warehouse", tmp_path / "quarantine"

    # Nothing fixed yet: every open row fails again and stays open.
    first = replay_quarantine(warehouse_dir=warehouse, quarantine_dir=quarantine, now=NOW)
    assert (first.replayed, first.accepted, first.still_quarantined) == (5, 0, 5)

    # Fix lead 105's date and 106's seats in place; 104's "maybe" stays wrong.
    fixed = FLAT_CSV.replace("2099-01-01 00:00", "2026-01-10 00:00").replace(";-4;", ";4;")
    _write(tmp_path / "crm.csv", fixed)
    report = replay_quarantine(warehouse_dir=warehouse, quarantine_dir=quarantine, now=NOW)
    assert (report.accepted, report.still_quarantined) == (4, 1)
    leads = load_table(warehouse, "leads")
    assert sorted(leads["lead_id"]) == [101, 102, 103, 104, 105, 106]
    assert sorted(load_table(warehouse, "outcomes")["lead_id"]) == [101, 102, 105, 106]
    q = list_quarantine(quarantine)
    open_rows = q[q["status"] == "open"]
    assert open_rows[["table", "row_number"]].values.tolist() == [["outcomes", 4]]
    assert (q[q["status"] == "replayed"]["resolved_at"].notna()).all()
    # A replay with nothing left to fix changes nothing more.
    again = replay_quarantine(
        warehouse_dir=warehouse, quarantine_dir=quarantine, table="leads", now=NOW
    )
    assert again.replayed == 0


def test_row_order_and_no_timestamps(tmp_path: Path) -> None:
    _write(tmp_path / "crm.csv", "channel,won\nwebsite,yes\nwebsite,no\nreferral,no\n")
    mapping = _write(
        tmp_path / "mapping.yaml",
        """
        name: ordered
        sources: {crm: {path: crm.csv}}
        tables:
          leads:
            source: crm
            lead_id: {from: row_number}
            created_at: {row_order: {start: 2026-01-01, end: 2026-01-03}}
            columns: {source_channel: channel}
          outcomes:
            source: crm
            result: {column: won, won: ["yes"], lost: ["no"]}
            closed_at: {after_created_days: 1}
        """,
    )
    _ingest(mapping, tmp_path)
    leads = load_table(tmp_path / "warehouse", "leads")
    assert leads["created_at"].dt.day.tolist() == [1, 2, 3]
    text = mapping.read_text().replace("{row_order: {start: 2026-01-01, end: 2026-01-03}}", "none")
    mapping.write_text(text)
    _ingest(mapping, tmp_path / "none")
    leads = load_table(tmp_path / "none" / "warehouse", "leads")
    assert set(leads["created_at"]) == {pd.Timestamp(NOW) - pd.Timedelta(days=1)}


def test_value_maps_tell_negative_numbers_from_positive_ones(tmp_path: Path) -> None:
    # given: -1 means "never" in this export, 1 is one day
    _write(tmp_path / "crm.csv", "channel,pdays\nwebsite,-1\nwebsite,1\nwebsite,-\n")
    mapping = _write(
        tmp_path / "mapping.yaml",
        """
        name: numbers
        sources: {crm: {path: crm.csv}}
        tables:
          leads:
            source: crm
            lead_id: {from: row_number}
            created_at: {row_order: {start: 2026-01-01, end: 2026-01-03}}
            columns: {source_channel: channel}
            attributes:
              pdays: {kind: numeric, values: {"-1": null}}
        """,
    )
    # when
    _ingest(mapping, tmp_path)
    # then: "-" is not a declared placeholder: an unreadable number, quarantined
    pdays = load_attributes(tmp_path / "warehouse").set_index("lead_id")["pdays"]
    assert pd.isna(pdays.loc[1]) and pdays.loc[2] == 1.0
    assert list_quarantine(tmp_path / "quarantine")["rules"].tolist() == ["parseable:pdays"]
