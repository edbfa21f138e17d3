"""Helpers shared by the pipeline tests (tiny params); fixtures are in fixtures_prefect.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

REPO = Path(__file__).resolve().parents[1]


# Tiny settings: 64 px images, a handful of steps, a small DGM set.
TINY: dict[str, dict[str, Any]] = {
    "data": {"image_size": 64, "min_train_images": 4, "holdout_fraction": 0.25},
    "dgm": {"val_images": 4},
    "train": {"steps": 4, "batch_size": 4, "val_every": 2, "checkpoint_every": 2, "num_threads": 1},
    "infer": {"batch_size": 8},
}


def write_tiny_params(path: Path, data_root: str | Path, categories: Iterable[str],
                      extra: dict[str, dict[str, Any]] | None = None) -> Path:
    """params.yaml (the repo's, with every section) + TINY + ``extra`` -> ``path``."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in {**TINY, "data": {**TINY["data"], "root": str(data_root),
                                             "categories": list(categories)}}.items():
        raw[section].update(values)
    for section, values in (extra or {}).items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
