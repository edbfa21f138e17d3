"""Evaluation metrics for anomaly maps: pixel AUROC, AUPRO, image AUROC, F1/IoU.

All pixel metrics are computed at the resolution of the ground-truth masks: every map must
already have its mask's shape (the :class:`sidn.inference.Predictor` returns maps at the
original image size, which is the mask size for MVTec-layout data).

Threshold sweeps are **exact and sort-based**: all pixel scores are sorted once and the
cumulative counts are read off at every distinct score value (the approach of
``sklearn.metrics.roc_curve`` and of the MVTec AD evaluation code). No quantile
approximation is used, so small hand-made cases give exact values. :class:`RankedPixels`
holds that sorted order; every pixel metric is computed from it, and its
:meth:`~RankedPixels.subset` gives the metrics of some of the images (e.g. one defect type
plus the good images) without sorting again.

Conventions: masks are ``{0,1}`` (any non-zero value counts as defect); a pixel is
predicted defective when its score is strictly greater than the threshold (the same
convention as ``cv2.threshold(..., THRESH_BINARY)`` used in :mod:`sidn.inference`).
Degenerate inputs (no defect pixels, no good pixels, one image class only) return ``NaN``
with a :class:`UserWarning` instead of raising.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

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


CHUNK = 1 << 22  # samples per step of the sweeps: bounds their temporary memory


def _index_dtype(n: int) -> type[np.signedinteger]:
    return np.int32 if n < 2**31 else np.int64


def _tie_ends(s: np.ndarray) -> np.ndarray:
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


def _cumsum_at(values: Callable[[int, int], np.ndarray], positions: np.ndarray, dtype: type) -> np.ndarray:
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


def _tie_groups(s: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative positive/negative counts at each distinct score of the descending scores ``s``.

    Returns ``(last, cum_pos, cum_neg)``: ``last[j]`` is the index of the last sample of tie
    group ``j``, and the counts are over all samples with ``score >= s[last[j]]``. Integer
    counts are exact, so the order of the samples inside a tie group does not matter.
    """
    last = _tie_ends(s)
    cp = _cumsum_at(lambda a, b: labels[a:b], last, last.dtype.type)
    return last, cp, last + 1 - cp


