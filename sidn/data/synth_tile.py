"""Tile of the embedded dataset: the texture :class:`TileTexture` and its defects.

Terrazzo: polished matrix with stone chips, colour, modelled on the MVTec AD ``tile`` category;
defects: crack, glue_strip, oil. The conventions shared by all materials are in
:mod:`sidn.data.synth_materials`. No equation of the SIDN paper applies (data generation only).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sidn.data.synth_fields import (
    F32,
    fine_noise,
    gray3,
    lerp,
    mul3,
    random_light,
    scale_channels,
    smooth_field,
    tint,
)
from sidn.data.synth_mask import close_radius
from sidn.data.synth_shapes import (
    blob,
    curve_field,
    end_window,
    jagged_curve,
    random_curve,
    random_point,
    shifted,
)


# ----------------------------------------------------------------------------- texture

_TILE_CHIPS = (  # (weight, rgb) colour classes of the stone chips
    (0.30, (0.42, 0.42, 0.43)),
    (0.22, (0.55, 0.54, 0.52)),
    (0.16, (0.26, 0.26, 0.28)),
    (0.10, (0.15, 0.15, 0.16)),
    (0.12, (0.88, 0.87, 0.84)),
    (0.10, (0.74, 0.66, 0.56)),
)


class TileTexture:
    """Terrazzo tile (MVTec ``tile``, colour): light cement matrix with fine speckles and
    densely packed angular stone chips of several tones (antialiased polygons)."""

    channels = 3

    def __init__(self, rng: np.random.Generator, size: int):
        s = size / 512.0
        self.size = size
        warm = rng.normal(0.0, 0.012)  # warm / cool tint of the cement
        self.matrix = (rng.uniform(0.68, 0.8) + np.array([warm, 0.2 * warm, -warm])).astype(F32)
        r_mean = rng.uniform(5.0, 9.0) * s
        density = rng.uniform(0.35, 0.55)
        n = int(density * size * size / (math.pi * r_mean**2 * 1.3))
        aspect = rng.uniform(1.0, 1.4)
        ang = rng.uniform(0, math.pi)
        k = 7
        cx = rng.uniform(-10, size + 10, n)
        cy = rng.uniform(-10, size + 10, n)
        rad = np.clip(rng.lognormal(math.log(r_mean), 0.45, n), 0.8, 6 * r_mean)
        th = np.sort(rng.uniform(0, 2 * math.pi, (n, k)), axis=1)
        rr = rad[:, None] * rng.uniform(0.55, 1.1, (n, k))
        px, py = rr * np.cos(th) * aspect, rr * np.sin(th)
        c, sn = math.cos(ang), math.sin(ang)
        pts = np.stack([cx[:, None] + c * px - sn * py, cy[:, None] + sn * px + c * py], axis=-1)
        pts = np.round(pts * 16).astype(np.int32)
        w = np.array([c_[0] for c_ in _TILE_CHIPS])
        cls = rng.choice(len(_TILE_CHIPS), n, p=w / w.sum())
        order = rng.permutation(len(_TILE_CHIPS))
        canvas = np.empty((size, size, 3), np.uint8)
        canvas[:] = np.clip(self.matrix * 255.0 + 0.5, 0, 255).astype(np.uint8)
        for ci in order:
            sel = pts[cls == ci]
            if len(sel):
                col = np.asarray(_TILE_CHIPS[ci][1]) * rng.uniform(0.9, 1.1) * 255.0
                cv2.fillPoly(canvas, list(sel), tuple(float(x) for x in col), cv2.LINE_AA, shift=4)
        self.canvas = canvas.astype(F32)
        self.mottle = fine_noise(rng, size, 1.2 * s + 0.3)
        self.speck = fine_noise(rng, size, 0.6 * s + 0.3)
        self.low = smooth_field(rng, size, 5)
        self.light = random_light(rng)

    def render(self) -> np.ndarray:
        specks = np.clip((self.speck - 2.0) * 0.6, 0.0, 0.5)
        mod = (1.0 + 0.03 * self.low + 0.04 * self.mottle) * (1.0 - specks) * F32(1.0 / 255.0)
        return np.clip(mul3(self.canvas, mod), 0.0, 1.0)


# ----------------------------------------------------------------------------- defects


def tile_crack(tex: TileTexture, clean, rng, size, low, small):
    """Crack: thin dark jagged line with branches; a bright lip on the lit side."""
    s = size / 512.0
    length = (rng.uniform(0.06, 0.12) if small else rng.uniform(0.25, 0.7)) * size
    step = max(1.5, 4.0 * s)
    main = jagged_curve(rng, random_point(rng, size, 0.15), rng.uniform(0, 2 * math.pi), length, step)
    curves = [main]
    for _ in range(0 if small else int(rng.integers(0, 3))):
        i = int(rng.integers(1, len(main)))
        back = main[i] - main[i - 1]
        ang = math.atan2(back[1], back[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
        curves.append(jagged_curve(rng, main[i], ang, length * rng.uniform(0.2, 0.5), step, centred=False))
    canvas = np.zeros((size, size), np.uint8)
    thick = 2 if (rng.random() < 0.3 and not small and s >= 0.75) else 1
    cv2.polylines(canvas, [np.round(c * 16).astype(np.int32) for c in curves], False, 255, thick,
                  cv2.LINE_AA, shift=4)
    alpha = canvas.astype(F32) * F32(1.0 / 255.0)
    depth = rng.uniform(0.3, 0.4) if low else rng.uniform(0.5, 0.75)
    lip = np.clip(shifted(alpha, *(tex.light * 1.0)) - alpha, 0.0, 1.0)
    out = mul3(clean, 1.0 - F32(depth) * alpha) + gray3(0.06 * lip)
    return out, close_radius(s), False


def tile_glue_strip(tex: TileTexture, clean, rng, size, low, small):
    """Glue strip: a translucent milky band with wavy edges, a glossy streak and a darker
    edge ridge; the terrazzo stays visible (blurred) under it."""
    s = size / 512.0
    length = (rng.uniform(0.1, 0.2) if small else rng.uniform(0.4, 1.0)) * size
    W = (rng.uniform(3.0, 6.0) if small else rng.uniform(8.0, 25.0)) * s + 0.5
    pts = random_curve(rng, random_point(rng, size, 0.15), rng.uniform(0, 2 * math.pi), length,
                       step=max(1.0, 3.0 * s), wiggle=0.01, smooth=21)
    d, t = curve_field(size, [pts])
    wob = 1.0 + 0.2 * smooth_field(rng, size, max(2.0, size / (3.0 * W)))
    taper = np.sqrt(end_window(t, min(0.5, 2.0 * W / length)))
    edge = 1.2 * s + 0.3
    alpha = np.clip((F32(W) * wob * taper - d) / F32(edge) + 0.5, 0.0, 1.0)
    glue_col = np.asarray([0.80, 0.76, 0.62], F32) * F32(rng.uniform(0.85, 1.05))
    under = scale_channels(cv2.GaussianBlur(clean, (0, 0), 1.0 * s + 0.3), 0.7 * np.asarray([0.97, 0.93, 0.80])) \
        + tint(np.full(clean.shape[:2], 0.3, F32), glue_col)
    gloss = np.exp(-(((d - 0.3 * W) / (0.2 * W)) ** 2))
    ridge = 4.0 * alpha * (1.0 - alpha)
    op = rng.uniform(0.35, 0.45) if low else rng.uniform(0.55, 0.85)
    glue = under + gray3(0.1 * gloss - 0.08 * ridge)
    return lerp(clean, glue, alpha * F32(op)), close_radius(2 * s), True


def tile_oil(tex: TileTexture, clean, rng, size, low, small):
    """Oil: translucent darkening with a brownish tint and a darker drying rim; the
    texture stays visible under it."""
    s = size / 512.0
    R = (rng.uniform(7.0, 12.0) if small else rng.uniform(20.0, 60.0)) * s
    alpha = blob(rng, size, random_point(rng, size), R, R * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.3, edge=rng.uniform(1.0, 3.0) * s + 0.5, ragged=0.1)
    dark = rng.uniform(0.15, 0.22) if low else rng.uniform(0.25, 0.45)
    rim = np.clip(alpha - cv2.GaussianBlur(alpha, (0, 0), 0.12 * R + 0.5), 0.0, 1.0)
    hue = [1.0, 0.94, 0.8] if rng.random() < 0.6 else [1.0, 1.0, 1.0]
    out = mul3(clean, 1.0 - F32(dark) * alpha - 0.4 * F32(dark) * rim)
    out = out * cv2.merge([1.0 + F32(c - 1.0) * alpha for c in hue])
    return out, close_radius(2 * s), True
