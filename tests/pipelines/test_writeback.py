"""Scores handed back to the CRM: files and a real PostgreSQL table, upserted by lead."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from pipelines.writeback import (
    SCORE_COLUMNS,
    WritebackError,
    validate_scores,
    write_scores_file,
    write_scores_postgres,
)
from tests.services import (
    PostgresParams,
    postgres_fixture,  # noqa: F401  (fixture)
    postgres_schema_fixture,  # noqa: F401  (fixture)
    unique_name,
)

FIRST = pd.Timestamp("2026-11-01 06:00:00.123456", tz="UTC")
SECOND = pd.Timestamp("2026-11-02 06:00:00", tz="UTC")


def _scores(lead_ids: list[int], *, version: str, at: pd.Timestamp, p0: float) -> pd.DataFrame:
    """One row per lead; probabilities p0, p0 + 0.1, ... (reasons with quotes and commas)."""
    probability = [round(p0 + 0.1 * i, 6) for i in range(len(lead_ids))]
    reasons = [
        json.dumps(
            [
                {
                    "feature": "demo_request_30d",
                    "label": f'demo requests, "30 days": {lead}',
                    "contribution": 0.1234,
                },
                {"feature": "country", "label": "country: Zürich\nCH", "contribution": -0.01},
            ],
            ensure_ascii=False,
        )
        for lead in lead_ids
    ]
    return pd.DataFrame(
        {
            "lead_id": pd.array(lead_ids, dtype="int64"),
            "probability": probability,
            "band": ["hot" if p >= 0.2 else "warm" if p >= 0.07 else "cold" for p in probability],
            "reasons": reasons,
            "model_version": version,
            "scored_at": pd.Series([at] * len(lead_ids), dtype="datetime64[us, UTC]"),
        }
    )


def _expected_after_two_writes() -> pd.DataFrame:
    first = _scores([1, 2, 3], version="1", at=FIRST, p0=0.01)
    second = _scores([3, 4, 2], version="2", at=SECOND, p0=0.3)
    merged = pd.concat([first[first["lead_id"] == 1], second], ignore_index=True)
    return merged.sort_values("lead_id").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_upsert_updates_adds_and_keeps(tmp_path, suffix):
    # given: leads 1-3 scored by version 1
    path = tmp_path / "crm" / f"lead_scores{suffix}"
    assert write_scores_file(_scores([1, 2, 3], version="1", at=FIRST, p0=0.01), path) == 3
    # when: version 2 scores 3 and 2 again and a new lead 4
    rows = write_scores_file(_scores([3, 4, 2], version="2", at=SECOND, p0=0.3), path)
    # then: lead 1 kept from the first write, 2 and 3 replaced, 4 added; nothing else left
    assert rows == 4
    stored = pd.read_csv(path, dtype=str) if suffix == ".csv" else pd.read_parquet(path)
    back = validate_scores(
        stored.astype({"lead_id": "int64", "probability": "float64"})
        if suffix == ".csv"
        else stored
    )
    pd.testing.assert_frame_equal(back, _expected_after_two_writes())
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_csv_file_is_plain_for_a_crm_import(tmp_path):
    path = tmp_path / "scores.csv"
    write_scores_file(_scores([7], version="3", at=FIRST, p0=0.25), path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert raw.columns.tolist() == list(SCORE_COLUMNS)
    assert raw.loc[0, "scored_at"] == "2026-11-01T06:00:00.123456Z"
    assert raw.loc[0, "model_version"] == "3"
    assert json.loads(raw.loc[0, "reasons"])[1]["label"] == "country: Zürich\nCH"


def test_other_file_types_are_refused(tmp_path):
    with pytest.raises(
        WritebackError, match=r"scores\.xlsx: unsupported file type.*\.csv or \.parquet"
    ):
        write_scores_file(_scores([1], version="1", at=FIRST, p0=0.1), tmp_path / "scores.xlsx")


def test_a_file_that_is_not_a_scores_file_is_left_alone(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("lead_id,email\n1,a@b.c\n")
    with pytest.raises(WritebackError, match=r"leads\.csv: the existing file is not a scores"):
        write_scores_file(_scores([1], version="1", at=FIRST, p0=0.1), path)
    assert path.read_text() == "lead_id,email\n1,a@b.c\n"


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("probability", 1.5, "probability must be a number within \\[0, 1\\]"),
        ("probability", None, "probability must be a number within \\[0, 1\\]"),
        ("band", "lukewarm", "band must be one of hot, warm, cold; got 'lukewarm'"),
        ("reasons", "not json", "reasons must be a JSON array"),
        ("lead_id", None, "lead_id is null"),
        ("model_version", "", "model_version is empty"),
    ],
)
def test_bad_frames_name_the_column(tmp_path, column, value, problem):
    scores = _scores([1, 2], version="1", at=FIRST, p0=0.1).astype({"lead_id": "object"})
    scores.loc[1, column] = value
    with pytest.raises(WritebackError, match=problem):
        write_scores_file(scores, tmp_path / "scores.parquet")
    assert not (tmp_path / "scores.parquet").exists()


def test_repeated_and_missing_columns_are_refused():
    scores = _scores([1, 2, 2], version="1", at=FIRST, p0=0.1)
    with pytest.raises(WritebackError, match="lead_id must be unique; repeated: 2"):
        validate_scores(scores)
    with pytest.raises(WritebackError, match=r"lacks required column.*reasons"):
        validate_scores(scores.drop(columns="reasons"))


# --------------------------------------------------------------------------------------------
# PostgreSQL (real server, own schema)
# --------------------------------------------------------------------------------------------


def _url(params: PostgresParams) -> str:
    password = f":{params.password}" if params.password else ""
    return (
        f"postgresql+psycopg://{params.user}{password}@{params.host}:{params.port}/"
        f"{params.database}"
    )


def _connect(params: PostgresParams) -> psycopg.Connection:
    return psycopg.connect(
        host=params.host,
        port=params.port,
        dbname=params.database,
        user=params.user,
        password=params.password,
        autocommit=True,
    )


def _table_rows(params: PostgresParams, schema: str, table: str) -> pd.DataFrame:
    with _connect(params) as conn:
        cur = conn.execute(
            sql.SQL(
                "SELECT lead_id, probability, band, reasons, model_version, scored_at "
                "FROM {} ORDER BY lead_id"
            ).format(sql.Identifier(schema, table))
        )
        return pd.DataFrame(cur.fetchall(), columns=list(SCORE_COLUMNS))


@pytest.fixture
def scores_table(postgres: PostgresParams, postgres_schema: str) -> Iterator[tuple[str, str]]:
    """A table name of its own inside the module's schema (the schema is created by the writer)."""
    yield postgres_schema, unique_name("scores_")


