"""Reader for any MVTec-AD-layout folder.

Layout (MVTec AD, Bergmann et al. 2019; the paper's Sec. IV-A datasets use it)::

    <root>/<category>/train/good/*.png                     defect-free training images
    <root>/<category>/test/good/*.png                      defect-free test images
    <root>/<category>/test/<defect>/<name>.png             defective test images
    <root>/<category>/ground_truth/<defect>/<name>_mask.png   their masks

Images may be PNG, JPEG, BMP or TIFF, 8- or 16-bit, gray, RGB or RGBA; they are read with
``cv2.IMREAD_UNCHANGED`` and turned into grayscale float32 in [0, 1] (the paper works on
grayscale images). Masks must be binary: {0, 255} or {0, 1} (16-bit: {0, 65535} or {0, 1}).

Every file is read in its *displayed* orientation (see :func:`decode_bytes`): the EXIF
orientation tag of a JPEG or PNG is applied, as image viewers do (OpenCV's TIFF reader already
applies a TIFF's own orientation tag), so a mask drawn over an image in a viewer lines up with it.
Damaged JPEGs (image data that ends early, stray markers) are refused instead of being decoded
with grey rows.

Every problem raises :class:`DataError` whose message starts with the offending file (or the
folder that was expected) and says what is wrong.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = "_mask"
MANIFEST_COLUMNS = [
    "category",
    "path",
    "split",
    "defect_type",
    "label",
    "mask_path",
    "height",
    "width",
    "channels",
    "bit_depth",
]


class DataError(ValueError):
    """A data file or folder is missing or unusable. The message starts with its path."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable across processes (Dask)
        return (type(self), (self.path, self.problem))


# --------------------------------------------------------------------------- decoding


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file's bytes; DataError if it is missing, not a file or empty."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file does not exist")
    if not p.is_file():
        raise DataError(p, "is not a regular file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(p, f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise DataError(p, "file is empty (0 bytes)")
    return data


def _looks_truncated(data: bytes) -> str | None:
    """Cheap structural end-of-file check for PNG (JPEG files get :func:`_jpeg_layout`).

    Some decoder builds return a partly grey image for a truncated file instead of failing, so we
    check that the PNG end chunk ``IEND`` is present near the end.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in data[-4096:]:
        return "truncated PNG file (no IEND chunk at the end)"
    return None


# --------------------------------------------------------------------------- JPEG checks, orientation

# Filler inserted before the end of each JPEG scan by the early-end check: no 0xFF byte, so a
# decoder reads it as entropy-coded data, never as a marker; it starts with 1-bits, so it does
# not decode like the zero bits a decoder stuffs in when a scan's data runs out.
_JPEG_FILLER = bytes((i * 73 + 0xB5) % 255 for i in range(512))
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)
_JPEG_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3})  # baseline, extended, progressive, lossless
_JPEG_DCT_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})  # single-frame DCT: scans must cover all 64 coefficients


@dataclass(frozen=True)
class _JpegLayout:
    """What :func:`_jpeg_layout` found: where each scan's data ends, coding, EXIF orientation."""

    scan_ends: list[tuple[int, int]]  # (offset of the marker ending a scan, next restart index or -1)
    huffman: bool
    orientation: int


def _exif_orientation(tiff: bytes) -> int:
    """EXIF orientation (1..8) from a TIFF-structured EXIF block; 1 when absent or unreadable."""
    try:
        order = {b"II": "<", b"MM": ">"}[bytes(tiff[:2])]
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for k in range(count):
            tag, kind, n = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * k)
            if tag == 0x0112:
                if kind != 3 or n != 1:  # must be one SHORT
                    return 1
                (value,) = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * k + 8)
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1


def _png_orientation(data: bytes) -> int:
    """EXIF orientation from a PNG's ``eXIf`` chunk (1 without one); walks chunk headers only."""
    i, n = 8, len(data)
    while i + 8 <= n:
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if kind == b"eXIf":
            return _exif_orientation(data[i + 8 : i + 8 + length])
        if kind == b"IEND":
            break
        i += 12 + length
    return 1


