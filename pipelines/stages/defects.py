"""DVC stage ``defects@<category>``: the fixed DGM validation set (eq. 1), versioned by DVC.

    python -m pipelines.stages.defects CATEGORY OUT_NPZ        # OUT_NPZ = runs/<category>/defects.npz

:func:`sidn.jobs.make_defect_set` applies the defect generation module with the fixed seed
``dgm.seed`` to the held-out good images (``data.holdout_*``) and saves ``images`` and
``masks``. It is what early stopping (train) and the max-F1 threshold (calibrate) see -- never
the test split. The same arrays are regenerated deterministically inside those stages; this
file makes the set inspectable and pins it in ``dvc.lock``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipelines.layout import WORK
from pipelines.params import load_stage_config
from pipelines.stages import base_parser, publish, run_main, scratch
from sidn.config import SIDNConfig

PARAMS = ["data.root", "data.image_size", "data.holdout_fraction", "data.holdout_seed", "dgm"]


def run(cfg: SIDNConfig, category: str, out_npz: Path, work: Path) -> dict[str, Any]:
    from sidn.jobs import make_defect_set

    with scratch(work):
        produced = make_defect_set(cfg, category, work)
        with np.load(produced) as data:
            masks = data["masks"]
            n, defective = int(len(masks)), int((masks.reshape(len(masks), -1).max(1) > 0).sum())
        publish(produced, out_npz)
    return {"category": category, "defects": str(out_npz), "n_images": n, "n_defective": defective}


def _body(argv: Sequence[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("category")
    parser.add_argument("out_npz", type=Path)
    a = parser.parse_args(argv)
    cfg = load_stage_config(PARAMS, a.params)
    result = run(cfg, a.category, a.out_npz, a.out_npz.parent / WORK / "defects")
    print(f"defects: {a.category}: {result['n_images']} images ({result['n_defective']} with a defect) -> {a.out_npz}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("defects", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
