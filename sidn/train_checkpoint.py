"""Training checkpoints and run files: what :func:`sidn.train.train` writes to resume exactly.

A checkpoint (``checkpoint.pt``, format :data:`CHECKPOINT_FORMAT`) holds the weights, the optimiser
state, both RNG states, the history and the config; resuming needs the same :data:`RESUME_KEYS`
and the same training images (:func:`data_fingerprint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sidn.config import SIDNConfig
from sidn.io import atomic_write_text

CHECKPOINT_FORMAT = "sidn-checkpoint/1"
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"

HISTORY_COLUMNS = [
    "step",
    "l_s",
    "l_z",
    "l_kl",
    "l_td",
    "total",
    "radii_t_mean",
    "radii_d_mean",
    "grad_norm",
    "lr",
    "elapsed_s",
    "val_loss",
    "val_pixel_auroc",
]

# Settings that must match between a checkpoint and the config used to resume it. The step
# budget, time budget, validation/checkpoint intervals, threads, device and amp may change.
RESUME_KEYS = {
    "model": None,
    "loss": None,
    "dgm": None,
    "data": ["image_size"],
    "train": ["lr", "batch_size", "seed", "schedule", "warmup_steps", "augment", "crop_size"],
}


def rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)


def history_frame(history: dict[str, list]) -> pd.DataFrame:
    df = pd.DataFrame({c: history.get(c, []) for c in HISTORY_COLUMNS})
    if len(df):
        df["step"] = df["step"].astype(int)
    return df


def write_history(path: Path, history: dict[str, list]) -> None:
    atomic_write_text(path, history_frame(history).to_csv(index=False))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with ``torch.load(weights_only=True)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable sidn checkpoint (corrupt or not a torch file): {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: wrong checkpoint format {fmt!r}, expected {CHECKPOINT_FORMAT!r}")
    return ckpt


def data_fingerprint(images: np.ndarray) -> str:
    """sha256 of the training images as the network sees them (float32 [N,H,W])."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes()).hexdigest()


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files that a killed run left behind (atomic writes, :mod:`sidn.io`)."""
    stale = [p for name in (CHECKPOINT_FILE, MODEL_FILE, HISTORY_FILE, CONFIG_FILE) for p in out_dir.glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_resume_config(path: Path, saved: dict[str, Any], cfg: SIDNConfig) -> None:
    now = cfg.to_dict()
    diffs = []
    for section, keys in RESUME_KEYS.items():
        a, b = saved.get(section, {}), now.get(section, {})
        for key in keys if keys is not None else sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: checkpoint {a.get(key)!r} vs now {b.get(key)!r}")
    if diffs:
        raise ValueError(
            f"{path}: cannot resume, the config differs from the checkpoint's: " + "; ".join(diffs)
            + " (start a fresh run with resume=False or use the original settings)"
        )
