"""Fetches a rating dataset into the folder ``env.data_dir`` points at.

    python scripts/download_data.py ml100k --dest data/ml-100k
    python scripts/download_data.py ml1m --dest data/ml-1m [--url MIRROR] [--sha256 HEX]

MovieLens comes from GroupLens; the archive is checked against the size, sha256 and md5 below
before anything reaches DEST, then its files land directly in DEST (the archive's top folder is
dropped). BookCrossing and Douban-Book have no stable public download: for them the script prints
which files to place where and exits with status 2.

Exit status: 0 done, 1 download or verification failed (DEST untouched), 2 manual steps needed.
The MovieLens terms forbid redistribution: keep the files out of the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Archive:
    url: str
    size: int
    sha256: str
    md5: str
    # The ratings file first: its presence is what the loader checks.
    files: tuple[str, ...]


# sha256 and size: TensorFlow Datasets' recorded checksums (tensorflow_datasets/url_checksums/
# movielens.txt); md5: GroupLens's own ml-*.zip.md5 files, as quoted by several projects.
ARCHIVES: dict[str, Archive] = {
    "ml100k": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        4924029,
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "0e33842e24a9c977be4e0107933c0723",
        ("u.data", "u.item", "u.user"),
    ),
    "ml1m": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        5917549,
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "c4d9eecfca2ab87c1945afe126590906",
        ("ratings.dat", "movies.dat", "users.dat"),
    ),
}

MANUAL: dict[str, str] = {
    "bookcrossing": """\
BookCrossing (Ziegler et al., WWW 2005) has no stable public download: the original Freiburg
page is offline and its terms forbid redistribution. Obtain the original CSV dump
(BX-CSV-Dump.zip) from a copy you are entitled to use, then place in {dest}:

  {dest}/BX-Book-Ratings.csv      required (or BX-Book-Ratings.csv.gz)
  {dest}/BX-Books.csv             for a knowledge graph (algo=pgpr): authors, publishers, years
  {dest}/BX-Users.csv             for a knowledge graph (algo=pgpr): countries, ages

BX-Book-Ratings.csv must be the original: ';'-separated, every field double-quoted, latin-1,
header "User-ID";"ISBN";"Book-Rating". Then run with env=bookcrossing env.data_dir={dest}.""",
    "douban_book": """\
Douban-Book (the HIN dataset of Shi et al., TKDE 2018) is published only as loose files in the
GitHub repository librahu/HIN-Datasets-for-Recommendation-and-Network-Embedding (folder
"Douban Book/"), with no versioned archive and no published checksum. Copy from there into {dest}:

  {dest}/user_book.dat            required (or user_book.dat.gz): user_id<TAB>book_id<TAB>rating
  {dest}/book_author.dat          for a knowledge graph (algo=pgpr), as the four below
  {dest}/book_publisher.dat
  {dest}/book_year.dat
  {dest}/user_location.dat
  {dest}/user_user.dat

`git hash-object user_book.dat` must print bb2e09fac9ca9907c45615100ff3acb7c8032089.
Then run with env=douban_book env.data_dir={dest}. A subset table in another layout can be read
with env.format=table (see conf/env/douban_book.yaml).""",
}
NAMES = (*ARCHIVES, *MANUAL)
# The env YAMLs' default env.data_dir for each dataset.
DEFAULT_DEST = {
    "ml100k": "data/ml-100k",
    "ml1m": "data/ml-1m",
    "bookcrossing": "data/bookcrossing",
    "douban_book": "data/douban-book",
}


class DownloadError(RuntimeError):
    pass


def fetch(url: str, target: Path) -> tuple[int, str, str]:
    """Streams ``url`` to ``target``; returns its size, sha256 and md5."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
            while chunk := response.read(1 << 20):
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except OSError as err:
        raise DownloadError(f"could not download {url}: {err}") from err
    return size, sha256.hexdigest(), md5.hexdigest()


def verify(url: str, got: tuple[int, str, str], archive: Archive, sha256: str | None) -> None:
    """Compares the download with ``--sha256`` if given, else with everything known about it."""
    size, got_sha256, got_md5 = got
    if sha256 is not None:
        expected = [("sha256", sha256.lower(), got_sha256)]
    else:
        expected = [
            ("size", str(archive.size), str(size)),
            ("sha256", archive.sha256, got_sha256),
            ("md5", archive.md5, got_md5),
        ]
    for what, want, have in expected:
        if want != have:
            raise DownloadError(
                f"checksum mismatch for {url}: expected {what} {want}, got {have}. The download is "
                "corrupt or not the expected file (pass --sha256 only for a mirror you trust)"
            )


def unpack(archive_path: Path, staging: Path, required: tuple[str, ...]) -> None:
    """Extracts into ``staging``, dropping a single top-level folder, refusing paths that escape it."""
    with zipfile.ZipFile(archive_path) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        paths = [PurePosixPath(m.filename) for m in members]
        if any(p.is_absolute() or ".." in p.parts for p in paths):
            raise DownloadError(f"{archive_path.name}: refusing an archive with paths outside its folder")
        parts = [p.parts for p in paths]
        tops = {p[0] for p in parts}
        strip = 1 if len(tops) == 1 and all(len(p) > 1 for p in parts) else 0
        for member, path in zip(members, parts, strict=True):
            out = staging.joinpath(*path[strip:])
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    missing = [f for f in required if not (staging / f).is_file()]
    if missing:
        raise DownloadError(f"{archive_path.name} does not contain the expected files {missing}")


def download(name: str, dest: Path, url: str | None = None, sha256: str | None = None) -> None:
    """Downloads, verifies and unpacks ``name`` into ``dest``; on failure ``dest`` is unchanged."""
    archive = ARCHIVES[name]
    url = url or archive.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-download-") as tmp:
        zip_path = Path(tmp) / "archive.zip"
        print(f"downloading {url}", flush=True)
        verify(url, fetch(url, zip_path), archive, sha256)
        staging = Path(tmp) / "files"
        staging.mkdir()
        try:
            unpack(zip_path, staging, archive.files)
        except zipfile.BadZipFile as err:
            raise DownloadError(f"{url} is not a zip archive: {err}") from err
        # Same filesystem as dest (the temporary folder sits next to it), so these are renames.
        if not dest.exists():
            os.replace(staging, dest)
        else:
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                target = dest / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    print(f"{name}: verified and unpacked into {dest} ({', '.join(archive.files)}, ...)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--dest", type=Path, help="folder for the files (default: data/<dataset folder>)")
    parser.add_argument("--url", help="download from this mirror instead of the official URL")
    parser.add_argument(
        "--sha256", help="expected sha256 of the archive at --url, replacing the known checksums"
    )
    args = parser.parse_args(argv)
    dest = args.dest or Path(DEFAULT_DEST[args.name])
    if args.name in MANUAL:
        print(MANUAL[args.name].format(dest=dest), file=sys.stderr)
        return 2
    try:
        download(args.name, dest, args.url, args.sha256)
    except DownloadError as err:
        print(f"error: {err}; nothing was written to {dest}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
