"""Reading foreign CRM exports: delimited text, Parquet and PostgreSQL, on real files/tables."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from pipelines.sources import (
    SourceError,
    read_csv,
    read_parquet,
    read_postgres,
    read_source,
    redact_url,
)
from tests.services import (
    PostgresParams,
    postgres_fixture,  # noqa: F401  (fixture)
    postgres_schema_fixture,  # noqa: F401  (fixture)
)

UCI_BANK = Path("/work/shared/data/uci-bank-marketing/bank-full.csv")

# The first lines of the UCI bank-marketing file, plus a quoted ";" and a quoted line break.
UCI_LIKE = (
    '"age";"job";"marital";"balance";"y"\n'
    '58;"management";"married";2143;"no"\n'
    '44;"technician; senior";"single";29;"no"\n'
    '33;"entre\npreneur";"";2;"yes"\n'
)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --------------------------------------------------------------------------------------------
# Delimited text
# --------------------------------------------------------------------------------------------


def test_semicolon_file_with_quotes_keeps_every_cell_as_written(tmp_path):
    # given: the UCI format (";" with quoted strings), a ";" and a line break inside quotes
    path = _write(tmp_path / "bank.csv", UCI_LIKE)
    # when
    frame = read_csv(path)
    # then
    assert frame.columns.tolist() == ["age", "job", "marital", "balance", "y"]
    assert frame.to_dict("list") == {
        "age": ["58", "44", "33"],
        "job": ["management", "technician; senior", "entre\npreneur"],
        "marital": ["married", "single", ""],
        "balance": ["2143", "29", "2"],
        "y": ["no", "no", "yes"],
    }
    assert all(dtype.kind == "O" for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.RangeIndex)


@pytest.mark.parametrize(("delimiter", "suffix"), [("\t", ".tsv"), ("|", ".txt"), (",", ".csv")])
def test_delimiter_is_sniffed(tmp_path, delimiter, suffix):
    # given: a comma inside a quoted field, which must not fool the sniffer
    rows = [["lead_id", "company", "score"], ["1", "Acme", "0.5"], ["2", '"Foo, Inc"', ""]]
    path = _write(tmp_path / f"export{suffix}", "\n".join(delimiter.join(r) for r in rows) + "\n")
    # when
    frame = read_csv(path)
    # then
    assert frame.to_dict("list") == {
        "lead_id": ["1", "2"],
        "company": ["Acme", "Foo, Inc"],
        "score": ["0.5", ""],
    }


def test_explicit_delimiter_is_used(tmp_path):
    path = _write(tmp_path / "x.txt", "a;b|c\n1;2|3\n")
    assert read_csv(path, delimiter="|").columns.tolist() == ["a;b", "c"]


def test_cp1252_file_is_detected(tmp_path):
    # given: a European export (é and € are not UTF-8 here)
    path = _write(tmp_path / "leads.csv", "name;city\nRené;Besançon\nZoë;€uro\n", "cp1252")
    # when
    frame = read_csv(path)
    # then
    assert frame.to_dict("list") == {"name": ["René", "Zoë"], "city": ["Besançon", "€uro"]}


def test_non_utf8_byte_after_the_sniffed_head_is_still_detected(tmp_path):
    # given: 100 KB of ASCII, then a cp1252 "é" far beyond the 64 KB looked at first
    body = "".join(f"{i},plain\n" for i in range(12_000))
    path = _write(tmp_path / "late.csv", "id,name\n" + body + "99999,Café\n", "cp1252")
    # when
    frame = read_csv(path)
    # then
    assert len(frame) == 12_001
    assert frame["name"].iloc[-1] == "Café"


def test_utf8_bom_is_dropped_from_the_first_column_name(tmp_path):
    path = _write(tmp_path / "bom.csv", "lead_id,city\n1,Zürich\n", "utf-8-sig")
    frame = read_csv(path)
    assert frame.columns.tolist() == ["lead_id", "city"]
    assert frame["city"].tolist() == ["Zürich"]


def test_explicit_wrong_encoding_says_so(tmp_path):
    path = _write(tmp_path / "leads.csv", "name\nRené\n", "cp1252")
    with pytest.raises(SourceError, match=r"leads\.csv: cannot be decoded as utf-8"):
        read_csv(path, encoding="utf-8")
    with pytest.raises(SourceError, match="unknown encoding 'klingon'"):
        read_csv(path, encoding="klingon")


def test_explicit_encoding_is_used(tmp_path):
    path = _write(tmp_path / "leads.csv", "name\nRené\n", "latin-1")
    assert read_csv(path, encoding="latin-1")["name"].tolist() == ["René"]


def test_duplicate_headers_are_listed(tmp_path):
    path = _write(tmp_path / "dup.csv", "id,email,name,email,id\n1,a,b,c,1\n")
    with pytest.raises(SourceError, match=r"dup\.csv: duplicate column names.*'id', 'email'"):
        read_csv(path)


def test_embedded_newline_and_doubled_quotes_in_a_value(tmp_path):
    path = _write(tmp_path / "notes.csv", 'id,note\r\n1,"line one\r\nsaid ""hi"""\r\n2,x\r\n')
    frame = read_csv(path)
    assert frame["note"].tolist() == ['line one\r\nsaid "hi"', "x"]
    assert frame["id"].tolist() == ["1", "2"]


