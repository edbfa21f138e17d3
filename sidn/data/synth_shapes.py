"""Where a synthetic defect lies: blobs, random curves, distance fields along curves.

Geometry used by the defect renderers of the material modules: soft irregular blobs,
smooth and jagged random polylines, each pixel's distance to them (and position along them),
frayed fibre ends on a blob's border, and sub-pixel image shifts. Coordinates are pixels (x, y).
No equation of the SIDN paper applies (data generation only).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sidn.data.synth_fields import F32, pixel_grid, smooth_field, smoothstep


def random_point(rng: np.random.Generator, size: int, margin: float = 0.12) -> np.ndarray:
    return rng.uniform(margin * size, (1.0 - margin) * size, 2)


def blob(rng: np.random.Generator, size: int, centre, ra: float, rb: float, angle: float,
         rough: float = 0.2, edge: float = 1.0, ragged: float = 0.0) -> np.ndarray:
    """Soft irregular blob: an ellipse (semi-axes ra, rb) whose radius is modulated by a few
    random harmonics (``rough``) and by fine noise (``ragged``); ``edge`` px soft border."""
    alpha = np.zeros((size, size), F32)
    reach = max(ra, rb) * (1.0 + 2.5 * rough + 2.0 * ragged) + edge + 2.0
    x0, x1 = int(max(0, centre[0] - reach)), int(min(size, centre[0] + reach + 1))
    y0, y1 = int(max(0, centre[1] - reach)), int(min(size, centre[1] + reach + 1))
    harm = [(k, rng.normal(0.0, rough) / k, rng.uniform(0, 2 * math.pi)) for k in range(2, 6)]
    noise_cells = max(2.0, size / max(1.0, 0.5 * min(ra, rb)))
    ragged_field = smooth_field(rng, size, noise_cells) if ragged > 0 else None
    if x1 <= x0 or y1 <= y0:
        return alpha
    x, y = pixel_grid(size)
    dx, dy = x[y0:y1, x0:x1] - F32(centre[0]), y[y0:y1, x0:x1] - F32(centre[1])
    c, s = math.cos(angle), math.sin(angle)
    xr = (F32(c) * dx + F32(s) * dy) / F32(ra)
    yr = (F32(-s) * dx + F32(c) * dy) / F32(rb)
    rho = np.sqrt(xr * xr + yr * yr)
    phi = np.arctan2(yr, xr)
    radius = np.ones_like(rho)
    for k, a, p in harm:
        radius += F32(a) * np.cos(F32(k) * phi + F32(p))
    if ragged_field is not None:
        radius += F32(ragged) * ragged_field[y0:y1, x0:x1]
    sd = (radius - rho) * F32(min(ra, rb))  # ~ signed distance to the border (px), > 0 inside
    alpha[y0:y1, x0:x1] = np.clip(sd / F32(edge) + 0.5, 0.0, 1.0)
    return alpha


def random_curve(rng: np.random.Generator, start, angle: float, length: float, step: float = 2.0,
                 wiggle: float = 0.05, smooth: int = 9, centred: bool = True) -> np.ndarray:
    """Smooth random curve: heading = angle + cumulative smoothed random turns; (N, 2) xy.
    ``centred``: ``start`` is the curve's middle (so long curves stay in the image)."""
    n = max(2, int(length / step))
    turns = rng.normal(0.0, wiggle, n)
    if smooth > 1 and n > smooth:
        turns = np.convolve(turns, np.ones(smooth) / smooth * math.sqrt(smooth), mode="same")
    heading = angle + np.cumsum(turns)
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * step
    return _place(np.concatenate([[[0.0, 0.0]], np.cumsum(steps, 0)]), start, centred)


def _place(rel: np.ndarray, start, centred: bool) -> np.ndarray:
    if centred:
        rel = rel - rel[len(rel) // 2]
    return np.asarray(start, dtype=np.float64)[None, :] + rel


def jagged_curve(rng: np.random.Generator, start, angle: float, length: float, step: float,
                 centred: bool = True) -> np.ndarray:
    """Crack path: slowly drifting direction with large independent kinks at every step."""
    n = max(2, int(length / step))
    drift = angle + np.cumsum(rng.normal(0.0, 0.06, n))
    heading = drift + rng.normal(0.0, 0.45, n)
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * step * rng.uniform(0.6, 1.4, (n, 1))
    return _place(np.concatenate([[[0.0, 0.0]], np.cumsum(steps, 0)]), start, centred)


def curve_distance(size: int, curves: list[np.ndarray]) -> np.ndarray:
    """Euclidean distance (px, float32) of every pixel to the nearest of the polylines."""
    img = np.full((size, size), 255, np.uint8)
    cv2.polylines(img, [np.round(c * 16).astype(np.int32) for c in curves], False, 0, 1, cv2.LINE_8, shift=4)
    return cv2.distanceTransform(img, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def curve_field(size: int, curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distance (px) to the nearest polyline and the arc-length fraction t in [0, 1] of the
    nearest point on it (0 at a curve's start, 1 at its end), both float32 [size, size]."""
    img = np.full((size, size), 255, np.uint8)
    cv2.polylines(img, [np.round(c * 16).astype(np.int32) for c in curves], False, 0, 1, cv2.LINE_8, shift=4)
    d, lab = cv2.distanceTransformWithLabels(img, cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(img == 0)  # labels number the zero pixels in scan order
    verts, tv = [], []
    for c in curves:
        seg = np.hypot(*np.diff(c, axis=0).T)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        verts.append(c)
        tv.append(arc / max(arc[-1], 1e-6))
    verts_a, tv_a = np.concatenate(verts), np.concatenate(tv)
    t_pix = np.empty(len(xs), np.float32)
    for i in range(0, len(xs), 512):
        px, py = xs[i:i + 512, None], ys[i:i + 512, None]
        near = np.argmin((verts_a[None, :, 0] - px) ** 2 + (verts_a[None, :, 1] - py) ** 2, axis=1)
        t_pix[i:i + 512] = tv_a[near]
    if len(t_pix) == 0:
        return d, np.zeros_like(d)
    return d, t_pix[np.maximum(lab, 1) - 1]


def end_window(t: np.ndarray, reach: float) -> np.ndarray:
    """1 along the middle of a curve, smoothly 0 at both ends (``reach``: fraction of length)."""
    return smoothstep(0.0, reach, t) * smoothstep(0.0, reach, 1.0 - t)


def fringe(rng: np.random.Generator, alpha: np.ndarray, spacing: float, length: float,
           inward: bool = True) -> list[np.ndarray]:
    """Short loose fibre ends starting on the border of ``alpha`` > 0.5 and pointing into it
    (frayed yarn at the edge of a hole or cut), one every ~``spacing`` px of border."""
    contours, _ = cv2.findContours((alpha > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    curves = []
    for c in contours:
        c = c[:, 0, :].astype(np.float64)
        if len(c) < 8:
            continue
        centre = c.mean(0)
        for k in rng.choice(len(c), min(len(c), max(1, int(len(c) / max(spacing, 1.0)))), replace=False):
            p = c[k]
            to_c = centre - p
            ang = math.atan2(to_c[1], to_c[0]) + rng.normal(0.0, 0.5) + (0.0 if inward else math.pi)
            curves.append(random_curve(rng, p, ang, length * rng.uniform(0.4, 1.0), step=1.0, wiggle=0.15, smooth=3,
                                       centred=False))
    return curves


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
