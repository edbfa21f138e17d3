"""Evaluation metrics for anomaly maps: pixel AUROC, AUPRO, image AUROC, F1/IoU.

All pixel metrics are computed at the resolution of the ground-truth masks: every map must
already have its mask's shape (the :class:`sidn.inference.Predictor` returns maps at the
original image size, which is the mask size for MVTec-layout data).

Threshold sweeps are **exact and sort-based**: all pixel scores are sorted once and the
cumulative counts are read off at every distinct score value (the approach of
``sklearn.metrics.roc_curve`` and of the MVTec AD evaluation code). No quantile
approximation is used, so small hand-made cases give exact values.

Conventions: masks are ``{0,1}`` (any non-zero value counts as defect); a pixel is
predicted defective when its score is strictly greater than the threshold (the same
convention as ``cv2.threshold(..., THRESH_BINARY)`` used in :mod:`sidn.inference`).
Degenerate inputs (no defect pixels, no good pixels, one image class only) return ``NaN``
with a :class:`UserWarning` instead of raising.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd

MAX_CURVE_POINTS = 500

ArrayList = Sequence[np.ndarray] | np.ndarray


# --------------------------------------------------------------------------------------
# input handling


def _as_pairs(maps: ArrayList, masks: ArrayList) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate maps/masks pairwise; return float32 maps and bool masks."""
    maps_l = [np.asarray(m) for m in maps]
    masks_l = [np.asarray(m) for m in masks]
    if len(maps_l) != len(masks_l):
        raise ValueError(f"got {len(maps_l)} anomaly maps but {len(masks_l)} masks")
    if not maps_l:
        raise ValueError("no anomaly maps given")
    out_maps, out_masks = [], []
    for i, (a, m) in enumerate(zip(maps_l, masks_l)):
        if a.shape != m.shape:
            raise ValueError(
                f"anomaly map {i} has shape {a.shape} but mask {i} has shape {m.shape}; metrics are "
                "computed at the masks' resolution, resize the map to the mask size first "
                "(Predictor returns maps at the original image size)"
            )
        if a.ndim != 2:
            raise ValueError(f"anomaly map {i} must be 2-D [H, W], got shape {a.shape}")
        a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise ValueError(f"anomaly map {i} contains NaN or infinite values")
        out_maps.append(a)
        out_masks.append(m != 0)
    return out_maps, out_masks


def _warn_nan(msg: str) -> float:
    warnings.warn(msg, UserWarning, stacklevel=3)
    return float("nan")


# --------------------------------------------------------------------------------------
# exact sort-based sweep


def _sweep(scores: np.ndarray, pos_weight: np.ndarray, neg_weight: np.ndarray | None = None):
    """Sort ``scores`` descending; cumulative positive/negative weight at each distinct score.

    Returns ``(thresholds, cum_pos, cum_neg)``: entry ``j`` holds the totals over all samples
    with ``score >= thresholds[j]``. ``neg_weight=None`` means "1 for every non-positive
    sample" with ``pos_weight`` boolean (integer counts, exact).
    """
    order = np.argsort(scores)[::-1]  # stability is not needed: only tie-group ends are read
    s = scores[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of every tie group
    if neg_weight is None:
        cp = np.cumsum(pos_weight[order], dtype=np.int64)[last]
        cn = (last + 1) - cp
    else:
        cp = np.cumsum(pos_weight[order], dtype=np.float64)[last]
        cn = np.cumsum(neg_weight[order], dtype=np.float64)[last]
    return s[last], cp, cn


def _roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ROC curve (fpr, tpr, thresholds) starting at (0, 0), thresholds descending."""
    thr, tp, fp = _sweep(scores, labels)
    n_pos, n_neg = tp[-1], fp[-1]
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return fpr, tpr, np.r_[np.inf, thr.astype(np.float64)]


def _auc_from_labels(scores: np.ndarray, labels: np.ndarray, what: str) -> float:
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return _warn_nan(
            f"{what}: needs both classes, got {n_pos} positive and {n_neg} negative samples; returning NaN"
        )
    fpr, tpr, _ = _roc(scores, labels)
    # trapezoids over tie groups == Mann-Whitney U with ties counted 1/2 == sklearn roc_auc_score
    return float(np.trapezoid(tpr, fpr))


def _area_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under (x, y) for x in [0, x_max]; y interpolated linearly at ``x_max``."""
    x, y = _clip_curve(x, y, x_max)
    return float(np.trapezoid(y, x))


def _clip_curve(x: np.ndarray, y: np.ndarray, x_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Part of a curve with non-decreasing x up to ``x_max``, ending exactly at ``x_max``."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max:
        j = int(np.argmax(x > x_max))  # first point beyond the limit (exists: the curve ends at x=1)
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_lim = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_lim]
    return xs, ys


def _downsample(df: pd.DataFrame, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    if len(df) <= max_points:
        return df.reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(df) - 1, max_points).round().astype(np.int64))
    return df.iloc[idx].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# pixel AUROC


def pixel_auroc(maps: ArrayList, masks: ArrayList) -> float:
    """Pixel-level AUROC over all pixels of all images (pooled, not averaged per image).

    Exact (rank-based, ties count 1/2); equals ``sklearn.metrics.roc_auc_score`` on the
    flattened pixels. NaN with a warning when the masks hold no defect or no good pixel.
    """
    m, k = _as_pairs(maps, masks)
    return _auc_from_labels(np.concatenate([a.ravel() for a in m]), np.concatenate([b.ravel() for b in k]),
                            "pixel_auroc")


