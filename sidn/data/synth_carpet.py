"""Carpet of the embedded dataset: the texture :class:`CarpetTexture` and its defects.

2/2 twill of twisted yarn, colour, modelled on the MVTec AD ``carpet`` category; defects: color,
hole, cut, thread. The conventions shared by all materials are in
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
    hash01,
    lerp,
    mul3,
    pixel_grid,
    random_light,
    smooth_field,
    tint,
)
from sidn.data.synth_mask import close_radius
from sidn.data.synth_shapes import blob, curve_distance, fringe, random_curve, random_point, shifted
from sidn.data.synth_stains import random_tint, stain


# ----------------------------------------------------------------------------- texture

_CARPET_COLOURS = np.array(
    [
        [0.60, 0.55, 0.48],  # beige
        [0.46, 0.50, 0.56],  # grey-blue
        [0.52, 0.40, 0.32],  # brown
        [0.42, 0.48, 0.38],  # olive
        [0.55, 0.52, 0.50],  # warm grey
    ],
    dtype=F32,
)


class CarpetTexture:
    """Woven carpet (MVTec ``carpet``, colour): 2/2 twill of twisted yarns, rounded yarn
    floats, slanted fibre striations, fuzz, wavy yarn paths and per-yarn brightness."""

    channels = 3

    def __init__(self, rng: np.random.Generator, size: int):
        s = size / 512.0
        self.size = size
        self.P = rng.uniform(12.0, 17.0) * s  # yarn spacing (px)
        self.frame = Frame(size, rng.uniform(-0.12, 0.12) + rng.choice([0.0, math.pi / 2]))
        self.offset = rng.uniform(0.0, 8.0 * self.P, 2).astype(F32)
        self.diag = int(rng.choice([-1, 1]))
        base = _CARPET_COLOURS[rng.integers(len(_CARPET_COLOURS))] * rng.uniform(0.85, 1.15)
        base = base * (1.0 + rng.normal(0.0, 0.03, 3))
        shift = rng.normal(0.0, 0.01, 3)
        self.col = np.stack([base * (1.0 + shift), base * (1.0 - shift)]).astype(F32)
        self.salt = rng.uniform(0.0, 100.0)
        self.wave_amp = rng.uniform(0.06, 0.14) * self.P
        pad = 6 * self.wave_amp + 2 * self.P
        self.wave = (NoiseField(rng, self.frame, 3.0 * self.P, pad=pad), NoiseField(rng, self.frame, 3.0 * self.P, pad=pad))
        fs = 0.7 * s + 0.2
        fpad = pad + 0.5 * self.frame.half_extent()  # fibres are sampled on sheared coordinates
        # one field, streaks along its first axis; sampled with swapped axes for the warp yarns
        self.fib = NoiseField(rng, self.frame, 3.0 * fs, fs, pad=fpad)
        self.fuzz = fine_noise(rng, size, 0.8 * s + 0.2)
        self.mottle = smooth_field(rng, size, 5)
        self.light = random_light(rng)
        self.sharp = rng.uniform(0.4, 0.7)
        self._tile = self._unit_tile()

    _TILE_CELL = 24  # px per yarn cell in the weave unit tile

    def _unit_tile(self) -> np.ndarray:
        """One period (4 x 4 cells) of the 2/2 twill: channels = yarn profile, 'weft on top'
        (0/1), shading of the yarn's rounded cross-section; sampled with cv2.remap."""
        n = 4 * self._TILE_CELL
        c = (np.arange(n, dtype=F32) + 0.5) / F32(self._TILE_CELL)
        vc, uc = np.meshgrid(c, c, indexing="ij")
        i, j = np.floor(uc), np.floor(vc)
        fu, fv = uc - i, vc - j
        m = i + F32(self.diag) * j
        m = m - 4.0 * np.floor(m * F32(0.25))
        top_h = m < 2.0
        pos = np.where(top_h, m + fu, m - 2.0 + fv) * F32(0.5)
        across = np.where(top_h, fv, fu)
        sa = np.sin(F32(math.pi) * across)
        prof = np.sqrt(sa) * (F32(self.sharp) * sa + F32(1.0 - self.sharp)) * np.sqrt(np.sqrt(np.sin(F32(math.pi) * pos)))
        la = np.where(top_h, F32(self.light[1]), F32(self.light[0]))
        slope = np.cos(F32(math.pi) * across) * la
        return np.dstack([prof, top_h.astype(F32), slope]).astype(F32)

    def render(self, disp=None) -> np.ndarray:
        u0, v0 = self.frame.uv(disp)
        u = u0 + self.offset[0] + F32(self.wave_amp) * self.wave[0](u0, v0)
        v = v0 + self.offset[1] + F32(self.wave_amp) * self.wave[1](u0, v0)
        uc, vc = u * F32(1.0 / self.P), v * F32(1.0 / self.P)
        i, j = np.floor(uc), np.floor(vc)
        period = F32(4.0)
        tu = (uc - period * np.floor(uc * F32(0.25))) * F32(self._TILE_CELL) - 0.5
        tv = (vc - period * np.floor(vc * F32(0.25))) * F32(self._TILE_CELL) - 0.5
        t = cv2.remap(self._tile, tu, tv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        prof, top, slope = t[..., 0], t[..., 1], t[..., 2]
        # twisted yarn: slanted striations that follow the yarn
        fa = self.fib(u0 + 0.5 * v0, v0)
        fib = fa + (self.fib(v0 + 0.5 * u0, u0) - fa) * (1.0 - top)
        gain = 0.88 + 0.22 * hash01(np.where(top > 0.5, j, i + 1000.0), self.salt)
        bright = ((0.32 + 0.68 * prof) * (1.0 + 0.22 * slope) + 0.1 * fib * prof + 0.06 * self.fuzz)
        bright = bright * gain * (1.0 + 0.05 * self.mottle)
        c0, c1 = self.col
        img = cv2.merge([bright * (F32(c1[k]) + top * F32(c0[k] - c1[k])) for k in range(3)])
        return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------- defects


def carpet_color(tex: CarpetTexture, clean, rng, size, low, small):
    """Dyed / discoloured spot: the yarn colour changes, the weave stays visible."""
    P, s = tex.P, size / 512.0
    r = (rng.uniform(0.6, 1.1) if small else rng.uniform(1.5, 4.5)) * P
    alpha = blob(rng, size, random_point(rng, size), r, r * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.25, edge=rng.uniform(1.0, 3.0) * s + 0.5, ragged=0.08)
    return stain(clean, alpha, random_tint(rng), rng, low), close_radius(0.5 * P), True


def carpet_hole(tex: CarpetTexture, clean, rng, size, low, small):
    """Missing yarn: the coarse dark backing weave shows through a ragged opening with a
    shaded rim; frayed yarn ends reach into it."""
    P, s = tex.P, size / 512.0
    r = (rng.uniform(0.5, 0.9) if small else rng.uniform(1.0, 2.8)) * P
    c = random_point(rng, size)
    alpha = blob(rng, size, c, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi),
                 rough=0.2, edge=0.7 * s + 0.3, ragged=0.15)
    u, v = tex.frame.uv()
    pb = F32(2.0 * math.pi / (0.45 * P))
    weave = 0.55 + 0.25 * (np.cos(u * pb) + np.cos(v * pb)) * 0.5 + 0.1 * fine_noise(rng, size, 0.8 * s + 0.3)
    backing_col = tex.col.mean(0) * F32(rng.uniform(0.2, 0.35)) + F32(0.02)
    sh = cv2.GaussianBlur(1.0 - alpha, (0, 0), 0.3 * P)
    sh = shifted(sh, *(-tex.light * 0.3 * P))
    inside = tint(weave * (1.0 - 0.6 * sh), backing_col)
    if low:  # thinned pile: part of the yarn gone, the backing partly visible
        inside = lerp(clean, inside, np.full(clean.shape[:2], rng.uniform(0.45, 0.6), F32))
    ring = np.clip(cv2.GaussianBlur(alpha, (0, 0), 0.2 * P) - alpha, 0.0, 1.0)
    out = lerp(mul3(clean, 1.0 + 0.35 * ring), inside, alpha)
    ends = fringe(rng, alpha, 0.5 * P, 0.6 * P)
    if ends:
        out = _fibre(out, rng, size, ends, max(0.6, 0.1 * P), tex.col.mean(0) * F32(1.1), tex.light, 0.25)
    return out, close_radius(0.4 * P if low else 2 * s), True


