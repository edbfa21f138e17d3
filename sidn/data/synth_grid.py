"""Grid of the embedded dataset: the texture :class:`GridTexture` and its defects.

Woven wire mesh, grayscale, modelled on the MVTec AD ``grid`` category; defects: bent, broken,
glue. The conventions shared by all materials are in :mod:`sidn.data.synth_materials`. No
equation of the SIDN paper applies (data generation only).
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
    pixel_grid,
    random_light,
    smooth_field,
)
from sidn.data.synth_mask import close_radius
from sidn.data.synth_shapes import blob, random_point


# ----------------------------------------------------------------------------- texture

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
        h = hash01(k, self.salt[axis])
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


# ----------------------------------------------------------------------------- defects


def grid_bent(tex: GridTexture, clean, rng, size, low, small):
    """Bent mesh: wires locally pushed and twisted by a smooth displacement field with
    compact support (radius R), so the weave is distorted, not just shifted."""
    P = tex.P
    R = (rng.uniform(0.8, 1.2) if small else rng.uniform(1.4, 3.0)) * P
    amp = (rng.uniform(0.18, 0.28) if low else rng.uniform(0.35, 0.6)) * P
    c = random_point(rng, size)
    th = rng.uniform(0, 2 * math.pi)
    twist = rng.uniform(-0.5, 0.5)
    x, y = pixel_grid(size)
    dx, dy = x - F32(c[0]), y - F32(c[1])
    g = np.clip(1.0 - (dx * dx + dy * dy) * F32(1.0 / (R * R)), 0.0, 1.0) ** 2
    ux = (F32(amp * math.cos(th)) - F32(twist * amp / R) * dy) * g
    uy = (F32(amp * math.sin(th)) + F32(twist * amp / R) * dx) * g
    return tex.render(disp=(ux, uy)), close_radius(0.35 * P), True


def grid_broken(tex: GridTexture, clean, rng, size, low, small):
    """Broken wire: a wire segment is missing (or, low, thinned), the cut ends spring out."""
    u, v = tex.uv()
    p = random_point(rng, size).astype(int)
    axis = int(rng.integers(2))
    across = (v if axis == 0 else u)[p[1], p[0]]
    along = (u if axis == 0 else v)[p[1], p[0]]
    k0 = math.floor(across / tex.P + 0.5)
    length = rng.uniform(0.5, 0.9) if small else rng.uniform(1.0, 2.5)
    a0 = along / tex.P
    brk = {
        "axis": axis, "k": k0, "a": a0 - length / 2, "b": a0 + length / 2,
        "thin": rng.uniform(0.35, 0.55) if low else 0.0,
        "spring_a": 0.0 if low else rng.normal(0.0, 0.12),
        "spring_b": 0.0 if low else rng.normal(0.0, 0.12),
    }
    return tex.render(broken=brk), close_radius(size / 512), True


def grid_glue(tex: GridTexture, clean, rng, size, low, small):
    """Glue: a translucent glossy blob filling the mesh openings, wires blurred under it."""
    P, s = tex.P, size / 512.0
    R = (rng.uniform(0.4, 0.8) if small else rng.uniform(1.0, 2.5)) * P
    c = random_point(rng, size)
    alpha = blob(rng, size, c, R, R * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi),
                 rough=0.3, edge=1.5 * s + 0.5)
    op = rng.uniform(0.35, 0.5) if low else rng.uniform(0.65, 0.9)
    level = rng.uniform(0.35, 0.55)
    under = 0.55 * cv2.GaussianBlur(clean, (0, 0), 1.2 * s + 0.3) + F32(0.45 * level)
    x, y = pixel_grid(size)
    hx, hy = c - tex.light * 0.35 * R
    gloss = np.exp(-((x - F32(hx)) ** 2 + (y - F32(hy)) ** 2) * F32(1.0 / (0.35 * R) ** 2))
    rim = 4.0 * alpha * (1.0 - alpha)
    glue = under + 0.18 * gloss - 0.08 * rim
    return lerp(clean, glue, alpha * F32(op)), close_radius(2 * s), True
