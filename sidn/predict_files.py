"""``sidn predict``: run a model bundle over image files and folders and write what a line needs.

Outputs in ``out_dir`` (the "sidn outputs", :data:`OUTPUTS`): ``masks/<name>.png`` (0/255 at the
image's original size), ``overlays/<name>.png`` (heatmap over the image, mask outlined),
``predictions.csv`` (one row per image) and ``predictions.json`` (the same plus every defect
region). Each row has a ``status``: ``ok``, or ``skipped`` with the ``reason`` (``skip_bad``).

A run's outputs are a set: everything is written into a hidden temporary folder next to
``out_dir`` and moved into place only when every image succeeded (:func:`publish_outputs`), so
a failed run leaves the previous outputs intact and no temporary folder behind. Refused
instead of written: a non-finite threshold, a non-finite anomaly map or score (a broken model
or ONNX file), an ONNX file exported from another bundle
(:func:`sidn.export.check_onnx_matches_bundle`).

Folder inputs are expanded recursively, skipping hidden files and folders (``.x``, ``._a.png``),
the output folder when it lies inside an input folder, and the ``masks/`` / ``overlays/`` of
``out_dir`` and of any sidn output folder (one holding ``predictions.csv`` or ``predictions.json``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from sidn.bundle import load_bundle
from sidn.data.decode import read_image
from sidn.data.errors import DataError
from sidn.data.mvtec import IMAGE_EXTENSIONS
from sidn.inference import Prediction, Predictor

OUTPUT_DIRS = ("masks", "overlays")
OUTPUT_FILES = ("predictions.csv", "predictions.json")
OUTPUTS = OUTPUT_DIRS + OUTPUT_FILES
COLUMNS = ["path", "name", "status", "reason", "score", "is_defective", "defect_area_fraction", "n_regions"]


# --------------------------------------------------------------------------------------
# inputs


def _is_output_folder(folder: Path) -> bool:
    """A folder written by ``sidn predict`` (it holds predictions.csv or predictions.json)."""
    return any((folder / name).is_file() for name in OUTPUT_FILES)


def _walk_images(root: Path, out_dir: Path | None) -> list[Path]:
    """Image files under ``root``, sorted; hidden entries, ``out_dir`` and sidn outputs pruned."""
    out = out_dir.resolve() if out_dir is not None else None
    found: list[Path] = []
    seen: set[Path] = set()  # real paths walked: symlinked folders are followed, each once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here, real = Path(dirpath), Path(dirpath).resolve()
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        skip = set(OUTPUT_DIRS) if (real == out or _is_output_folder(here)) else set()
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d not in skip and (out is None or (here / d).resolve() != out)
        )
        found.extend(here / f for f in filenames
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def collect_images(inputs: list[Path], out_dir: Path | None = None) -> list[Path]:
    """Expand folders (recursively) into image files; a missing input is an error naming it.

    Files given explicitly are always used. Inside folders, hidden files and folders are
    skipped, and so are the output folder ``out_dir`` (when it lies inside the folder) and the
    ``masks/`` and ``overlays/`` of ``out_dir`` and of any other sidn output folder.
    """
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(_walk_images(item, out_dir))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files:
        raise ValueError(
            f"no images found in {', '.join(map(str, inputs))} (hidden files and sidn outputs are skipped)")
    return files


def _read(file: Path, skip_bad: bool) -> np.ndarray | str:
    """The image, or (``skip_bad``) the reason it cannot be read; else DataError naming the file."""
    try:
        return read_image(file)
    except DataError as exc:
        if not skip_bad:
            raise DataError(file, f"{exc.problem} (use --skip-bad to skip unreadable files)") from exc
        return exc.problem


# --------------------------------------------------------------------------------------
# outputs


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
    path.write_bytes(encoded.tobytes())


def _unique_names(files: list[Path]) -> list[str]:
    """Output names that stay distinct when two folders hold the same file name."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:05d}_{f.stem}" for i, f in enumerate(files)]


def _check_finite(pred: Prediction, file: Path, source: str) -> None:
    if not math.isfinite(pred.score) or not np.isfinite(pred.anomaly_map).all():
        raise ValueError(
            f"{file}: the model {source} produced a non-finite anomaly map or score (NaN/inf); its weights "
            f"are broken (diverged training or a damaged file); no predictions were written"
        )


