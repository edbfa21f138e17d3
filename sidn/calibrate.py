"""Decision-threshold calibration for the post-processing of Sec. III-E.

The paper segments the eq. 26 map with "a threshold" but does not say how it is chosen;
this module picks it from data. Three candidates are computed:

* ``image_far`` - from the anomaly maps of held-out **defect-free** images: the lowest
  threshold whose per-image false-alarm rate (share of good images in which any region
  survives the full post-processing of :func:`sidn.inference.postprocess_mask`: threshold,
  opening + closing, ``min_region_area``) is ``<= target_image_far``;
* ``pixel_far`` - from the same maps: the share of good pixels with ``map > t`` is
  ``<= target_pixel_far`` (raw smoothed map, before morphology);
* ``max_f1`` - from the DGM validation set (synthetic defects, eq. 1): the threshold with the
  highest pooled pixel F1 of ``map > t`` (exact sweep, :func:`sidn.metrics.max_f1_threshold`).

Every threshold is placed midway between the last data value that must stay below it and
the next larger one (:func:`sidn.metrics.threshold_between`), so the target is met exactly on
the calibration data with a small margin. ``CalibrateConfig.method`` selects which one is
stored in the bundle. ``score_threshold`` is the image-level threshold on the score (:func:`sidn.inference.image_score` of
the smoothed map) for ``target_image_far``.

Held-out good images are few (tens). The image-FAR estimate then has a resolution of ``1/n``
and a wide confidence interval: with ``n = 20`` and ``target = 0.05`` at most one image may
alarm, and 0 alarms out of 20 is still compatible with a true rate of ~14 % (one-sided 95 %
Clopper-Pearson bound, reported as ``image_far_upper95``). ``n`` is reported with every result.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sidn.config import CalibrateConfig, InferConfig
from sidn.inference import has_alarm, image_score, postprocess_mask
from sidn.metrics import f1_iou_from_counts, max_f1_threshold, threshold_between

METHODS = ("image_far", "pixel_far", "max_f1")


@dataclass
class Calibration:
    """Result of :func:`calibrate`; ``image_far``/``pixel_far`` are achieved by ``threshold``."""

    threshold: float
    method: str
    image_far: float  # share of the good images alarmed at ``threshold`` (after post-processing)
    pixel_far: float  # share of good pixels with map > ``threshold``
    thresholds: dict[str, float]  # image_far / pixel_far / max_f1 -> value (NaN if not computable)
    achieved: dict[str, dict[str, float]]  # per candidate: image_far, image_far_upper95, pixel_far, f1, iou
    score_threshold: float = float("nan")  # image-level: score (sidn.inference.image_score) > this => defective
    n_good_images: int = 0
    n_good_pixels: int = 0
    n_val_images: int = 0
    target_image_far: float = float("nan")
    target_pixel_far: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> None)."""
        return _nan_to_none(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**_none_to_nan({k: v for k, v in d.items() if k in known}))

    def apply(self, model: Any) -> None:
        """Write ``threshold`` and ``score_threshold`` into the model's buffers (if it has them)."""
        for name, value in (("threshold", self.threshold), ("score_threshold", self.score_threshold)):
            buf = getattr(model, name, None)
            if buf is not None:
                buf.fill_(value)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, np.generic):
        return _nan_to_none(x.item())
    return x


def _none_to_nan(x: Any) -> Any:
    if x is None:
        return float("nan")
    if isinstance(x, dict):
        return {k: _none_to_nan(v) for k, v in x.items()}
    return x


# --------------------------------------------------------------------------------------
# building blocks


def threshold_for_count(values: np.ndarray, k: int) -> float:
    """Lowest threshold (midpoint rule) with at most ``k`` of ``values`` strictly above it."""
    v = np.asarray(values, dtype=np.float32).ravel()
    n = v.size
    if n == 0:
        return float("nan")
    if k >= n:
        return threshold_between(None, float(v.min()))
    idx = n - k - 1
    part = np.partition(v, idx)
    u = float(part[idx])  # (k+1)-th largest: at most k values are > u
    top = part[idx + 1 :]
    bigger = top[top > u]
    return threshold_between(u, float(bigger.min()) if bigger.size else None)


