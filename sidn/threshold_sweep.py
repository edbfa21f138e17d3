"""Exact sort-based threshold sweep: the primitives every metric of :mod:`sidn.metrics` uses.

Scores are sorted once and the cumulative positive/negative counts are read off at the last
sample of every run of equal scores (tie group), the approach of ``sklearn.metrics.roc_curve``
and of the MVTec AD evaluation code; no quantile approximation. Long arrays are processed in
chunks of :data:`CHUNK` samples with the same sequence of additions as one pass. Also here:
the map/mask input checks and the NaN-with-a-warning of degenerate inputs shared by
:mod:`sidn.metrics` and :mod:`sidn.ranked_pixels`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

MAX_CURVE_POINTS = 500

ArrayList = Sequence[np.ndarray] | np.ndarray


# --------------------------------------------------------------------------------------
# input handling


def as_pairs(maps: ArrayList, masks: ArrayList) -> tuple[list[np.ndarray], list[np.ndarray]]:
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


def warn_nan(msg: str) -> float:
    warnings.warn(msg, UserWarning, stacklevel=3)
    return float("nan")


# --------------------------------------------------------------------------------------
# exact sort-based sweep


CHUNK = 1 << 22  # samples per step of the sweeps: bounds their temporary memory


def _index_dtype(n: int) -> type[np.signedinteger]:
    return np.int32 if n < 2**31 else np.int64


def tie_ends(s: np.ndarray) -> np.ndarray:
    """Index of the last sample of every run of equal values in the sorted array ``s``."""
    last = np.empty(int(np.count_nonzero(s[1:] != s[:-1])) + 1, dtype=_index_dtype(s.size))
    g = 0
    for a in range(0, s.size, CHUNK):
        end = np.ones(min(CHUNK, s.size - a), dtype=bool)  # the last sample always ends a run
        nxt = s[a + 1 : a + 1 + end.size]
        np.not_equal(s[a : a + nxt.size], nxt, out=end[: nxt.size])
        idx = np.flatnonzero(end)
        last[g : g + idx.size] = idx + a
        g += idx.size
    return last


def cumsum_at(values: Callable[[int, int], np.ndarray], positions: np.ndarray, dtype: type) -> np.ndarray:
    """Cumulative sum of per-sample values read at the ascending ``positions``.

    ``values(a, b)`` gives the values of samples ``a`` to ``b - 1``. The sum runs in chunks of
    :data:`CHUNK` samples, in the same sequence of additions as one ``np.cumsum``.
    """
    out = np.empty(positions.size, dtype=dtype)
    carry = dtype(0)
    stop = int(positions[-1]) + 1
    for a in range(0, stop, CHUNK):
        b = min(a + CHUNK, stop)
        c = values(a, b).astype(dtype)
        c[0] += carry
        np.cumsum(c, out=c)
        i, j = np.searchsorted(positions, np.array([a, b], dtype=positions.dtype))
        out[i:j] = c.take(positions[i:j] - a)
        carry = c[-1]
    return out


def tie_groups(s: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative positive/negative counts at each distinct score of the descending scores ``s``.

    Returns ``(last, cum_pos, cum_neg)``: ``last[j]`` is the index of the last sample of tie
    group ``j``, and the counts are over all samples with ``score >= s[last[j]]``. Integer
    counts are exact, so the order of the samples inside a tie group does not matter.
    """
    last = tie_ends(s)
    cp = cumsum_at(lambda a, b: labels[a:b], last, last.dtype.type)
    return last, cp, last + 1 - cp


def sweep(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, cum_pos, cum_neg)`` of unsorted ``scores`` with boolean ``labels``, thresholds descending."""
    order = np.argsort(scores)[::-1]  # stability is not needed: only tie-group ends are read
    s = scores[order]
    last, cp, cn = tie_groups(s, labels[order])
    return s[last], cp, cn


def auc(tp: np.ndarray, fp: np.ndarray) -> float:
    """Area under the ROC curve through (0, 0) and the cumulative counts ``(fp, tp)`` of each tie group.

    Trapezoids over tie groups == Mann-Whitney U with ties counted 1/2 == sklearn
    ``roc_auc_score``. Summed in integers (twice the area times ``P * N``, below 2**63 for
    fewer than 2**32 samples), so the only rounding is the final division.
    """
    two_u = 0
    for a in range(0, tp.size, CHUNK):  # groups a-1 .. a+CHUNK-1, with (0, 0) before the first
        t = tp[max(a - 1, 0) : a + CHUNK].astype(np.int64)
        f = fp[max(a - 1, 0) : a + CHUNK].astype(np.int64)
        if a == 0:
            t, f = np.r_[0, t], np.r_[0, f]
        two_u += int(np.dot(np.diff(f), t[1:] + t[:-1]))
    return two_u / (2 * int(tp[-1]) * int(fp[-1]))


def auc_from_labels(scores: np.ndarray, labels: np.ndarray, what: str) -> float:
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return warn_nan(
            f"{what}: needs both classes, got {n_pos} positive and {n_neg} negative samples; returning NaN"
        )
    _, tp, fp = sweep(scores, labels)
    return auc(tp, fp)


def area_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under (x, y) for x in [0, x_max]; y interpolated linearly at ``x_max``."""
    x, y = clip_curve(x, y, x_max)
    return float(np.trapezoid(y, x))


def clip_curve(x: np.ndarray, y: np.ndarray, x_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Part of a curve with non-decreasing x up to ``x_max``, ending exactly at ``x_max``."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max:
        j = int(np.argmax(x > x_max))  # first point beyond the limit (exists: the curve ends at x=1)
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_lim = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_lim]
    return xs, ys


def even_rows(n: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` rows taken evenly along them, first and last included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


# --------------------------------------------------------------------------------------
# sort keys


def flip_bits(bits: np.ndarray) -> np.ndarray:
    """Turn float32 bit patterns (uint32, in place) into keys that ascend as the floats descend.

    IEEE-754 patterns order like sign-magnitude integers: a negative value (sign bit set)
    keeps its pattern (larger magnitude, larger key); a non-negative value gets its 31 low
    bits inverted (larger value, smaller key, all below the negative ones). The map is its
    own inverse, so it also turns keys back into float32 patterns.
    """
    return np.bitwise_xor(bits, 0x7FFFFFFF, out=bits, where=bits < 0x80000000)


def descending_bits(a: np.ndarray) -> np.ndarray:
    """uint32 sort keys of the float32 array ``a`` (flattened): ascending keys, descending scores."""
    return flip_bits((a.ravel() + np.float32(0.0)).view(np.uint32))  # + 0.0 folds -0.0 into +0.0
