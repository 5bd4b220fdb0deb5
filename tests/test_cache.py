"""The shared on-disk cache mechanics: stable keys, atomic writes, an exclusive lock."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from macs_exp.cache import atomic_write, content_key, file_lock

PARAMS: dict[str, Any] = {
    "version": 1,
    "name": "ml-1m",
    "sizes": [3706, 6040],
    "ratio": 0.2,
    "missing": None,
    "nested": {"b": True, "a": "x"},
}
# sha256 of '{"missing": null, "name": "ml-1m", "nested": {"a": "x", "b": true}, "ratio": 0.2,
# "sizes": [3706, 6040], "version": 1}': existing caches are only found while this holds.
PARAMS_KEY = "13bbe482aa1dac52b697c8ff4afc038ea4a49d79feed0ae58c272eefacf0ef71"


def test_content_key_is_the_sha256_of_the_sorted_json() -> None:
    assert content_key(PARAMS) == PARAMS_KEY
    assert content_key(dict(reversed(PARAMS.items()))) == PARAMS_KEY
    assert content_key(PARAMS, 16) == "13bbe482aa1dac52"
    assert content_key({**PARAMS, "ratio": 0.25}) != PARAMS_KEY


def test_atomic_write_creates_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.bin"
    atomic_write(target, lambda f: f.write(b"complete"))
    assert target.read_bytes() == b"complete"
    assert list(target.parent.iterdir()) == [target]


def test_atomic_write_shows_readers_the_old_file_until_the_new_one_is_complete(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    seen: list[bytes] = []

    def write(f: IO[bytes]) -> None:
        f.write(b"half")
        f.flush()
        seen.append(target.read_bytes())
        f.write(b" and the rest")

    atomic_write(target, write)
    assert seen == [b"old"]
    assert target.read_bytes() == b"half and the rest"
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target, fresh = tmp_path / "data.bin", tmp_path / "fresh.bin"
    target.write_bytes(b"old")

    def fail(f: IO[bytes]) -> None:
        f.write(b"half")
        raise RuntimeError("disk full")

    for path in (target, fresh):
        with pytest.raises(RuntimeError, match="disk full"):
            atomic_write(path, fail)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


PROBE = """
import fcntl, sys
with open(sys.argv[1], "w") as handle:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("held")
    else:
        print("free")
"""


def probe(lock: Path) -> str:
    """Whether another process could take the lock right now (without waiting for it)."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(lock)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_file_lock_excludes_other_processes_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "key.lock"
    with file_lock(lock):
        assert probe(lock) == "held"
    assert probe(lock) == "free"


def test_file_lock_serialises_threads(tmp_path: Path) -> None:
    lock = tmp_path / "key.lock"
    events: list[str] = []

    def second() -> None:
        with file_lock(lock):
            events.append("second holds the lock")

    with file_lock(lock):
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(timeout=0.3)
        # Still waiting: the lock is held, however long the thread was given.
        assert waiter.is_alive()
        events.append("first releases the lock")
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert events == ["first releases the lock", "second holds the lock"]