@pytest.mark.service
def test_postgres_create_then_upsert(postgres, scores_table):
    schema, table = scores_table
    # when: the table does not exist yet, then a second batch updates 2 and 3, adds 4
    first = write_scores_postgres(
        _scores([1, 2, 3], version="1", at=FIRST, p0=0.01),
        url=_url(postgres),
        table=f"{schema}.{table}",
    )
    second = write_scores_postgres(
        _scores([3, 4, 2], version="2", at=SECOND, p0=0.3),
        url=_url(postgres).replace("postgresql+psycopg://", "postgres://"),
        table=f"{schema}.{table}",
    )
    # then
    assert (first, second) == (3, 3)
    rows = _table_rows(postgres, schema, table)
    expected = _expected_after_two_writes()
    assert rows["lead_id"].tolist() == [1, 2, 3, 4]
    assert rows["probability"].tolist() == expected["probability"].tolist()
    assert rows["band"].tolist() == expected["band"].tolist()
    assert rows["model_version"].tolist() == ["1", "2", "2", "2"]
    assert [pd.Timestamp(t) for t in rows["scored_at"]] == [FIRST, SECOND, SECOND, SECOND]
    # jsonb comes back parsed, equal to what was written
    assert rows["reasons"].tolist() == [json.loads(r) for r in expected["reasons"]]
    with _connect(postgres) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchall()
        )
    assert types == {
        "lead_id": "bigint",
        "probability": "double precision",
        "band": "text",
        "reasons": "jsonb",
        "model_version": "text",
        "scored_at": "timestamp with time zone",
    }


@pytest.mark.service
def test_postgres_bad_frame_leaves_the_table_unchanged(postgres, scores_table):
    # given
    schema, table = scores_table
    target = f"{schema}.{table}"
    write_scores_postgres(
        _scores([1, 2], version="1", at=FIRST, p0=0.01), url=_url(postgres), table=target
    )
    before = _table_rows(postgres, schema, table)
    bad = _scores([2, 3], version="2", at=SECOND, p0=0.5)
    bad.loc[1, "probability"] = 1.2
    # when
    with pytest.raises(WritebackError, match="probability must be a number within"):
        write_scores_postgres(bad, url=_url(postgres), table=target)
    # then
    pd.testing.assert_frame_equal(_table_rows(postgres, schema, table), before)


@pytest.mark.service
def test_postgres_failure_inside_the_transaction_rolls_everything_back(postgres, scores_table):
    # given: a table whose own rule refuses one of the new rows (after the copy)
    schema, table = scores_table
    target = f"{schema}.{table}"
    write_scores_postgres(
        _scores([1, 2], version="1", at=FIRST, p0=0.01), url=_url(postgres), table=target
    )
    with _connect(postgres) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT below_09 CHECK (probability < 0.9)").format(
                sql.Identifier(schema, table)
            )
        )
    before = _table_rows(postgres, schema, table)
    # when: lead 1 would be updated and 5 added, but lead 2's 0.95 breaks the rule
    batch = _scores([1, 5, 2], version="2", at=SECOND, p0=0.75)
    with pytest.raises(WritebackError, match="below_09") as raised:
        write_scores_postgres(batch, url=_url(postgres), table=target)
    # then: nothing changed, and the message names the table
    assert target in str(raised.value)
    pd.testing.assert_frame_equal(_table_rows(postgres, schema, table), before)


def test_postgres_bad_table_name_is_refused_before_connecting():
    with pytest.raises(WritebackError, match=r"must be a table name or schema\.table"):
        write_scores_postgres(
            _scores([1], version="1", at=FIRST, p0=0.1),
            url="postgresql://u:pw@127.0.0.1:1/db",
            table="a.b.c",
        )


def test_postgres_unreachable_server_names_the_url_without_password():
    with pytest.raises(WritebackError) as raised:
        write_scores_postgres(
            _scores([1], version="1", at=FIRST, p0=0.1),
            url="postgresql://crm:hunter2@127.0.0.1:1/db",
            table="crm.lead_scores",
        )
    message = str(raised.value)
    assert "hunter2" not in message
    assert "postgresql://crm:***@127.0.0.1:1/db table 'crm.lead_scores'" in message
