"""Fetch MVTec AD categories: resumable download, sha256 check, safe atomic extraction.

MVTec AD (Bergmann et al., CVPR 2019) is published by MVTec Software GmbH under
CC BY-NC-SA 4.0 (non-commercial use, attribution, share-alike). Nothing here runs implicitly:
:func:`fetch_mvtec` is called by an explicit fetch stage.

Per category: ``<cache_dir>/<archive>.part`` is downloaded with urllib (an existing part file is
resumed with an HTTP ``Range`` request), checked against its sha256 when one is known (a mismatch
deletes the part file), renamed to ``<cache_dir>/<archive>``, and only the requested category is
extracted -- into a temporary folder next to the destination that is renamed into place, so a
failed run never leaves a half-extracted category. MVTec archives hold only folders and regular
files, so any other member -- symbolic or hard link, device, FIFO -- makes the whole archive
refused, as does a member with an absolute path or ``..``. Links are refused outright rather
than checked, because a chain of links that each stay inside the folder as text can still lead
outside it on disk (and ``tarfile``'s own ``filter="data"`` has been fooled that way, e.g. with
links whose resolved path exceeds PATH_MAX). Members are then written by sidn itself, not by
``tarfile``'s extraction code: every target path is checked against the real (resolved)
extraction folder, and files are created with ``O_EXCL | O_NOFOLLOW``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

MVTEC_AD_TEXTURES = ["carpet", "grid", "leather", "tile", "wood"]
MVTEC_AD_OBJECTS = [
    "bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper",
]
MVTEC_AD_CATEGORIES = MVTEC_AD_TEXTURES + MVTEC_AD_OBJECTS

_HOST = "https://www.mydrive.ch/shares"

# category -> (url, sha256 or None). URLs: the per-category links of the MVTec AD downloads page
# (each category is its own mydrive share). Older links under share 38536 (same file ids, e.g.
# .../38536/3830184030e49fe74747669442f0f282/download/420937484-1629951672/carpet.tar.xz) serve
# the same archives. sha256: published per-category digests (two independent sources agree);
# they pin the archive content, so they also hold for a mirror of the same files.
DEFAULT_ARCHIVES: dict[str, tuple[str, str | None]] = {
    "carpet": (f"{_HOST}/150455/eac7fbce84d93a5094e13f391170eca4/download/420937484-1629959013/carpet.tar.xz",
               "d9dd5064515a20bd75cf24d223c570579141abd72388beef892780b74dbaa85d"),
    "grid": (f"{_HOST}/150456/bb0b2e3dc804ccb8b4485e01f8e4493b/download/420937487-1629959044/grid.tar.xz",
             "d94a9a651cbfaee22c94d06cf8fa8204a590c872362de0489eb34f1645328de8"),
    "leather": (f"{_HOST}/150458/923030ce14e10a7d147e95d0f8885f6b/download/420937607-1629959262/leather.tar.xz",
                "704ffa48b1dc2fc44824aa50442d9febc399dd92a5d6fd8156f8aa0373d15f24"),
    "tile": (f"{_HOST}/150462/5479f0fdc97bc6fa16eab0cb0cf0109f/download/420938133-1629960456/tile.tar.xz",
             "392228153b96d0db9f179d3f7c2d63e131e907154883b57309fcbf798643173c"),
    "wood": (f"{_HOST}/150465/d5b4115b720cdb54d217e75636e6e374/download/420938383-1629960649/wood.tar.xz",
             "3757297ac2a266072eb4f25a97f805f5b37fd583492b20bd709f310736c1ea47"),
    "bottle": (f"{_HOST}/150452/132a93367fb17cdf968dfb5c4013f6e7/download/420937370-1629958698/bottle.tar.xz",
               "726512129cb3b1f47d4f6cd7c7fc9170db7fc209132249c788fec06029cb5dc3"),
    "cable": (f"{_HOST}/150453/10f960e07fec2838b2cd512586633a32/download/420937413-1629958794/cable.tar.xz",
              "1e3d59b80a6a8da5adf32fb0cf311c7b964cde146d6920aef9ca66380999a9cd"),
    "capsule": (f"{_HOST}/150454/e0ce6dd74eb150f46c0d98131b3703f2/download/420937454-1629958872/capsule.tar.xz",
                "f6a41cb11f1589d552888fe9c43a1adcbcae15b70073e19093322f836d00a2b6"),
    "hazelnut": (f"{_HOST}/150457/51d49f65e84bdc100ff8035d7dd783ea/download/420937545-1629959162/hazelnut.tar.xz",
                 "a7f4e7d65a60a235def7236a46fcb854d62e6c6917c16b1ec9cb4ff089d3b0da"),
    "metal_nut": (f"{_HOST}/150459/c68856a21dca589b0f8ff6d4ee0f18f4/download/420937637-1629959294/metal_nut.tar.xz",
                  "86e3c8e163ceb19146ad3ddc408e85cc34ae02e0da430e07a73bac6bbb48532a"),
    "pill": (f"{_HOST}/150460/d4f1c04da67034ccc8d8b5fa3e73f244/download/420938129-1629960351/pill.tar.xz",
             "ac6ce9ec4ec2a5d67c906d82147bd7431980cf00b78f25d63201a5f17e3a2038"),
    "screw": (f"{_HOST}/150461/242f454cc6385e5693c4fd4b94567d1e/download/420938130-1629960389/screw.tar.xz",
              "0a27a365a21e472d19b9fb48cb8e4002b49fabe083bff7f4c16fa57d78154f10"),
    "toothbrush": (f"{_HOST}/150463/895a1a5fb84b958f07417784b060434b/download/420938134-1629960477/toothbrush.tar.xz",
                   "fe72a34b4b0d074f84e844be7ef8c4f64f7f02f20e25f19c9e3b4a231c8bea77"),
    "transistor": (f"{_HOST}/150464/99b8ea0332438d64fcc2475ee73f9c29/download/420938166-1629960554/transistor.tar.xz",
                   "146b2166c35a1d0cf37ded091366ac01a50338b4ac704632f1239890eaca4449"),
    "zipper": (f"{_HOST}/150466/bd155b557520edaf692d9bfdb915c24a/download/420938385-1629960680/zipper.tar.xz",
               "7ab46e0e195da145db30052baea3d3a5d14c5f0e710137c968e0423f02cb942d"),
}

USER_AGENT = "sidn-fetch/0.1 (+urllib)"
CHUNK = 1 << 20
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class FetchError(RuntimeError):
    """Download, verification or extraction failed; the message names the URL or archive."""


class CorruptArchiveError(FetchError):
    """The archive cannot be decompressed or parsed (the cached copy is deleted)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sidn/mvtec_ad`` (``~/.cache/sidn/mvtec_ad``): outside DVC-tracked data."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sidn" / "mvtec_ad"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _archive_name(url: str, category: str) -> str:
    name = posixpath.basename(urllib.parse.urlparse(url).path)
    if not name or not _NAME_RE.fullmatch(name):
        name = f"{category}.tar.xz"
    return name


