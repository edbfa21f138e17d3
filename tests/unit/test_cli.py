"""`sidn` CLI end to end on tiny images: train -> calibrate -> evaluate -> predict."""

import json
from pathlib import Path

import cv2
import pandas as pd
import pytest

from helpers.data import make_mvtec_tree
from sidn.cli import main
from sidn.int8.scheme import int8_scheme

TINY = ["data.image_size=64", "train.steps=100", "train.batch_size=8", "train.val_every=50", "train.lr=0.001",
        "train.amp=off", "dgm.val_images=16", "data.holdout_fraction=0.25", "data.min_train_images=4"]


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.mark.slow
def test_train_calibrate_evaluate_predict(tmp_path: Path) -> None:
    root = make_mvtec_tree(tmp_path / "data", "carpet", n_train=16, n_test_good=4, defects={"cut": 4}, size=64)
    data = str(Path(root).parent) if Path(root).name == "carpet" else str(root)
    run = tmp_path / "run"
    assert main(["train", "--data", data, "--category", "carpet", "--out", str(run / "train"), "--quiet",
                 "--params", str(tmp_path / "none.yaml")] + _sets(TINY)) == 2  # missing params file: clear error
    assert main(["train", "--data", data, "--category", "carpet", "--out", str(run / "train"), "--quiet"]
                + _sets(TINY)) == 0
    model = run / "train" / "model.pt"
    for name in ("model.pt", "checkpoint.pt", "config.yaml", "history.csv"):
        assert (run / "train" / name).is_file()

    # an uncalibrated model refuses to produce masks
    assert main(["predict", "--model", str(model), str(Path(data) / "carpet" / "test"), "--out", str(run / "p0")]) == 2

    trained = model.read_bytes()
    assert main(["calibrate", "--model", str(model), "--category", "carpet", "--out", str(run)]) == 0
    assert model.read_bytes() == trained  # the trained model is not modified: the calibrated copy is run/model.pt
    model = run / "model.pt"
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["threshold"] is not None
    int8_here = int8_scheme("cpu") is not None
    assert ("int8" in calibration) == int8_here  # the fast mode is calibrated with the threshold
    if int8_here:
        assert calibration["int8"]["variants"] and all(
            "pixel_auroc_delta" in v and "passed" in v for v in calibration["int8"]["variants"].values())

    assert main(["evaluate", "--model", str(model), "--category", "carpet", "--out", str(run / "eval")]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert {"pixel_auroc", "aupro", "image_auroc", "per_defect"} <= set(metrics)
    assert "cut" in metrics["per_defect"]
    assert metrics["pixel_auroc"] > 0.5  # the easy planted defects are found better than chance
    assert list((run / "eval" / "overlays").glob("*.png"))

    out = run / "pred"
    assert main(["predict", "--model", str(model), str(Path(data) / "carpet" / "test"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 8
    mask = cv2.imread(str(next((out / "masks").glob("*.png"))), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (64, 64) and set(mask.ravel()) <= {0, 255}
    assert json.loads((out / "predictions.json").read_text())["images"][0]["regions"] is not None
    assert json.loads((out / "predictions.json").read_text())["fast_mode"] == "model"

    # --fast: int8 where the bundle's calibration passed parity, else the float fast mode, named with the reason
    fast = run / "pred_fast"
    assert main(["predict", "--fast", "--model", str(model), str(Path(data) / "carpet" / "test"), "--out", str(fast)]) == 0
    doc = json.loads((fast / "predictions.json").read_text())
    passed = int8_here and any(v["passed"] for v in calibration["int8"]["variants"].values())
    assert doc["fast_mode"].startswith("int8") == passed
    assert (doc["fast_note"] == "") == (passed or not int8_here)
    assert len(pd.read_csv(fast / "predictions.csv")) == len(table)
    assert main(["predict", "--fast", "--onnx", str(run / "x.onnx"), "--model", str(model), str(data),
                 "--out", str(run / "p1")]) == 2


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_bad_data_root_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path), "--category", "carpet", "--out", str(tmp_path / "o"),
                 "--quiet"] + _sets(TINY)) == 2
    assert "carpet" in capsys.readouterr().err
