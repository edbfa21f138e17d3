"""Evaluation metrics for anomaly maps: pixel AUROC, AUPRO, image AUROC, F1/IoU.

All pixel metrics are computed at the resolution of the ground-truth masks: every map must
already have its mask's shape (the :class:`sidn.inference.Predictor` returns maps at the
original image size, which is the mask size for MVTec-layout data).

Threshold sweeps are **exact and sort-based**: all pixel scores are sorted once and the
cumulative counts are read off at every distinct score value (the approach of
``sklearn.metrics.roc_curve`` and of the MVTec AD evaluation code). No quantile
approximation is used, so small hand-made cases give exact values (the sweep primitives are
in :mod:`sidn.threshold_sweep`). :class:`sidn.ranked_pixels.RankedPixels` holds that sorted
order; every pixel metric is computed from it, and its
:meth:`~RankedPixels.subset` gives the metrics of some of the images (e.g. one defect type
plus the good images) without sorting again.

Conventions: masks are ``{0,1}`` (any non-zero value counts as defect); a pixel is
predicted defective when its score is strictly greater than the threshold (the same
convention as ``cv2.threshold(..., THRESH_BINARY)`` used in :mod:`sidn.inference`).
Degenerate inputs (no defect pixels, no good pixels, one image class only) return ``NaN``
with a :class:`UserWarning` instead of raising.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sidn.ranked_pixels import RankedPixels
from sidn.threshold_sweep import (
    MAX_CURVE_POINTS,
    ArrayList,
    as_pairs,
    auc,
    auc_from_labels,
    check_fpr_limit,
    descending_bits,
    sweep,
    tie_groups,
    warn_nan,
)


# --------------------------------------------------------------------------------------
# pixel AUROC


def pixel_auroc(maps: ArrayList, masks: ArrayList) -> float:
    """Pixel-level AUROC over all pixels of all images (pooled, not averaged per image).

    Exact (rank-based, ties count 1/2); equals ``sklearn.metrics.roc_auc_score`` on the
    flattened pixels. NaN with a warning when the masks hold no defect or no good pixel.
    """
    return RankedPixels(maps, masks).pixel_auroc()


def roc_curve_points(maps: ArrayList, masks: ArrayList, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """Pixel ROC curve for plots: DataFrame (fpr, tpr, threshold), at most ``max_points`` rows.

    The curve starts at (0, 0) (threshold +inf) and ends at (1, 1); points are taken evenly
    along the exact curve. Empty DataFrame with a warning when a class is missing.
    """
    return RankedPixels(maps, masks).roc_curve_points(max_points)


def pixel_auroc_per_image(maps: ArrayList, masks: ArrayList) -> np.ndarray:
    """Pixel AUROC of every image on its own: :func:`pixel_auroc` of ``[map]``, ``[mask]``.

    NaN, without a warning, for an image whose mask holds no defect or no good pixel.
    """
    m, k = as_pairs(maps, masks)
    out = np.full(len(m), np.nan)
    for i, (a, mk) in enumerate(zip(m, k)):
        if 0 < np.count_nonzero(mk) < mk.size:
            key = descending_bits(a).astype(np.uint64) << 1 | mk.ravel()  # each score with its label
            key.sort()
            _, tp, fp = tie_groups(key >> 1, (key & 1).astype(bool))
            out[i] = auc(tp, fp)
    return out


# --------------------------------------------------------------------------------------
# AUPRO


def aupro(maps: ArrayList, masks: ArrayList, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to ``fpr_limit``.

    Definition of the MVTec AD benchmark (Bergmann et al., "MVTec AD - A comprehensive
    real-world dataset for unsupervised anomaly detection", CVPR 2019; and "The MVTec
    anomaly detection dataset", IJCV 2021): for every threshold, PRO is the mean over all
    ground-truth regions (8-connected components, ``cv2.connectedComponents``) of the share
    of the region's pixels above threshold; FPR is the share of all mask-0 pixels above
    threshold. PRO is integrated over FPR in ``[0, fpr_limit]`` with the trapezoid rule,
    linearly interpolated at the limit, and divided by ``fpr_limit`` (a perfect map gives 1).

    The sweep is exact (sort-based over every distinct score), not quantile-based.
    NaN with a warning when the masks have no region or no good pixel.
    """
    check_fpr_limit(fpr_limit)
    return RankedPixels(maps, masks).aupro(fpr_limit)