def _sweep(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, cum_pos, cum_neg)`` of unsorted ``scores`` with boolean ``labels``, thresholds descending."""
    order = np.argsort(scores)[::-1]  # stability is not needed: only tie-group ends are read
    s = scores[order]
    last, cp, cn = _tie_groups(s, labels[order])
    return s[last], cp, cn


def _auc(tp: np.ndarray, fp: np.ndarray) -> float:
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


def _auc_from_labels(scores: np.ndarray, labels: np.ndarray, what: str) -> float:
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return _warn_nan(
            f"{what}: needs both classes, got {n_pos} positive and {n_neg} negative samples; returning NaN"
        )
    _, tp, fp = _sweep(scores, labels)
    return _auc(tp, fp)


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


def _even_rows(n: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` rows taken evenly along them, first and last included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


# --------------------------------------------------------------------------------------
# all pixels, sorted once


def _flip_bits(bits: np.ndarray) -> np.ndarray:
    """Turn float32 bit patterns (uint32, in place) into keys that ascend as the floats descend.

    IEEE-754 patterns order like sign-magnitude integers: a negative value (sign bit set)
    keeps its pattern (larger magnitude, larger key); a non-negative value gets its 31 low
    bits inverted (larger value, smaller key, all below the negative ones). The map is its
    own inverse, so it also turns keys back into float32 patterns.
    """
    return np.bitwise_xor(bits, 0x7FFFFFFF, out=bits, where=bits < 0x80000000)


def _descending_bits(a: np.ndarray) -> np.ndarray:
    """uint32 sort keys of the float32 array ``a`` (flattened): ascending keys, descending scores."""
    return _flip_bits((a.ravel() + np.float32(0.0)).view(np.uint32))  # + 0.0 folds -0.0 into +0.0


@dataclass(frozen=True)
class _Segments:
    """Tables over the segments of a set of images: per image its mask-0 pixels, then each of its regions."""

    image: np.ndarray  # int32 [n_segments]: the segment's image
    inv_area: np.ndarray  # float64 [n_segments]: 1 / region area, 0 for a mask-0 segment
    is_region: np.ndarray  # bool [n_segments]
    regions_per_image: np.ndarray  # int64 [n_images]
    good_per_image: np.ndarray  # int64 [n_images]: mask-0 pixels


class RankedPixels:
    """Every pixel of a set of anomaly maps, sorted once by descending score.

    Takes the same ``maps``/``masks`` as the pixel metric functions. Each image is cut into
    segments: its mask-0 pixels, and each 8-connected ground-truth region
    (``cv2.connectedComponents``). In sorted order it keeps ``scores`` (float32) and
    ``segment`` (int32), 8 bytes per pixel, from which small per-segment tables give what every
    metric needs: :attr:`labels`, :attr:`image` and :attr:`inv_area` (1 / region area, 0 for
    mask-0 pixels). Equal scores are ordered by segment (by image, then region), so the order,
    and every floating-point sum along it, depends on the inputs only. Each metric is one pass
    over the sorted arrays, and :meth:`subset` selects images by filtering them in O(N)
    without sorting again. Memory: about 17 bytes per pixel while sorting; after that the
    arrays, plus up to 12 bytes per distinct score once a metric has run (the cumulative counts
    at every tie group are kept for the next metric).
    """

    def __init__(self, maps: ArrayList, masks: ArrayList) -> None:
        m, k = _as_pairs(maps, masks)
        n = sum(a.size for a in m)
        if n + len(m) >= 2**31:  # segments (at most pixels + images) and counts fit int32
            raise ValueError(f"{n} pixels given; RankedPixels holds fewer than 2**31")
        key = np.empty(n, dtype=np.uint64)  # descending-score bits (high word), segment (low word)
        image, inv_area, is_region = [], [], []
        regions_per_image = np.empty(len(m), dtype=np.int64)
        good_per_image = np.empty(len(m), dtype=np.int64)
        start = first_segment = 0
        for i, (a, mk) in enumerate(zip(m, k)):
            n_lab, lab = cv2.connectedComponents(mk.astype(np.uint8), connectivity=8)
            area = np.bincount(lab.ravel(), minlength=n_lab)
            image.append(np.full(n_lab, i, dtype=np.int32))
            inv_area.append(np.r_[0.0, 1.0 / area[1:]])
            is_region.append(np.arange(n_lab) > 0)
            regions_per_image[i], good_per_image[i] = n_lab - 1, area[0]
            stop = start + a.size
            key[start:stop] = _descending_bits(a).astype(np.uint64) << 32
            key[start:stop] |= (lab.ravel() + first_segment).astype(np.uint64)
            start, first_segment = stop, first_segment + n_lab
        key.sort()  # equal keys differ in nothing a metric reads, so any algorithm will do
        words = key.view(np.uint32).reshape(-1, 2)
        high, low = (1, 0) if sys.byteorder == "little" else (0, 1)
        self.scores: np.ndarray = _flip_bits(words[:, high]).view(np.float32).copy()
        self.segment: np.ndarray = words[:, low].astype(np.int32)
        del key, words
        self._segments = _Segments(np.concatenate(image), np.concatenate(inv_area), np.concatenate(is_region),
                                   regions_per_image, good_per_image)
        self._images = np.arange(len(m))

    @classmethod
    def _of(cls, scores: np.ndarray, segment: np.ndarray, segments: _Segments, images: np.ndarray) -> RankedPixels:
        out = cls.__new__(cls)
        out.scores, out.segment, out._segments, out._images = scores, segment, segments, images
        return out

    @property
    def n_images(self) -> int:
        """Number of images."""
        return int(self._images.size)

    @property
    def n_regions(self) -> int:
        """Number of ground-truth regions (8-connected) over all images."""
        return int(self._segments.regions_per_image[self._images].sum())

    @property
    def n_good(self) -> int:
        """Number of mask-0 pixels."""
        return int(self._segments.good_per_image[self._images].sum())

    @property
    def n_defect(self) -> int:
        """Number of defect (mask != 0) pixels."""
        return self.scores.size - self.n_good

    @property
    def labels(self) -> np.ndarray:
        """Sorted pixels' ground truth (bool, mask != 0); computed on access."""
        return self._segments.is_region.take(self.segment)

    @property
    def image(self) -> np.ndarray:
        """Sorted pixels' image index (int32, 0 .. n_images - 1); computed on access."""
        local = np.full(self._segments.good_per_image.size, -1, dtype=np.int32)
        local[self._images] = np.arange(self.n_images, dtype=np.int32)
        return local.take(self._segments.image).take(self.segment)

    @property
    def inv_area(self) -> np.ndarray:
        """Sorted pixels' 1 / area of their region (float64, 0 for mask-0 pixels); computed on access."""
        return self._segments.inv_area.take(self.segment)

    def subset(self, image_indices: Sequence[int] | np.ndarray) -> RankedPixels:
        """The pixels of some of the images, still sorted: O(N) filtering, no new sort.

        ``image_indices`` (distinct) index this object's images; the subset numbers them in
        ascending order. Its metrics equal, bit for bit, those of a RankedPixels built from
        these images in ascending index order (in another order only the last bits of PRO
        sums may differ); PRO uses the subset's own region and good-pixel counts.
        """
        idx = np.asarray(image_indices, dtype=np.int64).ravel()
        if idx.size == 0:
            raise ValueError("subset needs at least one image index")
        if idx.min() < 0 or idx.max() >= self.n_images:
            raise IndexError(f"image indices must be in [0, {self.n_images}), got {idx.min()} .. {idx.max()}")
        images = np.unique(self._images[idx])
        if images.size != idx.size:
            raise ValueError("subset image indices must be distinct")
        member = np.zeros(self._segments.good_per_image.size, dtype=bool)
        member[images] = True
        member = member.take(self._segments.image)  # per segment
        keep = np.empty(self.segment.size, dtype=bool)
        for a in range(0, keep.size, CHUNK):
            keep[a : a + CHUNK] = member.take(self.segment[a : a + CHUNK])
        return self._of(np.compress(keep, self.scores), np.compress(keep, self.segment), self._segments, images)

    @cached_property
    def _ties(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tie groups of the sorted pixels as :func:`_tie_groups` returns them, kept for every metric.

        The labels are looked up chunk by chunk, never as one array of all pixels.
        """
        last = _tie_ends(self.scores)
        tp = _cumsum_at(lambda a, b: self._segments.is_region.take(self.segment[a:b]), last, np.int32)
        return last, tp, last + 1 - tp

    def pixel_auroc(self) -> float:
        """Pixel-level AUROC over all pixels held, as :func:`pixel_auroc`."""
        n_defect, n_good = self.n_defect, self.n_good
        if n_defect == 0 or n_good == 0:
            return _warn_nan(f"pixel_auroc: needs both classes, got {n_defect} positive and {n_good} negative "
                             "samples; returning NaN")
        _, tp, fp = self._ties
        return _auc(tp, fp)

    def roc_curve_points(self, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
        """Pixel ROC curve for plots, as :func:`roc_curve_points`."""
        n_defect, n_good = self.n_defect, self.n_good
        if n_defect == 0 or n_good == 0:
            _warn_nan("roc_curve_points: needs both defect and good pixels; returning an empty curve")
            return pd.DataFrame({"fpr": [], "tpr": [], "threshold": []})
        last, tp, fp = self._ties
        j = _even_rows(last.size + 1, max_points)[1:] - 1  # row 0 is the start (0, 0)
        return pd.DataFrame({"fpr": np.r_[0.0, fp[j] / n_good], "tpr": np.r_[0.0, tp[j] / n_defect],
                             "threshold": np.r_[np.inf, self.scores[last[j]].astype(np.float64)]})

    def _pro_curve(self, fpr_limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Exact PRO curve (fpr, pro, thresholds) following the MVTec AD evaluation code.

        Regions are the 8-connected components of every ground-truth mask. Each pixel of region
        ``r`` contributes ``1 / (|r| * n_regions)`` to PRO once the threshold drops to its score,
        so the cumulative sum is the per-region overlap averaged over all regions; each mask-0
        pixel (of any image, good or defective) contributes ``1 / n_good_pixels`` to the FPR.
        The curve is cut after its first point beyond ``fpr_limit``, all that clipping and
        interpolating at the limit reads. Returns None when there is no region or no good pixel.
        """
        n_regions, n_good = self.n_regions, self.n_good
        if n_regions == 0 or n_good == 0:
            return None
        last, _, fp = self._ties
        fpr = fp / n_good
        n_points = min(int(np.searchsorted(fpr, fpr_limit, side="right")) + 1, fpr.size)
        last, fpr = last[:n_points], fpr[:n_points]
        pro = _cumsum_at(lambda a, b: self._segments.inv_area.take(self.segment[a:b]), last, np.float64)
        pro /= n_regions
        fpr = np.r_[0.0, fpr]
        pro = np.clip(np.r_[0.0, pro], 0.0, 1.0)
        thr = np.r_[np.inf, self.scores[last].astype(np.float64)]
        if n_points == fp.size:  # rounding may leave the end a hair below 1; it is (1, 1) by definition
            fpr[-1], pro[-1] = 1.0, 1.0
        return fpr, pro, thr

    def _pro_degenerate(self, what: str, result: str) -> str:
        return (f"{what}: needs defect regions and good pixels, got {self.n_regions} regions and "
                f"{self.n_good} good pixels; returning {result}")

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """Normalised area under the PRO curve up to ``fpr_limit``, as :func:`aupro`."""
        _check_fpr_limit(fpr_limit)
        curve = self._pro_curve(fpr_limit)
        if curve is None:
            return _warn_nan(self._pro_degenerate("aupro", "NaN"))
        fpr, pro, _ = curve
        return _area_to(fpr, pro, fpr_limit) / fpr_limit

    def pro_curve_points(self, fpr_limit: float = 0.3, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
        """PRO curve for plots up to ``fpr_limit``, as :func:`pro_curve_points`."""
        curve = self._pro_curve(fpr_limit)
        if curve is None:
            _warn_nan(self._pro_degenerate("pro_curve_points", "an empty curve"))
            return pd.DataFrame({"fpr": [], "pro": [], "threshold": []})
        fpr, pro, thr = curve
        inside = fpr <= fpr_limit
        xs, ys = _clip_curve(fpr, pro, fpr_limit)
        th = np.r_[thr[inside], [np.nan] * (len(xs) - int(inside.sum()))]
        rows = np.arange(len(xs))
        if len(xs) > max_points:  # keep the exact end point at the limit
            rows = np.r_[_even_rows(len(xs) - 1, max_points - 1), len(xs) - 1]
        return pd.DataFrame({"fpr": xs[rows], "pro": ys[rows], "threshold": th[rows]})


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
    m, k = _as_pairs(maps, masks)
    out = np.full(len(m), np.nan)
    for i, (a, mk) in enumerate(zip(m, k)):
        if 0 < np.count_nonzero(mk) < mk.size:
            key = _descending_bits(a).astype(np.uint64) << 1 | mk.ravel()  # each score with its label
            key.sort()
            _, tp, fp = _tie_groups(key >> 1, (key & 1).astype(bool))
            out[i] = _auc(tp, fp)
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
    _check_fpr_limit(fpr_limit)
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
