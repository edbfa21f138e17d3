"""Physical defects rendered inside the procedural textures of ``sidn.data.synth_textures``.

Each defect function takes the texture object, its clean rendering, a generator and two
flags (``low``: reduced visibility, ``small``: small extent) and returns the defective
float image plus how to turn the change into a mask (closing radius, hole filling).
Defects change the texture itself: wires are removed or displaced, the carpet is cut open
and shows its backing, stains multiply the texture under them (so it stays visible),
cracks, scratches, folds and dents are height changes that are shaded with the image's
light direction. The ground truth is computed by :func:`change_mask` from the difference
between the clean and the defective rendering (the pixels the defect visibly changed),
never drawn separately.

These are test-set defects (the evaluation data); they are unrelated to the training-time
defect generation module of the paper (eq. 1, ``sidn.data.dgm``).
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from sidn.data.synth_textures import (
    F32,
    CarpetTexture,
    GridTexture,
    LeatherTexture,
    TileTexture,
    WoodTexture,
    fine_noise,
    gray3,
    mul3,
    pixel_grid,
    shade,
    smooth_field,
    smoothstep,
    tint,
)

__all__ = ["DEFECTS", "DEFECT_TYPES", "change_mask"]

DefectFn = Callable[..., tuple[np.ndarray, int, bool]]

VISIBLE_DELTA = 0.035  # a pixel is "changed" when some channel moved by more than this (~9 grey levels)


# ----------------------------------------------------------------------------- geometry


def _point(rng: np.random.Generator, size: int, margin: float = 0.12) -> np.ndarray:
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


def _close(px: float) -> int:
    """Closing radius (px) for :func:`change_mask`; at least 1."""
    return max(1, int(round(px)))


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and t.ndim == 2:
        t = gray3(t.astype(F32, copy=False))
    return a + (b - a) * t


def _scale(img: np.ndarray, col) -> np.ndarray:
    """Multiply each channel of a colour image by a constant (cv2: no slow broadcasting)."""
    return cv2.multiply(img, tuple(float(c) for c in col) + (0.0,) * (4 - len(col)))


def _stain(clean: np.ndarray, alpha: np.ndarray, hue, rng: np.random.Generator, low: bool) -> np.ndarray:
    """Multiplicative stain (the texture stays visible under it). Its strength is set from
    the texture under it: a low-contrast stain changes the core by ~1.5-2.2x the visibility
    threshold on average, a normal one by at least ~4x (and up to the full ``hue``)."""
    hue = np.asarray(hue, dtype=F32)
    core = alpha > 0.5
    if core.any():
        per_unit = float(np.mean(np.max(np.abs(clean[core] * (hue - 1.0)), axis=-1)))
    else:
        per_unit = 0.1
    per_unit = max(per_unit, 1e-3)
    if low:
        strength = rng.uniform(1.5, 2.2) * VISIBLE_DELTA / per_unit
    else:
        strength = max(rng.uniform(0.7, 1.0), 4.0 * VISIBLE_DELTA / per_unit)
    t = 1.0 + min(strength, 1.6) * (hue - 1.0)
    stained = np.clip(_scale(clean, t), 0.0, 1.0)
    return _lerp(clean, stained, alpha)


def change_mask(clean: np.ndarray, defect: np.ndarray, close_px: int = 1, fill: bool = False,
                tau: float = VISIBLE_DELTA) -> np.ndarray:
    """Ground truth: pixels where ``defect`` differs visibly (> tau) from ``clean`` in any
    channel, closed by a ``close_px`` disc (joins a defect's parts, as an annotator would),
    optionally hole-filled; specks under ~4 px (at 512) dropped. uint8 {0, 1}."""
    d = cv2.absdiff(defect.astype(F32, copy=False), clean.astype(F32, copy=False))
    if d.ndim == 3:
        d = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])
    full = (d > tau).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(full)
    if w == 0 or h == 0:
        return full
    pad = 2 * close_px + 2
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(full.shape[1], x + w + pad), min(full.shape[0], y + h + pad)
    m = np.zeros((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), np.uint8)  # zero border: closing stays local
    m[pad:-pad, pad:-pad] = full[y0:y1, x0:x1]
    if close_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * close_px + 1, 2 * close_px + 1))
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k)
    if fill:
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(m, contours, -1, 1, cv2.FILLED)
    min_area = max(1, int(round(4 * (full.shape[0] / 512.0) ** 2)))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n > 1:
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area
        keep[0] = False
        m = keep[lab].astype(np.uint8)
    full[:] = 0
    full[y0:y1, x0:x1] = m[pad:-pad, pad:-pad]
    return full


# ----------------------------------------------------------------------------- carpet

_STAIN_TINTS = {
    "red": (1.45, 0.75, 0.70),
    "dark": (0.55, 0.55, 0.58),
    "bleach": (1.35, 1.30, 1.25),
    "blue": (0.72, 0.85, 1.35),
    "yellow": (1.30, 1.20, 0.65),
    "green": (0.78, 1.20, 0.80),
    "grey": (0.80, 0.86, 0.95),
    "reddish": (1.15, 0.85, 0.80),
}


def _tint(rng: np.random.Generator, names=None) -> tuple:
    names = list(_STAIN_TINTS) if names is None else names
    return _STAIN_TINTS[names[int(rng.integers(len(names)))]]


def carpet_color(tex: CarpetTexture, clean, rng, size, low, small):
    """Dyed / discoloured spot: the yarn colour changes, the weave stays visible."""
    P, s = tex.P, size / 512.0
    r = (rng.uniform(0.6, 1.1) if small else rng.uniform(1.5, 4.5)) * P
    alpha = blob(rng, size, _point(rng, size), r, r * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.25, edge=rng.uniform(1.0, 3.0) * s + 0.5, ragged=0.08)
    return _stain(clean, alpha, _tint(rng), rng, low), _close(0.5 * P), True


def carpet_hole(tex: CarpetTexture, clean, rng, size, low, small):
    """Missing yarn: the coarse dark backing weave shows through a ragged opening with a
    shaded rim; frayed yarn ends reach into it."""
    P, s = tex.P, size / 512.0
    r = (rng.uniform(0.5, 0.9) if small else rng.uniform(1.0, 2.8)) * P
    c = _point(rng, size)
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
        inside = _lerp(clean, inside, np.full(clean.shape[:2], rng.uniform(0.45, 0.6), F32))
    ring = np.clip(cv2.GaussianBlur(alpha, (0, 0), 0.2 * P) - alpha, 0.0, 1.0)
    out = _lerp(mul3(clean, 1.0 + 0.35 * ring), inside, alpha)
    ends = fringe(rng, alpha, 0.5 * P, 0.6 * P)
    if ends:
        out = _fibre(out, rng, size, ends, max(0.6, 0.1 * P), tex.col.mean(0) * F32(1.1), tex.light, 0.25)
    return out, _close(0.4 * P if low else 2 * s), True


def carpet_cut(tex: CarpetTexture, clean, rng, size, low, small):
    """Slit: yarns cut along a line and pulled apart (displacement field), the ragged gap
    shows the dark backing, cut fibre ends stick into it."""
    P, s = tex.P, size / 512.0
    L = (rng.uniform(1.5, 3.0) if small else rng.uniform(4.0, 10.0)) * P
    w = (rng.uniform(0.12, 0.25) if small else rng.uniform(0.2, 0.4)) * P
    if low:
        w *= 0.6
    mid = _point(rng, size, 0.2)
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
    img = _lerp(img, tint(fuzz, dark), gap * F32(1.0 if not low else 0.8))
    ends = fringe(rng, gap, 0.6 * P, 0.5 * P)
    if ends:
        img = _fibre(img, rng, size, ends, max(0.6, 0.1 * P), tex.col.mean(0) * F32(1.1), tex.light, 0.25)
    return img, _close(0.3 * P), True


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
    return _lerp(base, fib, cover)


def carpet_thread(tex: CarpetTexture, clean, rng, size, low, small):
    """Stray yarn: a loose curved fibre lying on top of the carpet, with its shadow."""
    P = tex.P
    length = (rng.uniform(0.06, 0.12) if small else rng.uniform(0.2, 0.6)) * size
    w = max(0.8, rng.uniform(0.12, 0.22) * P)
    pts = random_curve(rng, _point(rng, size, 0.2), rng.uniform(0, 2 * math.pi), length,
                       step=max(1.0, 2.0 * size / 512), wiggle=rng.uniform(0.05, 0.2), smooth=15)
    if low:
        colour = tex.col.mean(0) * rng.uniform(1.1, 1.3)
    else:
        colour = np.asarray(_tint(rng, ["red", "dark", "bleach", "blue", "yellow"]), F32) * tex.col.mean(0)
        colour = np.clip(colour * rng.uniform(0.9, 1.4), 0.05, 0.95)
    return _fibre(clean, rng, size, [pts], w, colour, tex.light, 0.2 if low else 0.35), _close(size / 512), False


# ----------------------------------------------------------------------------- grid


def grid_bent(tex: GridTexture, clean, rng, size, low, small):
    """Bent mesh: wires locally pushed and twisted by a smooth displacement field with
    compact support (radius R), so the weave is distorted, not just shifted."""
    P = tex.P
    R = (rng.uniform(0.8, 1.2) if small else rng.uniform(1.4, 3.0)) * P
    amp = (rng.uniform(0.18, 0.28) if low else rng.uniform(0.35, 0.6)) * P
    c = _point(rng, size)
    th = rng.uniform(0, 2 * math.pi)
    twist = rng.uniform(-0.5, 0.5)
    x, y = pixel_grid(size)
    dx, dy = x - F32(c[0]), y - F32(c[1])
    g = np.clip(1.0 - (dx * dx + dy * dy) * F32(1.0 / (R * R)), 0.0, 1.0) ** 2
    ux = (F32(amp * math.cos(th)) - F32(twist * amp / R) * dy) * g
    uy = (F32(amp * math.sin(th)) + F32(twist * amp / R) * dx) * g
    return tex.render(disp=(ux, uy)), _close(0.35 * P), True


def grid_broken(tex: GridTexture, clean, rng, size, low, small):
    """Broken wire: a wire segment is missing (or, low, thinned), the cut ends spring out."""
    u, v = tex.uv()
    p = _point(rng, size).astype(int)
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
    return tex.render(broken=brk), _close(size / 512), True


def grid_glue(tex: GridTexture, clean, rng, size, low, small):
    """Glue: a translucent glossy blob filling the mesh openings, wires blurred under it."""
    P, s = tex.P, size / 512.0
    R = (rng.uniform(0.4, 0.8) if small else rng.uniform(1.0, 2.5)) * P
    c = _point(rng, size)
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
    return _lerp(clean, glue, alpha * F32(op)), _close(2 * s), True


# ----------------------------------------------------------------------------- leather


def leather_color(tex: LeatherTexture, clean, rng, size, low, small):
    """Discoloured spot (ink, dye, fading): albedo change, the grain stays."""
    g, s = tex.g, size / 512.0
    r = (rng.uniform(2.0, 4.0) * g) if small else rng.uniform(25.0, 70.0) * s
    alpha = blob(rng, size, _point(rng, size), r, r * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.25, edge=rng.uniform(1.0, 4.0) * s + 0.5, ragged=0.1)
    return _stain(clean, alpha, _tint(rng, ["dark", "bleach", "red", "blue"]), rng, low), _close(0.5 * g), True


def leather_cut(tex: LeatherTexture, clean, rng, size, low, small):
    """Cut: a narrow tapered incision (deep groove, dark inside, slightly raised lips)."""
    g = tex.g
    L = (rng.uniform(3.0, 6.0) if small else rng.uniform(8.0, 25.0)) * g
    w = (rng.uniform(0.25, 0.4) if small else rng.uniform(0.3, 0.6)) * g
    depth = rng.uniform(0.8, 1.2) if low else rng.uniform(1.5, 2.5)
    pts = random_curve(rng, _point(rng, size, 0.2), rng.uniform(0, 2 * math.pi), L,
                       step=max(1.0, g * 0.4), wiggle=0.03, smooth=9)
    d, t = curve_field(size, [pts])
    ww = F32(w) * np.sqrt(end_window(t, 0.5)) + F32(0.3)
    core = np.exp(-((d / ww) ** 2))
    dh = -F32(depth) * core + F32(0.3 * depth) * np.exp(-(((d - 1.8 * ww) / (0.8 * ww + 0.5)) ** 2))
    dark = rng.uniform(0.25, 0.4) if low else rng.uniform(0.45, 0.7)
    albedo = 1.0 - F32(dark) * core
    return tex.render(dh=dh, albedo=albedo), _close(size / 512), True


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
    pts = random_curve(rng, _point(rng, size, 0.15), rng.uniform(0, 2 * math.pi), length,
                       step=max(1.0, 3.0 * size / 512), wiggle=0.02, smooth=21)
    d, t = curve_field(size, [pts])
    taper = end_window(t, 0.3)
    ridge = np.exp(-((d * F32(1.0 / W)) ** 2)) * taper
    crease = np.exp(-((d * F32(1.0 / (0.25 * W))) ** 2)) * taper
    dh = F32(A) * ridge - F32(0.6 * A) * crease
    albedo = 1.0 - 0.2 * crease
    gx, gy = _grad(ridge)
    k = F32(-0.35 * W * W)  # sample away from the crest: grain compressed into the fold
    return tex.render(disp=(gx * k, gy * k), dh=dh, albedo=albedo), _close(0.5 * g), True


def leather_poke(tex: LeatherTexture, clean, rng, size, low, small):
    """Poke: small dent(s) pressed into the leather (shaded depression, grain pulled in),
    often with a dark puncture in the middle."""
    g = tex.g
    n = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    c0 = _point(rng, size)
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
    return tex.render(disp=(ux, uy), dh=dh, albedo=alb), _close(0.3 * g), True


# ----------------------------------------------------------------------------- tile


def tile_crack(tex: TileTexture, clean, rng, size, low, small):
    """Crack: thin dark jagged line with branches; a bright lip on the lit side."""
    s = size / 512.0
    length = (rng.uniform(0.06, 0.12) if small else rng.uniform(0.25, 0.7)) * size
    step = max(1.5, 4.0 * s)
    main = jagged_curve(rng, _point(rng, size, 0.15), rng.uniform(0, 2 * math.pi), length, step)
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
    return out, _close(s), False


def tile_glue_strip(tex: TileTexture, clean, rng, size, low, small):
    """Glue strip: a translucent milky band with wavy edges, a glossy streak and a darker
    edge ridge; the terrazzo stays visible (blurred) under it."""
    s = size / 512.0
    length = (rng.uniform(0.1, 0.2) if small else rng.uniform(0.4, 1.0)) * size
    W = (rng.uniform(3.0, 6.0) if small else rng.uniform(8.0, 25.0)) * s + 0.5
    pts = random_curve(rng, _point(rng, size, 0.15), rng.uniform(0, 2 * math.pi), length,
                       step=max(1.0, 3.0 * s), wiggle=0.01, smooth=21)
    d, t = curve_field(size, [pts])
    wob = 1.0 + 0.2 * smooth_field(rng, size, max(2.0, size / (3.0 * W)))
    taper = np.sqrt(end_window(t, min(0.5, 2.0 * W / length)))
    edge = 1.2 * s + 0.3
    alpha = np.clip((F32(W) * wob * taper - d) / F32(edge) + 0.5, 0.0, 1.0)
    glue_col = np.asarray([0.80, 0.76, 0.62], F32) * F32(rng.uniform(0.85, 1.05))
    under = _scale(cv2.GaussianBlur(clean, (0, 0), 1.0 * s + 0.3), 0.7 * np.asarray([0.97, 0.93, 0.80])) \
        + tint(np.full(clean.shape[:2], 0.3, F32), glue_col)
    gloss = np.exp(-(((d - 0.3 * W) / (0.2 * W)) ** 2))
    ridge = 4.0 * alpha * (1.0 - alpha)
    op = rng.uniform(0.35, 0.45) if low else rng.uniform(0.55, 0.85)
    glue = under + gray3(0.1 * gloss - 0.08 * ridge)
    return _lerp(clean, glue, alpha * F32(op)), _close(2 * s), True


def tile_oil(tex: TileTexture, clean, rng, size, low, small):
    """Oil: translucent darkening with a brownish tint and a darker drying rim; the
    texture stays visible under it."""
    s = size / 512.0
    R = (rng.uniform(7.0, 12.0) if small else rng.uniform(20.0, 60.0)) * s
    alpha = blob(rng, size, _point(rng, size), R, R * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.3, edge=rng.uniform(1.0, 3.0) * s + 0.5, ragged=0.1)
    dark = rng.uniform(0.15, 0.22) if low else rng.uniform(0.25, 0.45)
    rim = np.clip(alpha - cv2.GaussianBlur(alpha, (0, 0), 0.12 * R + 0.5), 0.0, 1.0)
    hue = [1.0, 0.94, 0.8] if rng.random() < 0.6 else [1.0, 1.0, 1.0]
    out = mul3(clean, 1.0 - F32(dark) * alpha - 0.4 * F32(dark) * rim)
    out = out * cv2.merge([1.0 + F32(c - 1.0) * alpha for c in hue])
    return out, _close(2 * s), True


# ----------------------------------------------------------------------------- wood


def wood_color(tex: WoodTexture, clean, rng, size, low, small):
    """Discolouration (stain, weathering) elongated along the grain; the grain stays."""
    s = size / 512.0
    r = (rng.uniform(6.0, 12.0) if small else rng.uniform(20.0, 60.0)) * s
    ang = math.atan2(tex.frame.c, -tex.frame.s)  # along the grain (v axis) in image space
    alpha = blob(rng, size, _point(rng, size), r * rng.uniform(1.0, 2.5), r, ang,
                 rough=0.25, edge=rng.uniform(1.0, 4.0) * s + 0.5, ragged=0.1)
    return _stain(clean, alpha, _tint(rng, ["dark", "grey", "reddish", "bleach"]), rng, low), _close(2 * s), True


def wood_hole(tex: WoodTexture, clean, rng, size, low, small):
    """Hole(s): worm or nail holes: dark inside, inner wall lit on the side facing away
    from the light, a darker compressed rim."""
    s = size / 512.0
    n = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
    c0 = _point(rng, size)
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
        out = _lerp(out, inside, a)
    return out, _close(s), True


def wood_liquid(tex: WoodTexture, clean, rng, size, low, small):
    """Liquid: a wet spot, darker and more saturated with a sharper drying edge and a
    faint glossy highlight; the grain shows through."""
    s = size / 512.0
    R = (rng.uniform(7.0, 12.0) if small else rng.uniform(20.0, 70.0)) * s
    c = _point(rng, size)
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
    return np.clip(out, 0.0, 1.0), _close(2 * s), True


def wood_scratch(tex: WoodTexture, clean, rng, size, low, small):
    """Scratch: thin, nearly straight groove(s) fading out at the ends; lighter exposed
    fibres in the middle and shaded edges (one side brighter, the other darker)."""
    s = size / 512.0
    n = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    length = (rng.uniform(0.06, 0.12) if small else rng.uniform(0.25, 0.8)) * size
    ang = rng.uniform(0, 2 * math.pi)
    p = _point(rng, size, 0.2)
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
    out = _lerp(clean, tint(np.ones_like(core), np.clip(pale, 0, 1)), core * F32(bright))
    sh = shade(-core, tex.light, (0.5 if low else 1.0) * w)
    return np.clip(mul3(out, sh), 0.0, 1.0), _close(s), False


DEFECTS: dict[str, dict[str, DefectFn]] = {
    "carpet": {"color": carpet_color, "cut": carpet_cut, "hole": carpet_hole, "thread": carpet_thread},
    "grid": {"bent": grid_bent, "broken": grid_broken, "glue": grid_glue},
    "leather": {"color": leather_color, "cut": leather_cut, "fold": leather_fold, "poke": leather_poke},
    "tile": {"crack": tile_crack, "glue_strip": tile_glue_strip, "oil": tile_oil},
    "wood": {"color": wood_color, "hole": wood_hole, "liquid": wood_liquid, "scratch": wood_scratch},
}
DEFECT_TYPES: dict[str, list[str]] = {cat: list(d) for cat, d in DEFECTS.items()}