def _write_tables(tmp: Path, rows: list[dict[str, Any]], regions: dict[str, list], threshold: float,
                  bundle_path: Path, onnx: str | None, mode: dict[str, str]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(tmp / "predictions.csv", index=False)
    doc = {"model": str(bundle_path), "onnx": onnx, "threshold": threshold, **mode,
           "skipped": sum(r["status"] == "skipped" for r in rows),
           "images": [{**r, "regions": regions.get(r["path"], [])} for r in rows]}
    (tmp / "predictions.json").write_text(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return table


def publish_outputs(tmp: Path, out_dir: Path) -> None:
    """Move the sidn outputs in ``tmp`` into ``out_dir``, replacing the previous ones as a set.

    A new ``out_dir`` is ``tmp`` renamed (one move). In an existing one the old
    :data:`OUTPUTS` are moved aside into ``tmp`` and the new ones moved in (renames within one
    folder tree; a non-empty folder cannot be replaced by a single rename); on an error the old
    ones are moved back. Other files in ``out_dir`` are left alone.
    """
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = tmp / ".previous"
    old.mkdir()
    moved_old: list[str] = []
    moved_new: list[str] = []
    try:
        for name in OUTPUTS:
            if os.path.lexists(out_dir / name):
                os.rename(out_dir / name, old / name)
                moved_old.append(name)
        for name in OUTPUTS:
            if os.path.lexists(tmp / name):
                os.rename(tmp / name, out_dir / name)
                moved_new.append(name)
    except BaseException:
        for name in moved_new:
            os.rename(out_dir / name, tmp / name)
        for name in moved_old:
            os.rename(old / name, out_dir / name)
        raise


# --------------------------------------------------------------------------------------
# the command


def predict_files(
    bundle_path: Path,
    inputs: list[Path],
    out_dir: Path,
    threshold: float | None = None,
    onnx: str | None = None,
    skip_bad: bool = False,
    fast: bool = False,
) -> pd.DataFrame:
    """Predict every image under ``inputs``; returns the per-image table also written as CSV.

    ``threshold`` (finite) overrides the bundle's calibrated one. ``onnx`` computes the anomaly
    maps with that ONNX file, which must have been exported from this bundle. Without
    ``skip_bad`` the first unreadable image fails the run (DataError naming the file); with it
    the image gets a row with status ``skipped`` and the reason. Outputs are published as a set
    at the end (:func:`publish_outputs`): on any error ``out_dir`` is left as it was and no
    temporary folder remains. ``fast`` computes the maps with the fastest form this CPU supports
    (:func:`sidn.fast_choice.make_fast`: int8 where the bundle's int8 calibration passed parity,
    else bf16 or folded fp32); predictions.json names it (``fast_mode``) and says why int8 was not used.
    """
    bundle_path, out_dir = Path(bundle_path), Path(out_dir)
    if threshold is not None and not math.isfinite(float(threshold)):
        raise ValueError(f"threshold (--threshold) must be a finite number, got {threshold}")
    model, cfg, _ = load_bundle(bundle_path)
    source = str(bundle_path)
    if onnx:
        from sidn.export import OnnxModel, check_onnx_matches_bundle

        onnx_model = OnnxModel(Path(onnx), threshold=float(model.threshold))
        check_onnx_matches_bundle(onnx, onnx_model.metadata, bundle_path, model)
        model, source = onnx_model, f"{onnx} (exported from {bundle_path})"
    if fast and onnx:
        raise ValueError("--fast and --onnx are two ways of computing the maps: give one of them")
    predictor = Predictor(model, cfg.infer, cfg.data.image_size, threshold=threshold, fast=fast)
    mode = {"fast_mode": predictor.fast_mode, "fast_note": predictor.fast_note}
    used_threshold = predictor.require_threshold()
    files = collect_images(inputs, out_dir)
    names = _unique_names(files)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: --out exists and is not a folder")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.sidn-tmp-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a new out_dir gets the usual permissions
        for sub in OUTPUT_DIRS:
            (tmp / sub).mkdir()
        rows: list[dict[str, Any]] = []
        regions: dict[str, list] = {}
        step = cfg.infer.batch_size
        for start in range(0, len(files), step):
            chunk = list(zip(files[start : start + step], names[start : start + step]))
            images = [_read(file, skip_bad) for file, _ in chunk]
            preds = iter(predictor.predict([im for im in images if not isinstance(im, str)]))
            for (file, name), image in zip(chunk, images):
                if isinstance(image, str):  # skipped; ``image`` is the reason
                    rows.append({"path": str(file), "name": name, "status": "skipped", "reason": image,
                                 "score": None, "is_defective": None, "defect_area_fraction": None,
                                 "n_regions": None})
                    continue
                pred = next(preds)
                _check_finite(pred, file, source)
                _write_png(tmp / "masks" / f"{name}.png", pred.mask.astype(np.uint8) * 255)
                _write_png(tmp / "overlays" / f"{name}.png", _overlay(image, pred))
                rows.append({"path": str(file), "name": name, "status": "ok", "reason": "",
                             "score": float(pred.score), "is_defective": bool(pred.mask.any()),
                             "defect_area_fraction": float(pred.mask.mean()), "n_regions": len(pred.regions)})
                regions[str(file)] = pred.regions
        table = _write_tables(tmp, rows, regions, used_threshold, bundle_path, onnx, mode)
        publish_outputs(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone when out_dir was new (tmp became out_dir)
    return table
