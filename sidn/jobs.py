"""Category-level jobs: the units of work shared by the CLI, the DVC stages and the Prefect tasks.

Each job reads one category of an MVTec-layout tree, does one step of the pipeline and writes
its outputs atomically into ``out_dir``. Whichever entry point a user takes, these functions do
the work, so the numbers are the same everywhere.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from sidn.bundle import load_bundle, read_bundle_raw, save_bundle, write_bundle_raw
from sidn.calibrate import Calibration, calibrate
from sidn.config import SIDNConfig
from sidn.data.dgm import make_validation_set
from sidn.data.decode import read_image, read_mask
from sidn.data.mvtec import build_manifest, load_images, split_holdout
from sidn.feature_memory import BUNDLE_KEY as MEMORY_KEY, FeatureMemory
from sidn.inference import Prediction, Predictor, image_score
from sidn.int8.calibrate import calibrate_int8
from sidn.int8.record import BUNDLE_KEY as INT8_KEY, int8_summary, Int8Calibration
from sidn.int8.scheme import int8_scheme
from sidn.io import atomic_write, atomic_write_json
from sidn.model.sidn import SIDN
from sidn.metrics import RankedPixels, image_auroc, pixel_auroc_per_image
from sidn.operating_point import operating_point
from sidn.train import TrainResult, train


def _category_root(cfg: SIDNConfig, category: str, data_root: str | None = None) -> Path:
    return Path(data_root or cfg.data.root)


def _train_and_holdout(cfg: SIDNConfig, category: str, data_root: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest = build_manifest(_category_root(cfg, category, data_root), category)
    return split_holdout(manifest, cfg.data.holdout_fraction, cfg.data.holdout_seed)


def train_category(
    cfg: SIDNConfig, category: str, out_dir: Path, resume: bool = False, progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train SIDN on ``train/good`` of one category; held-out good images feed the DGM validation set."""
    train_rows, holdout_rows = _train_and_holdout(cfg, category)
    size = cfg.data.image_size
    train_images = load_images(train_rows["path"].tolist(), size)
    holdout_images = load_images(holdout_rows["path"].tolist(), size)
    return train(cfg, train_images, holdout_images, Path(out_dir), resume=resume, progress=progress, callback=callback)


def make_defect_set(cfg: SIDNConfig, category: str, out_dir: Path) -> Path:
    """Write the fixed DGM validation set (eq. 1 on held-out good images) as ``defects.npz``."""
    _, holdout_rows = _train_and_holdout(cfg, category)
    holdout_images = load_images(holdout_rows["path"].tolist(), cfg.data.image_size)
    images, masks = make_validation_set(holdout_images, cfg.dgm)
    path = Path(out_dir) / "defects.npz"
    atomic_write(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), images=images, masks=masks.astype(np.uint8)))
    return path


def _predictor(bundle_path: Path, threshold: float | None = None) -> tuple[Predictor, SIDNConfig]:
    model, cfg, _ = load_bundle(bundle_path)
    predictor = Predictor(model, cfg.infer, cfg.data.image_size, threshold=threshold)
    return predictor, cfg


def _predict_paths(predictor: Predictor, paths: list[str], batch_size: int) -> list[Prediction]:
    predictions: list[Prediction] = []
    for start in range(0, len(paths), batch_size):
        images = [read_image(p) for p in paths[start : start + batch_size]]
        predictions.extend(predictor.predict(images))
    return predictions


def _ground_truth(row: pd.Series) -> np.ndarray:
    if row["mask_path"]:
        return read_mask(row["mask_path"])
    return np.zeros((int(row["height"]), int(row["width"])), dtype=np.uint8)


def _metrics(pixels: RankedPixels, scores: list[float], labels: list[int]) -> dict:
    return {
        "pixel_auroc": pixels.pixel_auroc(),
        "aupro": pixels.aupro(),
        "image_auroc": image_auroc(scores, labels),
        "n_images": pixels.n_images,
    }


