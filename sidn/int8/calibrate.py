"""Calibrate a SIDN's int8 form on held-out good images + the DGM validation set and judge its parity with float32."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from sidn.int8.model import Int8SIDN, make_int8
from sidn.int8.quant import Observer
from sidn.int8.record import Int8Calibration, _clean, weights_hash
from sidn.int8.scheme import DEFAULT_TAIL, FSEMS, SCHEMES, checkable_schemes, variant_name
from sidn.model.sidn import SIDN

AUROC_TOL = 0.005  # |int8 - fp32| allowed for pixel and image AUROC (issue 11)


def resized(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Gray float32 images -> ``[N, size, size]`` (``cv2.INTER_AREA``, as :class:`Predictor` resizes)."""
    out = []
    for im in images:
        a = np.asarray(im, dtype=np.float32)
        if a.shape != (size, size):
            a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
        out.append(a)
    return np.stack(out) if out else np.zeros((0, size, size), np.float32)


def observe_ranges(model: SIDN, images: np.ndarray, tail: str = DEFAULT_TAIL, batch_size: int = 16,
                   method: str = "minmax", levels: int = 255) -> dict[str, list[float]]:
    """Activation ranges of ``model``'s int8 tensors over ``images`` [N,S,S] (float32 forward, :class:`Observer`)."""
    net = Int8SIDN(model, None, "u8s8", tail)
    obs = Observer(method, levels)
    for i in range(0, len(images), batch_size):
        net.observe(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))[:, None], obs)
    return obs.ranges


def parity_report(model: nn.Module, net: nn.Module, good_images: Sequence[np.ndarray],
                  val_images: Sequence[np.ndarray], val_masks: Sequence[np.ndarray], infer: Any, image_size: int,
                  threshold: float | None = None, ref: dict[str, Any] | None = None) -> dict[str, Any]:
    """How ``net`` (a fast form of ``model``) compares to ``model`` on what users see.

    Maps come from :class:`sidn.inference.Predictor` (resize, median filter and blur, upsampling).
    Pixel AUROC and image AUROC (:func:`sidn.inference.image_score`) on the validation set
    (``val_masks``; an image is defective if its mask has a defect pixel), alarms at
    ``threshold`` on the good images (post-processed, :func:`sidn.inference.has_alarm`; the
    model's calibrated threshold if None, else the one :func:`sidn.calibrate.calibrate` picks
    from the fp32 maps), and the max |diff| of the raw fused map (before post-processing).
    ``passed``: both AUROC deltas within :data:`AUROC_TOL` and the same alarm count.
    ``ref`` caches the fp32 side between calls (pass the same dict).
    """
    from sidn.inference import Predictor, anomaly_maps, has_alarm, image_score, smooth_map
    from sidn.metrics import image_auroc, pixel_auroc

    ref = {} if ref is None else ref
    good = [np.asarray(g, np.float32) for g in good_images]
    val = [np.asarray(v, np.float32) for v in val_images]
    masks = [np.asarray(m) for m in val_masks]
    labels = np.array([bool(np.any(m)) for m in masks])
    raw_in = resized(good + val, image_size)

    same_size = all(a.shape == (image_size, image_size) for a in good + val)

    def side(n: nn.Module) -> dict[str, Any]:
        raw = anomaly_maps(n, raw_in, batch_size=infer.batch_size)
        if same_size and not infer.tile:  # what Predictor.maps does for such images, without a second forward
            post = [smooth_map(m, infer) for m in raw]
            gmaps, vmaps = post[:len(good)], post[len(good):]
        else:
            p = Predictor(model, infer, image_size)
            p.net = n  # the maps of ``n`` through the Predictor's pre- and post-processing
            vmaps, gmaps = p.maps(val), p.maps(good)
        scores = [image_score(m, infer.score_sigma, image_size) for m in vmaps]
        return {"vmaps": vmaps, "gmaps": gmaps, "scores": scores, "raw": raw,
                "pixel_auroc": _quiet(pixel_auroc, vmaps, masks) if val else float("nan"),
                "image_auroc": _quiet(image_auroc, scores, labels) if val else float("nan")}

    if "side" not in ref:
        ref["side"] = side(model)
        t = threshold
        if t is None:
            t = getattr(model, "threshold", None)
            t = float(t) if t is not None and math.isfinite(float(t)) else None
        source = "given" if threshold is not None else "model"
        if t is None and good:
            from sidn.calibrate import calibrate
            from sidn.config import CalibrateConfig

            try:
                t = calibrate(ref["side"]["gmaps"], ref["side"]["vmaps"], masks, CalibrateConfig(), infer,
                              image_size).threshold
                source = "calibrated on the fp32 maps"
            except ValueError:
                t = None
        ref["threshold"], ref["threshold_source"] = t, source
    r32, t = ref["side"], ref["threshold"]
    r8 = side(net)

    def alarms(maps: list[np.ndarray]) -> int:
        return sum(has_alarm(m, t, infer.morph_kernel, infer.min_region_area) for m in maps)

    rep: dict[str, Any] = {
        "pixel_auroc_fp32": r32["pixel_auroc"], "pixel_auroc": r8["pixel_auroc"],
        "pixel_auroc_delta": r8["pixel_auroc"] - r32["pixel_auroc"],
        "image_auroc_fp32": r32["image_auroc"], "image_auroc": r8["image_auroc"],
        "image_auroc_delta": r8["image_auroc"] - r32["image_auroc"],
        "threshold": t, "threshold_source": ref["threshold_source"] if t is not None else "none",
        "n_good": len(good), "n_val": len(val), "n_val_defective": int(labels.sum()),
        "max_abs_diff": float(np.abs(r8["raw"] - r32["raw"]).max()) if len(raw_in) else float("nan"),
    }
    if t is not None and good:
        a32, a8 = alarms(r32["gmaps"]), alarms(r8["gmaps"])
        rep.update(alarms_fp32=a32, alarms=a8, image_far_fp32=a32 / len(good), image_far=a8 / len(good))
        gp32 = np.concatenate([m.ravel() for m in r32["gmaps"]])
        gp8 = np.concatenate([m.ravel() for m in r8["gmaps"]])
        rep.update(pixel_far_fp32=float(np.mean(gp32 > t)), pixel_far=float(np.mean(gp8 > t)))
    failures = []
    for key in ("pixel_auroc_delta", "image_auroc_delta"):
        d = rep[key]
        if math.isfinite(d) and abs(d) > AUROC_TOL:
            failures.append(f"{key.replace('_delta', '')} {d:+.4f} (> {AUROC_TOL})")
    if not math.isfinite(rep["pixel_auroc_delta"]):
        failures.append("pixel AUROC not computable (validation set without defect or good pixels)")
    if "alarms" in rep and rep["alarms"] != rep["alarms_fp32"]:
        failures.append(f"false alarms on {rep['alarms']} of {len(good)} good images instead of {rep['alarms_fp32']}"
                        f" at threshold {t:.4g}")
    rep["failures"] = failures
    rep["passed"] = not failures
    return rep