# --------------------------------------------------------------------------- download


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) URLs from config


def _download_part(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming an existing part file. FetchError when incomplete."""
    have = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, have, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range not satisfiable: stale or already-complete part file
            total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return
            log.warning("%s: server refused to resume at byte %d; starting over", url, have)
            part.unlink(missing_ok=True)
            return _download_part(url, part, timeout)
        raise FetchError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: download failed: {reason}") from exc

    with resp:
        if have and resp.status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range") or "")
            start = int(m.group(1)) if m else -1
            if start != have:
                raise FetchError(f"{url}: server resumed at byte {start}, expected {have}; delete {part} and retry")
            mode = "ab"
            log.info("%s: resuming at byte %d", url, have)
        else:
            if have:
                log.warning("%s: server ignored the Range request; downloading from the start", url)
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        received = have
        error: BaseException | None = None
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as f:
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
            except (http.client.HTTPException, OSError) as exc:  # IncompleteRead, reset, timeout
                error = exc
    if (expected is not None and received < expected) or error is not None:
        of = f" of {expected}" if expected is not None else ""
        raise FetchError(
            f"{url}: download interrupted after {received}{of} bytes"
            + (f" ({error})" if error else "")
            + f"; the partial file {part} is kept, run the fetch again to resume"
        )


def download_archive(url: str, archive: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Make sure ``archive`` holds the file at ``url`` (verified when ``sha256`` is given).

    A cached archive is reused (re-verified when ``sha256`` is known; replaced on mismatch).
    A new download goes to ``<archive>.part`` and is renamed only once it is complete and verified.
    """
    archive = Path(archive)
    if archive.is_file():
        if sha256 is None or _sha256_file(archive) == sha256.lower():
            log.info("using cached archive %s", archive)
            return archive
        log.warning("%s: cached archive does not match its sha256; downloading it again", archive)
        archive.unlink()
    part = archive.with_name(archive.name + ".part")
    log.info("downloading %s -> %s", url, archive)
    _download_part(url, part, timeout)
    digest = _sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise FetchError(
            f"{archive.name}: sha256 mismatch (expected {sha256.lower()}, got {digest}) for {url}; "
            f"the partial download {part} was deleted"
        )
    if sha256 is None:
        log.warning("%s: no checksum known, not verified (sha256 %s); pin it in the fetch config", archive.name, digest)
    os.replace(part, archive)
    return archive


# --------------------------------------------------------------------------- extraction


def _member_problem(m: tarfile.TarInfo) -> str | None:
    """Why this member is refused, or None: only folders and regular files with relative names
    free of ``..`` are accepted (MVTec archives hold nothing else)."""
    if m.issym():
        return f"symbolic link (to {m.linkname!r}); archives with links are not accepted"
    if m.islnk():
        return f"hard link (to {m.linkname!r}); archives with links are not accepted"
    if m.ischr() or m.isblk() or m.isfifo():
        return "device or FIFO"
    if not (m.isreg() or m.isdir()):
        return f"unsupported member type {m.type!r}"
    name = m.name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' in path"
    return None


def _write_members(tar: tarfile.TarFile, selected: list[tuple[str, tarfile.TarInfo]], tmp: Path, archive: Path) -> None:
    """Write folders and regular files below ``tmp``, checking each path against the real folder.

    ``tmp`` is a fresh folder and no link is ever written, so nothing below it can redirect a
    path; ``O_NOFOLLOW`` and the resolved-path check make sure of it anyway.
    """
    root = os.path.realpath(tmp)
    kinds: dict[str, bool] = {}  # name -> is a folder
    for name, m in selected:
        dest = os.path.realpath(os.path.join(root, name))
        if dest == root or os.path.commonpath([root, dest]) != root:
            raise FetchError(f"{archive}: refusing unsafe archive member {m.name!r}: it would be written outside {tmp}")
        if name in kinds and not (m.isdir() and kinds[name]):
            raise FetchError(f"{archive}: refusing unsafe archive member {m.name!r}: it occurs twice in the archive")
        kinds[name] = m.isdir()
        if m.isdir():
            os.makedirs(dest, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        src = tar.extractfile(m)
        if src is None:  # pragma: no cover - regular members always have a file object
            raise FetchError(f"{archive}: cannot read archive member {m.name!r}")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)


def _category_prefix(names: list[str], category: str) -> str | None:
    """Folder in the archive that holds ``<category>/train/...`` (shortest match), or None."""
    best: str | None = None
    needle = f"{category}/train/"
    for n in names:
        i = n.find(needle)
        while i != -1:
            if i == 0 or n[i - 1] == "/":
                prefix = n[: i + len(category)]
                if best is None or len(prefix) < len(best):
                    best = prefix
                break
            i = n.find(needle, i + 1)
    return best


def extract_category(archive: Path, category: str, dest_root: Path) -> Path:
    """Extract only ``<category>/`` from ``archive`` into ``dest_root/<category>``, atomically.

    FetchError naming the archive and the member when any member of the archive is not a
    folder or regular file with a safe relative name (see the module docstring).
    """
    archive, dest_root = Path(archive), Path(dest_root)
    target = dest_root / category
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{category}.extract-", dir=dest_root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    problem = _member_problem(m)
                    if problem:
                        raise FetchError(f"{archive}: refusing unsafe archive member {m.name!r}: {problem}")
                names = [posixpath.normpath(m.name.replace("\\", "/")) for m in members]
                prefix = _category_prefix([n + ("/" if m.isdir() else "") for n, m in zip(names, members)], category)
                if prefix is None:
                    raise FetchError(f"{archive}: no '{category}/train/' folder in the archive")
                selected = [(n, m) for n, m in zip(names, members) if n == prefix or n.startswith(prefix + "/")]
                _write_members(tar, selected, tmp, archive)
        except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as exc:
            raise CorruptArchiveError(f"{archive}: cannot read archive ({exc}); it was deleted, fetch again") from exc
        except OSError as exc:
            raise FetchError(f"{archive}: extraction into {dest_root} failed: {exc}") from exc
        src = tmp / prefix
        if not (src / "train" / "good").is_dir():
            raise FetchError(f"{archive}: '{prefix}/train/good' is missing from the archive")
        os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- public API


def fetch_mvtec(
    categories: Sequence[str],
    dest_root: str | os.PathLike,
    urls: Mapping[str, str] | None = None,
    sha256: Mapping[str, str | None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    timeout: float = 60.0,
    keep_archives: bool = True,
) -> list[Path]:
    """Download and extract MVTec AD categories into ``dest_root/<category>``; return those paths.

    Args:
        categories: category names (see :data:`MVTEC_AD_CATEGORIES`; others need ``urls``).
        dest_root: dataset root; a category that already has ``train/good`` is left untouched.
        urls: category -> archive URL, overriding :data:`DEFAULT_ARCHIVES` (mirrors, other datasets).
        sha256: category -> expected sha256 (``None``: do not verify). Without an entry, the
            default digest applies only when the default URL is used.
        cache_dir: where archives and ``.part`` files live (default :func:`default_cache_dir`).
        timeout: socket timeout in seconds.
        keep_archives: keep verified archives in the cache after extraction.

    Raises:
        ValueError: unknown category name (before anything is downloaded).
        FetchError: download failed or was interrupted (the part file is kept for resuming),
            checksum mismatch (part file deleted), unsafe or unreadable archive.
    """
    urls = dict(urls or {})
    sums = dict(sha256 or {})
    dest = Path(dest_root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    plan: list[tuple[str, str, str | None]] = []
    for cat in categories:
        if not _NAME_RE.fullmatch(cat):
            raise ValueError(f"invalid category name {cat!r}")
        if cat in urls:
            url = urls[cat]
            digest = sums.get(cat, DEFAULT_ARCHIVES[cat][1] if cat in DEFAULT_ARCHIVES and url == DEFAULT_ARCHIVES[cat][0] else None)
        elif cat in DEFAULT_ARCHIVES:
            url, default_digest = DEFAULT_ARCHIVES[cat]
            digest = sums.get(cat, default_digest)
        else:
            raise ValueError(
                f"unknown MVTec AD category {cat!r}: known categories are {', '.join(MVTEC_AD_CATEGORIES)}; "
                "pass urls={category: url} for other archives"
            )
        plan.append((cat, url, digest))

    out: list[Path] = []
    for cat, url, digest in plan:
        target = dest / cat
        if (target / "train" / "good").is_dir():
            log.info("%s: already present, not fetched", target)
            out.append(target)
            continue
        if target.exists():
            raise FetchError(f"{target}: exists but has no train/good folder; remove it and fetch again")
        if url == DEFAULT_ARCHIVES.get(cat, ("",))[0]:
            log.info("MVTec AD is licensed CC BY-NC-SA 4.0 (non-commercial use); cite Bergmann et al., CVPR 2019")
        archive = download_archive(url, cache / _archive_name(url, cat), digest, timeout=timeout)
        try:
            extract_category(archive, cat, dest)
        except CorruptArchiveError:
            archive.unlink(missing_ok=True)  # corrupt cached download: fetch it again next time
            raise
        if not keep_archives:
            archive.unlink(missing_ok=True)
        log.info("%s: fetched", target)
        out.append(target)
    return out
