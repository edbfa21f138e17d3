"""Leather of the embedded dataset: the texture :class:`LeatherTexture` and its defects.

Pebbled grain rendered from a height map, colour, modelled on the MVTec AD ``leather`` category;
defects: color, cut, fold, poke. The conventions shared by all materials are in
:mod:`sidn.data.synth_materials`. No equation of the SIDN paper applies (data generation only).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sidn.data.synth_fields import (
    F32,
    Frame,
    NoiseField,
    fine_noise,
    pixel_grid,
    random_light,
    shade,
    smooth_field,
    tint,
)
from sidn.data.synth_mask import close_radius
from sidn.data.synth_shapes import blob, curve_field, end_window, random_curve, random_point
from sidn.data.synth_stains import random_tint, stain


# ----------------------------------------------------------------------------- texture

_LEATHER_COLOURS = np.array(
    [
        [0.55, 0.33, 0.20],  # brown
        [0.68, 0.48, 0.30],  # tan
        [0.50, 0.24, 0.16],  # red-brown
        [0.34, 0.25, 0.20],  # dark brown
        [0.45, 0.43, 0.42],  # grey
    ],
    dtype=F32,
)


class LeatherTexture:
    """Grain leather (MVTec ``leather``, colour): pebbles separated by a network of creases
    (zero crossings of filtered noise), larger wrinkles, rendered as a height map with
    Lambert shading; darker creases in the albedo."""

    channels = 3

    def __init__(self, rng: np.random.Generator, size: int):
        s = size / 512.0
        self.size = size
        self.g = rng.uniform(5.0, 8.0) * s  # pebble size (px)
        self.frame = Frame(size, rng.uniform(0, 2 * math.pi))
        aspect = rng.uniform(1.0, 1.35)
        pad = 6.0 * self.g
        self.grain = NoiseField(rng, self.frame, self.g / 2.4 * aspect, self.g / 2.4, pad=pad)
        self.wrinkle = NoiseField(rng, self.frame, self.g * 2.5, self.g * 2.5 * rng.uniform(1.0, 2.0), pad=pad)
        self.micro = fine_noise(rng, size, 0.6 * s + 0.2)
        self.light = random_light(rng)
        self.k = rng.uniform(0.5, 0.8) * self.g
        base = _LEATHER_COLOURS[rng.integers(len(_LEATHER_COLOURS))] * rng.uniform(0.85, 1.15)
        self.col = (base * (1.0 + rng.normal(0.0, 0.04, 3))).astype(F32)
        self.blotch = smooth_field(rng, size, 4)
        self.crease_w = rng.uniform(0.3, 0.45)

    def height(self, disp=None) -> tuple[np.ndarray, np.ndarray]:
        u, v = self.frame.uv(disp)
        n1 = self.grain(u, v)
        crease = np.exp(-((n1 * F32(1.0 / self.crease_w)) ** 2))
        n2 = self.wrinkle(u, v)
        wr = np.exp(-((n2 * F32(4.0)) ** 2))
        h = 0.7 * (1.0 - crease) - 0.45 * wr + 0.06 * self.micro
        return h, np.maximum(crease, 0.6 * wr)

    def render(self, disp=None, dh: np.ndarray | None = None, albedo: np.ndarray | None = None) -> np.ndarray:
        h, crease = self.height(disp)
        if dh is not None:
            h = h + dh
        sh = shade(h, self.light, self.k)
        alb = (1.0 - 0.2 * crease) * (1.0 + 0.04 * self.blotch)
        if albedo is not None and albedo.ndim == 2:
            alb = alb * albedo
            albedo = None
        img = tint(alb * sh, self.col)
        if albedo is not None:
            img = img * albedo
        return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------- defects


def leather_color(tex: LeatherTexture, clean, rng, size, low, small):
    """Discoloured spot (ink, dye, fading): albedo change, the grain stays."""
    g, s = tex.g, size / 512.0
    r = (rng.uniform(2.0, 4.0) * g) if small else rng.uniform(25.0, 70.0) * s
    alpha = blob(rng, size, random_point(rng, size), r, r * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.25, edge=rng.uniform(1.0, 4.0) * s + 0.5, ragged=0.1)
    return stain(clean, alpha, random_tint(rng, ["dark", "bleach", "red", "blue"]), rng, low), close_radius(0.5 * g), True


def leather_cut(tex: LeatherTexture, clean, rng, size, low, small):
    """Cut: a narrow tapered incision (deep groove, dark inside, slightly raised lips)."""
    g = tex.g
    L = (rng.uniform(3.0, 6.0) if small else rng.uniform(8.0, 25.0)) * g
    w = (rng.uniform(0.25, 0.4) if small else rng.uniform(0.3, 0.6)) * g
    depth = rng.uniform(0.8, 1.2) if low else rng.uniform(1.5, 2.5)
    pts = random_curve(rng, random_point(rng, size, 0.2), rng.uniform(0, 2 * math.pi), L,
                       step=max(1.0, g * 0.4), wiggle=0.03, smooth=9)
    d, t = curve_field(size, [pts])
    ww = F32(w) * np.sqrt(end_window(t, 0.5)) + F32(0.3)
    core = np.exp(-((d / ww) ** 2))
    dh = -F32(depth) * core + F32(0.3 * depth) * np.exp(-(((d - 1.8 * ww) / (0.8 * ww + 0.5)) ** 2))
    dark = rng.uniform(0.25, 0.4) if low else rng.uniform(0.45, 0.7)
    albedo = 1.0 - F32(dark) * core
    return tex.render(dh=dh, albedo=albedo), close_radius(size / 512), True


def _grad(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = cv2.Sobel(d, cv2.CV_32F, 1, 0, ksize=3) * F32(0.125)
    gy = cv2.Sobel(d, cv2.CV_32F, 0, 1, ksize=3) * F32(0.125)
    return gx, gy


def leather_fold(tex: LeatherTexture, clean, rng, size, low, small):
    """Fold: a shaded ridge with a sharp crease along a smooth curve (height change, so the
    grain stays but is lit differently), grain compressed into it, darker in the crease."""
    g = tex.g
    length = (rng.uniform(0.08, 0.15) if small else rng.uniform(0.3, 0.9)) * size
    W = (rng.uniform(1.0, 1.8) if small else rng.uniform(1.5, 3.5)) * g
    A = rng.uniform(1.0, 1.6) if low else rng.uniform(2.5, 4.5)
    pts = random_curve(rng, random_point(rng, size, 0.15), rng.uniform(0, 2 * math.pi), length,
                       step=max(1.0, 3.0 * size / 512), wiggle=0.02, smooth=21)
    d, t = curve_field(size, [pts])
    taper = end_window(t, 0.3)
    ridge = np.exp(-((d * F32(1.0 / W)) ** 2)) * taper
    crease = np.exp(-((d * F32(1.0 / (0.25 * W))) ** 2)) * taper
    dh = F32(A) * ridge - F32(0.6 * A) * crease
    albedo = 1.0 - 0.2 * crease
    gx, gy = _grad(ridge)
    k = F32(-0.35 * W * W)  # sample away from the crest: grain compressed into the fold
    return tex.render(disp=(gx * k, gy * k), dh=dh, albedo=albedo), close_radius(0.5 * g), True


def leather_poke(tex: LeatherTexture, clean, rng, size, low, small):
    """Poke: small dent(s) pressed into the leather (shaded depression, grain pulled in),
    often with a dark puncture in the middle."""
    g = tex.g
    n = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    c0 = random_point(rng, size)
    x, y = pixel_grid(size)
    dh = np.zeros((size, size), F32)
    ux = np.zeros_like(dh)
    uy = np.zeros_like(dh)
    alb = np.ones_like(dh)
    for _ in range(n):
        R = (rng.uniform(0.8, 1.6) if small else rng.uniform(1.6, 3.5)) * g
        c = c0 + rng.normal(0.0, 3.0 * g, 2) * (n > 1)
        A = rng.uniform(0.6, 1.0) if low else rng.uniform(1.5, 3.0)
        dx, dy = x - F32(c[0]), y - F32(c[1])
        e = np.exp(-(dx * dx + dy * dy) * F32(1.0 / (R * R)))
        dh -= F32(A) * e
        ux -= F32(0.25) * dx * e
        uy -= F32(0.25) * dy * e
        if rng.random() < 0.6 and not low:
            alb *= 1.0 - F32(rng.uniform(0.4, 0.8)) * np.exp(-(dx * dx + dy * dy) * F32(1.0 / (0.3 * R) ** 2))
    return tex.render(disp=(ux, uy), dh=dh, albedo=alb), close_radius(0.3 * g), True