def carpet_cut(tex: CarpetTexture, clean, rng, size, low, small):
    """Slit: yarns cut along a line and pulled apart (displacement field), the ragged gap
    shows the dark backing, cut fibre ends stick into it."""
    P, s = tex.P, size / 512.0
    L = (rng.uniform(1.5, 3.0) if small else rng.uniform(4.0, 10.0)) * P
    w = (rng.uniform(0.12, 0.25) if small else rng.uniform(0.2, 0.4)) * P
    if low:
        w *= 0.6
    mid = random_point(rng, size, 0.2)
    th = rng.uniform(0, 2 * math.pi)
    tx, ty, nx, ny = math.cos(th), math.sin(th), -math.sin(th), math.cos(th)
    p0 = mid - 0.5 * L * np.array([tx, ty])
    x, y = pixel_grid(size)
    dx, dy = x - F32(p0[0]), y - F32(p0[1])
    sl = (dx * F32(tx) + dy * F32(ty)) * F32(1.0 / L)
    d = dx * F32(nx) + dy * F32(ny)
    lens = np.sqrt(np.clip(1.0 - (2.0 * sl - 1.0) ** 2, 0.0, 1.0))
    g = F32(w) * lens * (1.0 + 0.3 * fine_noise(rng, size, 0.3 * P))
    g = np.maximum(g, 0.0)
    out_d = np.abs(d) - g
    fall = np.exp(-np.clip(out_d, 0.0, None) * F32(1.0 / (0.4 * P)))
    mag = -np.sign(d) * g * fall
    img = tex.render(disp=(mag * F32(nx), mag * F32(ny)))
    gap = np.clip(g - np.abs(d) + 0.5, 0.0, 1.0) * (g > 0.3)
    dark = tex.col.mean(0) * F32(rng.uniform(0.15, 0.28)) + F32(0.02)
    fuzz = 0.75 + 0.25 * fine_noise(rng, size, 0.8 * s + 0.3)
    img = lerp(img, tint(fuzz, dark), gap * F32(1.0 if not low else 0.8))
    ends = fringe(rng, gap, 0.6 * P, 0.5 * P)
    if ends:
        img = _fibre(img, rng, size, ends, max(0.6, 0.1 * P), tex.col.mean(0) * F32(1.1), tex.light, 0.25)
    return img, close_radius(0.3 * P), True


