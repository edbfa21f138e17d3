"""The parity model of ``sidn bench``: a tiny SIDN trained on generated textures, and the fast
modes' parity with fp32 on its generated held-out images and DGM validation set (see :mod:`sidn.bench`)."""

from __future__ import annotations

import copy
import math
import tempfile
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from sidn.config import SIDNConfig
from sidn.fast_model import mode_of

PARITY_SIZE = 64  # image size of the tiny parity model
PARITY_STEPS = 100  # its training steps (batch 8)
# DGM defects of the parity model (training and validation set): darker/brighter regions and the
# paper's Gaussian noise, which a tiny model learns in 100 steps (pixel AUROC ~0.88, image ~0.78 on
# leather); with the default mix it stays near chance that quickly, and parity between two
# near-random score sets is decided by ties, not by the arithmetic.
PARITY_SOURCES = {"intensity": 0.5, "paper": 0.5}
PARITY_CATEGORY = "leather"  # generated texture it is trained and judged on
PARITY_GOOD = 32  # held-out good images: alarms are counted on them (and int8 ranges observed)
PARITY_THRESHOLD_GOOD = 32  # other good images the threshold is calibrated on (uncalibrated model)
PARITY_VAL = 192  # DGM validation set size (10 % clean: image AUROC resolution ~1e-3)


def generated_images(category: str, split: str, n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` gray float32 ``[n, size, size]`` good images of a generated texture (no dataset needed)."""
    import cv2

    from sidn.data.synth import image_seed, render_sample

    out = []
    for i in range(n):
        img, _ = render_sample(category, None, image_seed(seed, category, split, i), size)
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        out.append(img.astype(np.float32) / 255.0)
    return np.stack(out)


def parity_model(steps: int = PARITY_STEPS, size: int = PARITY_SIZE, category: str = PARITY_CATEGORY,
                 batch_size: int = 8) -> tuple[nn.Module, SIDNConfig]:
    """A tiny SIDN (C=16, K=3) trained ``steps`` steps on generated ``category`` textures (:func:`sidn.train.train`).

    Defects: :data:`PARITY_SOURCES`. Returns the model and its config (whose ``dgm`` makes the
    validation set).
    """
    from sidn.bundle import load_bundle
    from sidn.train import train

    cfg = SIDNConfig()
    cfg.data.image_size = size
    cfg.model.channels = 16
    cfg.model.clusters = 3
    cfg.train.steps = steps
    cfg.train.batch_size = batch_size
    cfg.train.crop_size = 0
    cfg.train.device = "cpu"
    cfg.train.checkpoint_every = steps
    cfg.train.val_every = steps
    cfg.dgm.sources = dict(PARITY_SOURCES)
    cfg.dgm.clean_fraction = 0.2  # also 20 % clean images in its validation set (image AUROC resolution)
    images = generated_images(category, "train", 32, size)
    with tempfile.TemporaryDirectory(prefix="sidn-bench-") as tmp:
        train(cfg, images, None, tmp, progress=False)
        model, cfg, _ = load_bundle(f"{tmp}/model.pt")
    return model.eval(), cfg


class threads:
    """Run a block with ``n`` torch threads (restored afterwards)."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.old)


def fast_parity(model: nn.Module, cfg: SIDNConfig, float_fast: nn.Module | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    """int8 calibration + parity (and the float fast mode's parity) of ``model`` on generated data.

    A model loaded from a bundle that ``sidn calibrate`` gave an int8 calibration keeps that one
    (judged on its own category's held-out images): it is what serving uses.
    """
    from sidn.calibrate import calibrate
    from sidn.config import CalibrateConfig
    from sidn.data.dgm import make_validation_set
    from sidn.inference import Predictor
    from sidn.int8.calibrate import calibrate_int8, parity_report
    from sidn.int8.scheme import checkable_schemes, int8_mode_name

    def i8_mode(variant: str) -> str:
        scheme, _, rest = variant.partition("+")
        return int8_mode_name(scheme, fsem="float" if rest else "int8")

    size, infer = cfg.data.image_size, cfg.infer
    good = generated_images(PARITY_CATEGORY, "test/good", PARITY_GOOD + PARITY_THRESHOLD_GOOD, size)
    good_far, good_thr = good[:PARITY_GOOD], good[PARITY_GOOD:]
    dgm = copy.deepcopy(cfg.dgm)
    dgm.val_images = PARITY_VAL
    val_i, val_m = make_validation_set(good_far, dgm)
    t = float(getattr(model, "threshold", float("nan")))
    source = "the model's"
    if not math.isfinite(t):
        p = Predictor(model, infer, size)
        t = calibrate(p.maps(list(good_thr)), None, None, CalibrateConfig(), infer, size).threshold
        source = f"calibrated (image FAR) on the fp32 maps of {len(good_thr)} other good images"
    out: dict[str, Any] = {"threshold": t, "threshold_source": source, "n_good": len(good_far), "n_val": len(val_i)}
    if getattr(model, "int8_calibration", None) is not None:
        out["int8"] = model.int8_calibration
        say("int8: the bundle's own calibration (sidn calibrate)")
    elif checkable_schemes("cpu"):
        out["int8"] = calibrate_int8(model, list(good_far), list(val_i), list(val_m), infer, size, threshold=t)
        for scheme, rep in out["int8"].parity.items():
            say(f"parity int8 ({scheme}, {i8_mode(scheme)}): pixel AUROC {rep['pixel_auroc_fp32']:.4f} -> "
                f"{rep['pixel_auroc']:.4f}, "
                f"image AUROC {rep['image_auroc_fp32']:.4f} -> {rep['image_auroc']:.4f}, alarms "
                f"{rep.get('alarms_fp32')} -> {rep.get('alarms')} of {len(good_far)}, max diff "
                f"{rep['max_abs_diff']:.3g}"
                f" -> {'passed' if rep['passed'] else 'FAILED'}")
    if float_fast is not None:
        rep = parity_report(model, float_fast, list(good_far), list(val_i), list(val_m), infer, size, t)
        out["float_fast"] = rep
        say(f"parity {mode_of(float_fast)}: pixel AUROC delta {rep['pixel_auroc_delta']:+.4f}, image AUROC delta "
            f"{rep['image_auroc_delta']:+.4f}, alarms {rep.get('alarms_fp32')} -> {rep.get('alarms')}")
    return out
