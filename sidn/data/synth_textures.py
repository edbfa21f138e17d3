"""Procedural texture renderers for the embedded default dataset (``sidn.data.synth``).

Five materials modelled on the MVTec AD texture categories: carpet (2/2 twill of twisted
yarn, colour), grid (woven wire mesh, grayscale), leather (pebbled grain rendered from a
height map, colour), tile (terrazzo: polished matrix with stone chips, colour) and wood
(growth rings with knots and pores, colour).

Every texture is an object built from one ``numpy.random.Generator``: the constructor
draws everything random (phase, scale, orientation, colours, noise fields), and
``render(...)`` is deterministic. Defects (``sidn.data.synth_defects``) call ``render`` a
second time with a modification (a displacement field, removed wires, an extra height
map, an albedo change) so that a defect is a change of the texture itself and the
ground-truth mask is the set of pixels that the change altered.

Images are float32 in [0, 1]: [H, W] for grid, [H, W, 3] RGB for the coloured ones.
Lengths are given for a 512 px image and scaled by ``size / 512``.
The SIDN paper (Sec. IV-A) evaluates on MVTec AD textures; this generator is our stand-in
for that data set when no real data are available (no equation of the paper applies).
Noise fields, texture coordinates and shading come from ``sidn.data.synth_fields``.

This file is over 400 lines because it is one concept, the five texture renderers and their
registry :data:`TEXTURES` (each class 60-90 lines, self-contained); one file per class would
only scatter them.
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
    mul3,
    random_light,
    shade,
    smooth_field,
    smoothstep,
    tint,
)

__all__ = [
    "TEXTURES",
    "CarpetTexture",
    "GridTexture",
    "LeatherTexture",
    "TileTexture",
    "WoodTexture",
]


def _hash(k: np.ndarray, salt: float) -> np.ndarray:
    """Cheap per-integer pseudo-random value in [0, 1) (k: float32 array of integers)."""
    x = np.sin(k * F32(12.9898) + F32(salt)) * F32(43758.5453)
    return x - np.floor(x)



# ----------------------------------------------------------------------------- grid


class GridTexture:
    """Woven wire mesh (MVTec ``grid``, grayscale): round wires with a cylindrical profile
    and highlight, plain weave (each wire alternately over/under), cast shadows on a dark
    background, mild perspective."""

    channels = 1

    def __init__(self, rng: np.random.Generator, size: int):
        s = size / 512.0
        self.size = size
        self.P = max(8.0, rng.uniform(24.0, 32.0) * s)  # mesh period (px); resolvable at tiny sizes
        self.r = max(1.0, self.P * rng.uniform(0.13, 0.18))  # wire radius (px)
        self.frame = Frame(size, rng.normal(0.0, 0.035), tuple(rng.uniform(-0.08, 0.08, 2)))
        self.offset = rng.uniform(0.0, 2.0 * self.P, 2).astype(F32)
        self.weave = rng.uniform(0.22, 0.4)
        self.level = rng.uniform(0.5, 0.66)
        self.salt = rng.uniform(0.0, 100.0, 2)
        self.jit = rng.uniform(0.0, 0.08)  # wire position irregularity (cells)
        self.light = random_light(rng)
        self.rough = NoiseField(rng, self.frame, 3.0 * s + 0.5, pad=2 * self.P)
        self.bg = (rng.uniform(0.08, 0.14) + 0.03 * smooth_field(rng, size, 4)
                   + 0.015 * fine_noise(rng, size, 1.5 * s + 0.3)).astype(F32)
        self._lut = (self._profile_lut(0), self._profile_lut(1))

    def uv(self, disp=None) -> tuple[np.ndarray, np.ndarray]:
        u, v = self.frame.uv(disp)
        return u + self.offset[0], v + self.offset[1]

    _LUT_N = 256

    def _profile_lut(self, axis: int) -> np.ndarray:
        """Wire cross-section as a function of dr = d / r in [-1, 1]: (z, diffuse, highlight),
        a 1 x N x 3 table sampled with cv2.remap (replaces a dozen full-image operations)."""
        dr = np.linspace(-1.0, 1.0, self._LUT_N, dtype=F32)
        z = np.sqrt(np.clip(1.0 - dr * dr, 0.0, 1.0))
        la = float(self.light[1] if axis == 0 else self.light[0])
        lit = np.clip(0.45 * z - F32(0.55 * la) * dr + 0.45, 0.0, 1.2)
        spec = 0.25 * np.exp(-(((dr + F32(0.4 * la)) * F32(1.0 / 0.22)) ** 2))
        return np.dstack([z, lit, spec]).astype(F32).reshape(1, self._LUT_N, 3)

    def _wires(self, along, across, axis, roughness, brk):
        P, r = self.P, self.r
        ac = across * F32(1.0 / P)
        k = np.floor(ac + 0.5)
        h = _hash(k, self.salt[axis])
        d = (ac - k - F32(self.jit) * (h - 0.5)) * F32(P)
        al = along * F32(1.0 / P)
        if brk is not None and brk["axis"] == axis:
            sel = k == brk["k"]
            a, b = brk["a"], brk["b"]
            ra = np.clip(1.0 - (a - al) / 0.7, 0.0, 1.0) * (al <= a)
            rb = np.clip(1.0 - (al - b) / 0.7, 0.0, 1.0) * (al >= b)
            d = d - sel * (brk["spring_a"] * ra + brk["spring_b"] * rb).astype(F32) * F32(P)
            inside = sel & (al > a) & (al < b)
            rr = np.where(inside, F32(r * brk["thin"]), F32(r))
            dr = d / np.maximum(rr, F32(1e-3))
            cover = np.clip(rr - np.abs(d) + 0.5, 0.0, 1.0) * np.clip(rr * 2.0, 0.0, 1.0)  # removed: nothing left
        else:
            dr = d * F32(1.0 / r)
            cover = np.clip(F32(r + 0.5) - np.abs(d), 0.0, 1.0)
        n = self._LUT_N - 1
        prof = cv2.remap(self._lut[axis], dr * F32(0.5 * n) + F32(0.5 * n), np.zeros_like(dr),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        z, lit, spec = prof[..., 0], prof[..., 1], prof[..., 2]
        wv = np.cos(F32(math.pi) * (al + k + axis))
        height = 0.4 * z + F32(self.weave) * wv
        gain = F32(self.level * 0.85) + F32(self.level * 0.25) * (h * 7.0 - np.floor(h * 7.0))
        bright = gain * lit * (0.72 + 0.28 * wv) * (1.0 + 0.08 * roughness) + spec
        return cover, height, bright

    def render(self, disp=None, broken: dict | None = None) -> np.ndarray:
        u, v = self.uv(disp)
        rough = self.rough(u, v)
        ch, hh, bh = self._wires(u, v, 0, rough, broken)
        cv_, hv, bv = self._wires(v, u, 1, rough, broken)
        cov = np.maximum(ch, cv_)
        sh = cv2.GaussianBlur(cov, (0, 0), max(0.5, 0.9 * self.r))
        dx, dy = -self.light * 0.8 * self.r
        m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        sh = cv2.warpAffine(sh, m, (self.size, self.size), borderMode=cv2.BORDER_REPLICATE)
        bg = self.bg * (1.0 - 0.55 * sh)
        a = bg + (bv - bg) * cv_
        a = a + (bh - a) * ch  # horizontal over vertical
        b = bg + (bh - bg) * ch
        b = b + (bv - b) * cv_  # vertical over horizontal
        return np.where(hh >= hv, a, b)


# ----------------------------------------------------------------------------- carpet

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
        gain = 0.88 + 0.22 * _hash(np.where(top > 0.5, j, i + 1000.0), self.salt)
        bright = ((0.32 + 0.68 * prof) * (1.0 + 0.22 * slope) + 0.1 * fib * prof + 0.06 * self.fuzz)
        bright = bright * gain * (1.0 + 0.05 * self.mottle)
        c0, c1 = self.col
        img = cv2.merge([bright * (F32(c1[k]) + top * F32(c0[k] - c1[k])) for k in range(3)])
        return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------- leather

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


# ----------------------------------------------------------------------------- tile

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


# ----------------------------------------------------------------------------- wood

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


TEXTURES = {
    "carpet": CarpetTexture,
    "grid": GridTexture,
    "leather": LeatherTexture,
    "tile": TileTexture,
    "wood": WoodTexture,
}
