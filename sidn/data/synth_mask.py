"""Ground truth of a synthetic defect: the pixels it visibly changed (``sidn.data.synth``).

:func:`change_mask` compares the clean and the defective rendering of a texture, so the mask
is never drawn separately from the defect. No equation of the SIDN paper applies.
"""

from __future__ import annotations

import cv2
import numpy as np

from sidn.data.synth_fields import F32

VISIBLE_DELTA = 0.035  # a pixel is "changed" when some channel moved by more than this (~9 grey levels)


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


def close_radius(px: float) -> int:
    """Closing radius (px) for :func:`change_mask`; at least 1."""
    return max(1, int(round(px)))
