"""The side files of each rating dataset, read into the attribute relations of its knowledge graph.

One reader per layout (:data:`SIDE_SCHEMAS`, named like ``env.format``) turns its files into
:class:`SideRelation` rows keyed by the files' own user and item ids. The cleaning rules of the
PGPR plan (``shared/methods/PGPR.md`` 6.1: age bins, two-digit zip prefixes, year ranges, ...)
live here, so that :mod:`macs_exp.data.kg` only joins ids and numbers entities. The files are
read as the rating files are (:mod:`macs_exp.data.loaders`): pandas' C parser first, and a
line-by-line scan only when a vectorised check finds a malformed row, to name its line or to
skip it under ``data.on_bad_rows=skip``.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from macs_exp.data.loaders import (
    DataError,
    decode,
    download_hint,
    existing,
    fields_complete,
    physical_lines,
    read_bytes,
    report_bad_rows,
    single_char_sep,
    split_records,
)

# u.genre's order; ML-1M uses the same names without "unknown".
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# ML-1M's age bins, applied to every dataset's ages so that age groups mean the same everywhere.
AGE_GROUPS = ("under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
_AGE_BOUNDS = (18, 25, 35, 45, 50, 56)
# users.dat stores the bin, as the lowest age in it (1 for under 18).
ML1M_AGE_CODES = (1, *_AGE_BOUNDS)
# BookCrossing's years outside this range are placeholders (0) or typos (2050), not years.
BX_YEARS = (1900, 2005)
BX_AGES = (5, 100)


@dataclass(frozen=True)
class SideRelation:
    """One relation's rows as the side file states them: ``heads[k]`` (a file id of a ``head``)
    relates to ``tails.iloc[k]``, an attribute value, or a file id where ``tail`` is ``user``."""

    name: str
    head: str
    tail: str
    heads: np.ndarray
    # A pandas Series; its order (numeric, lexicographic, or a Categorical's) numbers the entities.
    tails: Any


@dataclass(frozen=True)
class SideInfo:
    """What a reader got from a dataset's side files."""

    # In the schema's order, which fixes the relation and entity type numbering.
    relations: tuple[SideRelation, ...]
    # (file ids, titles) of the items where the side file names them, for readable entity names.
    item_titles: tuple[np.ndarray, np.ndarray] | None
    # Rows skipped as malformed, values the rules reject ("dropped.<relation>"), ...
    stats: dict[str, float]


@dataclass(frozen=True)
class SideLayout:
    sep: str
    encoding: str
    # (name, kind) per field; kind: int (an integer), flag (0 or 1), key (not blank), text (anything).
    fields: tuple[tuple[str, str], ...]
    header: bool = False
    # BookCrossing's CSVs: every field in "...", with \" for a quote inside one. Unquoted files
    # may hold bare quotes in their text (MovieLens titles).
    quoted: bool = False


_CHECKS: dict[str, tuple[Callable[[pd.Series], pd.Series], str]] = {
    "int": (lambda column: column.str.fullmatch(r"[+-]?\d+"), "is not an integer"),
    "flag": (lambda column: column.isin(("0", "1")), "is not 0 or 1"),
    "key": (lambda column: column.str.strip() != "", "is empty"),
}


def read_side_table(path: Path, layout: SideLayout, on_bad_rows: str) -> tuple[pd.DataFrame, int]:
    """The file's rows as string columns ``0..n-1`` (every field checked against its kind), and
    how many malformed rows ``on_bad_rows=skip`` left out."""
    data = read_bytes(path)
    frame = _parse(data, layout)
    if frame is not None and not _invalid(frame, layout).any():
        return frame, 0
    return _parse_line_by_line(data, path, layout, on_bad_rows)


def _parse(data: bytes, layout: SideLayout) -> pd.DataFrame | None:
    """The whole file through pandas' C parser; None when that cannot show every row has its
    fields (a ragged row, undecodable bytes), which the line-by-line scan then names."""
    raw, sep = single_char_sep(data, layout.sep, layout.encoding)
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            sep=sep,
            header=None,
            skiprows=int(layout.header),
            dtype=str,
            na_filter=False,
            quoting=csv.QUOTE_MINIMAL if layout.quoted else csv.QUOTE_NONE,
            escapechar="\\" if layout.quoted else None,
            encoding=layout.encoding,
            engine="c",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    n_fields = len(layout.fields)
    if frame.shape[1] != n_fields:
        return None
    # With quotes a separator may sit inside a field, so only unquoted files can be counted.
    n_lines = len(frame) + int(layout.header)
    if not layout.quoted and not fields_complete(data, layout.sep, layout.encoding, n_fields, n_lines):
        return None
    return frame


