"""EXIF orientation: read it from a JPEG's or PNG's EXIF block and turn pixels to match.

Image viewers show a file turned by its EXIF orientation tag (values 1..8); OpenCV's
``IMREAD_UNCHANGED`` ignores it, so :func:`sidn.data.decode.decode_bytes` applies it here to
read every file in its *displayed* orientation (masks drawn over the image then line up).
"""

from __future__ import annotations

import struct

import numpy as np


def exif_orientation(tiff: bytes) -> int:
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


def png_orientation(data: bytes) -> int:
    """EXIF orientation from a PNG's ``eXIf`` chunk (1 without one); walks chunk headers only."""
    i, n = 8, len(data)
    while i + 8 <= n:
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if kind == b"eXIf":
            return exif_orientation(data[i + 8 : i + 8 + length])
        if kind == b"IEND":
            break
        i += 12 + length
    return 1


def apply_orientation(raw: np.ndarray, orientation: int) -> np.ndarray:
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
