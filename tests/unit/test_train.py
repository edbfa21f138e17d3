"""Training loop (sidn.train), device helpers and benchmark: tiny 64 px runs, single thread."""

from __future__ import annotations

import dataclasses
import math
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from sidn.bundle import load_bundle
from sidn.config import SIDNConfig
from sidn.batches import augment_dihedral, random_crops
from sidn.train import TrainingDiverged, TrainingInterrupted, train
from sidn.train_checkpoint import HISTORY_COLUMNS, load_checkpoint

from helpers.training import SIZE, TRAIN, VAL, striped_images, tiny_config

def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        ta, tb = a[k], b[k]
        same = torch.equal(ta, tb) or (ta.is_floating_point() and torch.equal(ta.isnan(), tb.isnan())
                                       and torch.equal(ta.nan_to_num(), tb.nan_to_num()))
        assert same, f"state differs at {k}"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 6-step run (shared by the resume/interrupt tests)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref")
    result = train(tiny_config(6), TRAIN, VAL, out, progress=False)
    return out, result


def test_outputs_written(reference_run):
    out, result = reference_run
    for name in ("model.pt", "checkpoint.pt", "config.yaml", "history.csv"):
        assert (out / name).is_file(), name
    assert result.steps_done == 6
    assert result.best_step in (3, 6)
    assert math.isfinite(result.best_val_loss)
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == HISTORY_COLUMNS
    assert hist["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert hist["total"].notna().all() and hist["radii_t_mean"].notna().any()
    val_rows = hist[hist["val_loss"].notna()]
    assert val_rows["step"].tolist() == [3, 6]
    assert val_rows["val_pixel_auroc"].between(0, 1).all()
    assert len(result.history) == 6
    # config.yaml is the resolved config and loads back
    assert SIDNConfig.from_yaml(out / "config.yaml").to_dict() == tiny_config(6).to_dict()
    model, cfg, extra = load_bundle(out / "model.pt")
    assert cfg.model.channels == 16 and extra["step"] == result.best_step
    assert extra["val_loss"] == pytest.approx(result.best_val_loss)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 6


def test_resume_is_bit_identical(reference_run, tmp_path):
    ref_out, _ = reference_run
    train(tiny_config(3), TRAIN, VAL, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    result = train(tiny_config(6), TRAIN, VAL, tmp_path, resume=True, progress=False)
    assert result.steps_done == 6
    a = load_checkpoint(ref_out / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "checkpoint.pt")
    _assert_same_state(a["model"], b["model"])
    assert a["numpy_rng"] == b["numpy_rng"]
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    ha, hb = pd.read_csv(ref_out / "history.csv"), pd.read_csv(tmp_path / "history.csv")
    assert np.allclose(ha["total"], hb["total"], rtol=0, atol=0)


def test_sigterm_checkpoints_and_resumes(reference_run, tmp_path):
    ref_out, _ = reference_run

    def kill_at_4(step, row):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="SIGTERM") as ei:
        train(tiny_config(6), TRAIN, VAL, tmp_path, progress=False, callback=kill_at_4)
    assert signal.getsignal(signal.SIGTERM) == previous  # handler restored
    assert ei.value.step == 4 and "resume" in str(ei.value)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    assert pd.read_csv(tmp_path / "history.csv")["step"].tolist() == [1, 2, 3, 4]
    train(tiny_config(6), TRAIN, VAL, tmp_path, resume=True, progress=False)
    _assert_same_state(load_checkpoint(ref_out / "checkpoint.pt")["model"],
                       load_checkpoint(tmp_path / "checkpoint.pt")["model"])


def test_keyboard_interrupt_leaves_usable_checkpoint(tmp_path):
    def ctrl_c(step, row):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="checkpoint saved") as ei:
        train(tiny_config(6), TRAIN, VAL, tmp_path, progress=False, callback=ctrl_c)
    assert ei.value.checkpoint == tmp_path / "checkpoint.pt"
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 1
    assert all(torch.isfinite(v).all() for k, v in ckpt["model"].items() if v.is_floating_point()
               and "threshold" not in k)
    result = train(tiny_config(2), TRAIN, VAL, tmp_path, resume=True, progress=False)
    assert result.steps_done == 2


