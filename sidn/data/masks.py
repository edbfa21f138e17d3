"""Random defect masks ``I_m`` for the defect generation module (paper Sec. III-B, eq. 1).

The paper only says the masks are "random anomaly masks". Our choice: four shape families,
picked with the shares in ``DGMConfig.shapes`` (normalised):

``ellipse``     filled ellipse, aspect ratio 1-4, random angle (the classic blob).
``noise_blob``  thresholded smooth noise (Perlin-like: two octaves of up-sampled random noise
                under a radial envelope), an irregular, sometimes fragmented region.
``stroke``      thin scratches: 1-3 curved polylines, 1-4 px thick at 256 px (scaled with size).
``polygon``     random convex (vertices on an ellipse) or concave (random radii) polygon.

The target area is log-uniform between ``min_area_fraction`` and ``max_area_fraction`` of the
image, so tiny and large defects are equally likely per decade; the position is uniform over the
image (shapes may be clipped at the border). With probability ``soft_edge_probability`` the
edges are soft: the blending weight ``alpha`` is the hard mask blurred with a Gaussian, and the
label mask is ``alpha > 0.5``. Everything is drawn with OpenCV (sub-pixel ``shift=2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

#: A shape function draws one shape of about ``area`` pixels into an ``h`` x ``w`` canvas.
#: It returns the uint8 {0,1} mask and a width hint in pixels (used to size the soft edge so
#: that thin shapes survive the ``alpha > 0.5`` threshold).
ShapeFn = Callable[[int, int, float, np.random.Generator], "tuple[np.ndarray, float]"]

_SHIFT = 2  # OpenCV sub-pixel bits for drawing
_ONE = 1 << _SHIFT


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _scale(h: int, w: int) -> float:
    """Size relative to the paper's 256 px images."""
    return min(h, w) / 256.0


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * _ONE).astype(np.int32)