def critical_thresholds(maps: Sequence[np.ndarray], infer: InferConfig) -> np.ndarray:
    """Per map, the smallest threshold at which no region survives post-processing.

    The image alarms exactly for thresholds ``t < c``. Opening, closing and the area filter
    are increasing operators, so the alarm is monotone in ``t``; ``c`` is found by bisection
    over the map's distinct values (~log2(#values) post-processing runs per image). Without
    morphology and area filter ``c`` is the map maximum.
    """
    out = np.empty(len(maps), dtype=np.float64)
    for i, m in enumerate(maps):
        m = np.asarray(m, dtype=np.float32)
        if infer.morph_kernel <= 1 and infer.min_region_area <= 1:
            out[i] = float(m.max())
            continue
        u = np.unique(m)
        lo, hi = 0, len(u) - 1  # has_alarm(u[-1]) is False: nothing is > max
        if not has_alarm(m, float(u[0]), infer.morph_kernel, infer.min_region_area):
            out[i] = float(u[0])
            continue
        while hi - lo > 1:  # invariant: alarm at u[lo], no alarm at u[hi]
            mid = (lo + hi) // 2
            if has_alarm(m, float(u[mid]), infer.morph_kernel, infer.min_region_area):
                lo = mid
            else:
                hi = mid
        out[i] = float(u[hi])
    return out