def _quiet(fn: Any, *args: Any) -> float:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate sets -> NaN, reported as such
        return float(fn(*args))


def calibrate_int8(
    model: SIDN,
    good_images: Sequence[np.ndarray],
    val_images: Sequence[np.ndarray],
    val_masks: Sequence[np.ndarray],
    infer: Any,
    image_size: int,
    *,
    threshold: float | None = None,
    tail: str = DEFAULT_TAIL,
    schemes: Sequence[str] | None = None,
    fsems: Sequence[str] = FSEMS,
    batch_size: int = 16,
    all_variants: bool = False,
) -> Int8Calibration:
    """Calibrate ``model``'s int8 form and judge it against float32 (see the module docstring).

    ``good_images``: held-out defect-free images; ``val_images``/``val_masks``: the DGM
    validation set (:func:`sidn.data.dgm.make_validation_set`); never a test split. Gray float32
    images in [0, 1], any size (resized to ``image_size`` like the Predictor does). The ranges
    are observed on both; parity is judged per variant, fastest first (:func:`variants`, limited
    to ``schemes``, default: every scheme this machine computes exactly, and ``fsems``), until one
    passes for each scheme (``all_variants``: judge them all). Does not modify or attach to ``model``.
    """
    if not isinstance(model, SIDN):
        raise TypeError(f"calibrate_int8 needs a SIDN, got {type(model).__name__}")
    if len(val_images) != len(val_masks):
        raise ValueError(f"got {len(val_images)} validation images but {len(val_masks)} masks")
    schemes = list(schemes) if schemes is not None else checkable_schemes("cpu")
    if not schemes:
        raise RuntimeError("this CPU has no oneDNN int8 kernels: int8 cannot be calibrated here")
    model = model.eval()
    calib_in = resized(list(good_images) + list(val_images), image_size)
    if not len(calib_in):
        raise ValueError("calibrate_int8 needs images (held-out good images and/or the DGM validation set)")
    ranges = observe_ranges(model.cpu(), calib_in, tail, batch_size)
    calib = Int8Calibration(ranges=ranges, weights_sha256=weights_hash(model), image_size=int(image_size), tail=tail,
                            n_calibration_images=len(calib_in))
    ref: dict[str, Any] = {}
    done: set[str] = set()
    for s, f in [(s, f) for f in fsems for s in schemes]:
        if s in done and not all_variants:
            continue
        v = variant_name(s, f)
        calib.parity[v] = _clean(parity_report(model, make_int8(model, calib, s, fsem=f), good_images, val_images,
                                               val_masks, infer, image_size, threshold, ref))
        if calib.parity[v]["passed"]:
            done.add(s)
    missing = [s for s in SCHEMES if s not in schemes]
    if missing:
        calib.notes.append(f"not checked: {', '.join(missing)} (not computed exactly on the calibrating CPU)")
    return calib