def pro_curve_points(maps: ArrayList, masks: ArrayList, fpr_limit: float = 0.3,
                     max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """PRO curve for plots: DataFrame (fpr, pro, threshold) for fpr in [0, fpr_limit].

    The last row is the interpolated point at ``fpr_limit`` (threshold NaN). At most
    ``max_points`` rows. Empty DataFrame with a warning in the degenerate cases of :func:`aupro`.
    """
    return RankedPixels(maps, masks).pro_curve_points(fpr_limit, max_points)


# --------------------------------------------------------------------------------------
# image level and thresholded metrics


def image_auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Image-level AUROC of per-image scores (e.g. max of the smoothed map) vs labels (1 = defect).

    NaN with a warning when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"got {s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("image scores contain NaN or infinite values")
    return auc_from_labels(s, y != 0, "image_auroc")


def f1_iou_at(maps: ArrayList, masks: ArrayList, threshold: float) -> dict[str, float]:
    """Pixel F1 and IoU of ``map > threshold`` against the masks, pooled over all images.

    Returns ``{"f1", "iou", "precision", "recall", "tp", "fp", "fn"}``. The maps are thresholded
    as given (apply post-processing beforehand if it should count). When there are no defect
    pixels and no predicted pixels, F1/IoU are undefined: NaN with a warning.
    """
    m, k = as_pairs(maps, masks)
    tp = fp = fn = 0
    for a, b in zip(m, k):
        p = a > threshold
        tp += int(np.count_nonzero(p & b))
        fp += int(np.count_nonzero(p & ~b))
        fn += int(np.count_nonzero(~p & b))
    return f1_iou_from_counts(tp, fp, fn)


def f1_iou_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """F1, IoU, precision, recall from pixel counts (NaN with a warning if all are 0)."""
    out: dict[str, float] = {"tp": tp, "fp": fp, "fn": fn}
    if tp + fp + fn == 0:
        nan = warn_nan("f1_iou_at: no defect pixels and no predicted pixels; F1/IoU undefined, returning NaN")
        out.update(f1=nan, iou=nan, precision=nan, recall=nan)
        return out
    out["f1"] = 2 * tp / (2 * tp + fp + fn)
    out["iou"] = tp / (tp + fp + fn)
    out["precision"] = tp / (tp + fp) if tp + fp else float("nan")
    out["recall"] = tp / (tp + fn) if tp + fn else float("nan")
    return out


def max_f1_threshold(maps: ArrayList, masks: ArrayList) -> tuple[float, float]:
    """Threshold maximising pooled pixel F1 of ``map > threshold``; returns ``(threshold, f1)``.

    Exact sort-based sweep over every distinct score. The threshold is placed midway between
    the lowest score predicted defective and the next lower distinct score (see
    :func:`threshold_between`). NaN with a warning when the masks hold no defect pixel.
    """
    m, k = as_pairs(maps, masks)
    scores = np.concatenate([a.ravel() for a in m])
    labels = np.concatenate([b.ravel() for b in k])
    n_pos = int(labels.sum())
    if n_pos == 0:
        nan = warn_nan("max_f1_threshold: masks hold no defect pixel; returning NaN")
        return nan, nan
    thr, tp, fp = sweep(scores, labels)
    f1 = 2.0 * tp / (tp + fp + float(n_pos))  # 2TP / (2TP + FP + FN) with FN = P - TP
    j = int(np.argmax(f1))
    lo = float(thr[j + 1]) if j + 1 < len(thr) else None  # highest excluded score
    return threshold_between(lo, float(thr[j])), float(f1[j])


def threshold_between(lo: float | None, hi: float | None) -> float:
    """A float32-representable threshold ``t`` with ``lo <= t < hi`` (midpoint where possible).

    With the "defect iff score > t" convention, ``t`` keeps every score ``>= hi`` and drops
    every score ``<= lo``. ``hi=None``: nothing above ``lo`` is to be kept, returns ``lo``.
    ``lo=None``: everything ``>= hi`` is kept, returns the float32 just below ``hi``. The
    float32 representability makes ``map > t`` agree between float32 and float64 arithmetic.
    """
    if hi is None:
        if lo is None:
            raise ValueError("threshold_between needs lo or hi")
        return float(np.float32(lo))
    hi32 = np.float32(hi)
    if lo is None:
        return float(np.nextafter(hi32, np.float32(-np.inf)))
    lo32 = np.float32(lo)
    t = np.float32(0.5 * (float(lo32) + float(hi32)))
    if not (lo32 <= t < hi32):
        t = lo32
    return float(t)
