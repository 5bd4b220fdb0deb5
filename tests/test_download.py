"""scripts/download_data.py against a local HTTP server (no network beyond 127.0.0.1)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from omegaconf import OmegaConf

from macs_exp.data.loaders import RAW_FORMATS, read_ratings, resolve_source

REPO = Path(__file__).resolve().parents[1]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("download_data", REPO / "scripts" / "download_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


dl = _load_script()

FILES = {
    "ml-100k/u.data": b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
    "ml-100k/u.item": "1|Café (1995)|01-Jan-1995||http://x|0\n".encode("latin-1"),
    "ml-100k/u.user": b"1|24|M|technician|85711\n",
    "ml-100k/README": b"tiny\n",
}


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """Serves ``tmp_path / "www"`` on an ephemeral 127.0.0.1 port; yields (base url, folder)."""
    # A proxy configured in the environment must not see these requests.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1")
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def serve(server: tuple[str, Path], files: dict[str, bytes]) -> tuple[str, str]:
    base, root = server
    data = make_zip(files)
    (root / "ml-100k.zip").write_bytes(data)
    return f"{base}/ml-100k.zip", hashlib.sha256(data).hexdigest()


def test_good_checksum_unpacks_into_dest(server: tuple[str, Path], tmp_path: Path) -> None:
    url, sha256 = serve(server, FILES)
    dest = tmp_path / "data" / "ml-100k"
    assert dl.main(["ml100k", "--dest", str(dest), "--url", url, "--sha256", sha256]) == 0
    # The archive's top folder is dropped: the files sit where env.data_dir points.
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {k.split("/")[1]: v for k, v in FILES.items()}
    assert [p.name for p in dest.parent.iterdir()] == ["ml-100k"]  # no temporary folder left
    frame, _ = read_ratings(resolve_source(OmegaConf.create({"format": "ml100k", "data_dir": str(dest)})))
    assert frame["item"].tolist() == [242, 302]


def test_existing_dest_keeps_other_files(server: tuple[str, Path], tmp_path: Path) -> None:
    url, sha256 = serve(server, FILES)
    dest = tmp_path / "ml-100k"
    dest.mkdir()
    (dest / "u.data").write_bytes(b"old\n")
    (dest / "notes.txt").write_bytes(b"mine\n")
    assert dl.main(["ml100k", "--dest", str(dest), "--url", url, "--sha256", sha256]) == 0
    assert (dest / "u.data").read_bytes() == FILES["ml-100k/u.data"]
    assert (dest / "notes.txt").read_bytes() == b"mine\n"


def test_bad_checksum_fails_and_writes_nothing(
    server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, sha256 = serve(server, FILES)
    dest = tmp_path / "data" / "ml-100k"
    assert dl.main(["ml100k", "--dest", str(dest), "--url", url, "--sha256", "0" * 64]) == 1
    err = capsys.readouterr().err
    assert f"checksum mismatch for {url}: expected sha256 {'0' * 64}, got {sha256}" in err
    assert f"nothing was written to {dest}" in err
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_mirror_without_sha256_is_checked_against_the_known_archive(
    server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = serve(server, FILES)
    dest = tmp_path / "ml-100k"
    assert dl.main(["ml100k", "--dest", str(dest), "--url", url]) == 1
    assert "expected size 4924029" in capsys.readouterr().err
    assert not dest.exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ml-100k/u.data": b"1\t2\t3\t4\n"}, "does not contain the expected files ['u.item', 'u.user']"),
        ({"../evil/u.data": b"x", "ml-100k/u.item": b"", "ml-100k/u.user": b""}, "paths outside its folder"),
    ],
)
def test_wrong_archives_are_refused(
    server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict, message: str
) -> None:
    url, sha256 = serve(server, files)
    dest = tmp_path / "out" / "ml-100k"
    assert dl.main(["ml100k", "--dest", str(dest), "--url", url, "--sha256", sha256]) == 1
    assert message in capsys.readouterr().err
    assert list(dest.parent.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_unreachable_url_fails_cleanly(
    server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = server
    assert dl.main(["ml1m", "--dest", str(tmp_path / "ml-1m"), "--url", f"{base}/absent.zip"]) == 1
    err = capsys.readouterr().err
    assert f"could not download {base}/absent.zip" in err and "404" in err
    assert not (tmp_path / "ml-1m").exists()


@pytest.mark.parametrize(
    ("name", "file"), [("bookcrossing", "BX-Book-Ratings.csv"), ("douban_book", "user_book.dat")]
)
def test_manual_datasets_explain_where_files_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, file: str
) -> None:
    dest = tmp_path / "somewhere"
    assert dl.main([name, "--dest", str(dest)]) == 2
    assert f"{dest}/{file}" in capsys.readouterr().err
    assert not dest.exists()


def test_script_agrees_with_loaders_and_yaml() -> None:
    for name, archive in dl.ARCHIVES.items():
        assert archive.files[0] == RAW_FORMATS[name].file
    for name in dl.MANUAL:
        assert RAW_FORMATS[name].file in dl.MANUAL[name]
    assert set(dl.NAMES) == set(RAW_FORMATS)
    for name, dest in dl.DEFAULT_DEST.items():
        assert OmegaConf.load(REPO / "conf" / "env" / f"{name}.yaml").data_dir == dest
