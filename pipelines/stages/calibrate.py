"""DVC stage ``calibrate@<category>``: choose the threshold and store it in a calibrated bundle.

    python -m pipelines.stages.calibrate CATEGORY TRAINED_MODEL OUT_MODEL OUT_JSON
    # runs/<category>/train/model.pt -> runs/<category>/model.pt + runs/<category>/calibration.json

:func:`sidn.jobs.calibrate_category` does the work, exactly as ``sidn calibrate --params
params.yaml`` does: the trained bundle (an output of ``train``) is never modified; its copy gets
this stage's ``infer`` / ``calibrate`` / data / DGM settings (so the shipped model carries the
post-processing it was calibrated with) and the threshold. Threshold sources: held-out good
images (false-alarm rate) and the DGM validation set (max F1); never the test split.

Runs before ``evaluate`` so that evaluation and the overlay gallery show the predicted masks
of the model that is actually shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pipelines.layout import WORK
from pipelines.params import load_stage_config
from pipelines.stages import base_parser, publish, run_main, scratch
from sidn.config import SIDNConfig
from sidn.jobs import CALIBRATION_KEYS, calibrate_category

PARAMS = list(CALIBRATION_KEYS)


def run(cfg: SIDNConfig, category: str, trained_model: Path, out_model: Path, out_json: Path,
        work: Path) -> dict[str, Any]:
    with scratch(work):
        result = calibrate_category(trained_model, category, work, cfg=cfg)
        publish(work / "model.pt", out_model)
        publish(work / "calibration.json", out_json)
    return {"category": category, "model": str(out_model), "calibration": str(out_json), **result.to_dict()}


def _body(argv: Sequence[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("category")
    parser.add_argument("trained_model", type=Path)
    parser.add_argument("out_model", type=Path)
    parser.add_argument("out_json", type=Path)
    a = parser.parse_args(argv)
    cfg = load_stage_config(PARAMS, a.params)
    r = run(cfg, a.category, a.trained_model, a.out_model, a.out_json, a.out_json.parent / WORK / "calibrate")
    print(f"calibrate: {a.category}: threshold {r['threshold']} ({r['method']}), image FAR {r['image_far']}, "
          f"pixel FAR {r['pixel_far']} -> {a.out_model}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("calibrate", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