def roc_curve_points(maps: ArrayList, masks: ArrayList, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """Pixel ROC curve for plots: DataFrame (fpr, tpr, threshold), at most ``max_points`` rows.

    The curve starts at (0, 0) (threshold +inf) and ends at (1, 1); points are taken evenly
    along the exact curve. Empty DataFrame with a warning when a class is missing.
    """
    m, k = _as_pairs(maps, masks)
    scores = np.concatenate([a.ravel() for a in m])
    labels = np.concatenate([b.ravel() for b in k])
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        _warn_nan("roc_curve_points: needs both defect and good pixels; returning an empty curve")
        return pd.DataFrame({"fpr": [], "tpr": [], "threshold": []})
    fpr, tpr, thr = _roc(scores, labels)
    return _downsample(pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr}), max_points)


# --------------------------------------------------------------------------------------
# AUPRO


def _pro_curve(maps: list[np.ndarray], masks: list[np.ndarray]):
    """Exact PRO curve (fpr, pro, thresholds) following the MVTec AD evaluation code.

    Regions are the 8-connected components of every ground-truth mask. Each pixel of region
    ``r`` contributes ``1 / (|r| * n_regions)`` to PRO once the threshold drops to its score,
    so the cumulative sum is the per-region overlap averaged over all regions; each mask-0
    pixel (of any image, good or defective) contributes ``1 / n_good_pixels`` to the FPR.
    Returns None when there is no region or no good pixel.
    """
    pos_w, neg_w = [], []
    n_regions = 0
    weights_per_image = []
    for mk in masks:
        n_lab, lab = cv2.connectedComponents(mk.astype(np.uint8), connectivity=8)
        areas = np.bincount(lab.ravel(), minlength=n_lab).astype(np.float64)
        weights_per_image.append((lab, areas))
        n_regions += n_lab - 1
    n_good = int(sum((~mk).sum() for mk in masks))
    if n_regions == 0 or n_good == 0:
        return None, n_regions, n_good
    for (lab, areas), mk in zip(weights_per_image, masks):
        inv = np.zeros_like(areas)
        inv[1:] = 1.0 / (areas[1:] * n_regions)
        pos_w.append(inv[lab].ravel())
        neg_w.append((~mk).ravel().astype(np.float64) / n_good)
    scores = np.concatenate([a.ravel() for a in maps])
    thr, pro, fpr = _sweep(scores, np.concatenate(pos_w), np.concatenate(neg_w))
    fpr = np.clip(np.r_[0.0, fpr], 0.0, 1.0)
    pro = np.clip(np.r_[0.0, pro], 0.0, 1.0)
    thr = np.r_[np.inf, thr.astype(np.float64)]
    # rounding may leave the last point a hair below 1; the curve ends at (1, 1) by definition
    fpr[-1], pro[-1] = 1.0, 1.0
    return (fpr, pro, thr), n_regions, n_good


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
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    m, k = _as_pairs(maps, masks)
    curve, n_regions, n_good = _pro_curve(m, k)
    if curve is None:
        return _warn_nan(f"aupro: needs defect regions and good pixels, got {n_regions} regions and "
                         f"{n_good} good pixels; returning NaN")
    fpr, pro, _ = curve
    return _area_to(fpr, pro, fpr_limit) / fpr_limit


def pro_curve_points(maps: ArrayList, masks: ArrayList, fpr_limit: float = 0.3,
                     max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """PRO curve for plots: DataFrame (fpr, pro, threshold) for fpr in [0, fpr_limit].

    The last row is the interpolated point at ``fpr_limit`` (threshold NaN). At most
    ``max_points`` rows. Empty DataFrame with a warning in the degenerate cases of :func:`aupro`.
    """
    m, k = _as_pairs(maps, masks)
    curve, n_regions, n_good = _pro_curve(m, k)
    if curve is None:
        _warn_nan(f"pro_curve_points: needs defect regions and good pixels, got {n_regions} regions and "
                  f"{n_good} good pixels; returning an empty curve")
        return pd.DataFrame({"fpr": [], "pro": [], "threshold": []})
    fpr, pro, thr = curve
    inside = fpr <= fpr_limit
    xs, ys = _clip_curve(fpr, pro, fpr_limit)
    th = np.r_[thr[inside], [np.nan] * (len(xs) - int(inside.sum()))]
    df = pd.DataFrame({"fpr": xs, "pro": ys, "threshold": th})
    if len(df) > max_points:  # keep the exact end point at the limit
        head = _downsample(df.iloc[:-1], max_points - 1)
        df = pd.concat([head, df.iloc[-1:]], ignore_index=True)
    return df


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
    return _auc_from_labels(s, y != 0, "image_auroc")


def f1_iou_at(maps: ArrayList, masks: ArrayList, threshold: float) -> dict[str, float]:
    """Pixel F1 and IoU of ``map > threshold`` against the masks, pooled over all images.

    Returns ``{"f1", "iou", "precision", "recall", "tp", "fp", "fn"}``. The maps are thresholded
    as given (apply post-processing beforehand if it should count). When there are no defect
    pixels and no predicted pixels, F1/IoU are undefined: NaN with a warning.
    """
    m, k = _as_pairs(maps, masks)
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
        nan = _warn_nan("f1_iou_at: no defect pixels and no predicted pixels; F1/IoU undefined, returning NaN")
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
    m, k = _as_pairs(maps, masks)
    scores = np.concatenate([a.ravel() for a in m])
    labels = np.concatenate([b.ravel() for b in k])
    n_pos = int(labels.sum())
    if n_pos == 0:
        nan = _warn_nan("max_f1_threshold: masks hold no defect pixel; returning NaN")
        return nan, nan
    thr, tp, fp = _sweep(scores, labels)
    f1 = 2 * tp / (tp + fp + n_pos)  # 2TP / (2TP + FP + FN) with FN = P - TP
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