def _fibre(clean, rng, size, curves, w, colour, light, shadow=0.35):
    """A loose round fibre lying on the surface (cylindrical shading) with a cast shadow."""
    d = curve_distance(size, curves)
    z = np.sqrt(np.clip(1.0 - (d / F32(w)) ** 2, 0.0, 1.0))
    cover = np.clip(F32(w) - d + 0.5, 0.0, 1.0)
    sh = cv2.GaussianBlur(cover, (0, 0), max(0.5, w))
    sh = shifted(sh, *(-light * 1.5 * w))
    dim = 1.0 - shadow * sh * (1.0 - cover)
    base = mul3(clean, dim) if clean.ndim == 3 else clean * dim
    var = 1.0 + 0.08 * fine_noise(rng, size, 1.0)
    tone = (0.45 + 0.55 * z) * var
    fib = tint(tone, colour) if clean.ndim == 3 else F32(np.mean(colour)) * tone
    return lerp(base, fib, cover)


def carpet_thread(tex: CarpetTexture, clean, rng, size, low, small):
    """Stray yarn: a loose curved fibre lying on top of the carpet, with its shadow."""
    P = tex.P
    length = (rng.uniform(0.06, 0.12) if small else rng.uniform(0.2, 0.6)) * size
    w = max(0.8, rng.uniform(0.12, 0.22) * P)
    pts = random_curve(rng, random_point(rng, size, 0.2), rng.uniform(0, 2 * math.pi), length,
                       step=max(1.0, 2.0 * size / 512), wiggle=rng.uniform(0.05, 0.2), smooth=15)
    if low:
        colour = tex.col.mean(0) * rng.uniform(1.1, 1.3)
    else:
        colour = np.asarray(random_tint(rng, ["red", "dark", "bleach", "blue", "yellow"]), F32) * tex.col.mean(0)
        colour = np.clip(colour * rng.uniform(0.9, 1.4), 0.05, 0.95)
    return _fibre(clean, rng, size, [pts], w, colour, tex.light, 0.2 if low else 0.35), close_radius(size / 512), False
