"""Every pixel of a set of anomaly maps, sorted once: :class:`RankedPixels`.

Each pixel metric of :mod:`sidn.metrics` is one pass over this sorted order, and
:meth:`RankedPixels.subset` gives the metrics of some of the images (e.g. one defect type plus
the good images) without sorting again. The sweep primitives are in :mod:`sidn.threshold_sweep`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
import pandas as pd

from sidn.threshold_sweep import (
    CHUNK,
    MAX_CURVE_POINTS,
    ArrayList,
    area_to,
    as_pairs,
    auc,
    check_fpr_limit,
    clip_curve,
    cumsum_at,
    descending_bits,
    even_rows,
    flip_bits,
    tie_ends,
    warn_nan,
)


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
        m, k = as_pairs(maps, masks)
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
            key[start:stop] = descending_bits(a).astype(np.uint64) << 32
            key[start:stop] |= (lab.ravel() + first_segment).astype(np.uint64)
            start, first_segment = stop, first_segment + n_lab
        key.sort()  # equal keys differ in nothing a metric reads, so any algorithm will do
        words = key.view(np.uint32).reshape(-1, 2)
        high, low = (1, 0) if sys.byteorder == "little" else (0, 1)
        self.scores: np.ndarray = flip_bits(words[:, high]).view(np.float32).copy()
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
        """Tie groups of the sorted pixels as :func:`sidn.threshold_sweep.tie_groups` returns them,
        kept for every metric.

        The labels are looked up chunk by chunk, never as one array of all pixels.
        """
        last = tie_ends(self.scores)
        tp = cumsum_at(lambda a, b: self._segments.is_region.take(self.segment[a:b]), last, np.int32)
        return last, tp, last + 1 - tp

    def pixel_auroc(self) -> float:
        """Pixel-level AUROC over all pixels held, as :func:`sidn.metrics.pixel_auroc`."""
        n_defect, n_good = self.n_defect, self.n_good
        if n_defect == 0 or n_good == 0:
            return warn_nan(f"pixel_auroc: needs both classes, got {n_defect} positive and {n_good} negative "
                             "samples; returning NaN")
        _, tp, fp = self._ties
        return auc(tp, fp)

    def roc_curve_points(self, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
        """Pixel ROC curve for plots, as :func:`sidn.metrics.roc_curve_points`."""
        n_defect, n_good = self.n_defect, self.n_good
        if n_defect == 0 or n_good == 0:
            warn_nan("roc_curve_points: needs both defect and good pixels; returning an empty curve")
            return pd.DataFrame({"fpr": [], "tpr": [], "threshold": []})
        last, tp, fp = self._ties
        j = even_rows(last.size + 1, max_points)[1:] - 1  # row 0 is the start (0, 0)
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
        pro = cumsum_at(lambda a, b: self._segments.inv_area.take(self.segment[a:b]), last, np.float64)
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
        """Normalised area under the PRO curve up to ``fpr_limit``, as :func:`sidn.metrics.aupro`."""
        check_fpr_limit(fpr_limit)
        curve = self._pro_curve(fpr_limit)
        if curve is None:
            return warn_nan(self._pro_degenerate("aupro", "NaN"))
        fpr, pro, _ = curve
        return area_to(fpr, pro, fpr_limit) / fpr_limit

    def pro_curve_points(self, fpr_limit: float = 0.3, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
        """PRO curve for plots up to ``fpr_limit``, as :func:`sidn.metrics.pro_curve_points`."""
        curve = self._pro_curve(fpr_limit)
        if curve is None:
            warn_nan(self._pro_degenerate("pro_curve_points", "an empty curve"))
            return pd.DataFrame({"fpr": [], "pro": [], "threshold": []})
        fpr, pro, thr = curve
        inside = fpr <= fpr_limit
        xs, ys = clip_curve(fpr, pro, fpr_limit)
        th = np.r_[thr[inside], [np.nan] * (len(xs) - int(inside.sum()))]
        rows = np.arange(len(xs))
        if len(xs) > max_points:  # keep the exact end point at the limit
            rows = np.r_[even_rows(len(xs) - 1, max_points - 1), len(xs) - 1]
        return pd.DataFrame({"fpr": xs[rows], "pro": ys[rows], "threshold": th[rows]})