def evaluate_category(
    bundle_path: Path, category: str, out_dir: Path, data_root: str | None = None, overlays: int = 12
) -> dict:
    """Pixel AUROC, AUPRO and image AUROC on the test split, at the masks' original resolution.

    Per defect type, the metrics use that type's images plus all ``test/good`` images. The test
    pixels are sorted once (:class:`sidn.metrics.RankedPixels`); each defect type is a subset.
    Writes ``metrics.json``, ``headline.json`` (:func:`headline`), ``roc.csv``, ``pro.csv``,
    ``scores.csv`` and ``overlays/``.
    """
    out_dir = Path(out_dir)
    predictor, cfg = _predictor(Path(bundle_path))
    test = build_manifest(_category_root(cfg, category, data_root), category)
    test = test[test["split"] == "test"].reset_index(drop=True)
    predictions = _predict_paths(predictor, test["path"].tolist(), cfg.infer.batch_size)
    maps = [p.anomaly_map for p in predictions]
    masks = [_ground_truth(row) for _, row in test.iterrows()]
    scores = [p.score for p in predictions]
    labels = test["label"].astype(int).tolist()

    calibrated = predictor.threshold is not None
    alarms = [bool(p.defective) for p in predictions]
    pred_masks = [p.mask if p.mask is not None else np.zeros_like(m) for p, m in zip(predictions, masks)]

    def at_threshold(idx: np.ndarray) -> dict:
        if not calibrated:
            return {}
        op = operating_point([alarms[i] for i in idx], [labels[i] for i in idx],
                             [pred_masks[i] for i in idx], [masks[i] for i in idx])
        return {"threshold": predictor.threshold, **op}

    pixels = RankedPixels(maps, masks)
    everything = np.arange(len(test))
    metrics = {"category": category, **_metrics(pixels, scores, labels),
               "operating_point": at_threshold(everything), "per_defect": {}}
    defect_types = test["defect_type"].to_numpy()
    for defect_type in sorted(set(defect_types) - {"good"}):
        idx = np.flatnonzero((defect_types == defect_type) | (defect_types == "good"))
        metrics["per_defect"][defect_type] = {
            **_metrics(pixels.subset(idx), [scores[i] for i in idx], [labels[i] for i in idx]),
            "operating_point": at_threshold(idx),
        }
    roc, pro = pixels.roc_curve_points(), pixels.pro_curve_points()
    del pixels  # the sorted pixels are the largest buffer here

    per_image = pixel_auroc_per_image(maps, masks)
    table = test[["path", "defect_type", "label"]].assign(
        score=scores, alarm=alarms if calibrated else None, pixel_auroc_img=per_image
    )
    atomic_write(out_dir / "scores.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(out_dir / "roc.csv", lambda tmp: roc.to_csv(tmp, index=False))
    atomic_write(out_dir / "pro.csv", lambda tmp: pro.to_csv(tmp, index=False))
    _write_overlays(test, table, predictions, masks, out_dir / "overlays", overlays)
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_json(out_dir / "headline.json", headline(metrics))
    return metrics


HEADLINE_OPERATING_POINT = ("threshold", "catch_rate", "false_alarm_rate")


def headline(metrics: dict) -> dict:
    """The few figures of ``metrics.json`` a reviewer compares across runs (``dvc metrics show``):
    pixel AUROC, AUPRO, image AUROC and, at the shipped threshold, catch and false-alarm rates."""
    op = metrics.get("operating_point") or {}
    return {**{k: metrics.get(k) for k in ("pixel_auroc", "aupro", "image_auroc")},
            **{k: op.get(k) for k in HEADLINE_OPERATING_POINT}}


def _worst_first(table: pd.DataFrame) -> list[int]:
    """Defective images with the lowest per-image AUROC, then good images with the highest score."""
    defective = table[table["label"] == 1].sort_values("pixel_auroc_img", na_position="first")
    good = table[table["label"] == 0].sort_values("score", ascending=False)
    return defective.index.tolist() + good.index.tolist()


def overlay_panel(image: np.ndarray, truth: np.ndarray, prediction: Prediction) -> np.ndarray:
    """image | ground truth | heatmap | predicted mask, side by side (uint8 BGR)."""
    gray = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    truth_bgr = cv2.cvtColor(truth.astype(np.uint8) * 255, cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap((np.clip(prediction.anomaly_map, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.addWeighted(gray, 0.5, heat, 0.5, 0)
    if prediction.mask is None:
        mask_bgr = np.zeros_like(gray)
        cv2.putText(mask_bgr, "uncalibrated", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1)
    else:
        mask_bgr = cv2.cvtColor(prediction.mask.astype(np.uint8) * 255, cv2.COLOR_GRAY2BGR)
    return np.hstack([gray, truth_bgr, heat, mask_bgr])


def _write_overlays(
    test: pd.DataFrame, table: pd.DataFrame, predictions: list[Prediction], masks: list[np.ndarray], out: Path, n: int
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    for rank, i in enumerate(_worst_first(table)[:n]):
        panel = overlay_panel(read_image(test.at[i, "path"]), masks[i], predictions[i])
        name = f"{rank:02d}_{test.at[i, 'defect_type']}_{Path(test.at[i, 'path']).stem}.png"
        atomic_write(out / name, lambda tmp: _imwrite(tmp, panel))


def _imwrite(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: cannot encode PNG")
    Path(path).write_bytes(encoded.tobytes())



# The settings calibration reads: the shipped model carries the values it was calibrated with.
CALIBRATION_KEYS = ("data.root", "data.holdout_fraction", "data.holdout_seed", "dgm", "infer", "calibrate")


def with_calibration_settings(bundle_cfg: dict, cfg: SIDNConfig) -> dict:
    """``bundle_cfg`` (a bundle's config dict) with the :data:`CALIBRATION_KEYS` values of ``cfg``."""
    out, now = copy.deepcopy(bundle_cfg), cfg.to_dict()
    for key in CALIBRATION_KEYS:
        section, _, name = key.partition(".")
        if name:
            out.setdefault(section, {})[name] = now[section][name]
        else:
            out[section] = copy.deepcopy(now[section])
    return out


def calibrate_category(
    trained_model: Path, category: str, out_dir: Path, cfg: SIDNConfig | None = None, data_root: str | None = None
) -> Calibration:
    """Calibrate a copy of ``trained_model``: ``out_dir/model.pt`` (the model to ship) and ``out_dir/calibration.json``.

    The threshold is chosen from held-out good images (false-alarm rate) and the DGM validation
    set (max F1), never the test split, and stored in the copy with the int8 calibration where
    the CPU runs int8. The copy's config carries ``cfg``'s :data:`CALIBRATION_KEYS` (default: the
    trained model's own settings) and ``data_root`` as ``data.root`` if given. ``trained_model``
    is not modified (unless it is ``out_dir/model.pt``). The CLI (``sidn calibrate``), the DVC
    stage and the Prefect task all run this function.
    """
    raw = read_bundle_raw(trained_model)
    if cfg is not None:
        raw["config"] = with_calibration_settings(raw["config"], cfg)
    if data_root:
        raw["config"].setdefault("data", {})["root"] = str(data_root)
    shipped = Path(out_dir) / "model.pt"
    shipped.parent.mkdir(parents=True, exist_ok=True)
    write_bundle_raw(shipped, raw)
    model, cfg, extra = load_bundle(shipped)
    vars(model).pop("feature_memory", None)  # a memory of an earlier calibration: this one builds its own
    predictor = Predictor(model, cfg.infer, cfg.data.image_size, threshold=None)
    train_rows, holdout_rows = _train_and_holdout(cfg, category)
    holdout_paths = holdout_rows["path"].tolist()
    good_maps = [p.anomaly_map for p in _predict_paths(predictor, holdout_paths, cfg.infer.batch_size)]
    holdout_images = load_images(holdout_paths, cfg.data.image_size)
    good_scores = _attach_feature_memory(model, train_rows["path"].tolist(), holdout_images, good_maps, cfg)
    val_images, val_masks = make_validation_set(holdout_images, cfg.dgm)
    val_maps = predictor.maps(list(val_images))
    result = calibrate(good_maps, val_maps, [m.astype(np.uint8) for m in val_masks], cfg.calibrate, cfg.infer,
                       image_size=cfg.data.image_size, good_scores=good_scores)

    result.apply(model)  # the pixel threshold and the image-score threshold
    extra = {**{k: v for k, v in extra.items() if k not in (INT8_KEY, MEMORY_KEY)}, "calibration": result.to_dict()}
    if predictor.memory is not None:
        extra[MEMORY_KEY] = predictor.memory.to_dict()
    summary = result.to_dict()
    int8 = _int8_calibration(model, holdout_images, val_images, val_masks, cfg) if cfg.calibrate.int8 else None
    if int8 is not None:
        extra[INT8_KEY] = int8.to_dict()
        summary["int8"] = int8_summary(int8)
    save_bundle(model, cfg, shipped, extra=extra)
    atomic_write_json(Path(out_dir) / "calibration.json", summary)
    return result


def _attach_feature_memory(model: SIDN, train_paths: list[str], good_images: np.ndarray,
                           good_maps: list[np.ndarray], cfg: SIDNConfig) -> list[float] | None:
    """Build the feature memory (:mod:`sidn.feature_memory`) from at most ``infer.memory_images`` evenly
    spaced training images, standardise it on the held-out good images, hang it on ``model`` and return
    those images' fused scores; None when ``infer.memory_rows`` is 0 or fewer than two good images are held
    out (the references need a spread), in which case the image score stays the map's maximum."""
    if cfg.infer.memory_rows <= 0 or len(good_images) < 2:
        return None
    if cfg.infer.memory_images < 1:
        raise ValueError(f"infer.memory_images must be >= 1 when infer.memory_rows > 0, got {cfg.infer.memory_images}")
    step = -(-len(train_paths) // cfg.infer.memory_images)
    train_images = load_images(train_paths[::step], cfg.data.image_size)
    memory = FeatureMemory.from_images(model, train_images, cfg.infer.memory_rows, seed=cfg.dgm.seed,
                                       sampling=cfg.infer.memory_sampling)
    map_scores = [image_score(m, cfg.infer.score_sigma, cfg.data.image_size) for m in good_maps]
    knn_scores = memory.knn_scores(model, good_images)
    memory.set_references(map_scores, knn_scores)
    model.feature_memory = memory
    return [float(v) for v in memory.fuse(map_scores, knn_scores)]


def _int8_calibration(model: SIDN, good_images: np.ndarray, val_images: np.ndarray, val_masks: np.ndarray,
                      cfg: SIDNConfig) -> Int8Calibration | None:
    """The int8 fast mode's calibration (same held-out good images + DGM validation set), or None
    where this CPU has no oneDNN int8 kernels.

    Only the ``u7s8`` scheme is judged: every x86 CPU with int8 kernels computes it, bit for bit,
    so the verdict stored in the bundle holds on whichever machine serves it. ``u8s8`` (VNNI
    CPUs only) was no faster (sidn/int8/: 26 vs 25 ms) and would cost a second check.
    """
    if int8_scheme("cpu") is None:
        return None
    return calibrate_int8(model, list(good_images), list(val_images), list(val_masks), cfg.infer,
                          cfg.data.image_size, threshold=float(model.threshold), schemes=["u7s8"])