def ellipse(h: int, w: int, area: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Filled ellipse of about ``area`` pixels, aspect 1-4 (log-uniform), random angle."""
    aspect = _log_uniform(rng, 1.0, 4.0)
    a = math.sqrt(area * aspect / math.pi)
    b = math.sqrt(area / (aspect * math.pi))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    angle = float(rng.uniform(0.0, 180.0))
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(
        mask,
        (int(round(cx * _ONE)), int(round(cy * _ONE))),
        (max(1, int(round(a * _ONE))), max(1, int(round(b * _ONE)))),
        angle, 0, 360, 1, -1, cv2.LINE_8, _SHIFT,
    )
    return mask, 2.0 * b


def polygon(h: int, w: int, area: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Random polygon (3-10 vertices): convex or concave with equal probability."""
    n = int(rng.integers(3, 11))
    angles = (np.arange(n) + rng.uniform(-0.4, 0.4, n)) * (2 * math.pi / n) + rng.uniform(0, 2 * math.pi)
    radii = rng.uniform(0.35, 1.0, n) if rng.random() < 0.5 else np.ones(n)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    aspect = _log_uniform(rng, 1.0, 3.0)
    pts *= np.array([math.sqrt(aspect), 1.0 / math.sqrt(aspect)])
    theta = rng.uniform(0, math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    pts = pts @ rot.T
    x, y = pts[:, 0], pts[:, 1]
    area0 = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    pts *= math.sqrt(area / max(area0, 1e-6))
    pts += np.array([rng.uniform(0, w), rng.uniform(0, h)])
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [_fixed(pts)], 1, cv2.LINE_8, _SHIFT)
    return mask, math.sqrt(area) / math.sqrt(aspect)


def _paste(h: int, w: int, patch: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Place ``patch`` centred at (cx, cy) in an h x w canvas, clipped at the border."""
    mask = np.zeros((h, w), np.uint8)
    ph, pw = patch.shape
    x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if xb > xa and yb > ya:
        mask[ya:yb, xa:xb] = patch[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return mask


def noise_blob(h: int, w: int, area: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Thresholded smooth noise under a radial envelope (Perlin-like), exactly ``area`` px in its box."""
    fill = rng.uniform(0.3, 0.6)  # share of the bounding box the blob covers
    aspect = _log_uniform(rng, 0.4, 2.5)
    bw = max(3, int(round(math.sqrt(area / fill * aspect))))
    bh = max(3, int(round(math.sqrt(area / fill / aspect))))
    cells = int(rng.integers(3, 7))
    field = np.zeros((bh, bw), np.float32)
    for octave, weight in ((cells, 1.0), (2 * cells + 1, 0.5)):
        low = rng.random((octave + 1, octave + 1), dtype=np.float32)
        field += weight * cv2.resize(low, (bw, bh), interpolation=cv2.INTER_CUBIC)
    yy = np.linspace(-1.0, 1.0, bh, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, bw, dtype=np.float32)[None, :]
    envelope = np.clip(1.0 - (xx * xx + yy * yy), 0.0, None)
    field = np.float32(0.6) * envelope + field  # the envelope keeps the blob in its box
    k = int(min(max(1, round(area)), bw * bh))
    thr = np.partition(field.ravel(), field.size - k)[field.size - k]
    patch = (field >= thr) & (envelope > 0)
    if not patch.any():
        patch[bh // 2, bw // 2] = True
    mask = _paste(h, w, patch.astype(np.uint8), rng.uniform(0, w), rng.uniform(0, h))
    return mask, 0.5 * math.sqrt(area)


def stroke(h: int, w: int, area: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """1-3 thin curved polylines (scratches), 1-4 px thick at 256 px, total area about ``area``."""
    sc = _scale(h, w)
    thickness = max(1, int(round(int(rng.integers(1, 5)) * sc)))
    length = area / thickness
    cap = 1.2 * max(h, w)  # one scratch is at most a bit longer than the image side
    n = int(min(3, max(1, math.ceil(length / cap))))
    each = max(2.0, min(length / n, cap))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    theta0 = rng.uniform(0, 2 * math.pi)
    kappa = rng.uniform(0.0, 0.6)  # curvature: std of the turn per segment (radians)
    mask = np.zeros((h, w), np.uint8)
    lines = []
    for i in range(n):
        nseg = int(rng.integers(2, 10))
        thetas = theta0 + rng.normal(0, 0.15) + np.cumsum(rng.normal(0, kappa, nseg))
        steps = (each / nseg) * np.stack([np.cos(thetas), np.sin(thetas)], axis=1)
        pts = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
        pts -= pts.mean(axis=0)
        offset = rng.normal(0, 0.05 * max(h, w), 2) if i else np.zeros(2)
        lines.append(_fixed(pts + np.array([cx, cy]) + offset))
    cv2.polylines(mask, lines, False, 1, thickness, cv2.LINE_8, _SHIFT)
    return mask, float(thickness)


#: Shape families by name (``DGMConfig.shapes`` keys). Add one by adding a ShapeFn here.
SHAPES: dict[str, ShapeFn] = {
    "ellipse": ellipse,
    "noise_blob": noise_blob,
    "stroke": stroke,
    "polygon": polygon,
}


def normalise_shares(shares: dict[str, float], known: dict, what: str) -> tuple[list[str], np.ndarray]:
    """Check a ``name -> share`` dict against ``known`` and return (names, probabilities).

    Raises ``ValueError`` naming ``what`` and the offending entry for unknown names, negative or
    non-finite shares, or when all shares are zero.
    """
    if not isinstance(shares, dict) or not shares:
        raise ValueError(f"DGMConfig.{what}: expected a non-empty mapping name -> share, got {shares!r}")
    names, weights = [], []
    for name, share in shares.items():
        if name not in known:
            raise ValueError(
                f"DGMConfig.{what}: unknown {what[:-1]} '{name}' (known: {', '.join(sorted(known))})"
            )
        try:
            value = float(share)
        except (TypeError, ValueError):
            raise ValueError(f"DGMConfig.{what}: share of '{name}' is not a number: {share!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"DGMConfig.{what}: share of '{name}' must be >= 0, got {share!r}")
        if value > 0:
            names.append(name)
            weights.append(value)
    if not names:
        raise ValueError(f"DGMConfig.{what}: all shares are zero")
    p = np.asarray(weights, dtype=np.float64)
    return names, p / p.sum()


def mask_bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice]:
    """Row and column slices of the non-zero part of ``mask``, grown by ``pad`` pixels."""
    x, y, bw, bh = cv2.boundingRect((mask > 0).astype(np.uint8))
    h, w = mask.shape
    if bw == 0 or bh == 0:
        return slice(0, 0), slice(0, 0)
    return slice(max(y - pad, 0), min(y + bh + pad, h)), slice(max(x - pad, 0), min(x + bw + pad, w))


@dataclass
class MaskSample:
    """One random mask: ``alpha`` (float32 [H,W] in [0,1], the blending weight I_m of eq. 1)
    and ``label`` (uint8 {0,1}, ``alpha > 0.5``: the ground truth the network learns)."""

    alpha: np.ndarray
    label: np.ndarray
    shape: str
    soft: bool
    target_area: float
    bbox: tuple[slice, slice]  # rows, cols holding every alpha > 0 pixel


class MaskSampler:
    """Draws random masks with the shape shares, area range and soft-edge rate of a DGMConfig."""

    def __init__(
        self,
        shapes: dict[str, float],
        min_area_fraction: float,
        max_area_fraction: float,
        soft_edge_probability: float,
    ) -> None:
        self.names, self.p = normalise_shares(shapes, SHAPES, "shapes")
        lo, hi = float(min_area_fraction), float(max_area_fraction)
        if not (0.0 < lo <= hi <= 1.0):
            raise ValueError(
                "DGMConfig: need 0 < min_area_fraction <= max_area_fraction <= 1, "
                f"got min_area_fraction={min_area_fraction}, max_area_fraction={max_area_fraction}"
            )
        if not (0.0 <= float(soft_edge_probability) <= 1.0):
            raise ValueError(
                f"DGMConfig.soft_edge_probability must be in [0, 1], got {soft_edge_probability}"
            )
        self.min_area_fraction, self.max_area_fraction = lo, hi
        self.soft_edge_probability = float(soft_edge_probability)

    def __call__(self, h: int, w: int, rng: np.random.Generator) -> MaskSample:
        """A mask with at least one labelled pixel (re-drawn if a shape falls off the image)."""
        name = self.names[int(rng.choice(len(self.names), p=self.p))]
        soft = bool(rng.random() < self.soft_edge_probability)
        area = _log_uniform(rng, self.min_area_fraction, self.max_area_fraction) * h * w
        area = max(area, 1.0)
        for _ in range(8):
            hard, width = SHAPES[name](h, w, area, rng)
            if hard.any():
                break
        else:  # pragma: no cover - practically unreachable; a single-pixel-ish fallback
            hard = np.zeros((h, w), np.uint8)
            hard[int(rng.integers(h)), int(rng.integers(w))] = 1
            width = 1.0
        if soft:
            sigma = rng.uniform(0.15, 0.5) * width
            sigma = float(np.clip(sigma, 0.4, 6.0 * max(_scale(h, w), 0.25)))
            pad = int(math.ceil(3 * sigma)) + 1
            rows, cols = mask_bbox(hard, pad)
            alpha = np.zeros((h, w), np.float32)
            alpha[rows, cols] = cv2.GaussianBlur(hard[rows, cols].astype(np.float32), (0, 0), sigma)
            label = (alpha > 0.5).astype(np.uint8)
            if label.any():
                return MaskSample(alpha, label, name, True, area, (rows, cols))
        return MaskSample(hard.astype(np.float32), hard, name, False, area, mask_bbox(hard))
