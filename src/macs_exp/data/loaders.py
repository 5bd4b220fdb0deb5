"""Readers for the rating files in the layouts their publishers distribute.

Every reader goes through one path: pandas' C parser on the whole file, then a vectorised check
of the columns. Only when that check fails (a wrong field count, a non-numeric rating, a missing
id, ...) is the file scanned again line by line, to name the first bad line or to drop the bad
ones; a clean ML-1M therefore loads in a fraction of a second instead of the seconds a Python
loop over a million lines would take.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from macs_exp.schema import UserError

log = logging.getLogger("macs_exp")

# Columns of the frame every reader returns (ids as in the file, rating and timestamp as float64).
COLUMNS = ("user", "item", "rating", "timestamp")
ON_BAD_ROWS = ("error", "skip")
# Stands in for multi-character separators (ML-1M's "::"), which pandas' C parser cannot split on.
_UNIT_SEP = "\x1f"


class DataError(UserError, ValueError):
    """A dataset that is missing, unreadable or malformed; the message says how to fix it."""


@dataclass(frozen=True)
class TableLayout:
    sep: str
    header: bool
    encoding: str
    # 0-based positions, or header names (only when ``header``).
    user_col: int | str
    item_col: int | str
    rating_col: int | str
    timestamp_col: int | str | None
    # int: every id must be an integer (MovieLens, Douban); str: ids are labels kept verbatim,
    # leading zeros included (ISBNs); auto: whatever pandas infers (generic tables).
    user_ids: str = "auto"
    item_ids: str = "auto"
    # The exact field count of a row; None takes it from the header, else from the first row.
    n_fields: int | None = None
    # BookCrossing writes a quote inside a quoted field as \".
    backslash_escapes: bool = False
    # The (lowest, highest) rating the publisher's scale allows: a rating outside it is a malformed
    # row, not data. None (generic tables, which declare no scale) leaves ratings unchecked.
    rating_scale: tuple[float, float] | None = None


@dataclass(frozen=True)
class RawFormat:
    file: str
    layout: TableLayout
    # Other files of the distribution, named in the "not found" message only.
    companions: tuple[str, ...] = ()


RAW_FORMATS: dict[str, RawFormat] = {
    "ml100k": RawFormat(
        "u.data",
        TableLayout("\t", False, "latin-1", 0, 1, 2, 3, "int", "int", n_fields=4, rating_scale=(1, 5)),
        ("u.item", "u.user"),
    ),
    "ml1m": RawFormat(
        "ratings.dat",
        TableLayout("::", False, "latin-1", 0, 1, 2, 3, "int", "int", n_fields=4, rating_scale=(1, 5)),
        ("movies.dat", "users.dat"),
    ),
    "bookcrossing": RawFormat(
        "BX-Book-Ratings.csv",
        # 1-10 explicit, 0 an implicit interaction (dropped unless env.keep_implicit).
        TableLayout(
            ";",
            True,
            "latin-1",
            0,
            1,
            2,
            None,
            "int",
            "str",
            n_fields=3,
            backslash_escapes=True,
            rating_scale=(0, 10),
        ),
        ("BX-Books.csv", "BX-Users.csv"),
    ),
    "douban_book": RawFormat(
        "user_book.dat",
        TableLayout("\t", False, "utf-8", 0, 1, 2, None, "int", "int", n_fields=3, rating_scale=(1, 5)),
    ),
}
FORMATS = (*RAW_FORMATS, "table")


@dataclass(frozen=True)
class RatingSource:
    """A resolved ratings file: what to read and how."""

    format: str
    path: Path
    layout: TableLayout


def download_hint(fmt: str, data_dir: Path | str) -> str:
    return f"python scripts/download_data.py {fmt} --dest {data_dir}"


def existing(path: Path) -> Path | None:
    """The file itself, else its gzipped twin ``<name>.gz``."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def resolve_source(env_cfg: Any) -> RatingSource:
    """Finds the ratings file ``env_cfg`` (a ``RatingEnvConfig``) describes, or says how to get it."""
    fmt = env_cfg.format
    data_dir = Path(env_cfg.data_dir)
    if fmt == "table":
        table = env_cfg.table
        cols = (table.user_col, table.item_col, table.rating_col, table.timestamp_col)
        # A tab is hard to type in a command-line override: accept the two characters \t too.
        sep = "\t" if table.sep == "\\t" else table.sep
        layout = TableLayout(sep, bool(table.header), table.encoding, *cols)
        named = [c for c in cols if isinstance(c, str)]
        if named and not layout.header:
            raise DataError(
                f"env.table names columns {named} but env.table.header is false: "
                "give 0-based positions, or set env.table.header=true"
            )
        target = data_dir / table.file
        found = existing(target)
        if found is None:
            raise DataError(
                f"ratings table not found: neither {target} nor {target}.gz exists "
                f"(env.data_dir={data_dir}, env.table.file={table.file}); point env.data_dir / "
                "env.table.file at the file"
            )
        return RatingSource(fmt, found, layout)
    if fmt not in RAW_FORMATS:
        raise DataError(f"unknown env.format={fmt!r}; choose one of {', '.join(FORMATS)}")
    raw = RAW_FORMATS[fmt]
    expected = ", ".join((raw.file, *raw.companions))
    how = (
        f"get them with `{download_hint(fmt, data_dir)}`, or set env.data_dir=... to a folder that "
        "holds them (relative paths start at the launch directory)"
    )
    if not data_dir.is_dir():
        raise DataError(
            f"{fmt} data folder {data_dir} does not exist; expected the files {expected} in it: {how}"
        )
    found = existing(data_dir / raw.file)
    if found is None:
        raise DataError(
            f"{fmt} ratings not found: neither {data_dir / raw.file} nor {data_dir / raw.file}.gz exists "
            f"(expected the files {expected} in {data_dir}): {how}"
        )
    return RatingSource(fmt, found, raw.layout)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is a ``.gz`` twin."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: not a readable gzip file ({err})") from err
    return raw


