"""One unit of work, three entry points: `sidn calibrate --params`, the DVC stage and the Prefect
task all run sidn.jobs.calibrate_category and write the same files from the same inputs (issue 14)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from helpers.data import make_mvtec_tree
from helpers.pipeline import write_tiny_params
from pipelines.orchestration import flows, tasks
from pipelines.stages import calibrate as calibrate_stage
from sidn.bundle import read_bundle_raw
from sidn.cli import main
from sidn.config import load_config
from sidn.jobs import train_category


def _same_bundle(a: Path, b: Path) -> None:
    ra, rb = read_bundle_raw(a), read_bundle_raw(b)
    assert ra["config"] == rb["config"]
    assert ra["extra"] == rb["extra"]
    assert ra["state_dict"].keys() == rb["state_dict"].keys()
    for k in ra["state_dict"]:  # bit for bit (an uncalibrated score threshold is NaN in both)
        torch.testing.assert_close(ra["state_dict"][k], rb["state_dict"][k], rtol=0, atol=0, equal_nan=True)


def test_cli_stage_and_task_calibrate_alike(tmp_path: Path) -> None:
    make_mvtec_tree(tmp_path / "data", "carpet", n_train=12, n_test_good=3, defects={"cut": 3}, size=64)
    params = write_tiny_params(tmp_path / "params.yaml", tmp_path / "data", ["carpet"],
                               extra={"infer": {"median_kernel": 3}, "calibrate": {"target_image_far": 0.1}})
    cfg = load_config(params)
    cfg.infer.median_kernel = 5  # trained with other post-processing than the params now say
    trained = tmp_path / "trained" / "model.pt"
    train_category(cfg, "carpet", trained.parent, progress=False)
    before = trained.read_bytes()

    cli_out = tmp_path / "cli"
    assert main(["calibrate", "--params", str(params), "--model", str(trained), "--category", "carpet",
                 "--out", str(cli_out)]) == 0

    stage_out = tmp_path / "stage"
    assert calibrate_stage.main(["carpet", str(trained), str(stage_out / "model.pt"),
                                 str(stage_out / "calibration.json"), "--params", str(params)]) == 0

    runs = tmp_path / "runs"
    (runs / "carpet" / "train").mkdir(parents=True)
    shutil.copy(trained, runs / "carpet" / "train" / "model.pt")
    tasks.calibrate.fn(flows.resolve_config(params).to_dict(), "carpet", str(runs))  # the task's body
    task_out = runs / "carpet"

    assert trained.read_bytes() == before
    shipped = read_bundle_raw(cli_out / "model.pt")
    assert shipped["config"]["infer"]["median_kernel"] == 3  # the params' settings, not the training ones
    assert shipped["config"]["calibrate"]["target_image_far"] == 0.1
    for other in (stage_out, task_out):
        _same_bundle(cli_out / "model.pt", other / "model.pt")
        assert json.loads((cli_out / "calibration.json").read_text()) == \
            json.loads((other / "calibration.json").read_text())
