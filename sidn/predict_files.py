"""``sidn predict``: run a model bundle over image files and folders and write what a line needs.

Outputs in ``out_dir``: ``masks/<name>.png`` (0/255 at the image's original size),
``overlays/<name>.png`` (heatmap over the image, mask outlined), ``predictions.csv`` (one row
per image) and ``predictions.json`` (the same plus every defect region).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sidn.bundle import load_bundle
from sidn.data.mvtec import IMAGE_EXTENSIONS, read_image
from sidn.inference import Prediction, Predictor
from sidn.io import atomic_write, atomic_write_json


def collect_images(inputs: list[Path]) -> list[Path]:
    """Expand folders (recursively) into image files; a missing input is an error naming it."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def _overlay(image: np.ndarray, prediction: Prediction) -> np.ndarray:
    gray = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap((np.clip(prediction.anomaly_map, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    panel = cv2.addWeighted(gray, 0.6, heat, 0.4, 0)
    if prediction.mask is not None:
        contours, _ = cv2.findContours(prediction.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(panel, contours, -1, (255, 255, 255), 2)
    return panel


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: cannot encode PNG")
    atomic_write(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))


def _unique_names(files: list[Path]) -> list[str]:
    """Output names that stay distinct when two folders hold the same file name."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:05d}_{f.stem}" for i, f in enumerate(files)]


def predict_files(
    bundle_path: Path, inputs: list[Path], out_dir: Path, threshold: float | None = None, onnx: str | None = None
) -> pd.DataFrame:
    """Predict every image under ``inputs``; returns the per-image table also written as CSV."""
    model, cfg, _ = load_bundle(bundle_path)
    if onnx:
        from sidn.export import OnnxModel

        model = OnnxModel(Path(onnx), threshold=float(model.threshold))
    predictor = Predictor(model, cfg.infer, cfg.data.image_size, threshold=threshold)
    predictor.require_threshold()
    files = collect_images(inputs)
    rows, regions = [], {}
    for start in range(0, len(files), cfg.infer.batch_size):
        chunk = files[start : start + cfg.infer.batch_size]
        names = _unique_names(files)[start : start + len(chunk)]
        images = [read_image(f) for f in chunk]
        for file, name, image, pred in zip(chunk, names, images, predictor.predict(images)):
            _write_png(out_dir / "masks" / f"{name}.png", pred.mask.astype(np.uint8) * 255)
            _write_png(out_dir / "overlays" / f"{name}.png", _overlay(image, pred))
            defective = bool(pred.mask.any())
            rows.append({"path": str(file), "name": name, "score": pred.score, "is_defective": defective,
                         "defect_area_fraction": float(pred.mask.mean()), "n_regions": len(pred.regions)})
            regions[str(file)] = pred.regions
    table = pd.DataFrame(rows)
    atomic_write(out_dir / "predictions.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write_json(out_dir / "predictions.json",
                      {"threshold": predictor.threshold, "images": [{**r, "regions": regions[r["path"]]} for r in rows]})
    return table
