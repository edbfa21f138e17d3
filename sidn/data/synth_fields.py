"""Noise fields, texture coordinates and shading shared by the texture and defect renderers.

Building blocks of the material modules (``sidn.data.synth_materials``): image-space
noise (:func:`smooth_field`, :func:`fine_noise`), texture-space noise that follows rotation and
displacement (:class:`Frame`, :class:`NoiseField`), colour products and height-map shading.
All float32; lengths in pixels. No equation of the SIDN paper applies (data generation only).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import cv2
import numpy as np

F32 = np.float32


@functools.lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only pixel coordinates (x, y), float32 [size, size]."""
    y, x = np.mgrid[0:size, 0:size].astype(F32)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y



def _std(a: np.ndarray) -> float:
    """Standard deviation estimated on a 1/16 subsample (normalising noise fields)."""
    return float(a[::4, ::4].std())


def smooth_field(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Low-frequency image-space noise (about ``cells`` blobs across), float32, std ~ 1."""
    n = max(1, int(round(cells))) + 3
    small = rng.standard_normal((n, n), dtype=F32)
    mid = min(size, 16 * n)
    big = cv2.resize(small, (mid, mid), interpolation=cv2.INTER_CUBIC)
    if mid != size:
        big = cv2.resize(big, (size, size), interpolation=cv2.INTER_LINEAR)
    return big * F32(1.0 / (_std(big) + 1e-6))


def fine_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Image-space Gaussian-filtered noise with std 1 (structure size ``sigma`` px)."""
    w = rng.random((size, size), dtype=F32) - 0.5
    if sigma > 0.3:
        w = cv2.GaussianBlur(w, (0, 0), sigma)
    return w * F32(1.0 / (_std(w) + 1e-6))


def hash01(k: np.ndarray, salt: float) -> np.ndarray:
    """Cheap per-integer pseudo-random value in [0, 1) (k: float32 array of integers)."""
    x = np.sin(k * F32(12.9898) + F32(salt)) * F32(43758.5453)
    return x - np.floor(x)


def gray3(g: np.ndarray) -> np.ndarray:
    """[H, W] -> [H, W, 3] (cv2.merge: much faster than numpy broadcasting on the last axis)."""
    return cv2.merge([g, g, g])


def mul3(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Colour image [H, W, 3] times a gray factor [H, W] (float32)."""
    return cv2.multiply(img, gray3(g.astype(F32, copy=False)))


def tint(g: np.ndarray, col) -> np.ndarray:
    """Gray level [H, W] times an RGB colour -> [H, W, 3]."""
    return cv2.merge([g * F32(c) for c in col])


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class Frame:
    """Texture coordinates (u, v): rotation ``theta`` about the image centre, optional mild
    perspective, optional displacement field (the texture at pixel p is sampled at p + d)."""

    def __init__(self, size: int, theta: float, persp: tuple[float, float] = (0.0, 0.0)):
        self.size = size
        self.c, self.s = math.cos(theta), math.sin(theta)
        self.persp = persp

    def half_extent(self) -> float:
        """Largest |u| or |v| of the undisplaced frame (px)."""
        return 0.5 * self.size * (abs(self.c) + abs(self.s)) * (1.0 + abs(self.persp[0]) + abs(self.persp[1]))

    def uv(self, disp: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        x, y = pixel_grid(self.size)
        h = self.size / 2.0
        xs, ys = x - F32(h), y - F32(h)
        if disp is not None:
            xs = xs + disp[0]
            ys = ys + disp[1]
        u = F32(self.c) * xs + F32(self.s) * ys
        v = F32(-self.s) * xs + F32(self.c) * ys
        px, py = self.persp
        if px or py:
            f = 1.0 + F32(px / self.size) * xs + F32(py / self.size) * ys
            u, v = u * f, v * f
        return u, v


class NoiseField:
    """Gaussian-filtered noise defined in texture coordinates, so that it follows rotation
    and displacement; std ``sigma_u`` x ``sigma_v`` px along u and v. Stored on a coarse
    lattice (texel about sigma / 2 per axis) that covers the frame's (u, v) range plus
    ``pad`` px, and sampled with cv2.remap (bilinear; reflected outside)."""

    def __init__(self, rng: np.random.Generator, frame: Frame, sigma_u: float, sigma_v: float | None = None,
                 pad: float = 0.0):
        sigma_v = sigma_u if sigma_v is None else sigma_v
        self.tu = max(1.0, sigma_u / 2.0)
        self.tv = max(1.0, sigma_v / 2.0)
        self.half = frame.half_extent() + pad + 8.0
        nu = int(2 * self.half / self.tu) + 3
        nv = int(2 * self.half / self.tv) + 3
        w = rng.random((nv, nu), dtype=F32) - F32(0.5)
        w = cv2.GaussianBlur(w, (0, 0), sigmaX=sigma_u / self.tu, sigmaY=sigma_v / self.tv,
                             borderType=cv2.BORDER_REFLECT)
        self.tile = w * F32(1.0 / (_std(w) + 1e-6))

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        mu = u * F32(1.0 / self.tu) + F32(self.half / self.tu)
        mv = v * F32(1.0 / self.tv) + F32(self.half / self.tv)
        return cv2.remap(self.tile, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def shade(height: np.ndarray, light: np.ndarray, strength: float) -> np.ndarray:
    """Lambert-like shading factor 1 - k (grad H . l) of a height map (light l in image xy)."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) * F32(0.125)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) * F32(0.125)
    return 1.0 - F32(strength) * (gx * F32(light[0]) + gy * F32(light[1]))


def random_light(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(a), math.sin(a)], dtype=F32)


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and t.ndim == 2:
        t = gray3(t.astype(F32, copy=False))
    return a + (b - a) * t


def scale_channels(img: np.ndarray, col: Sequence[float]) -> np.ndarray:
    """Multiply each channel of a colour image by a constant (cv2: no slow broadcasting)."""
    return cv2.multiply(img, tuple(float(c) for c in col) + (0.0,) * (4 - len(col)))
