"""A trained dev model and its dev test split at the network's size, for the paired post-processing experiments
(``experiments/map_sigma.py``, ``experiments/postprocess_variants.py``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sidn.bundle import load_bundle
from sidn.data.decode import read_mask
from sidn.data.mvtec import build_manifest, load_images


def load_dev_split(run_dir: Path, data_root: str, category: str):
    """``(model, images [N,S,S], masks resized nearest to S, labels)`` of ``run_dir/model.pt`` on the test split."""
    model, cfg, _ = load_bundle(Path(run_dir) / "model.pt")
    size = cfg.data.image_size
    manifest = build_manifest(data_root, category)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    images = load_images(test["path"].tolist(), size)
    masks = [cv2.resize(read_mask(p), (size, size), interpolation=cv2.INTER_NEAREST) if p
             else np.zeros((size, size), np.uint8) for p in test["mask_path"]]
    return model, images, masks, test["label"].astype(int).tolist()
