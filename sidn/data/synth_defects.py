"""Physical defects rendered inside the procedural textures of ``sidn.data.synth_textures``.

Each defect function takes the texture object, its clean rendering, a generator and two
flags (``low``: reduced visibility, ``small``: small extent) and returns the defective
float image plus how to turn the change into a mask (closing radius, hole filling).
Defects change the texture itself: wires are removed or displaced, the carpet is cut open
and shows its backing, stains multiply the texture under them (so it stays visible),
cracks, scratches, folds and dents are height changes that are shaded with the image's
light direction. The ground truth is computed by :func:`sidn.data.synth_mask.change_mask` from the difference
between the clean and the defective rendering (the pixels the defect visibly changed),
never drawn separately.

These are test-set defects (the evaluation data); they are unrelated to the training-time
defect generation module of the paper (eq. 1, ``sidn.data.dgm``).

This file is over 400 lines because it is one concept, the defect catalogue: one renderer per
category and defect type, and the registry :data:`DEFECTS`; the geometry, stains and masks they
use live in ``synth_shapes``, ``synth_stains`` and ``synth_mask``.
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from sidn.data.synth_fields import (
    F32,
    fine_noise,
    gray3,
    lerp,
    mul3,
    pixel_grid,
    scale_channels,
    shade,
    smooth_field,
    tint,
)
from sidn.data.synth_shapes import (
    blob,
    curve_distance,
    curve_field,
    end_window,
    fringe,
    jagged_curve,
    random_curve,
    random_point,
    shifted,
)
from sidn.data.synth_stains import random_tint, stain
from sidn.data.synth_textures import CarpetTexture, GridTexture, LeatherTexture, TileTexture, WoodTexture

__all__ = ["DEFECTS", "DEFECT_TYPES"]

DefectFn = Callable[..., tuple[np.ndarray, int, bool]]


def _close(px: float) -> int:
    """Closing radius (px) for :func:`sidn.data.synth_mask.change_mask`; at least 1."""
    return max(1, int(round(px)))


# ----------------------------------------------------------------------------- carpet


def carpet_color(tex: CarpetTexture, clean, rng, size, low, small):
    """Dyed / discoloured spot: the yarn colour changes, the weave stays visible."""
    P, s = tex.P, size / 512.0
    r = (rng.uniform(0.6, 1.1) if small else rng.uniform(1.5, 4.5)) * P
    alpha = blob(rng, size, random_point(rng, size), r, r * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.25, edge=rng.uniform(1.0, 3.0) * s + 0.5, ragged=0.08)
    return stain(clean, alpha, random_tint(rng), rng, low), _close(0.5 * P), True


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
    return out, _close(0.4 * P if low else 2 * s), True


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
    return _fibre(clean, rng, size, [pts], w, colour, tex.light, 0.2 if low else 0.35), _close(size / 512), False


# ----------------------------------------------------------------------------- grid


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
    return tex.render(disp=(ux, uy)), _close(0.35 * P), True


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
    return tex.render(broken=brk), _close(size / 512), True


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
    return lerp(clean, glue, alpha * F32(op)), _close(2 * s), True


# ----------------------------------------------------------------------------- leather


def leather_color(tex: LeatherTexture, clean, rng, size, low, small):
    """Discoloured spot (ink, dye, fading): albedo change, the grain stays."""
    g, s = tex.g, size / 512.0
    r = (rng.uniform(2.0, 4.0) * g) if small else rng.uniform(25.0, 70.0) * s
    alpha = blob(rng, size, random_point(rng, size), r, r * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                 rough=0.25, edge=rng.uniform(1.0, 4.0) * s + 0.5, ragged=0.1)
    return stain(clean, alpha, random_tint(rng, ["dark", "bleach", "red", "blue"]), rng, low), _close(0.5 * g), True


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
    return tex.render(disp=(gx * k, gy * k), dh=dh, albedo=albedo), _close(0.5 * g), True


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
    return tex.render(disp=(ux, uy), dh=dh, albedo=alb), _close(0.3 * g), True


# ----------------------------------------------------------------------------- tile


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
    return out, _close(s), False


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
    return lerp(clean, glue, alpha * F32(op)), _close(2 * s), True


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
    return out, _close(2 * s), True


# ----------------------------------------------------------------------------- wood


def wood_color(tex: WoodTexture, clean, rng, size, low, small):
    """Discolouration (stain, weathering) elongated along the grain; the grain stays."""
    s = size / 512.0
    r = (rng.uniform(6.0, 12.0) if small else rng.uniform(20.0, 60.0)) * s
    ang = math.atan2(tex.frame.c, -tex.frame.s)  # along the grain (v axis) in image space
    alpha = blob(rng, size, random_point(rng, size), r * rng.uniform(1.0, 2.5), r, ang,
                 rough=0.25, edge=rng.uniform(1.0, 4.0) * s + 0.5, ragged=0.1)
    return stain(clean, alpha, random_tint(rng, ["dark", "grey", "reddish", "bleach"]), rng, low), _close(2 * s), True


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
    return out, _close(s), True


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
    return np.clip(out, 0.0, 1.0), _close(2 * s), True


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
    return np.clip(mul3(out, sh), 0.0, 1.0), _close(s), False


DEFECTS: dict[str, dict[str, DefectFn]] = {
    "carpet": {"color": carpet_color, "cut": carpet_cut, "hole": carpet_hole, "thread": carpet_thread},
    "grid": {"bent": grid_bent, "broken": grid_broken, "glue": grid_glue},
    "leather": {"color": leather_color, "cut": leather_cut, "fold": leather_fold, "poke": leather_poke},
    "tile": {"crack": tile_crack, "glue_strip": tile_glue_strip, "oil": tile_oil},
    "wood": {"color": wood_color, "hole": wood_hole, "liquid": wood_liquid, "scratch": wood_scratch},
}
DEFECT_TYPES: dict[str, list[str]] = {cat: list(d) for cat, d in DEFECTS.items()}