def test_gzip_file(tmp_path):
    path = tmp_path / "bank.csv.gz"
    with gzip.open(path, "wb") as f:
        f.write(UCI_LIKE.encode("utf-8"))
    frame = read_csv(path)
    assert len(frame) == 3
    assert frame["job"].tolist()[1] == "technician; senior"


def test_header_only_file_has_columns_and_no_rows(tmp_path):
    frame = read_csv(_write(tmp_path / "empty.csv", "a;b;c"))
    assert frame.columns.tolist() == ["a", "b", "c"]
    assert len(frame) == 0


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.csv", None, "file not found"),
        ("blank.csv", "", "the file is empty"),
        ("short.csv", "a,b\n1,2\n3\n", "Expected 2 columns, got 1"),
        ("broken.csv.gz", "not gzip at all", "cannot read the file"),
    ],
)
def test_unreadable_files_are_named_with_the_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        _write(path, content)
    with pytest.raises(SourceError, match=problem) as raised:
        read_csv(path)
    assert str(path) in str(raised.value)


def test_real_uci_bank_marketing_file():
    if not UCI_BANK.is_file():
        pytest.skip(f"{UCI_BANK} is absent (the UCI bank-marketing export of ../shared/data)")
    frame = read_source(UCI_BANK)
    assert frame.shape == (45211, 17)
    assert frame.columns[-1] == "y"
    assert set(frame["y"]) == {"yes", "no"}
    assert frame.loc[0, "age"] == "58" and frame.loc[0, "job"] == "management"


# --------------------------------------------------------------------------------------------
# Parquet and dispatch
# --------------------------------------------------------------------------------------------


def test_parquet_round_trip_keeps_types(tmp_path):
    # given
    original = pd.DataFrame(
        {
            "lead_id": pd.array([1, 2], dtype="int64"),
            "amount": [1.5, None],
            "won": [True, False],
            "closed_at": pd.to_datetime(["2026-01-01", "2026-02-01"], utc=True),
            "city": ["Zürich", None],
        }
    )
    path = tmp_path / "deals.parquet"
    original.to_parquet(path, index=False)
    # when
    frame = read_source(path)
    # then
    pd.testing.assert_frame_equal(frame, original)


def test_corrupt_parquet_is_named(tmp_path):
    path = _write(tmp_path / "bad.parquet", "this is not parquet")
    with pytest.raises(SourceError, match=r"bad\.parquet: cannot read the Parquet file"):
        read_parquet(path)


def test_unsupported_suffix_lists_the_supported_ones(tmp_path):
    path = _write(tmp_path / "leads.xlsx", "binary")
    with pytest.raises(SourceError, match=r"leads\.xlsx: unsupported file type") as raised:
        read_source(path)
    for suffix in (".csv", ".csv.gz", ".tsv", ".txt", ".parquet", "postgresql://"):
        assert suffix in str(raised.value)


def test_options_that_do_not_apply_are_refused(tmp_path):
    csv_path = _write(tmp_path / "a.csv", "a\n1\n")
    with pytest.raises(SourceError, match="only apply to PostgreSQL"):
        read_source(csv_path, table="leads")
    with pytest.raises(SourceError, match="unsupported URL scheme 'mysql'"):
        read_source("mysql://root:hunter2@db/crm", table="leads")


