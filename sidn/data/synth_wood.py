"""Wood of the embedded dataset: the texture :class:`WoodTexture` and its defects.

Growth rings with knots and pores, colour, modelled on the MVTec AD ``wood`` category; defects:
color, hole, liquid, scratch. The conventions shared by all materials are in
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
    gray3,
    lerp,
    mul3,
    pixel_grid,
    random_light,
    shade,
    smooth_field,
    smoothstep,
    tint,
)
from sidn.data.synth_mask import close_radius
from sidn.data.synth_shapes import blob, curve_field, end_window, random_curve, random_point
from sidn.data.synth_stains import random_tint, stain


# ----------------------------------------------------------------------------- texture

_WOOD_COLOURS = np.array(
    [
        [0.80, 0.60, 0.40],  # pine / spruce
        [0.72, 0.50, 0.32],  # oak
        [0.62, 0.40, 0.26],  # walnut-ish
        [0.84, 0.70, 0.52],  # ash / maple
    ],
    dtype=F32,
)


class WoodTexture:
    """Sawn wood (MVTec ``wood``, colour): growth rings (late wood darker, sharp edge),
    irregular ring spacing, wavy grain, fibre striations and pores along the grain, and
    occasional natural knots with the grain flowing around them (potential flow around a
    cylinder)."""

    channels = 3

    def __init__(self, rng: np.random.Generator, size: int, knots: int | None = None):
        s = size / 512.0
        self.size = size
        self.P = rng.uniform(16.0, 30.0) * s  # ring spacing (px)
        self.frame = Frame(size, rng.uniform(-0.1, 0.1) + rng.choice([0.0, math.pi / 2]))
        self.phase = rng.uniform(0.0, 1.0)
        self.warp_amp = rng.uniform(0.8, 2.0) * self.P
        pad = 5.0 * self.warp_amp + 20 * s
        self.warp = NoiseField(rng, self.frame, 2.5 * self.P, 12.0 * self.P, pad=pad)
        self.spacing = NoiseField(rng, self.frame, 0.8 * self.P, 20.0 * self.P, pad=pad)
        fs = s + 0.2
        self.fibre = NoiseField(rng, self.frame, 0.7 * fs, 25.0 * fs, pad=pad)
        self.pores = NoiseField(rng, self.frame, 0.6 * fs, 5.0 * fs, pad=pad)
        self.late = rng.uniform(0.35, 0.6)
        base = _WOOD_COLOURS[rng.integers(len(_WOOD_COLOURS))] * rng.uniform(0.9, 1.1)
        self.col_light = (base * (1.0 + rng.normal(0.0, 0.03, 3))).astype(F32)
        self.col_dark = (self.col_light * np.array([0.72, 0.62, 0.55]) * rng.uniform(0.85, 1.0)).astype(F32)
        self.low = smooth_field(rng, size, 3)
        self.light = random_light(rng)
        if knots is None:
            knots = int(rng.random() < 0.25)
        self.knots = [
            (rng.uniform(-0.4, 0.4, 2) * size, rng.uniform(12.0, 26.0) * s, rng.uniform(1.3, 2.0))
            for _ in range(knots)
        ]

    def render(self, disp=None) -> np.ndarray:
        u, v = self.frame.uv(disp)
        w = F32(self.warp_amp) * self.warp(u, v)
        ue = u + w + F32(0.25 * self.P) * self.spacing(u, v)
        knot_in = None
        for (cx, cy), R, el in self.knots:
            ku = u - F32(self.frame.c * cx + self.frame.s * cy)
            kv = (v - F32(-self.frame.s * cx + self.frame.c * cy)) * F32(1.0 / el)
            r2 = np.maximum(ku * ku + kv * kv, F32(R * R))
            ue = ue - ku * (F32(R * R) / r2)  # stream function of the flow around the knot
            r = np.sqrt(ku * ku + kv * kv)
            inside = 1.0 - smoothstep(0.9 * R, 1.1 * R, r)
            ring = 0.8 + 0.12 * np.cos(F32(2 * math.pi * 3.5 / R) * r) - 0.25 * smoothstep(0.7 * R, R, r)
            knot_in = (inside, ring) if knot_in is None else (np.maximum(knot_in[0], inside),
                                                               np.where(inside > knot_in[0], ring, knot_in[1]))
        g = ue * F32(1.0 / self.P) + F32(self.phase)
        t = g - np.floor(g)
        late = smoothstep(1.0 - self.late, 0.97, t) * (1.0 - smoothstep(0.97, 1.0, t))
        fib = self.fibre(u + w, v)
        pore = np.clip(self.pores(u + w, v) - 1.8, 0.0, 1.0)
        mix = np.clip(0.75 * late + 0.06 * fib + 0.05 * self.low, 0.0, 1.0)
        lum = (1.0 - 0.35 * pore) * (1.0 + 0.03 * fib)
        if knot_in is not None:
            inside, ring = knot_in
            mix = mix + (1.0 - mix) * inside
            lum = lum * (1.0 - inside * (1.0 - ring))
        cl, cd = self.col_light, self.col_dark
        img = cv2.merge([lum * (F32(cl[k]) + mix * F32(cd[k] - cl[k])) for k in range(3)])
        return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------- defects


def wood_color(tex: WoodTexture, clean, rng, size, low, small):
    """Discolouration (stain, weathering) elongated along the grain; the grain stays."""
    s = size / 512.0
    r = (rng.uniform(6.0, 12.0) if small else rng.uniform(20.0, 60.0)) * s
    ang = math.atan2(tex.frame.c, -tex.frame.s)  # along the grain (v axis) in image space
    alpha = blob(rng, size, random_point(rng, size), r * rng.uniform(1.0, 2.5), r, ang,
                 rough=0.25, edge=rng.uniform(1.0, 4.0) * s + 0.5, ragged=0.1)
    return stain(clean, alpha, random_tint(rng, ["dark", "grey", "reddish", "bleach"]), rng, low), close_radius(2 * s), True


def wood_hole(tex: WoodTexture, clean, rng, size, low, small):
    """Hole(s): worm or nail holes: dark inside, inner wall lit on the side facing away
    from the light, a darker compressed rim."""
    s = size / 512.0
    n = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
    c0 = random_point(rng, size)
    x, y = pixel_grid(size)
    out = clean.copy()
    for _ in range(n):
        r = (rng.uniform(2.5, 5.0) if small else rng.uniform(5.0, 14.0)) * s + 0.7
        c = c0 + rng.normal(0.0, 4.0 * r, 2) * (n > 1)
        el = rng.uniform(1.0, 1.4)
        dx, dy = x - F32(c[0]), (y - F32(c[1])) * F32(1.0 / el)
        dist = np.sqrt(dx * dx + dy * dy)
        a = np.clip(F32(r) - dist + 0.5, 0.0, 1.0)
        wall = np.clip((dx * F32(tex.light[0]) + dy * F32(tex.light[1])) / F32(r), 0.0, 1.0)
        depth = rng.uniform(0.35, 0.5) if low else rng.uniform(0.1, 0.25)
        inside = tint(F32(depth) * (0.6 + 0.9 * wall), tex.col_dark)
        ring = np.clip(1.0 - np.abs(dist - F32(1.25 * r)) / F32(0.35 * r + 0.5), 0.0, 1.0)
        out = mul3(out, 1.0 - 0.15 * ring)
        out = lerp(out, inside, a)
    return out, close_radius(s), True


def wood_liquid(tex: WoodTexture, clean, rng, size, low, small):
    """Liquid: a wet spot, darker and more saturated with a sharper drying edge and a
    faint glossy highlight; the grain shows through."""
    s = size / 512.0
    R = (rng.uniform(7.0, 12.0) if small else rng.uniform(20.0, 70.0)) * s
    c = random_point(rng, size)
    alpha = blob(rng, size, c, R, R * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.3, edge=rng.uniform(0.8, 2.0) * s + 0.5, ragged=0.12)
    dark = rng.uniform(0.15, 0.22) if low else rng.uniform(0.2, 0.4)
    rim = np.clip(alpha - cv2.GaussianBlur(alpha, (0, 0), 0.1 * R + 0.5), 0.0, 1.0)
    out = mul3(clean, 1.0 - F32(dark) * alpha - 0.5 * F32(dark) * rim)
    mean = gray3((out[..., 0] + out[..., 1] + out[..., 2]) * F32(1.0 / 3.0))
    out = mean + (out - mean) * gray3(1.0 + 0.35 * alpha)
    x, y = pixel_grid(size)
    hx, hy = c - tex.light * 0.3 * R
    gloss = np.exp(-((x - F32(hx)) ** 2 + (y - F32(hy)) ** 2) * F32(1.0 / (0.3 * R) ** 2)) * alpha
    out = out + gray3(0.06 * gloss)
    return np.clip(out, 0.0, 1.0), close_radius(2 * s), True


def wood_scratch(tex: WoodTexture, clean, rng, size, low, small):
    """Scratch: thin, nearly straight groove(s) fading out at the ends; lighter exposed
    fibres in the middle and shaded edges (one side brighter, the other darker)."""
    s = size / 512.0
    n = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    length = (rng.uniform(0.06, 0.12) if small else rng.uniform(0.25, 0.8)) * size
    ang = rng.uniform(0, 2 * math.pi)
    p = random_point(rng, size, 0.2)
    curves = []
    for i in range(n):
        off = np.array([-math.sin(ang), math.cos(ang)]) * i * rng.uniform(3.0, 8.0) * s
        curves.append(random_curve(rng, p + off, ang + rng.normal(0.0, 0.03), length * rng.uniform(0.7, 1.0),
                                   step=max(1.0, 3.0 * s), wiggle=0.006, smooth=21))
    _, t = curve_field(size, curves)
    canvas = np.zeros((size, size), np.uint8)
    cv2.polylines(canvas, [np.round(c * 16).astype(np.int32) for c in curves], False, 255, 1, cv2.LINE_AA, shift=4)
    w = rng.uniform(0.5, 1.2) * s + 0.3
    core = cv2.GaussianBlur(canvas.astype(F32), (0, 0), w)
    core *= F32(1.0 / max(float(core.max()), 1e-6))
    core *= end_window(t, 0.15)
    bright = rng.uniform(0.3, 0.4) if low else rng.uniform(0.45, 0.7)
    pale = np.asarray(tex.col_light, F32) * F32(1.15) + F32(0.05)
    out = lerp(clean, tint(np.ones_like(core), np.clip(pale, 0, 1)), core * F32(bright))
    sh = shade(-core, tex.light, (0.5 if low else 1.0) * w)
    return np.clip(mul3(out, sh), 0.0, 1.0), close_radius(s), False
