"""DVC stage ``calibrate@<category>``: choose the threshold and store it in a calibrated bundle.

    python -m pipelines.stages.calibrate CATEGORY TRAINED_MODEL OUT_MODEL OUT_JSON
    # runs/<category>/train/model.pt -> runs/<category>/model.pt + runs/<category>/calibration.json

The trained bundle (an output of ``train``) is never modified: it is copied, its config gets
this stage's ``infer`` / ``calibrate`` / data / DGM settings (so the shipped model carries the
post-processing it was calibrated with), and :func:`sidn.jobs.calibrate_category` stores the
threshold in the copy. Threshold sources: held-out good images (false-alarm rate) and the DGM
validation set (max F1); never the test split.

Runs before ``evaluate`` so that evaluation and the overlay gallery show the predicted masks
of the model that is actually shipped.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from pipelines.layout import WORK
from pipelines.params import load_stage_config, select
from pipelines.stages import base_parser, publish, run_main, scratch
from sidn.config import SIDNConfig

PARAMS = ["data.root", "data.holdout_fraction", "data.holdout_seed", "dgm", "infer", "calibrate"]


def stamp_config(bundle_cfg: dict[str, Any], cfg: SIDNConfig) -> dict[str, Any]:
    """``bundle_cfg`` with this stage's declared keys replaced by the values in ``cfg``."""
    out = copy.deepcopy(bundle_cfg)
    for section, values in select(cfg, PARAMS).items():
        out.setdefault(section, {}).update(values)
    return out


def run(cfg: SIDNConfig, category: str, trained_model: Path, out_model: Path, out_json: Path,
        work: Path) -> dict[str, Any]:
    from sidn.bundle import read_bundle_raw, write_bundle_raw
    from sidn.jobs import calibrate_category

    with scratch(work):
        raw = read_bundle_raw(trained_model)
        raw["config"] = stamp_config(raw["config"], cfg)
        write_bundle_raw(work / "model.pt", raw)
        used = SIDNConfig.from_dict(raw["config"], source=f"{trained_model} (stamped)")
        result = calibrate_category(work / "model.pt", category, work, cfg=used, data_root=cfg.data.root)
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