def _invalid(frame: pd.DataFrame, layout: SideLayout) -> np.ndarray:
    """(rows, fields) bool: which fields do not hold what their kind needs."""
    invalid = np.zeros(frame.shape, dtype=bool)
    for k, (_, kind) in enumerate(layout.fields):
        if kind in _CHECKS:
            invalid[:, k] = ~_CHECKS[kind][0](frame[k]).to_numpy(bool)
    return invalid


def _parse_line_by_line(
    data: bytes, path: Path, layout: SideLayout, on_bad_rows: str
) -> tuple[pd.DataFrame, int]:
    """The slow path: splits every record to find the exact bad lines, then keeps the good rows."""
    lines = physical_lines(decode(data, path, layout.encoding))
    records = split_records(lines, layout.sep, path, quoted=layout.quoted, backslash_escapes=layout.quoted)
    if layout.header:
        next(records, None)
    n_fields = len(layout.fields)
    rows: list[list[str]] = []
    row_lines: list[int] = []
    bad: list[tuple[int, str]] = []
    for first, _, fields in records:
        if len(fields) == n_fields:
            rows.append(fields)
            row_lines.append(first + 1)
        else:
            bad.append(
                (first + 1, f"expected {n_fields} fields separated by {layout.sep!r}, found {len(fields)}")
            )
    frame = pd.DataFrame(rows, columns=range(n_fields), dtype=str)
    invalid = _invalid(frame, layout)
    for row, field in zip(*np.nonzero(invalid), strict=True):
        if field == invalid[row].argmax():  # the row's first bad field only
            name, kind = layout.fields[field]
            bad.append((row_lines[row], f"{name} {frame.iat[row, field]!r} {_CHECKS[kind][1]}"))
    bad.sort()
    report_bad_rows(path, bad, on_bad_rows)
    return frame[~invalid.any(axis=1)].reset_index(drop=True), len(bad)


def _table(path: Path, layout: SideLayout, on_bad_rows: str, stats: dict[str, float]) -> pd.DataFrame:
    """:func:`read_side_table`, its skipped rows counted in ``stats`` under the file's name."""
    frame, skipped = read_side_table(path, layout, on_bad_rows)
    stats[f"bad_rows_skipped.{path.name}"] = float(skipped)
    return frame


def _relation(
    name: str,
    head: str,
    tail: str,
    heads: np.ndarray,
    tails: pd.Series,
    stats: dict[str, float],
    keep: np.ndarray | None = None,
) -> SideRelation:
    """The rows whose tail is a value (not NA; and ``keep``, if given), the others counted as
    ``dropped.<name>``: values the cleaning rules reject (undated, out of range, blank, ...)."""
    tails = tails.reset_index(drop=True)
    kept = tails.notna().to_numpy(bool) if keep is None else keep
    stats[f"dropped.{name}"] = float((~kept).sum())
    return SideRelation(name, head, tail, np.asarray(heads)[kept], tails[kept].reset_index(drop=True))


def _ints(column: pd.Series) -> np.ndarray:
    """A column the layout checked as integers, as int64."""
    return column.to_numpy().astype(np.int64)


def _text(values: pd.Series) -> pd.Series:
    """Trimmed, with blanks as NA (no value, hence no edge)."""
    stripped = values.str.strip()
    return stripped.where(stripped != "")


def _unescaped(values: pd.Series) -> pd.Series:
    """HTML entities (BookCrossing's ``&amp;``) decoded; only values with an ``&`` are touched."""
    out = values.copy()
    entities = values.str.contains("&", regex=False).to_numpy(bool)
    out[entities] = values[entities].map(html.unescape)
    return out


def _years(text: pd.Series, bounds: tuple[int, int] | None = None) -> pd.Series:
    """Four-digit years (within ``bounds``, if given) as Int64; anything else NA."""
    text = text.fillna("").str.strip()
    years = pd.to_numeric(text.where(text.str.fullmatch(r"\d{4}")), errors="coerce")
    if bounds is not None:
        years = years.where(years.between(*bounds))
    return years.astype("Int64")


def _age_groups(ages: np.ndarray) -> pd.Series:
    """ML-1M's bins of ``ages`` (float; NaN for none) as a Categorical in bin order."""
    codes = np.where(np.isnan(ages), -1, np.digitize(np.nan_to_num(ages), _AGE_BOUNDS))
    return pd.Series(pd.Categorical.from_codes(codes, categories=AGE_GROUPS))


def _zip2(zips: pd.Series) -> pd.Series:
    """The first two characters of a zip code, ``non_us`` where they are not digits (Canada...)."""
    prefix = _text(zips).str[:2]
    numeric = prefix.str.fullmatch(r"\d\d").fillna(False).to_numpy(bool)
    return prefix.where(numeric | prefix.isna().to_numpy(bool), "non_us")


