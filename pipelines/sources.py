"""Read foreign CRM exports: delimited text files, Parquet files and PostgreSQL tables.

Exports of other systems rarely look like leadscore's own files: the UCI bank-marketing file
is ``;``-separated with every string quoted, European CRMs write ``cp1252`` with a ``;``,
spreadsheets add a UTF-8 byte-order mark, a data warehouse hands out a table or a query.
These readers return the data *as it is* (no mapping to the contracts yet):

- :func:`read_csv`: every cell as the string written (an empty cell is ``""``, nothing is
  inferred or turned into NaN); delimiter and encoding detected unless given;
- :func:`read_parquet`: the stored column types;
- :func:`read_postgres`: a table or a ``SELECT``, with pandas types (``timestamptz`` columns
  come back tz-aware, in UTC);
- :func:`read_source`: one of the above, chosen by the file suffix or the URL scheme.

Every failure is a :class:`SourceError` naming the source (the path, or the URL without its
password plus the table or query) and the problem.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from sqlalchemy import URL

__all__ = [
    "CSV_SUFFIXES",
    "DELIMITERS",
    "PARQUET_SUFFIXES",
    "POSTGRES_SCHEMES",
    "SourceError",
    "is_postgres_url",
    "postgres_sqlalchemy_url",
    "read_csv",
    "read_parquet",
    "read_postgres",
    "read_source",
    "redact_url",
]

#: File suffixes read as delimited text (gzip-compressed when they end with ``.gz``).
CSV_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet",)
#: URL schemes read as PostgreSQL (the first two are rewritten to the psycopg 3 driver).
POSTGRES_SCHEMES: tuple[str, ...] = ("postgres", "postgresql", "postgresql+psycopg")
#: Delimiters :func:`read_csv` recognises when none is given.
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
#: Bytes of the file looked at to detect the delimiter (and read for the header).
SNIFF_BYTES = 64 * 1024
#: Encodings tried in turn when none is given (latin-1 decodes any byte).
FALLBACK_ENCODINGS: tuple[str, ...] = ("utf-8", "cp1252", "latin-1")

_UTF8_BOM = "\ufeff"
_SECRET_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


class SourceError(ValueError):
    """A source cannot be read: the message names the source and the problem."""


# --------------------------------------------------------------------------------------------
# Delimited text
# --------------------------------------------------------------------------------------------


def read_csv(
    path: Path | str, *, delimiter: str | None = None, encoding: str | None = None
) -> pd.DataFrame:
    """Read a delimited text export with every cell as the string written.

    Quoted fields (``"..."``, a quote inside doubled) may hold the delimiter and line breaks.
    Nothing is inferred: ``007`` stays ``"007"`` and an empty cell is ``""``, never NaN.

    Args:
        path: A ``.csv``, ``.tsv`` or ``.txt`` file, optionally gzip-compressed (``.gz``).
        delimiter: Field separator; ``None`` detects it from the first 64 KB among ``,``
            ``;`` tab and ``|`` (with no candidate in the header: one column, or tab for
            ``.tsv``).
        encoding: Text encoding (any Python codec name); ``None`` detects it: UTF-8 (a
            byte-order mark is dropped), else cp1252, else latin-1.

    Returns:
        One ``object`` column of strings per header field, with a fresh ``RangeIndex``.

    Raises:
        SourceError: The file is missing, empty, not of a supported type, cannot be decoded
            with the given encoding, has duplicate header names or malformed rows.
    """
    path = Path(path)
    if not _has_suffix(path, CSV_SUFFIXES):
        raise SourceError(
            f"{path}: not a delimited text file; expected one of {', '.join(CSV_SUFFIXES)}"
        )
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise SourceError(
            f"{path}: delimiter must be one character other than a quote or a line break, "
            f"not {delimiter!r}"
        )
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as e:
            raise SourceError(f"{path}: unknown encoding {encoding!r}") from e
    head = _read_head(path)
    if not head.strip():
        raise SourceError(f"{path}: the file is empty (no header line)")

    if encoding is not None:
        decoded = _decode_head(head, encoding)
        if decoded is None:
            raise SourceError(
                f"{path}: cannot be decoded as {encoding} (its first bytes already fail); "
                "leave the encoding out to detect it"
            )
        text, candidates = decoded, [encoding]
    else:
        text, candidates = _detect_head(path, head)
    sep = delimiter or _sniff_delimiter(text, path)
    names = _header(text, sep, path)

    last_error: Exception | None = None
    for enc in candidates:
        try:
            frame = _read_text_table(path, names, sep, enc)
        except (UnicodeError, _arrow_invalid()) as e:
            if not _is_decoding_error(e):
                raise SourceError(f"{path}: cannot parse the file: {_first_line(e)}") from e
            last_error = e
            if encoding is not None:
                raise SourceError(
                    f"{path}: cannot be decoded as {encoding}: {_first_line(e)}; "
                    "leave the encoding out to detect it"
                ) from e
            continue
        except OSError as e:  # gzip: not a gzip file, truncated stream
            raise SourceError(f"{path}: cannot read the file: {_first_line(e)}") from e
        frame.index = pd.RangeIndex(len(frame))
        return frame
    raise SourceError(  # only after a byte-order mark: latin-1 decodes anything
        f"{path}: cannot decode the file as {' or '.join(candidates)}: {last_error}"
    )


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def _read_head(path: Path) -> bytes:
    """The first :data:`SNIFF_BYTES` (more if the first line is longer), decompressed."""
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head: bytes = f.read(SNIFF_BYTES)
            while b"\n" not in head:
                more: bytes = f.read(SNIFF_BYTES)
                if not more:
                    break
                head += more
    except OSError as e:
        raise SourceError(f"{path}: cannot read the file: {_first_line(e)}") from e
    return head


def _decode_head(head: bytes, encoding: str) -> str | None:
    """``head`` decoded (a multi-byte character cut at the end is left out), or None."""
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeError:
        return None
    return text.removeprefix(_UTF8_BOM)


def _detect_head(path: Path, head: bytes) -> tuple[str, list[str]]:
    """The decoded head and the encodings to try on the whole file, most likely first."""
    if head.startswith(codecs.BOM_UTF8):
        return head[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), ["utf-8"]
    for i, encoding in enumerate(FALLBACK_ENCODINGS):
        text = _decode_head(head, encoding)
        if text is not None:
            return text, list(FALLBACK_ENCODINGS[i:])
    raise SourceError(f"{path}: cannot decode the file")  # latin-1 never fails


def _sniff_delimiter(text: str, path: Path) -> str:
    """The delimiter among :data:`DELIMITERS` of the sampled text."""
    sample = text
    cut = sample.rfind("\n")
    if cut > 0:  # the last line of the sample may be cut short
        sample = sample[: cut + 1]
    counts = _counts_outside_quotes(_first_line_outside_quotes(sample))
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        sniffed = ""
    if not any(counts.values()):  # one column: the delimiter does not matter for the header
        return "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    if sniffed in DELIMITERS and counts[sniffed] > 0:
        return sniffed
    return max(DELIMITERS, key=lambda d: counts[d])  # the first candidate wins a tie


def _first_line_outside_quotes(text: str) -> str:
    """The first record of ``text`` (a line break inside quotes does not end it)."""
    quoted = False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in "\r\n" and not quoted:
            return text[:i]
    return text


def _counts_outside_quotes(line: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in DELIMITERS:
            counts[char] += 1
    return counts


def _header(text: str, delimiter: str, path: Path) -> list[str]:
    """Column names of the first record; duplicates are refused."""
    try:
        names = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except (StopIteration, csv.Error) as e:
        raise SourceError(f"{path}: cannot read the header line: {e}") from e
    duplicates = [name for name, n in Counter(names).items() if n > 1]
    if duplicates:
        raise SourceError(
            f"{path}: duplicate column names in the header: {', '.join(map(repr, duplicates))}"
        )
    return names


def _read_text_table(path: Path, names: list[str], delimiter: str, encoding: str) -> pd.DataFrame:
    """Every row after the header with every column as a string (pyarrow, fast).

    The header is read as a data row and dropped: pyarrow's ``skip_rows`` does not respect
    quotes, and the names were already parsed from the header.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    codec = codecs.lookup(encoding).name
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(
            column_names=names,
            encoding="utf8" if codec in ("utf-8", "utf-8-sig") else encoding,
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, quote_char='"', double_quote=True, newlines_in_values=True
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return table.slice(1).to_pandas()


def _arrow_invalid() -> type[Exception]:
    import pyarrow as pa

    return pa.ArrowInvalid


def _is_decoding_error(error: Exception) -> bool:
    return isinstance(error, UnicodeError) or "invalid utf8" in str(error).lower()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def read_parquet(path: Path | str) -> pd.DataFrame:
    """Read a Parquet file with its stored column types.

    A named index stored by pandas becomes a column again; the result has a fresh
    ``RangeIndex``.

    Raises:
        SourceError: The file is missing or is not readable Parquet.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise SourceError(f"{path}: cannot read the Parquet file: {_first_line(e)}") from e
    if not isinstance(frame.index, pd.RangeIndex) and any(n is not None for n in frame.index.names):
        frame = frame.reset_index()
    frame.index = pd.RangeIndex(len(frame))
    return frame


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def is_postgres_url(value: str) -> bool:
    """True if ``value`` is a URL with one of the :data:`POSTGRES_SCHEMES`."""
    scheme, sep, _ = value.partition("://")
    return bool(sep) and scheme.lower() in POSTGRES_SCHEMES


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe for messages and logs)."""
    return _SECRET_IN_URL.sub(r"\1***@", url)


def postgres_sqlalchemy_url(url: str) -> URL:
    """The SQLAlchemy URL of ``url`` with the psycopg 3 driver.

    ``postgres://`` and ``postgresql://`` are rewritten to ``postgresql+psycopg://``.

    Raises:
        SourceError: ``url`` is not a PostgreSQL URL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise SourceError(f"{redact_url(url)}: not a valid database URL: {e}") from e
    if parsed.drivername.lower() not in POSTGRES_SCHEMES:
        raise SourceError(
            f"{redact_url(url)}: unsupported database URL scheme {parsed.drivername!r}; "
            f"expected one of {', '.join(s + '://' for s in POSTGRES_SCHEMES)}"
        )
    return parsed.set(drivername="postgresql+psycopg")


def _split_table(table: str, source: str) -> tuple[str | None, str]:
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise SourceError(
            f"{source}: table {table!r} must be a table name or schema.table (no other dots)"
        )
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _select_statement(query: str, source: str) -> str:
    statement = query.strip().rstrip(";").strip()
    first = re.match(r"\(*\s*(\w+)", statement)
    if not first or first.group(1).lower() not in ("select", "with", "table", "values"):
        raise SourceError(f"{source}: the query must be a SELECT, got {query[:60]!r}")
    return statement


def read_postgres(url: str, *, table: str | None = None, query: str | None = None) -> pd.DataFrame:
    """Read a PostgreSQL table or the result of a ``SELECT``.

    The read runs in a read-only transaction. Columns keep their types as pandas maps them
    (``bigint`` -> ``int64``, or ``float64`` with NULLs; ``numeric`` -> ``float64``;
    ``timestamptz`` -> ``datetime64[ns, UTC]``; ``timestamp`` -> naive ``datetime64``; text ->
    ``object``).

    Args:
        url: ``postgresql+psycopg://user:password@host:port/db`` (``postgresql://`` and
            ``postgres://`` are accepted and use psycopg 3 as well).
        table: A table (``name`` or ``schema.name``, quoted as given: case matters).
        query: A ``SELECT`` (or ``WITH ... SELECT``) statement.

    Returns:
        The rows with a fresh ``RangeIndex``.

    Raises:
        SourceError: Not exactly one of ``table`` / ``query``, a URL that is not PostgreSQL, a
            connection failure or an SQL error (message without the password).
    """
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    redacted = redact_url(url)
    if (table is None) == (query is None):
        raise SourceError(f"{redacted}: give exactly one of table or query")
    source = f"{redacted} table {table!r}" if table is not None else f"{redacted} query {query!r}"
    sa_url = postgres_sqlalchemy_url(url)
    if table is not None:
        schema, name = _split_table(table, source)
    else:
        assert query is not None
        statement = _select_statement(query, source)

    engine = sa.create_engine(
        sa_url,
        poolclass=NullPool,
        # Every transaction of the session is read-only, so a query cannot change data.
        connect_args={"connect_timeout": 10, "options": "-c default_transaction_read_only=on"},
    )
    try:
        with engine.connect() as conn:
            if table is not None:
                quote = engine.dialect.identifier_preparer.quote_identifier
                target = f"{quote(schema)}.{quote(name)}" if schema else quote(name)
                statement = f"SELECT * FROM {target}"
            # A plain string goes to the driver as written (text() would parse ":name"),
            # but with (empty) parameters, so psycopg reads "%" as a placeholder: double it.
            frame = pd.read_sql_query(statement.replace("%", "%%"), conn)
            conn.rollback()
    except SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e
        raise SourceError(f"{source}: {_first_line(cause)}") from e
    finally:
        engine.dispose()
    frame.index = pd.RangeIndex(len(frame))
    return frame


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def read_source(
    path_or_url: Path | str,
    *,
    delimiter: str | None = None,
    encoding: str | None = None,
    table: str | None = None,
    query: str | None = None,
) -> pd.DataFrame:
    """Read a file (by its suffix) or a PostgreSQL URL (by its scheme).

    Args:
        path_or_url: A file (see :data:`CSV_SUFFIXES`, :data:`PARQUET_SUFFIXES`) or a
            ``postgres://`` / ``postgresql://`` / ``postgresql+psycopg://`` URL.
        delimiter: For delimited text only (see :func:`read_csv`).
        encoding: For delimited text only.
        table: For PostgreSQL only (see :func:`read_postgres`).
        query: For PostgreSQL only.

    Raises:
        SourceError: An unsupported suffix or scheme, options that do not apply to the
            source, or whatever the reader raises.
    """
    text = str(path_or_url)
    if isinstance(path_or_url, str) and is_postgres_url(path_or_url):
        if delimiter is not None or encoding is not None:
            raise SourceError(
                f"{redact_url(text)}: delimiter and encoding only apply to delimited text files"
            )
        return read_postgres(text, table=table, query=query)
    if "://" in text and not Path(text).exists():
        scheme = text.partition("://")[0]
        raise SourceError(
            f"{redact_url(text)}: unsupported URL scheme {scheme!r}; expected one of "
            f"{', '.join(s + '://' for s in POSTGRES_SCHEMES)}"
        )
    path = Path(path_or_url)
    if table is not None or query is not None:
        raise SourceError(f"{path}: table and query only apply to PostgreSQL URLs")
    if _has_suffix(path, CSV_SUFFIXES):
        return read_csv(path, delimiter=delimiter, encoding=encoding)
    if _has_suffix(path, PARQUET_SUFFIXES):
        if delimiter is not None or encoding is not None:
            raise SourceError(f"{path}: delimiter and encoding only apply to delimited text")
        return read_parquet(path)
    raise SourceError(
        f"{path}: unsupported file type; supported: "
        f"{', '.join((*CSV_SUFFIXES, *PARQUET_SUFFIXES))} files and PostgreSQL URLs "
        f"({', '.join(s + '://' for s in POSTGRES_SCHEMES)})"
    )
