"""DVC stage ``evaluate@<category>``: metrics on the test split at the masks' original resolution.

    python -m pipelines.stages.evaluate CATEGORY MODEL OUT_DIR   # runs/<category>/model.pt -> runs/<category>/evaluate

:func:`sidn.jobs.evaluate_category` with the calibrated bundle. OUT_DIR gets ``metrics.json``
(pixel AUROC, AUPRO, image AUROC, operating point, per defect type), ``headline.json`` (the
DVC metric: the few figures ``dvc metrics show`` lists), ``roc.csv`` / ``pro.csv``
(DVC plots), ``scores.csv`` (per image) and ``overlays/`` (image | ground truth | heatmap |
predicted mask, worst first). Everything is produced in ``.work/evaluate`` and moved into
OUT_DIR at the end, ``metrics.json`` last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pipelines.layout import WORK
from pipelines.params import load_stage_config
from pipelines.stages import base_parser, publish, run_main, scratch
from sidn.config import SIDNConfig

PARAMS = ["data.root"]
OVERLAYS = 12  # panels in the gallery, worst first
OUTPUTS = ("overlays", "scores.csv", "roc.csv", "pro.csv", "headline.json", "metrics.json")  # publication order


def run(cfg: SIDNConfig, category: str, model: Path, out_dir: Path, work: Path,
        overlays: int = OVERLAYS) -> dict[str, Any]:
    from sidn.jobs import evaluate_category

    with scratch(work):
        metrics = evaluate_category(Path(model), category, work, data_root=cfg.data.root, overlays=overlays)
        for name in OUTPUTS:
            publish(work / name, Path(out_dir) / name)
    return {"category": category, "eval": str(out_dir), **metrics}


def _body(argv: Sequence[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("category")
    parser.add_argument("model", type=Path)
    parser.add_argument("out_dir", type=Path)
    a = parser.parse_args(argv)
    cfg = load_stage_config(PARAMS, a.params)
    m = run(cfg, a.category, a.model, a.out_dir, a.out_dir.parent / WORK / "evaluate")
    print(f"evaluate: {a.category}: pixel AUROC {m['pixel_auroc']:.4f}  AUPRO {m['aupro']:.4f}  "
          f"image AUROC {m['image_auroc']:.4f} -> {a.out_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("evaluate", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