def _movielens_users(
    users: np.ndarray, columns: Mapping[str, pd.Series], stats: dict[str, float]
) -> list[SideRelation]:
    """has_occupation, in_age_group, has_gender and lives_in of the MovieLens user files."""
    return [
        _relation("has_occupation", "user", "occupation", users, columns["occupation"], stats),
        _relation("in_age_group", "user", "age_group", users, columns["age_group"], stats),
        _relation("has_gender", "user", "gender", users, _text(columns["gender"]), stats),
        _relation("lives_in", "user", "zip2", users, _zip2(columns["zip"]), stats),
    ]


_U_ITEM = SideLayout(
    "|",
    "latin-1",
    (
        ("movie id", "int"),
        ("title", "text"),
        ("release date", "text"),
        ("video release date", "text"),
        ("IMDb URL", "text"),
        *((f"genre flag {genre}", "flag") for genre in GENRES),
    ),
)
_U_USER = SideLayout(
    "|",
    "latin-1",
    (("user id", "int"), ("age", "int"), ("gender", "text"), ("occupation", "text"), ("zip code", "text")),
)


def _read_ml100k(paths: Mapping[str, Path], on_bad_rows: str) -> SideInfo:
    """u.item's genre flags and release dates (year: the date's last four characters), u.user's
    occupation, age, gender and zip code."""
    stats: dict[str, float] = {}
    items = _table(paths["u.item"], _U_ITEM, on_bad_rows, stats)
    movies = _ints(items[0])
    rows, genres = np.nonzero(items.iloc[:, 5:].to_numpy() == "1")
    genre_names = pd.Series(pd.Categorical.from_codes(genres, categories=GENRES))
    users = _table(paths["u.user"], _U_USER, on_bad_rows, stats)
    columns = {
        "occupation": _text(users[3]),
        "age_group": _age_groups(_ints(users[1]).astype(np.float64)),
        "gender": users[2],
        "zip": users[4],
    }
    relations = (
        _relation("belongs_to", "item", "genre", movies[rows], genre_names, stats),
        _relation("released_in", "item", "year", movies, _years(items[2].str.strip().str[-4:]), stats),
        *_movielens_users(_ints(users[0]), columns, stats),
    )
    return SideInfo(relations, (movies, items[1].to_numpy(str)), stats)


_MOVIES_DAT = SideLayout("::", "latin-1", (("MovieID", "int"), ("Title", "text"), ("Genres", "text")))
_USERS_DAT = SideLayout(
    "::",
    "latin-1",
    (("UserID", "int"), ("Gender", "text"), ("Age", "int"), ("Occupation", "int"), ("Zip-code", "text")),
)


def _read_ml1m(paths: Mapping[str, Path], on_bad_rows: str) -> SideInfo:
    """movies.dat's genres and the year in each title's last "(yyyy)", users.dat's occupation
    code, age code (an unknown code gets no age group), gender and zip code."""
    stats: dict[str, float] = {}
    items = _table(paths["movies.dat"], _MOVIES_DAT, on_bad_rows, stats)
    movies = _ints(items[0])
    genres = items[2].str.split("|").explode()
    years = _years(items[1].str.extract(r"\((\d{4})\)\s*$", expand=False))
    users = _table(paths["users.dat"], _USERS_DAT, on_bad_rows, stats)
    ages = _ints(users[2])
    columns = {
        "occupation": pd.Series(_ints(users[3])),
        "age_group": _age_groups(np.where(np.isin(ages, ML1M_AGE_CODES), ages, np.nan)),
        "gender": users[1],
        "zip": users[4],
    }
    relations = (
        _relation("belongs_to", "item", "genre", movies[genres.index.to_numpy()], _text(genres), stats),
        _relation("released_in", "item", "year", movies, years, stats),
        *_movielens_users(_ints(users[0]), columns, stats),
    )
    return SideInfo(relations, (movies, items[1].to_numpy(str)), stats)


def _pair_layout(head: str, tail: str) -> SideLayout:
    return SideLayout("\t", "utf-8", ((head, "int"), (tail, "int")))


# Per file: the relation, its head and tail types.
_DOUBAN_FILES = {
    "book_author.dat": ("written_by", "item", "author"),
    "book_publisher.dat": ("published_by", "item", "publisher"),
    "book_year.dat": ("published_in", "item", "year"),
    "user_location.dat": ("located_in", "user", "location"),
    "user_user.dat": ("friend", "user", "user"),
}


