"""Robust image decoding: read any image or mask file as the array a viewer would show.

Images may be PNG, JPEG, BMP or TIFF, 8- or 16-bit, gray, RGB or RGBA; they are read with
``cv2.IMREAD_UNCHANGED`` and turned into grayscale float32 in [0, 1] (the paper works on
grayscale images). Masks must be binary: {0, 255} or {0, 1} (16-bit: {0, 65535} or {0, 1}).

Every file is read in its *displayed* orientation (see :func:`decode_bytes`): the EXIF
orientation tag of a JPEG or PNG is applied, as image viewers do (OpenCV's TIFF reader already
applies a TIFF's own orientation tag), so a mask drawn over an image in a viewer lines up with it.
Damaged JPEGs (image data that ends early, stray markers) are refused instead of being decoded
with grey rows, and a PNG without its end chunk is refused.

Every problem raises :class:`sidn.data.errors.DataError` whose message starts with the
offending file and says what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from sidn.data.errors import DataError
from sidn.data.jpeg import jpeg_ends_early, jpeg_layout
from sidn.data.orientation import apply_orientation, png_orientation


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
    """Cheap structural end-of-file check for PNG (JPEG files get :func:`sidn.data.jpeg.jpeg_layout`).

    Some decoder builds return a partly grey image for a truncated file instead of failing, so we
    check that the PNG end chunk ``IEND`` is present near the end.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in data[-4096:]:
        return "truncated PNG file (no IEND chunk at the end)"
    return None


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
      (:func:`sidn.data.jpeg.jpeg_layout`), and a Huffman-coded file is decoded a second time
      with filler before the end of each scan, which changes the pixels only when a scan's data
      ends early (:func:`sidn.data.jpeg.jpeg_ends_early`): a file truncated and given an end
      marker again, or corrupt data that runs into a marker. That second decode is the check's cost (about one decode).
      Bit errors that leave the coded data a consistent length cannot be detected (no decoder
      reports them either); arithmetic-coded files get the structure check only.
    """
    problem = _looks_truncated(data)
    if problem:
        raise DataError(path, problem)
    layout = jpeg_layout(data, path) if data.startswith(b"\xff\xd8") else None
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
        if layout.huffman and jpeg_ends_early(data, layout, raw):
            raise DataError(
                path,
                "damaged JPEG: the image data ends before the last blocks (file truncated or corrupt); "
                "a decoder would fill the rest with grey",
            )
        return apply_orientation(raw, layout.orientation)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return apply_orientation(raw, png_orientation(data))
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
