"""Safe readers for MIMIC-format csv/csv.gz files, checked against the declared schemas.

Every reader turns a missing file, a truncated gzip, a missing column, a value of the wrong type
(naming the column, the line and the value) or an empty required table into a one-line
:class:`~client.errors.MimicFileError`. An empty optional table gives a warning and no rows.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from client.errors import MimicFileError
from client.mimic.schemas import TABLES, TableSpec

__all__ = ["TableSpec", "TABLES", "resolve_table_path", "read_table", "iter_table_chunks"]
log = logging.getLogger(__name__)


def resolve_table_path(root: Path | str, spec: TableSpec) -> Path:
    """Return ``root/stem.csv.gz`` or ``root/stem.csv``, whichever exists."""
    root = Path(root)
    for suffix in (".csv.gz", ".csv"):
        path = root / f"{spec.stem}{suffix}"
        if path.is_file():
            return path
    raise MimicFileError(f"{root / spec.stem}.csv.gz: file not found (also looked for .csv)")


def _check_header(path: Path, spec: TableSpec, wanted: Sequence[str]) -> None:
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise MimicFileError(f"{path}: empty file (no header row)") from None
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise MimicFileError(f"{path}: unreadable or truncated file ({err})") from None
    missing = [c for c in wanted if c not in header]
    if missing:
        raise MimicFileError(
            f"{path}: missing column '{missing[0]}' (header has: {', '.join(header)})"
        )


def _dtypes(spec: TableSpec, usecols: Sequence[str]) -> dict[str, str]:
    """pandas dtypes of the declared schema (timestamps are read as text, parsed after)."""
    dtypes: dict[str, str] = {}
    for name in usecols:
        field = spec.schema.field(name)
        if pa.types.is_integer(field.type):
            dtypes[name] = "Int64" if field.nullable else "int64"
        elif pa.types.is_floating(field.type):
            dtypes[name] = "float64"
        else:
            dtypes[name] = "string"
    return dtypes


def _line(index: object) -> int:
    """File line of a data row (the header is line 1) from its position in the whole table."""
    return int(index) + 2  # type: ignore[call-overload]


def _first_bad_value(path: Path, spec: TableSpec, cols: Sequence[str], start: int,
                     chunksize: int) -> str:
    """Where a chunk that did not parse breaks the schema: column, line and value."""
    raw = pd.read_csv(path, usecols=list(cols), dtype=str, skiprows=range(1, start + 1),
                      nrows=chunksize)
    raw.index += start
    for name in cols:
        field = spec.schema.field(name)
        values = raw[name]
        if not field.nullable and values.isna().any():
            return f"column '{name}', line {_line(values.index[values.isna()][0])}: empty, " \
                   f"but {name} is never empty in {spec.stem}"
        if pa.types.is_integer(field.type) or pa.types.is_floating(field.type):
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            if pa.types.is_integer(field.type):
                bad |= numbers.notna() & (numbers % 1 != 0)
            if bad.any():
                where = values.index[bad][0]
                return (f"column '{name}', line {_line(where)}: {values[where]!r} is not "
                        f"{'an integer' if pa.types.is_integer(field.type) else 'a number'}")
    return "a value does not match the declared schema"


def _parse_dates(frame: pd.DataFrame, spec: TableSpec, path: Path) -> pd.DataFrame:
    for col in spec.dates:
        if col in frame.columns:
            parsed = pd.to_datetime(frame[col], format="ISO8601", errors="coerce")
            bad = parsed.isna() & frame[col].notna() & (frame[col] != "")
            if bad.any():
                where = frame.index[bad][0]
                raise MimicFileError(f"{path}: column '{col}', line {_line(where)}: "
                                     f"{frame[col][where]!r} is not a date-time")
            frame[col] = parsed
    return frame


def _empty(spec: TableSpec, cols: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _dtypes(spec, cols).items()})
    return _parse_dates(frame, spec, Path(spec.stem))


def iter_table_chunks(
    root: Path | str,
    spec: TableSpec,
    *,
    usecols: Sequence[str] | None = None,
    chunksize: int = 250_000,
) -> Iterator[pd.DataFrame]:
    """Stream a (possibly huge) table in chunks of ``chunksize`` rows, typed and dates parsed.

    Every chunk is checked against the table's schema. Raises :class:`MimicFileError` naming the
    file (and the column, line and value) for any read problem, also mid-stream; an optional table
    with a header but no rows yields nothing after one warning.
    """
    path = resolve_table_path(root, spec)
    cols = list(usecols or spec.required)
    _check_header(path, spec, cols)
    rows = 0
    try:
        reader = pd.read_csv(path, usecols=cols, dtype=_dtypes(spec, cols), chunksize=chunksize)
        for chunk in reader:
            rows += len(chunk)
            yield _parse_dates(chunk, spec, path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise MimicFileError(f"{path}: truncated or corrupt gzip after {rows} rows ({err})") from None
    except pd.errors.ParserError as err:
        raise MimicFileError(f"{path}: malformed CSV after {rows} rows ({err})") from None
    except (ValueError, TypeError):
        raise MimicFileError(f"{path}: {_first_bad_value(path, spec, cols, rows, chunksize)}"
                             ) from None
    if rows == 0:
        if not spec.optional:
            raise MimicFileError(f"{path}: table has a header but no rows")
        log.warning("%s: table has a header but no rows; its values are treated as missing", path)


def read_table(
    root: Path | str, spec: TableSpec, *, usecols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a whole (small) table; see :func:`iter_table_chunks` for the big ones."""
    chunks = list(iter_table_chunks(root, spec, usecols=usecols))
    if not chunks:
        return _empty(spec, list(usecols or spec.required))
    return pd.concat(chunks, ignore_index=True)