def _scan_end(data: bytes, i: int, restart_interval: int, path: str | os.PathLike) -> tuple[int, int]:
    """Offset of the marker that ends the entropy-coded data starting at ``i``, and the index
    (0..7) of the restart marker that would come next. DataError for stray restart markers."""
    expected = 0
    while True:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= len(data):
            raise DataError(path, "truncated JPEG file (image data runs to the end of the file, no end-of-image marker)")
        code = data[j + 1]
        if code == 0x00:  # stuffed 0xFF data byte
            i = j + 2
        elif 0xD0 <= code <= 0xD7:
            if not restart_interval:
                raise DataError(path, f"damaged JPEG: restart marker at byte {j} in a file without restart interval")
            if code - 0xD0 != expected:
                raise DataError(
                    path, f"damaged JPEG: restart marker {code - 0xD0} at byte {j} out of sequence (expected {expected})"
                )
            expected = (expected + 1) % 8
            i = j + 2
        else:
            return j, expected


def _jpeg_layout(data: bytes, path: str | os.PathLike) -> _JpegLayout:
    """Walk the markers of a JPEG file; DataError naming ``path`` when its structure is damaged.

    Refused: a segment running past the end of the file, a marker that cannot occur there (a
    reserved code, a restart marker outside image data or out of sequence, a second
    start-of-image), image data before the frame header, no end-of-image marker, and -- for
    single-frame DCT files -- scans that leave some coefficient of some component uncoded (a
    file cut between two scans of a progressive JPEG). Bytes between segments and after the
    end-of-image marker are skipped, as decoders do.
    """
    n, i = len(data), 2
    sof: int | None = None
    restart_interval = 0
    orientation: int | None = None
    scan_ends: list[tuple[int, int]] = []
    coverage: dict[int, int] = {}  # component id -> bit k set once coefficient k is fully coded
    while True:
        i = data.find(b"\xff", i)  # bytes between segments are skipped, as decoders do
        while 0 <= i < n and data[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i < 0 or i >= n:
            raise DataError(path, "truncated JPEG file (no end-of-image marker)")
        marker, at = data[i], i - 1
        i += 1
        if marker == 0xD9:  # end of image
            break
        if marker == 0x01:  # TEM: no length field, ignored
            continue
        if marker < 0xC0 or 0xD0 <= marker <= 0xD8:  # reserved codes, or markers that cannot occur here
            raise DataError(path, f"damaged JPEG: unexpected marker 0xFF{marker:02X} at byte {at}")
        length = int.from_bytes(data[i : i + 2], "big")
        if i + 2 > n or length < 2 or i + length > n:
            raise DataError(path, f"damaged or truncated JPEG file (segment 0xFF{marker:02X} at byte {at} runs past the end)")
        body = i + 2
        i += length
        if marker in _JPEG_SOF:
            sof = marker
            n_comp = data[body + 5] if length >= 8 else 0
            coverage = {data[body + 6 + 3 * c]: 0 for c in range(n_comp) if body + 6 + 3 * c < i}
        elif marker == 0xDD and length >= 4:  # DRI: restart interval
            restart_interval = int.from_bytes(data[body : body + 2], "big")
        elif marker == 0xE1 and orientation is None and data[body : body + 6] == b"Exif\x00\x00":
            orientation = _exif_orientation(data[body + 6 : i])
        elif marker == 0xDA:  # start of scan: entropy-coded data follows the header
            if sof is None:
                raise DataError(path, f"damaged JPEG: image data at byte {at} before the frame header")
            n_scan = data[body] if length >= 3 else 0
            if length < 6 + 2 * n_scan:
                raise DataError(path, f"damaged JPEG: scan header at byte {at} is too short")
            first, last, approx = data[body + 1 + 2 * n_scan : body + 4 + 2 * n_scan]
            if approx & 0x0F == 0 and first <= last <= 63:  # these coefficients are now complete
                for c in range(n_scan):
                    cid = data[body + 1 + 2 * c]
                    if cid in coverage:
                        coverage[cid] |= (1 << (last + 1)) - (1 << first)
            end, next_restart = _scan_end(data, i, restart_interval, path)
            scan_ends.append((end, next_restart if restart_interval else -1))
            i = end
    if sof is None or not scan_ends:
        raise DataError(path, "damaged JPEG: no frame header or no image data before the end-of-image marker")
    if sof in _JPEG_DCT_SOF and any(bits != (1 << 64) - 1 for bits in coverage.values()):
        raise DataError(
            path,
            "damaged JPEG: scans are missing (file truncated between scans and given an end marker again?); "
            "a decoder would leave part of the image grey or blurred",
        )
    return _JpegLayout(scan_ends, sof in _JPEG_HUFFMAN_SOF, orientation or 1)


def _jpeg_ends_early(data: bytes, layout: _JpegLayout, raw: np.ndarray) -> bool:
    """True when some scan of a decoded Huffman JPEG has less data than its blocks need.

    A decoder stops reading a scan after its last block, so filler bytes inserted before the
    marker that ends the scan (and, with restart intervals, a filler, the next restart marker
    and more filler) leave a complete file's pixels unchanged. A scan that ends early (a file
    truncated and given an end-of-image marker again, or corrupt data that hits a marker) is
    filled with zeros -- the grey rows -- without the filler, and decodes the filler with it.
    """
    parts: list[bytes] = []
    prev = 0
    for end, next_restart in layout.scan_ends:
        parts += [data[prev:end], _JPEG_FILLER]
        if next_restart >= 0:
            parts += [bytes((0xFF, 0xD0 + next_restart)), _JPEG_FILLER]
        prev = end
    parts.append(data[prev:])
    probe = cv2.imdecode(np.frombuffer(b"".join(parts), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    return probe is None or probe.shape != raw.shape or not np.array_equal(probe, raw)


def _apply_orientation(raw: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into their displayed orientation (EXIF orientation values 1..8)."""
    turned = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # stored rotated 90 counter-clockwise: turn clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda a: np.rot90(a, 1),  # stored rotated 90 clockwise: turn counter-clockwise
    }.get(orientation)
    return raw if turned is None else np.ascontiguousarray(turned(raw))


def decode_bytes(data: bytes, path: str | os.PathLike) -> np.ndarray:
    """Decode image bytes with ``cv2.IMREAD_UNCHANGED``; DataError naming ``path`` on failure.

    Returns the raw array (uint8 or uint16; [H, W] or [H, W, C] in BGR(A) order) in the
    orientation image viewers display:

    * JPEG (Exif APP1 segment) and PNG (``eXIf`` chunk): the EXIF orientation tag is applied
      here, because ``IMREAD_UNCHANGED`` ignores it; TIFF: OpenCV's TIFF reader applies the
      file's Orientation tag itself. Height and width are those after turning, so masks drawn
      over the displayed image match. Values outside 1..8 are ignored, as viewers do.
    * JPEG files are checked for damage a decoder would hide (libjpeg fills missing image data
      with grey and only prints a warning): the marker structure is walked strictly
      (:func:`_jpeg_layout`), and a Huffman-coded file is decoded a second time with filler
      before the end of each scan, which changes the pixels only when a scan's data ends early
      (:func:`_jpeg_ends_early`): a file truncated and given an end marker again, or corrupt
      data that runs into a marker. That second decode is the check's cost (about one decode).
      Bit errors that leave the coded data a consistent length cannot be detected (no decoder
      reports them either); arithmetic-coded files get the structure check only.
    """
    problem = _looks_truncated(data)
    if problem:
        raise DataError(path, problem)
    layout = _jpeg_layout(data, path) if data.startswith(b"\xff\xd8") else None
    try:
        raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # pragma: no cover - imdecode normally returns None
        raise DataError(path, f"cannot decode image: {exc}") from exc
    if raw is None or raw.size == 0:
        raise DataError(path, "cannot decode image (corrupt, truncated or unsupported format)")
    if raw.dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"unsupported sample type {raw.dtype} (expected 8- or 16-bit integers)")
    if raw.ndim == 3 and raw.shape[2] not in (1, 2, 3, 4):
        raise DataError(path, f"unsupported number of channels {raw.shape[2]} (expected 1, 3 or 4)")
    if raw.ndim not in (2, 3):
        raise DataError(path, f"unsupported image shape {raw.shape}")
    if layout is not None:
        if layout.huffman and _jpeg_ends_early(data, layout, raw):
            raise DataError(
                path,
                "damaged JPEG: the image data ends before the last blocks (file truncated or corrupt); "
                "a decoder would fill the rest with grey",
            )
        return _apply_orientation(raw, layout.orientation)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _apply_orientation(raw, _png_orientation(data))
    return raw


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file (dtype and channels as stored, displayed orientation);
    see :func:`decode_bytes`."""
    return decode_bytes(read_bytes(path), path)


def image_info(raw: np.ndarray) -> tuple[int, int, int, int]:
    """(height, width, channels, bit_depth) of a decoded raw array."""
    channels = 1 if raw.ndim == 2 else int(raw.shape[2])
    bit_depth = 16 if raw.dtype == np.uint16 else 8
    return int(raw.shape[0]), int(raw.shape[1]), channels, bit_depth


def raw_to_gray(raw: np.ndarray, path: str | os.PathLike = "<array>") -> np.ndarray:
    """Raw decoded array -> float32 gray [H, W] in [0, 1] (16-bit scaled by 65535)."""
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    img = raw.astype(np.float32) / np.float32(scale)
    if img.ndim == 3:
        c = img.shape[2]
        if c == 1:
            img = img[:, :, 0]
        elif c == 2:  # gray + alpha
            img = img[:, :, 0]
        elif c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif c == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        else:  # pragma: no cover - rejected in decode_bytes
            raise DataError(path, f"unsupported number of channels {c}")
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any PNG/JPEG/BMP/TIFF (8/16-bit, gray/RGB/RGBA) as float32 gray [H, W] in [0, 1]."""
    return raw_to_gray(read_raw(path), path)


def raw_to_mask(raw: np.ndarray, path: str | os.PathLike = "<array>") -> np.ndarray:
    """Raw decoded mask -> uint8 {0, 1} [H, W]; DataError if it is not binary.

    Allowed value sets: {0, 255} or {0, 1} (and {0, 65535} for 16-bit masks). A mask with
    several channels is accepted only when all channels are equal.
    """
    m = raw
    if m.ndim == 3:
        if m.shape[2] == 4:
            m = m[:, :, :3]
        if m.shape[2] > 1 and not all(np.array_equal(m[:, :, 0], m[:, :, i]) for i in range(1, m.shape[2])):
            raise DataError(path, f"mask has {raw.shape[2]} channels with different values (expected a gray mask)")
        m = m[:, :, 0]
    values = np.unique(m)
    full = 65535 if m.dtype == np.uint16 else 255
    vs = {int(v) for v in values}
    if not (vs <= {0, 1} or vs <= {0, full}):
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise DataError(path, f"mask is not binary: values {{{shown}}} (allowed {{0,{full}}} or {{0,1}})")
    return (m > 0).astype(np.uint8)


def read_mask(path: str | os.PathLike, expected_shape: tuple[int, int] | None = None,
              image_path: str | os.PathLike | None = None) -> np.ndarray:
    """Read a ground-truth mask as uint8 {0, 1} [H, W].

    DataError if the file is unreadable, not binary, or (when ``expected_shape`` is given) its
    size differs from the image's.
    """
    m = raw_to_mask(read_raw(path), path)
    if expected_shape is not None and tuple(m.shape) != tuple(expected_shape):
        what = f"image {image_path}" if image_path else "its image"
        raise DataError(
            path,
            f"mask size {m.shape[1]}x{m.shape[0]} (WxH) differs from {what} size "
            f"{expected_shape[1]}x{expected_shape[0]}",
        )
    return m


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a float32 gray image to ``size`` x ``size`` with ``cv2.INTER_AREA``."""
    if img.ndim != 2:
        raise ValueError(f"resize_image expects a gray [H, W] image, got shape {img.shape}")
    if img.shape == (size, size):
        return np.ascontiguousarray(img, dtype=np.float32)
    out = cv2.resize(img.astype(np.float32, copy=False), (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- layout


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files (by extension) directly inside ``folder``, sorted by name; [] if absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _other_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not is_image_file(p))


def mask_path_for(category_dir: Path, defect_type: str, image_path: Path) -> Path:
    """Where the mask of a defective test image lives: ground_truth/<defect>/<stem>_mask.<ext>.

    Returns the existing file if one with an image extension is found (``.png`` first), else the
    expected ``.png`` path (which does not exist).
    """
    folder = category_dir / "ground_truth" / defect_type
    stem = image_path.stem + MASK_SUFFIX
    preferred = folder / f"{stem}.png"
    if preferred.is_file():
        return preferred
    for ext in IMAGE_EXTENSIONS:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return preferred


def iter_layout(root: str | os.PathLike, category: str) -> Iterable[tuple[str, str, Path]]:
    """Yield (split, defect_type, image_path) for every image file of a category, sorted."""
    cat_dir = Path(root) / category
    for p in list_images(cat_dir / "train" / "good"):
        yield "train", "good", p
    test_dir = cat_dir / "test"
    if test_dir.is_dir():
        for d in sorted(x for x in test_dir.iterdir() if x.is_dir() and not x.name.startswith(".")):
            for p in list_images(d):
                yield "test", d.name, p


def check_category_dir(root: str | os.PathLike, category: str) -> Path:
    """DataError naming the expected folder when the category or its training images are missing."""
    cat_dir = Path(root) / category
    if not cat_dir.is_dir():
        raise DataError(
            cat_dir,
            f"category folder not found (expected {cat_dir / 'train' / 'good'} with training images)",
        )
    train_dir = cat_dir / "train" / "good"
    if not train_dir.is_dir():
        raise DataError(train_dir, f"training folder not found in category '{category}'")
    if not list_images(train_dir):
        raise DataError(train_dir, f"no training images ({'/'.join(IMAGE_EXTENSIONS)}) in category '{category}'")
    return cat_dir


# --------------------------------------------------------------------------- manifest


def _manifest_row(cat_dir: Path, category: str, split: str, defect: str, path: Path,
                  unreadable: list[tuple[str, str]] | None = None) -> dict:
    """One manifest row; DataError for a bad image or mask.

    With ``unreadable`` given, an image that cannot be decoded does not raise: ``(path, problem)``
    is appended to it and the row gets height, width, channels and bit depth 0 (its mask is still
    checked, except for its size).
    """
    try:
        h, w, c, bits = image_info(read_raw(path))
    except DataError as exc:
        if unreadable is None:
            raise
        unreadable.append((exc.path, exc.problem))
        h = w = c = bits = 0
    mask_path = ""
    if defect != "good":
        mp = mask_path_for(cat_dir, defect, path)
        if not mp.is_file():
            raise DataError(path, f"defective image has no mask (expected {mp})")
        try:
            read_mask(mp, expected_shape=(h, w) if h else None, image_path=path)
        except DataError as exc:
            if str(path) in exc.problem:
                raise
            raise DataError(exc.path, f"{exc.problem} (mask of {path})") from exc
        mask_path = str(mp)
    return {
        "category": category,
        "path": str(path),
        "split": split,
        "defect_type": defect,
        "label": 0 if defect == "good" else 1,
        "mask_path": mask_path,
        "height": h,
        "width": w,
        "channels": c,
        "bit_depth": bits,
    }


def build_manifest(root: str | os.PathLike, category: str, strict: bool = True) -> pd.DataFrame:
    """One row per image of ``<root>/<category>`` (columns: :data:`MANIFEST_COLUMNS`).

    Every image is decoded and every mask read, so the manifest only lists usable files.
    ``strict=True`` raises :class:`DataError` on the first bad file, with one exception: a
    test-split image that cannot be decoded (corrupt, damaged JPEG, ...) does not stop the
    manifest, because training reads only ``train/good``. Its row stays in the manifest with
    height, width, channels and bit depth 0, it is listed in ``df.attrs["unreadable"]`` as
    (path, reason) and a warning names it; evaluation, which reads every test image, then fails
    with the DataError naming it. Missing or bad masks still raise.
    ``strict=False`` drops bad files (test images too), logs a warning for each and lists them
    in ``df.attrs["skipped"]`` as (path, reason).
    A missing category, or one without training images, raises in both modes.
    Files with other extensions are ignored and listed in ``df.attrs["ignored"]``.
    """
    cat_dir = check_category_dir(root, category)
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    unreadable: list[tuple[str, str]] = []
    for split, defect, path in iter_layout(root, category):
        try:
            rows.append(_manifest_row(cat_dir, category, split, defect, path,
                                      unreadable if strict and split == "test" else None))
        except DataError as exc:
            if strict:
                raise
            skipped.append((exc.path, exc.problem))
            log.warning("skipping bad file %s", exc)
    ignored = [str(p) for d in [cat_dir / "train" / "good", *sorted((cat_dir / "test").glob("*"))] for p in _other_files(d)]
    if ignored:
        log.info("%s: ignored %d non-image file(s), e.g. %s", cat_dir, len(ignored), ignored[0])
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df = df.astype({"label": "int64", "height": "int64", "width": "int64", "channels": "int64", "bit_depth": "int64"})
    if not (df["split"] == "train").any():
        raise DataError(cat_dir / "train" / "good", "no usable training images (all were skipped as bad files)")
    df.attrs["skipped"] = skipped
    df.attrs["ignored"] = ignored
    df.attrs["unreadable"] = unreadable
    if skipped:
        log.warning("%s: skipped %d bad file(s)", cat_dir, len(skipped))
    for bad, problem in unreadable:
        log.warning("%s: %s (test image kept in the manifest: training does not read it, evaluation will fail on it)",
                    bad, problem)
    return df


def split_holdout(manifest: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the train/good rows into (train, holdout), deterministically.

    Rows are sorted by path before a seeded permutation, so the result depends only on the set
    of files, ``fraction`` and ``seed``. With ``fraction > 0`` the holdout gets at least one image
    and the train part keeps at least one.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    good = manifest[(manifest["split"] == "train") & (manifest["defect_type"] == "good")]
    good = good.sort_values("path", kind="stable").reset_index(drop=True)
    n = len(good)
    n_hold = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_hold = min(max(n_hold, 1), n - 1)
    elif n < 2:
        n_hold = 0
    perm = np.random.default_rng(seed).permutation(n)
    hold_idx = np.sort(perm[:n_hold])
    train_idx = np.sort(perm[n_hold:])
    return good.iloc[train_idx].reset_index(drop=True), good.iloc[hold_idx].reset_index(drop=True)


def load_images(paths: Sequence[str | os.PathLike], size: int | None) -> np.ndarray:
    """Load images as float32 gray [N, H, W] in [0, 1], resized to ``size`` (INTER_AREA) if given.

    With ``size=None`` all images must have the same size (DataError naming the first that differs).
    """
    paths = list(paths)
    if not paths:
        s = size or 0
        return np.zeros((0, s, s), dtype=np.float32)
    out: np.ndarray | None = None
    for i, p in enumerate(paths):
        img = read_image(p)
        if size is not None:
            img = resize_image(img, size)
        if out is None:
            out = np.empty((len(paths), *img.shape), dtype=np.float32)
        elif img.shape != out.shape[1:]:
            raise DataError(
                p, f"image size {img.shape[1]}x{img.shape[0]} differs from {out.shape[2]}x{out.shape[1]} of {paths[0]} "
                "(pass size= to resize)",
            )
        out[i] = img
    assert out is not None
    return out
