"""Damaged-JPEG detection: a strict walk of the marker structure and a check for scans that end early.

libjpeg fills missing image data with grey and only prints a warning, so a truncated or
corrupt JPEG would decode to an image with grey rows. :func:`jpeg_layout` refuses a damaged
marker structure (and reads the EXIF orientation on the way); :func:`jpeg_ends_early` detects a
Huffman-coded scan whose data ends before its last blocks. Both raise or report for
:func:`sidn.data.decode.decode_bytes`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from sidn.data.errors import DataError
from sidn.data.orientation import exif_orientation

# Filler inserted before the end of each JPEG scan by the early-end check: no 0xFF byte, so a
# decoder reads it as entropy-coded data, never as a marker; it starts with 1-bits, so it does
# not decode like the zero bits a decoder stuffs in when a scan's data runs out.
_JPEG_FILLER = bytes((i * 73 + 0xB5) % 255 for i in range(512))
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)
_JPEG_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3})  # baseline, extended, progressive, lossless
_JPEG_DCT_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})  # single-frame DCT: scans must cover all 64 coefficients


@dataclass(frozen=True)
class JpegLayout:
    """What :func:`jpeg_layout` found: where each scan's data ends, coding, EXIF orientation."""

    scan_ends: list[tuple[int, int]]  # (offset of the marker ending a scan, next restart index or -1)
    huffman: bool
    orientation: int


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


def jpeg_layout(data: bytes, path: str | os.PathLike) -> JpegLayout:
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
            orientation = exif_orientation(data[body + 6 : i])
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
    return JpegLayout(scan_ends, sof in _JPEG_HUFFMAN_SOF, orientation or 1)


def jpeg_ends_early(data: bytes, layout: JpegLayout, raw: np.ndarray) -> bool:
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