def _read_douban(paths: Mapping[str, Path], on_bad_rows: str) -> SideInfo:
    """The five id-pair files; a user's friendship with itself is dropped (the graph stores each
    pair once, although user_user.dat lists both directions)."""
    stats: dict[str, float] = {}
    relations = []
    for file, (name, head, tail) in _DOUBAN_FILES.items():
        frame = _table(paths[file], _pair_layout(f"{head} id", f"{tail} id"), on_bad_rows, stats)
        heads, tails = _ints(frame[0]), _ints(frame[1])
        keep = heads != tails if tail == head else None
        relations.append(_relation(name, head, tail, heads, pd.Series(tails), stats, keep))
    return SideInfo(tuple(relations), None, stats)


_BX_BOOKS = SideLayout(
    ";",
    "latin-1",
    (
        ("ISBN", "key"),
        ("Book-Title", "text"),
        ("Book-Author", "text"),
        ("Year-Of-Publication", "text"),
        ("Publisher", "text"),
        ("Image-URL-S", "text"),
        ("Image-URL-M", "text"),
        ("Image-URL-L", "text"),
    ),
    header=True,
    quoted=True,
)
_BX_USERS = SideLayout(
    ";", "latin-1", (("User-ID", "int"), ("Location", "text"), ("Age", "text")), header=True, quoted=True
)


def _read_bookcrossing(paths: Mapping[str, Path], on_bad_rows: str) -> SideInfo:
    """BX-Books.csv's author (lower-cased), publisher (HTML entities decoded) and year (1900-2005
    only), BX-Users.csv's country (the Location's last comma field) and age (5-100 only)."""
    stats: dict[str, float] = {}
    books = _table(paths["BX-Books.csv"], _BX_BOOKS, on_bad_rows, stats)
    isbns = books[0].to_numpy(str)
    users = _table(paths["BX-Users.csv"], _BX_USERS, on_bad_rows, stats)
    user_ids = _ints(users[0])
    ages = pd.to_numeric(users[2], errors="coerce").to_numpy(np.float64)
    ages = np.where((ages >= BX_AGES[0]) & (ages <= BX_AGES[1]), ages, np.nan)
    relations = (
        _relation("written_by", "item", "author", isbns, _text(books[2].str.lower()), stats),
        _relation("published_by", "item", "publisher", isbns, _text(_unescaped(books[4])), stats),
        _relation("published_in", "item", "year", isbns, _years(books[3], BX_YEARS), stats),
        _relation("lives_in", "user", "country", user_ids, _text(users[1].str.split(",").str[-1]), stats),
        _relation("in_age_group", "user", "age_group", user_ids, _age_groups(ages), stats),
    )
    return SideInfo(relations, (isbns, _unescaped(books[1]).to_numpy(str)), stats)


@dataclass(frozen=True)
class SideSchema:
    """A layout's side files (looked up in ``env.data_dir``, ``.gz`` twins accepted), its reader
    (given the found paths by file name, and ``data.on_bad_rows``), and where the files come
    from, for the "not found" message ({data_dir} and {hint}, the download script's command)."""

    files: tuple[str, ...]
    read: Callable[[Mapping[str, Path], str], SideInfo]
    source: str


SIDE_SCHEMAS: dict[str, SideSchema] = {
    "ml100k": SideSchema(("u.item", "u.user"), _read_ml100k, "they come with the ratings: `{hint}`"),
    "ml1m": SideSchema(("movies.dat", "users.dat"), _read_ml1m, "they come with the ratings: `{hint}`"),
    "douban_book": SideSchema(
        tuple(_DOUBAN_FILES),
        _read_douban,
        'copy them from the folder "Douban Book/" of github.com/librahu/'
        "HIN-Datasets-for-Recommendation-and-Network-Embedding into {data_dir} (`{hint}` lists every file)",
    ),
    "bookcrossing": SideSchema(
        ("BX-Books.csv", "BX-Users.csv"),
        _read_bookcrossing,
        "place the original BX-CSV-Dump's files in {data_dir} (`{hint}` says more)",
    ),
}


def find_side_files(schema: str, data_dir: Path) -> dict[str, Path]:
    """The paths of ``schema``'s side files by file name, or a DataError naming those missing."""
    spec = SIDE_SCHEMAS[schema]
    found = {name: existing(data_dir / name) for name in spec.files}
    missing = [str(data_dir / name) for name, path in found.items() if path is None]
    if missing:
        source = spec.source.format(data_dir=data_dir, hint=download_hint(schema, data_dir))
        raise DataError(
            f"{schema} side file(s) not found (nor as .gz): {', '.join(missing)}. The knowledge graph "
            f"(kg.schema={schema}) reads {', '.join(spec.files)} from env.data_dir={data_dir}: {source}"
        )
    return {name: path for name, path in found.items() if path is not None}