def test_redacted_url_hides_the_password():
    assert redact_url("postgresql://crm:s3cr%40t@db:5432/crm") == "postgresql://crm:***@db:5432/crm"
    assert redact_url("postgresql://crm@db/crm") == "postgresql://crm@db/crm"


# --------------------------------------------------------------------------------------------
# PostgreSQL (real server, own schema)
# --------------------------------------------------------------------------------------------


def _url(params: PostgresParams, scheme: str = "postgresql") -> str:
    password = f":{params.password}" if params.password else ""
    return f"{scheme}://{params.user}{password}@{params.host}:{params.port}/{params.database}"


@pytest.fixture(scope="module")
def crm_table(postgres: PostgresParams, postgres_schema: str) -> str:
    """``<schema>."Deals"``: a mixed-case table with typed columns and NULLs."""
    with psycopg.connect(
        host=postgres.host,
        port=postgres.port,
        dbname=postgres.database,
        user=postgres.user,
        password=postgres.password,
        autocommit=True,
    ) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
        table = sql.Identifier(postgres_schema, "Deals")
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (lead_id bigint, amount numeric(12, 2), stage text, "
                "closed_at timestamptz, created_at timestamp)"
            ).format(table)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES (1, 1200.50, 'won', '2026-03-01 10:00+02', "
                "'2026-01-01 08:00'), (2, NULL, 'lost; late', NULL, '2026-01-02 09:30')"
            ).format(table)
        )
    return f"{postgres_schema}.Deals"


@pytest.mark.service
@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgres_table_is_read_with_types(postgres, crm_table, scheme):
    # when
    frame = read_source(_url(postgres, scheme), table=crm_table)
    # then
    assert frame["lead_id"].dtype == "int64"
    assert frame["lead_id"].tolist() == [1, 2]
    assert frame["amount"].dtype == "float64"
    assert frame["amount"].iloc[0] == 1200.5 and pd.isna(frame["amount"].iloc[1])
    assert frame["stage"].tolist() == ["won", "lost; late"]
    assert isinstance(frame["closed_at"].dtype, pd.DatetimeTZDtype)
    assert frame["closed_at"].iloc[0] == pd.Timestamp("2026-03-01 08:00", tz="UTC")
    assert pd.isna(frame["closed_at"].iloc[1])
    assert frame["created_at"].dt.tz is None


@pytest.mark.service
def test_postgres_query_is_read(postgres, crm_table):
    schema, _ = crm_table.split(".")
    query = f'SELECT lead_id, stage FROM "{schema}"."Deals" WHERE stage LIKE \'%;%\''
    frame = read_postgres(_url(postgres), query=query)
    assert frame.to_dict("list") == {"lead_id": [2], "stage": ["lost; late"]}


@pytest.mark.service
def test_postgres_query_cannot_change_data(postgres, crm_table):
    schema, _ = crm_table.split(".")
    with pytest.raises(SourceError, match="must be a SELECT"):
        read_postgres(_url(postgres), query=f'DELETE FROM "{schema}"."Deals"')
    with pytest.raises(SourceError, match="read-only transaction"):
        read_postgres(_url(postgres), query=f'SELECT 1; DELETE FROM "{schema}"."Deals"')
    assert len(read_postgres(_url(postgres), table=crm_table)) == 2


@pytest.mark.service
def test_postgres_bad_table_names_the_source_without_password(postgres, postgres_schema):
    url = (
        f"postgresql://{postgres.user}:hunter2@{postgres.host}:{postgres.port}/{postgres.database}"
    )
    with pytest.raises(SourceError) as raised:
        read_postgres(url, table=f"{postgres_schema}.no_such_table")
    message = str(raised.value)
    assert "hunter2" not in message
    assert f"{postgres.user}:***@" in message
    assert f"{postgres_schema}.no_such_table" in message
    assert "does not exist" in message


def test_postgres_needs_exactly_one_of_table_and_query():
    with pytest.raises(SourceError, match="exactly one of table or query"):
        read_postgres("postgresql://u:pw@127.0.0.1/db")
    with pytest.raises(SourceError, match="exactly one of table or query"):
        read_postgres("postgresql://u:pw@127.0.0.1/db", table="a", query="SELECT 1")


def test_postgres_unreachable_server_is_a_source_error():
    with pytest.raises(SourceError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/db table 'a'"):
        read_postgres("postgresql://u:pw@127.0.0.1:1/db", table="a")