def decode(data: bytes, path: Path, encoding: str) -> str:
    """``data`` as text; undecodable bytes are a DataError naming the line they sit on."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not valid {encoding} ({err.reason}); set the right encoding "
            "(env.table.encoding for tables)"
        ) from err


def physical_lines(text: str) -> list[str]:
    """The lines of ``text``, each with its line break."""
    # newline="" splits on \n, \r\n and \r, as pandas does; str.splitlines would also split
    # on latin-1's \x85 and other characters that are ordinary data here.
    return list(io.StringIO(text, newline=""))


def split_records(
    lines: list[str], sep: str, path: Path, *, quoted: bool = True, backslash_escapes: bool = False
) -> Iterator[tuple[int, int, list[str]]]:
    """Yields (first line index, end line index, fields) per record, split as pandas splits them.

    ``quoted`` files may hold the separator (and line breaks) inside "..." fields; a
    multi-character separator is never quoted (ML-1M's ``::``), and neither are files whose
    text fields carry bare quotes (MovieLens titles), which must be split on every separator.
    """
    if len(sep) > 1 or not quoted:
        for k, line in enumerate(lines):
            stripped = line.rstrip("\r\n")
            if stripped:
                yield k, k + 1, stripped.split(sep)
        return
    reader = csv.reader(
        iter(lines),
        delimiter=sep,
        quotechar='"',
        escapechar="\\" if backslash_escapes else None,
    )
    start = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"{path}: line {reader.line_num}: {err}") from err
        if fields:
            yield start, reader.line_num, fields
        start = reader.line_num


@dataclass(frozen=True)
class _Columns:
    """The layout's columns as positions in a parsed row."""

    positions: tuple[int, int, int, int | None]
    n_fields: int | None

    @classmethod
    def resolve(cls, layout: TableLayout, header: list[str] | None, path: Path) -> _Columns:
        refs = (layout.user_col, layout.item_col, layout.rating_col, layout.timestamp_col)
        positions: list[int | None] = []
        for role, ref in zip(COLUMNS, refs, strict=True):
            if ref is None:
                if role != "timestamp":
                    raise DataError(f"{path}: the {role} column must be given")
                positions.append(None)
            elif isinstance(ref, str):
                if header is None or ref not in header:
                    raise DataError(
                        f"{path}: no column named {ref!r} for the {role}; the header has {header}"
                    )
                positions.append(header.index(ref))
            else:
                positions.append(int(ref))
        n_fields = layout.n_fields if layout.n_fields is not None else (len(header) if header else None)
        user, item, rating, timestamp = positions
        assert user is not None and item is not None and rating is not None
        return cls((user, item, rating, timestamp), n_fields)


def single_char_sep(data: bytes, sep: str, encoding: str) -> tuple[bytes, str]:
    """``data`` and ``sep`` rewritten for pandas' C parser, which splits on one character only:
    a longer separator (ML-1M's ``::``) becomes a control character no text field holds."""
    if len(sep) == 1:
        return data, sep
    return data.replace(sep.encode(encoding), _UNIT_SEP.encode()), _UNIT_SEP


def _parse(data: bytes, layout: TableLayout, skip_header: bool, cols: _Columns) -> pd.DataFrame:
    data, sep = single_char_sep(data, layout.sep, layout.encoding)
    user, item = cols.positions[:2]
    text_ids = {pos: str for pos, kind in ((user, layout.user_ids), (item, layout.item_ids)) if kind == "str"}
    return pd.read_csv(
        io.BytesIO(data),
        sep=sep,
        header=None,
        skiprows=1 if skip_header else 0,
        dtype=text_ids,
        # Only an empty field is missing: "NA" or "null" as a rating is an error, not a gap.
        keep_default_na=False,
        na_values=[""],
        quotechar='"',
        escapechar="\\" if layout.backslash_escapes else None,
        encoding=layout.encoding,
        engine="c",
        skip_blank_lines=True,
    )


def _numeric(values: pd.Series) -> bool:
    # pandas reads a column of True/False as bool, which is numeric to it but no rating.
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _frame_is_clean(df: pd.DataFrame, layout: TableLayout, cols: _Columns, optional_timestamp: bool) -> bool:
    """Whether every row parsed into valid values, checked column-wise."""
    if cols.n_fields is not None and df.shape[1] != cols.n_fields:
        return False
    if max(p for p in cols.positions if p is not None) >= df.shape[1]:
        return False
    user, item, rating, timestamp = (df[p] if p is not None else None for p in cols.positions)
    assert user is not None and item is not None and rating is not None
    for ids, kind in ((user, layout.user_ids), (item, layout.item_ids)):
        if kind == "int" and not pd.api.types.is_integer_dtype(ids):
            return False
        if ids.isna().any():
            return False
    if not _numeric(rating) or not np.isfinite(rating.to_numpy(np.float64)).all():
        return False
    if layout.rating_scale is not None:
        low, high = layout.rating_scale
        if not rating.between(low, high).all():
            return False
    if timestamp is not None:
        if not _numeric(timestamp):
            return False
        values = timestamp.to_numpy(np.float64)
        if np.isinf(values).any() or (not optional_timestamp and np.isnan(values).any()):
            return False
    return True


def _value_problem(value: str, wanted: str) -> str | None:
    """Why one field is not what its column needs: int, str (non-empty), number or number-or-empty."""
    if wanted == "number-or-empty" and value == "":
        return None
    if wanted == "int":
        try:
            int(value)
        except ValueError:
            return "is not an integer"
        return None
    if wanted in ("number", "number-or-empty"):
        try:
            ok = math.isfinite(float(value))
        except ValueError:
            ok = False
        return None if ok else "is not a finite number"
    return None if value else "is empty"


def _outside_scale(rating: float, scale: tuple[float, float]) -> str | None:
    low, high = scale
    return None if low <= rating <= high else f"is outside the dataset's rating scale {low:g}-{high:g}"


def _row_problem(
    fields: list[str], layout: TableLayout, cols: _Columns, optional_timestamp: bool
) -> str | None:
    """Why one row is malformed (None when it is fine): the line-by-line twin of _frame_is_clean."""
    if len(fields) != cols.n_fields:
        return f"expected {cols.n_fields} fields separated by {layout.sep!r}, found {len(fields)}"
    wanted = {
        "user": layout.user_ids,
        "item": layout.item_ids,
        "rating": "number",
        "timestamp": "number-or-empty" if optional_timestamp else "number",
    }
    for role, pos in zip(COLUMNS, cols.positions, strict=True):
        if pos is None:
            continue
        problem = _value_problem(fields[pos], wanted[role])
        if problem is None and role == "rating" and layout.rating_scale is not None:
            problem = _outside_scale(float(fields[pos]), layout.rating_scale)
        if problem is not None:
            return f"{role} {fields[pos]!r} {problem}"
    return None


def _to_output(df: pd.DataFrame, layout: TableLayout, cols: _Columns) -> pd.DataFrame:
    user, item, rating, timestamp = cols.positions
    out = pd.DataFrame(
        {
            "user": df[user].astype(np.int64) if layout.user_ids == "int" else df[user],
            "item": df[item].astype(np.int64) if layout.item_ids == "int" else df[item],
            "rating": df[rating].astype(np.float64),
            "timestamp": df[timestamp].astype(np.float64) if timestamp is not None else np.nan,
        }
    )
    return out.reset_index(drop=True)


def read_ratings(source: RatingSource, on_bad_rows: str = "error") -> tuple[pd.DataFrame, dict[str, int]]:
    """The ratings of ``source`` as (user, item, rating, timestamp) rows in file order.

    Returns the frame and counts (``rows_read``, ``bad_rows_skipped``). Timestamps are NaN where
    the format has none or a table cell is empty. ``on_bad_rows`` is ``error`` (raise, naming the
    first bad line) or ``skip`` (drop and count bad rows).
    """
    if on_bad_rows not in ON_BAD_ROWS:
        raise DataError(f"data.on_bad_rows={on_bad_rows!r}; choose one of {', '.join(ON_BAD_ROWS)}")
    path, layout = source.path, source.layout
    optional_timestamp = source.format == "table"
    data = read_bytes(path)
    header: list[str] | None = None
    if layout.header:
        lines = physical_lines(decode(data[: data.find(b"\n") + 1 or None], path, layout.encoding))
        header = next(
            (
                fields
                for _, _, fields in split_records(
                    lines, layout.sep, path, backslash_escapes=layout.backslash_escapes
                )
            ),
            None,
        )
        if header is None:
            raise DataError(f"{path}: the file is empty; expected a header row")
    cols = _Columns.resolve(layout, header, path)

    try:
        frame = _parse(data, layout, layout.header, cols)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        return _read_line_by_line(data, source, cols, on_bad_rows, optional_timestamp)
    cols = _Columns(cols.positions, cols.n_fields or frame.shape[1])
    if _frame_is_clean(frame, layout, cols, optional_timestamp) and _rows_complete(
        data, layout, cols, len(frame)
    ):
        return _to_output(frame, layout, cols), {"rows_read": len(frame), "bad_rows_skipped": 0}
    return _read_line_by_line(data, source, cols, on_bad_rows, optional_timestamp)


def _rows_complete(data: bytes, layout: TableLayout, cols: _Columns, n_rows: int) -> bool:
    """Whether no row is short of fields, as far as a cheap test can tell.

    pandas pads a short row with NaN, which an empty-able or unused column would hide. Without
    quotes, the separator count proves every row has all its fields; with quotes (a separator may
    sit inside one) short rows are caught only where they leave a required column empty.
    """
    if b'"' in data:
        return True
    assert cols.n_fields is not None
    return fields_complete(data, layout.sep, layout.encoding, cols.n_fields, n_rows + int(layout.header))


def fields_complete(data: bytes, sep: str, encoding: str, n_fields: int, n_lines: int) -> bool:
    """Whether the ``n_lines`` non-blank lines of an unquoted file hold ``n_fields`` fields each,
    judged by the separator count (pandas pads a short line with empty fields)."""
    return data.count(sep.encode(encoding)) == (n_fields - 1) * n_lines


def _read_line_by_line(
    data: bytes, source: RatingSource, cols: _Columns, on_bad_rows: str, optional_timestamp: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The slow path: finds the exact bad lines, then parses the good ones with pandas."""
    path, layout = source.path, source.layout
    lines = physical_lines(decode(data, path, layout.encoding))
    records = split_records(lines, layout.sep, path, backslash_escapes=layout.backslash_escapes)
    if layout.header:
        next(records, None)
    good: list[str] = []
    bad: list[tuple[int, str]] = []
    for first, end, fields in records:
        if cols.n_fields is None:
            cols = _Columns(cols.positions, len(fields))
        problem = _row_problem(fields, layout, cols, optional_timestamp)
        if problem is None:
            good.extend(lines[first:end])
        else:
            bad.append((first + 1, problem))
    report_bad_rows(path, bad, on_bad_rows)
    counts = {"rows_read": len(good) + len(bad), "bad_rows_skipped": len(bad)}
    if not good:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in COLUMNS}), counts
    frame = _parse("".join(good).encode(layout.encoding), layout, False, cols)
    if not _frame_is_clean(frame, layout, cols, optional_timestamp):
        raise DataError(f"{path}: rows that pass the line-by-line check still do not parse as a table")
    return _to_output(frame, layout, cols), counts


def report_bad_rows(path: Path, bad: list[tuple[int, str]], on_bad_rows: str) -> None:
    """Raises a DataError naming the first of the ``(line, problem)`` pairs in ``bad`` under
    ``on_bad_rows=error``, else logs how many rows are skipped; nothing when ``bad`` is empty."""
    if not bad:
        return
    line, problem = bad[0]
    if on_bad_rows == "error":
        raise DataError(
            f"{path}: line {line}: {problem} ({len(bad)} malformed row(s) in this file). Fix the file, "
            "or set data.on_bad_rows=skip to skip and count such rows"
        )
    log.warning(
        "skipped %d malformed row(s) in %s (data.on_bad_rows=skip); first at line %d: %s",
        len(bad),
        path,
        line,
        problem,
    )