def binomial_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen ``k`` times in ``n`` trials."""
    if n == 0:
        return float("nan")
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence

    def cdf(p: float) -> float:
        return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _val_f1(val_maps: Sequence[np.ndarray], val_masks: Sequence[np.ndarray], t: float,
            infer: InferConfig) -> dict[str, float]:
    tp = fp = fn = 0
    for m, g in zip(val_maps, val_masks):
        p = postprocess_mask(np.asarray(m, dtype=np.float32), t, infer.morph_kernel, infer.min_region_area) != 0
        g = np.asarray(g) != 0
        tp += int(np.count_nonzero(p & g))
        fp += int(np.count_nonzero(p & ~g))
        fn += int(np.count_nonzero(~p & g))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = f1_iou_from_counts(tp, fp, fn)
    return {"f1": r["f1"], "iou": r["iou"]}


# --------------------------------------------------------------------------------------
# calibrate


def calibrate(
    good_maps: Sequence[np.ndarray],
    val_maps: Sequence[np.ndarray] | None,
    val_masks: Sequence[np.ndarray] | None,
    cfg: CalibrateConfig,
    infer: InferConfig,
    image_size: int = 256,
    good_scores: Sequence[float] | None = None,
) -> Calibration:
    """Compute the three candidate thresholds and store the one ``cfg.method`` selects.

    ``good_maps``: smoothed anomaly maps (``Predictor.maps``) of held-out defect-free images.
    ``val_maps``/``val_masks``: maps and masks of the DGM validation set (may be None/empty;
    then ``max_f1`` is NaN). ``achieved[name]`` reports, for each candidate threshold, the
    image FAR (post-processed) and its 95 % upper bound and pixel FAR (raw map) on the good
    maps, and F1/IoU of the post-processed masks on the validation set. ``good_scores``: the good
    images' image scores (``Predictor.scores``) where they are not the maps' :func:`image_score`.
    Raises ValueError when the selected method cannot be computed from the inputs.
    """
    if cfg.method not in METHODS:
        raise ValueError(f"calibrate.method must be one of {', '.join(METHODS)}, got '{cfg.method}'")
    for name in ("target_image_far", "target_pixel_far"):
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"calibrate.{name} must be in [0, 1), got {v}")
    good = [np.asarray(m, dtype=np.float32) for m in good_maps]
    vmaps = [np.asarray(m, dtype=np.float32) for m in (val_maps or [])]
    vmasks = [np.asarray(m) for m in (val_masks or [])]
    if len(vmaps) != len(vmasks):
        raise ValueError(f"got {len(vmaps)} validation maps but {len(vmasks)} masks")
    for i, (m, g) in enumerate(zip(vmaps, vmasks)):
        if m.shape != g.shape:
            raise ValueError(f"validation map {i} has shape {m.shape} but its mask has shape {g.shape}")
    notes: list[str] = []
    n_img = len(good)
    nan = float("nan")

    thresholds = {"image_far": nan, "pixel_far": nan, "max_f1": nan}
    crit = np.empty(0)
    pixels = np.empty(0, dtype=np.float32)
    score_threshold = nan
    if n_img:
        crit = critical_thresholds(good, infer)
        k_img = int(math.floor(cfg.target_image_far * n_img + 1e-9))
        thresholds["image_far"] = threshold_for_count(crit, k_img)
        if good_scores is not None and len(good_scores) != n_img:
            raise ValueError(f"got {len(good_scores)} good-image scores for {n_img} good maps")
        scores = np.array(good_scores if good_scores is not None else
                          [image_score(m, infer.score_sigma, image_size) for m in good])
        score_threshold = threshold_for_count(scores, k_img)
        pixels = np.concatenate([m.ravel() for m in good])
        k_pix = int(math.floor(cfg.target_pixel_far * pixels.size + 1e-9))
        thresholds["pixel_far"] = threshold_for_count(pixels, k_pix)
        notes.append(
            f"image FAR estimated from {n_img} good images (resolution {1 / n_img:.3g}); at most {k_img} "
            f"may alarm for target {cfg.target_image_far}; this estimate is coarse, see image_far_upper95"
        )
        if k_img == 0 and cfg.target_image_far > 0:
            notes.append(
                f"{n_img} good images are too few to resolve target_image_far={cfg.target_image_far}: "
                "the threshold allows no alarm on them (the highest critical value)"
            )
    else:
        notes.append("no held-out good images: image_far and pixel_far thresholds are NaN")
    if vmaps and any(np.count_nonzero(g) for g in vmasks):
        thresholds["max_f1"], _ = max_f1_threshold(vmaps, vmasks)
    else:
        notes.append("no validation set with defect pixels: max_f1 threshold is NaN")

    achieved: dict[str, dict[str, float]] = {}
    for name, t in thresholds.items():
        if not math.isfinite(t):
            achieved[name] = {"threshold": nan, "image_far": nan, "image_far_upper95": nan, "pixel_far": nan,
                              "f1": nan, "iou": nan}
            continue
        alarms = int(np.count_nonzero(crit > t))
        a = {
            "threshold": t,
            "image_far": alarms / n_img if n_img else nan,
            "image_far_upper95": binomial_upper(alarms, n_img),
            "pixel_far": float(np.count_nonzero(pixels > t)) / pixels.size if pixels.size else nan,
        }
        a.update(_val_f1(vmaps, vmasks, t, infer) if vmaps else {"f1": nan, "iou": nan})
        achieved[name] = a

    chosen = thresholds[cfg.method]
    if not math.isfinite(chosen):
        need = "validation maps with defect masks" if cfg.method == "max_f1" else "held-out good maps"
        raise ValueError(f"calibration method '{cfg.method}' needs {need}; none were given")
    return Calibration(
        threshold=chosen,
        method=cfg.method,
        image_far=achieved[cfg.method]["image_far"],
        pixel_far=achieved[cfg.method]["pixel_far"],
        thresholds=thresholds,
        achieved=achieved,
        score_threshold=score_threshold,
        n_good_images=n_img,
        n_good_pixels=int(pixels.size),
        n_val_images=len(vmaps),
        target_image_far=cfg.target_image_far,
        target_pixel_far=cfg.target_pixel_far,
        notes=notes,
    )
