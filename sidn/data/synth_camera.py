"""Simulated acquisition of a rendered texture for the embedded dataset (``sidn.data.synth``).

:func:`camera` turns a float rendering into the 8-bit image a camera would record. No
equation of the SIDN paper applies (data generation only).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sidn.data.synth_fields import F32, mul3, pixel_grid, smooth_field


def camera(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Acquisition: illumination gradient and vignetting, gain, slight defocus blur,
    sensor noise, 8-bit quantisation. Returns uint8 (gray or RGB)."""
    x, y = pixel_grid(size)
    xn = x * F32(2.0 / size) - 1.0
    yn = y * F32(2.0 / size) - 1.0
    phi = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(0.0, 0.12)
    vig = rng.uniform(0.0, 0.12)
    gain = rng.uniform(0.93, 1.07)
    blotch = rng.uniform(0.0, 0.04)
    field = gain * (1.0 + F32(slope * math.cos(phi)) * xn + F32(slope * math.sin(phi)) * yn
                    - F32(0.5 * vig) * (xn * xn + yn * yn))
    field = field * (1.0 + F32(blotch) * smooth_field(rng, size, 3))
    out = mul3(img, field) if img.ndim == 3 else img * field
    sigma = rng.uniform(0.3, 0.9) * min(1.0, size / 256.0)
    if sigma >= 0.35:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise = rng.uniform(0.003, 0.012)
    # uniform sensor noise with that std, drawn as bytes (much faster than normal draws)
    raw = np.frombuffer(rng.bytes(out.size), np.uint8).reshape(out.shape).astype(F32)
    a = noise * math.sqrt(12.0) / 256.0
    out = cv2.scaleAdd(raw, a, out)  # out + a * raw; the mean a * 127.5 is removed below
    np.clip(out, F32(127.5 * a), F32(1.0 + 127.5 * a), out=out)
    return cv2.convertScaleAbs(out, alpha=255.0, beta=-255.0 * 127.5 * a)