def test_nan_loss_raises_and_keeps_checkpoint(tmp_path, monkeypatch):
    import sidn.losses

    real = sidn.losses.SIDNLoss
    calls = {"n": 0}

    class NaNAtStep3(real):
        def forward(self, out, mask, model):
            terms = super().forward(out, mask, model)
            if torch.is_grad_enabled():  # training calls only (validation runs under no_grad)
                calls["n"] += 1
                if calls["n"] == 3:
                    return dataclasses.replace(terms, total=terms.total * float("nan"))
            return terms

    monkeypatch.setattr(sidn.losses, "SIDNLoss", NaNAtStep3)
    with pytest.raises(TrainingDiverged, match="step 3.*nan.*checkpoint"):
        train(tiny_config(6), TRAIN, VAL, tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 2  # the last good checkpoint
    assert all(torch.isfinite(v).all() for k, v in ckpt["model"].items() if v.is_floating_point()
               and "threshold" not in k)
    assert pd.read_csv(tmp_path / "history.csv")["step"].tolist() == [1, 2]


def test_resume_with_changed_model_config_fails(reference_run, tmp_path):
    import shutil

    ref_out, _ = reference_run
    shutil.copy(ref_out / "checkpoint.pt", tmp_path / "checkpoint.pt")
    cfg = tiny_config(8)
    cfg.model.clusters = 5
    with pytest.raises(ValueError, match="model.clusters"):
        train(cfg, TRAIN, VAL, tmp_path, resume=True, progress=False)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        train(tiny_config(1), TRAIN[0], VAL, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(tiny_config(1), TRAIN * 255, VAL, tmp_path, progress=False)
    with pytest.raises(ValueError, match="val_images"):
        train(tiny_config(1), TRAIN, VAL[:, :32, :32], tmp_path, progress=False)


def test_time_budget_and_no_validation(tmp_path):
    cfg = tiny_config(1000, max_minutes=1e-6)
    result = train(cfg, TRAIN, None, tmp_path, progress=False)
    assert result.stopped == "time" and result.steps_done < 1000
    assert (tmp_path / "model.pt").is_file()


def test_augment_dihedral_is_reproducible_and_content_preserving():
    imgs = striped_images(8, 5)
    a = augment_dihedral(imgs, np.random.default_rng(0))
    b = augment_dihedral(imgs, np.random.default_rng(0))
    assert np.array_equal(a, b)
    for x, y in zip(imgs, a):
        assert np.array_equal(np.sort(x.ravel()), np.sort(y.ravel()))
    rect = np.random.default_rng(1).random((3, 16, 32)).astype(np.float32)
    assert augment_dihedral(rect, np.random.default_rng(0)).shape == rect.shape


def test_device_helpers():
    from sidn.device import amp_enabled, autocast, select_device

    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda")
    assert amp_enabled("off", "cpu") is False
    with pytest.raises(ValueError, match="train.amp"):
        amp_enabled("fast", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
    with autocast("cpu", False):
        assert torch.ones(2).dtype == torch.float32


def test_bench_keys_tiny():
    from sidn.bench import REQUIRED_KEYS, format_bench, run_bench
    from sidn.fast_choice import best_mode
    from sidn.fast_model import fast_mode

    d = run_bench(image_size=SIZE, repeats=1, batch=2, matmul_size=128, train_repeats=1)
    for k in REQUIRED_KEYS:
        assert k in d, k
    assert d["max_abs_diff_fast"] <= 1e-2 and d["fast_within_tolerance"]
    # the bench times the mode the Predictor serves: int8 where it reached parity, else the float mode
    assert d["fast_mode"] in (fast_mode("cpu"), best_mode("cpu"))
    assert d["gflop_per_image"] > 0 and d["peak_rss_mb"] > 0
    assert "ms/image" in format_bench(d)


def test_random_crops_are_windows_of_their_images():
    imgs = np.arange(3 * 64 * 64, dtype=np.float32).reshape(3, 64, 64)
    crops = random_crops(imgs, 32, np.random.default_rng(0))
    assert crops.shape == (3, 32, 32)
    for img, crop in zip(imgs, crops):
        top, left = np.argwhere(img == crop[0, 0])[0]
        assert np.array_equal(img[top : top + 32, left : left + 32], crop)
    assert random_crops(imgs, 0, np.random.default_rng(0)) is imgs
    assert random_crops(imgs, 128, np.random.default_rng(0)) is imgs


def test_training_on_crops_keeps_a_whole_image_model(tmp_path):
    cfg = tiny_config(2, crop_size=32)
    train(cfg, TRAIN, None, tmp_path, progress=False)
    model, _, _ = load_bundle(tmp_path / "model.pt")
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 1, SIZE, SIZE)).fused.shape == (1, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="crop_size"):
        train(tiny_config(2, crop_size=40), TRAIN, None, tmp_path / "bad", progress=False)
