"""Measure how a training setting transfers to defects the DGM never makes (README "Training budget").

Trains one category of an MVTec-layout tree with ``section.key=value`` overrides of params.yaml,
then scores the test split at the training size (256 px; the 5 px median filter of inference)
and appends one JSON line to ``--results``. Fixed step counts (not time budgets) keep the numbers
independent of machine load. Used to choose the CPU budget and the default ``dgm.sources``:

    python experiments/transfer.py carpet default
    python experiments/transfer.py carpet paper-noise "dgm.sources={paper: 1.0}"
    python experiments/transfer.py tile whole-images train.crop_size=0 train.steps=60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from sidn.bundle import load_bundle
from sidn.config import load_config
from sidn.data.decode import read_mask
from sidn.data.mvtec import build_manifest, load_images, split_holdout
from sidn.train import train


def fused_maps(model: torch.nn.Module, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """Fused maps (eq. 26) of ``images [N,H,W]``, median-filtered as inference does."""
    maps = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            maps.append(model(torch.from_numpy(images[i : i + batch]).unsqueeze(1)).fused.float().numpy()[:, 0])
    return np.stack([cv2.medianBlur(m, 5) for m in np.concatenate(maps)])


def run(category: str, name: str, overrides: list[str], data: str, params: str, out: Path) -> dict:
    cfg = load_config(params, overrides)
    manifest = build_manifest(data, category)
    train_rows, holdout_rows = split_holdout(manifest, cfg.data.holdout_fraction, cfg.data.holdout_seed)
    size = cfg.data.image_size
    t0 = time.monotonic()
    result = train(cfg, load_images(train_rows["path"].tolist(), size), load_images(holdout_rows["path"].tolist(), size),
                   out / f"{category}-{name}", progress=False)
    train_s = time.monotonic() - t0
    model, _, _ = load_bundle(out / f"{category}-{name}" / "model.pt")
    test = manifest[manifest["split"] == "test"]
    maps = fused_maps(model.eval(), load_images(test["path"].tolist(), size))
    masks = np.stack([cv2.resize(read_mask(p), (size, size), interpolation=cv2.INTER_NEAREST) if p
                      else np.zeros((size, size), np.uint8) for p in test["mask_path"]])
    return {
        "category": category, "name": name, "overrides": overrides,
        "pixel_auroc": round(float(roc_auc_score(masks.ravel() > 0, maps.ravel())), 4),
        "image_auroc": round(float(roc_auc_score(test["label"].astype(int), maps.reshape(len(maps), -1).max(1))), 4),
        "train_s": round(train_s, 1), "best_step": result.best_step,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("category")
    ap.add_argument("name", help="a label for this setting")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides of params.yaml")
    ap.add_argument("--data", default="data/raw/sidn-default")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("experiments/runs"))
    ap.add_argument("--results", type=Path, default=Path("experiments/results.jsonl"))
    args = ap.parse_args()
    row = run(args.category, args.name, args.overrides, args.data, args.params, args.out)
    print(json.dumps(row))
    with args.results.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
