"""MVTec fetcher against a local HTTP server: success, checksum, resume, unsafe archives."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from helpers.data import make_mvtec_tree
from sidn.data.fetch import (
    DEFAULT_ARCHIVES,
    MVTEC_AD_CATEGORIES,
    MVTEC_AD_OBJECTS,
    MVTEC_AD_TEXTURES,
    FetchError,
    fetch_mvtec,
)
from sidn.data.mvtec import build_manifest


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate_once: dict[str, int] = {}  # path -> bytes to send before dropping the connection
    ignore_range = False
    bare_416 = False  # answer 416 without a Content-Range header
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        rng = self.headers.get("Range")
        self.requests.append((self.path, rng))
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not self.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                if not self.bare_416:
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = self.truncate_once.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[_Handler]]]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    handler = type("Handler", (_Handler,), {"files": {}, "truncate_once": {}, "requests": [], "ignore_range": False,
                                            "bare_416": False})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _category_tar(tmp: Path, category: str = "carpet", extra: list[tarfile.TarInfo] | None = None) -> bytes:
    src = tmp / "src"
    make_mvtec_tree(src, category, n_train=3, n_test_good=1, defects={"cut": 1}, size=32)
    make_mvtec_tree(src, "grid", n_train=1, n_test_good=0, defects={}, size=32, seed=9)  # not requested
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        tar.add(src / category, arcname=category)
        tar.add(src / "grid", arcname="grid")
        info = tarfile.TarInfo("license.txt")
        payload = b"CC BY-NC-SA 4.0\n"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        for m in extra or []:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_default_table() -> None:
    assert MVTEC_AD_TEXTURES == ["carpet", "grid", "leather", "tile", "wood"]
    assert len(MVTEC_AD_OBJECTS) == 10 and set(DEFAULT_ARCHIVES) == set(MVTEC_AD_CATEGORIES)
    for cat, (url, digest) in DEFAULT_ARCHIVES.items():
        assert url.startswith("https://") and url.endswith(f"/{cat}.tar.xz")
        assert digest is None or re.fullmatch(r"[0-9a-f]{64}", digest)


def test_fetch_success_and_idempotent(tmp_path: Path, server) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    handler.files["/carpet.tar.xz"] = data
    dest, cache = tmp_path / "data", tmp_path / "cache"
    out = fetch_mvtec(["carpet"], dest, urls={"carpet": f"{base}/carpet.tar.xz"},
                      sha256={"carpet": _sha(data)}, cache_dir=cache)
    assert out == [dest / "carpet"]
    df = build_manifest(dest, "carpet")
    assert len(df) == 5 and (df["split"] == "train").sum() == 3
    assert sorted(p.name for p in dest.iterdir()) == ["carpet"]  # only the requested category, no temp dirs
    assert sorted(p.name for p in cache.iterdir()) == ["carpet.tar.xz"]
    n = len(handler.requests)
    assert fetch_mvtec(["carpet"], dest, urls={"carpet": f"{base}/carpet.tar.xz"}, cache_dir=cache) == out
    assert len(handler.requests) == n  # already present: nothing downloaded


def test_wrong_checksum(tmp_path: Path, server) -> None:
    base, handler = server
    handler.files["/carpet.tar.xz"] = _category_tar(tmp_path)
    dest, cache = tmp_path / "data", tmp_path / "cache"
    with pytest.raises(FetchError, match="carpet.tar.xz: sha256 mismatch") as ei:
        fetch_mvtec(["carpet"], dest, urls={"carpet": f"{base}/carpet.tar.xz"},
                    sha256={"carpet": "0" * 64}, cache_dir=cache)
    assert "deleted" in str(ei.value)
    assert list(cache.iterdir()) == []  # part file removed, nothing cached
    assert not (dest / "carpet").exists()


def test_truncated_download_then_resume(tmp_path: Path, server) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    half = len(data) // 2
    handler.files["/carpet.tar.xz"] = data
    handler.truncate_once["/carpet.tar.xz"] = half
    dest, cache = tmp_path / "data", tmp_path / "cache"
    kw = dict(urls={"carpet": f"{base}/carpet.tar.xz"}, sha256={"carpet": _sha(data)}, cache_dir=cache)
    with pytest.raises(FetchError, match="interrupted") as ei:
        fetch_mvtec(["carpet"], dest, **kw)
    part = cache / "carpet.tar.xz.part"
    assert str(part) in str(ei.value)
    assert part.stat().st_size == half
    assert not (dest / "carpet").exists()
    out = fetch_mvtec(["carpet"], dest, **kw)
    assert handler.requests[-1] == ("/carpet.tar.xz", f"bytes={half}-")
    assert out == [dest / "carpet"] and (dest / "carpet" / "train" / "good" / "000.png").is_file()
    assert not part.exists() and _sha((cache / "carpet.tar.xz").read_bytes()) == _sha(data)


def test_server_ignoring_range_restarts(tmp_path: Path, server) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    handler.files["/carpet.tar.xz"] = data
    handler.ignore_range = True
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "carpet.tar.xz.part").write_bytes(b"stale bytes from another file")
    fetch_mvtec(["carpet"], tmp_path / "data", urls={"carpet": f"{base}/carpet.tar.xz"},
                sha256={"carpet": _sha(data)}, cache_dir=cache)
    assert (tmp_path / "data" / "carpet" / "train" / "good").is_dir()


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member_fn",
    [
        lambda tmp: _file("../evil.txt"),
        lambda tmp: _file("carpet/../../evil.txt"),
        lambda tmp: _file(str(tmp / "abs_evil.txt")),  # absolute path
        lambda tmp: _link("carpet/link", "../../evil.txt", tarfile.SYMTYPE),
        lambda tmp: _link("carpet/abslink", str(tmp / "abs_evil.txt"), tarfile.SYMTYPE),
        lambda tmp: _link("carpet/hard", "../evil.txt", tarfile.LNKTYPE),
        lambda tmp: _link("carpet/sibling", "../grid/train", tarfile.SYMTYPE),  # escapes the category
        lambda tmp: _link("carpet/hard2", "license.txt", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out", "symlink-sibling",
         "hardlink-sibling"],
)
def test_malicious_members_refused(tmp_path: Path, server, member_fn) -> None:
    base, handler = server
    member = member_fn(tmp_path)
    data = _category_tar(tmp_path, extra=[member])
    handler.files["/carpet.tar.xz"] = data
    dest = tmp_path / "deep" / "data"
    with pytest.raises(FetchError, match="refusing unsafe archive member") as ei:
        fetch_mvtec(["carpet"], dest, urls={"carpet": f"{base}/carpet.tar.xz"},
                    sha256={"carpet": _sha(data)}, cache_dir=tmp_path / "cache")
    assert "carpet.tar.xz" in str(ei.value) and member.name in str(ei.value)
    assert not (dest / "carpet").exists()
    assert [p for p in dest.iterdir()] == []  # temp extraction folder cleaned up
    assert not list(tmp_path.rglob("*evil.txt"))


def test_corrupt_archive_is_deleted(tmp_path: Path, server) -> None:
    base, handler = server
    handler.files["/carpet.tar.xz"] = b"\xfd7zXZ\x00 definitely not a complete xz stream"
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="cannot read archive"):
        fetch_mvtec(["carpet"], tmp_path / "data", urls={"carpet": f"{base}/carpet.tar.xz"},
                    sha256={"carpet": None}, cache_dir=cache)
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "data" / "carpet").exists()


def test_http_error_and_missing_category_in_archive(tmp_path: Path, server) -> None:
    base, handler = server
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_mvtec(["carpet"], tmp_path / "d", urls={"carpet": f"{base}/nope.tar.xz"}, cache_dir=tmp_path / "c")
    handler.files["/wood.tar.xz"] = _category_tar(tmp_path)  # holds carpet and grid, not wood
    with pytest.raises(FetchError, match="no 'wood/train/' folder"):
        fetch_mvtec(["wood"], tmp_path / "d", urls={"wood": f"{base}/wood.tar.xz"},
                    sha256={"wood": None}, cache_dir=tmp_path / "c")


def test_unknown_category(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown MVTec AD category 'velvet'") as ei:
        fetch_mvtec(["carpet", "velvet"], tmp_path / "data", cache_dir=tmp_path / "cache")
    assert "carpet" in str(ei.value)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match="invalid category name"):
        fetch_mvtec(["../etc"], tmp_path / "data", urls={"../etc": "http://127.0.0.1:9/x.tar.xz"})


# --------------------------------------------------------------------------- cache and resume


def test_cached_archive_with_wrong_checksum_is_downloaded_again(tmp_path: Path, server) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    handler.files["/carpet.tar.xz"] = data
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "carpet.tar.xz").write_bytes(data[:-10] + b"tampered!!")  # same size, wrong content
    kw = dict(urls={"carpet": f"{base}/carpet.tar.xz"}, sha256={"carpet": _sha(data)}, cache_dir=cache)
    assert fetch_mvtec(["carpet"], tmp_path / "data", **kw) == [tmp_path / "data" / "carpet"]
    assert handler.requests == [("/carpet.tar.xz", None)]  # a full download, not a resume
    assert _sha((cache / "carpet.tar.xz").read_bytes()) == _sha(data)
    # when the new download fails, the bad cached copy is gone, not reused
    (cache / "carpet.tar.xz").write_bytes(b"tampered")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_mvtec(["carpet"], tmp_path / "data2", urls={"carpet": f"{base}/gone.tar.xz"},
                    sha256={"carpet": _sha(data)}, cache_dir=cache)
    assert not (cache / "gone.tar.xz").exists() and not (tmp_path / "data2" / "carpet").exists()


def test_cached_archive_without_checksum_is_still_checked_when_extracting(tmp_path: Path, server) -> None:
    base, handler = server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "carpet.tar.xz").write_bytes(b"\xfd7zXZ\x00 broken")  # corrupt cached copy, no digest to check
    with pytest.raises(FetchError, match="cannot read archive"):
        fetch_mvtec(["carpet"], tmp_path / "data", urls={"carpet": f"{base}/carpet.tar.xz"},
                    sha256={"carpet": None}, cache_dir=cache)
    assert not (cache / "carpet.tar.xz").exists() and handler.requests == []  # deleted: the next run downloads


def test_416_on_resume_of_a_complete_part_file(tmp_path: Path, server) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    handler.files["/carpet.tar.xz"] = data
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "carpet.tar.xz.part").write_bytes(data)  # download finished, rename never happened
    fetch_mvtec(["carpet"], tmp_path / "data", urls={"carpet": f"{base}/carpet.tar.xz"},
                sha256={"carpet": _sha(data)}, cache_dir=cache)
    assert handler.requests == [("/carpet.tar.xz", f"bytes={len(data)}-")]  # answered 416: nothing re-downloaded
    assert not (cache / "carpet.tar.xz.part").exists() and (tmp_path / "data" / "carpet" / "train" / "good").is_dir()


@pytest.mark.parametrize("bare", [False, True], ids=["content-range", "no-content-range"])
def test_416_on_resume_of_a_stale_longer_part_file_restarts(tmp_path: Path, server, bare: bool) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    handler.files["/carpet.tar.xz"] = data
    handler.bare_416 = bare
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "carpet.tar.xz.part").write_bytes(b"s" * (len(data) + 100))  # left over from another file
    fetch_mvtec(["carpet"], tmp_path / "data", urls={"carpet": f"{base}/carpet.tar.xz"},
                sha256={"carpet": _sha(data)}, cache_dir=cache)
    assert handler.requests == [("/carpet.tar.xz", f"bytes={len(data) + 100}-"), ("/carpet.tar.xz", None)]
    assert _sha((cache / "carpet.tar.xz").read_bytes()) == _sha(data)


def test_416_on_resume_of_a_same_size_wrong_part_file(tmp_path: Path, server) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    handler.files["/carpet.tar.xz"] = data
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "carpet.tar.xz.part").write_bytes(b"s" * len(data))
    kw = dict(urls={"carpet": f"{base}/carpet.tar.xz"}, sha256={"carpet": _sha(data)}, cache_dir=cache)
    with pytest.raises(FetchError, match="sha256 mismatch"):  # 416 says "complete"; the digest says otherwise
        fetch_mvtec(["carpet"], tmp_path / "data", **kw)
    assert list(cache.iterdir()) == []  # the bad part file is deleted, so the next run starts over
    fetch_mvtec(["carpet"], tmp_path / "data", **kw)
    assert handler.requests[-1] == ("/carpet.tar.xz", None)


# --------------------------------------------------------------------------- links, devices, PATH_MAX


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _symlink_chain(tmp: Path) -> list[tarfile.TarInfo]:
    """s0 -> ., s1 -> s0/.., s2 -> s1/.., ...: each link stays inside carpet/ as text, s1 is really
    the extraction folder, s2 its parent, and so on; then a file written through the last link."""
    members = [_link("carpet/s0", ".", tarfile.SYMTYPE)]
    for k in range(1, 6):
        members.append(_link(f"carpet/s{k}", f"s{k - 1}/..", tarfile.SYMTYPE))
    return members + [_file("carpet/s5/evil.txt")]


def _path_max_escape(tmp: Path) -> list[tarfile.TarInfo]:
    """The CVE-2025-4517 construction, entirely under carpet/, with every link inside carpet/ as
    text: nested folders and step links whose expansion exceeds PATH_MAX, so that
    ``os.path.realpath`` (and with it tarfile's ``data`` filter) stops resolving, then a link
    through them that really leads three levels above carpet/, and a file written through it."""
    dest_root = tmp / "deep" / "data"  # where test_link_tricks_refused extracts
    dest_root.mkdir(parents=True, exist_ok=True)
    # extraction folder: <dest_root>/.carpet.extract-XXXXXXXX (tempfile.mkdtemp adds 8 characters)
    base = len(os.path.realpath(dest_root)) + len("/.carpet.extract-") + 8 + len("/carpet")
    path_max = os.pathconf(dest_root, "PC_PATH_MAX")
    steps = "abcdefghijklmnop"
    component = "d" * ((path_max - base - 1) // (len(steps) + 1))
    members, path = [], "carpet"
    for step in steps:
        members += [_dir(f"{path}/{component}"), _link(f"{path}/{step}", component, tarfile.SYMTYPE)]
        path = f"{path}/{component}"
    long_link = "/".join(steps) + "/" + "l" * 254
    members.append(_link(f"carpet/{long_link}", "/".join([".."] * len(steps)), tarfile.SYMTYPE))
    members.append(_link("carpet/escape", f"{long_link}/../../..", tarfile.SYMTYPE))
    return members + [_file("carpet/escape/evil.txt")]


@pytest.mark.parametrize(
    "members_fn, refused, why",
    [
        (_symlink_chain, "carpet/s0", "symbolic link"),
        (_path_max_escape, "carpet/a'", "symbolic link"),
        (lambda tmp: [_link("carpet/hard", "carpet/train/good/000.png", tarfile.LNKTYPE)], "carpet/hard", "hard link"),
        (lambda tmp: [_link("carpet/train/good/x.png", "000.png", tarfile.SYMTYPE)], "carpet/train/good/x.png",
         "symbolic link"),
        (lambda tmp: [_link("carpet/fifo", "", tarfile.FIFOTYPE)], "carpet/fifo", "device or FIFO"),
        (lambda tmp: [_link("carpet/tty", "", tarfile.CHRTYPE)], "carpet/tty", "device or FIFO"),
        (lambda tmp: [_link("carpet/disk", "", tarfile.BLKTYPE)], "carpet/disk", "device or FIFO"),
        (lambda tmp: [_link("grid/link", "../grid", tarfile.SYMTYPE)], "grid/link", "symbolic link"),  # not requested
    ],
    ids=["symlink-chain", "path-max-escape", "hardlink-inside", "symlink-inside", "fifo", "char-device",
         "block-device", "link-in-other-category"],
)
def test_link_tricks_refused(tmp_path: Path, server, members_fn, refused: str, why: str) -> None:
    base, handler = server
    data = _category_tar(tmp_path, extra=members_fn(tmp_path))
    handler.files["/carpet.tar.xz"] = data
    dest = tmp_path / "deep" / "data"
    with pytest.raises(FetchError, match="refusing unsafe archive member") as ei:
        fetch_mvtec(["carpet"], dest, urls={"carpet": f"{base}/carpet.tar.xz"},
                    sha256={"carpet": _sha(data)}, cache_dir=tmp_path / "cache")
    msg = str(ei.value)
    assert msg.startswith(str(tmp_path / "cache" / "carpet.tar.xz")) and why in msg
    assert f"'{refused}" in msg  # names the member (the first offending one)
    assert not (dest / "carpet").exists() and list(dest.iterdir()) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_written_files_are_plain_and_inside(tmp_path: Path, server) -> None:
    base, handler = server
    data = _category_tar(tmp_path)
    handler.files["/carpet.tar.xz"] = data
    dest = tmp_path / "data"
    fetch_mvtec(["carpet"], dest, urls={"carpet": f"{base}/carpet.tar.xz"}, sha256={"carpet": _sha(data)},
                cache_dir=tmp_path / "cache")
    files = [p for p in (dest / "carpet").rglob("*")]
    assert files and all(not p.is_symlink() and (p.is_dir() or p.is_file()) for p in files)
    src = tmp_path / "src" / "carpet" / "train" / "good" / "000.png"
    assert (dest / "carpet" / "train" / "good" / "000.png").read_bytes() == src.read_bytes()
    assert sorted(p.relative_to(dest / "carpet") for p in files) == sorted(
        p.relative_to(tmp_path / "src" / "carpet") for p in (tmp_path / "src" / "carpet").rglob("*"))
