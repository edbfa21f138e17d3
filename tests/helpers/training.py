"""Tiny training inputs shared by the training, recipe, reproducibility and int8 tests: striped
64 px textures and a SIDN config that trains in a second on one thread."""

from __future__ import annotations

import numpy as np

from sidn.config import SIDNConfig

SIZE = 64


def striped_images(n: int, seed: int) -> np.ndarray:
    """Smooth striped gray textures, float32 [n, SIZE, SIZE] in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = []
    for _ in range(n):
        f = rng.uniform(0.2, 0.6)
        img = 0.5 + 0.3 * np.sin(f * xx + rng.uniform(0, 6.28)) * np.cos(0.7 * f * yy) + 0.1 * rng.random((SIZE, SIZE))
        out.append(np.clip(img, 0, 1))
    return np.stack(out).astype(np.float32)


TRAIN = striped_images(6, 0)
VAL = striped_images(2, 1)


def tiny_config(steps: int = 6, **train_kw) -> SIDNConfig:
    cfg = SIDNConfig()
    cfg.data.image_size = SIZE
    cfg.model.channels = 16  # channels < 16 crash oneDNN conv backward on this CPU (see report)
    cfg.model.clusters = 3
    cfg.dgm.val_images = 4
    cfg.train.batch_size = 4
    cfg.train.steps = steps
    cfg.train.val_every = 3
    cfg.train.checkpoint_every = 2
    cfg.train.amp = "off"
    cfg.train.device = "cpu"
    cfg.train.num_threads = 1
    for k, v in train_kw.items():
        setattr(cfg.train, k, v)
    return cfg
