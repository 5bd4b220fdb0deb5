"""The mechanics of a content-keyed on-disk cache, shared by everything that caches results.

A cached result is named after a hash of everything it depends on, so a change to any input
misses instead of serving a stale result, and identical inputs from different jobs of a sweep
find one copy. Writers replace files atomically and may hold a lock, so that concurrent jobs
sharing a cache folder never read half a file nor compute the same result twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def content_key(params: Mapping[str, Any], length: int | None = None) -> str:
    """The sha256 hex digest of ``params`` as JSON with sorted keys, cut to its first ``length``
    characters if given.

    Sorting makes the key independent of the order the params were assembled in. The encoding
    must never change: existing caches are found again only if their keys stay the same.
    """
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return digest if length is None else digest[:length]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path`` (created with its folder if missing) while the
    block runs, so that the processes sharing a cache folder compute each entry only once.

    The lock belongs to the open file, so threads of one process exclude each other too, and
    the kernel releases it if the holder dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Creates or replaces ``path`` with what ``write`` writes to the binary file it is given.

    ``write`` (whose return value is ignored) fills a temporary file in the same folder, which
    then replaces ``path`` in one rename, so a reader sees the old file or the complete new one,
    never a part; if ``write`` raises, ``path`` is left as it was and the temporary file is
    removed. A binary file rather than a path is handed over so that the writer cannot write
    elsewhere (``np.savez`` given a path, for one, appends ``.npz`` to it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
