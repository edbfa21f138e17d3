"""Model bundle (sidn.bundle): round trip, thresholds, clear errors for bad files."""

from __future__ import annotations

import math

import pytest
import torch

from sidn.bundle import (
    BUNDLE_FORMAT,
    BundleError,
    load_bundle,
    read_bundle_raw,
    save_bundle,
    set_bundle_thresholds,
)
from sidn.config import SIDNConfig
from sidn.model.sidn import SIDN


def _small_cfg() -> SIDNConfig:
    cfg = SIDNConfig()
    cfg.model.channels = 4
    cfg.model.clusters = 3
    cfg.data.image_size = 64
    cfg.train.steps = 7
    return cfg


@pytest.fixture()
def saved(tmp_path):
    cfg = _small_cfg()
    torch.manual_seed(3)
    model = SIDN(cfg.model)
    with torch.no_grad():  # non-default BN statistics so they are checked too
        model.train()
        model(torch.rand(2, 1, 64, 64))
    model.eval()
    path = tmp_path / "model.pt"
    save_bundle(model, cfg, path, extra={"step": 5, "val_loss": 0.25, "tags": ["a", "b"], "nested": {"x": None}})
    return model, cfg, path


def test_round_trip_weights_config_extra(saved):
    model, cfg, path = saved
    loaded, cfg2, extra = load_bundle(path)
    assert not loaded.training
    sd1, sd2 = model.state_dict(), loaded.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]) or (sd1[k].isnan().all() and sd2[k].isnan().all()), k
    assert cfg2.to_dict() == cfg.to_dict()
    assert extra == {"step": 5, "val_loss": 0.25, "tags": ["a", "b"], "nested": {"x": None}}
    # uncalibrated thresholds stay NaN
    assert math.isnan(float(loaded.threshold)) and math.isnan(float(loaded.score_threshold))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x).fused, loaded(x).fused)


def test_raw_layout_is_primitive(saved):
    _, _, path = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == BUNDLE_FORMAT
    assert set(raw) == {"format", "state_dict", "config", "extra"}


def test_set_thresholds_in_place(saved):
    _, _, path = saved
    set_bundle_thresholds(path, threshold=0.42, extra_update={"calibration": "image_far"})
    model, _, extra = load_bundle(path)
    assert float(model.threshold) == pytest.approx(0.42)
    assert math.isnan(float(model.score_threshold))
    assert extra["calibration"] == "image_far" and extra["step"] == 5
    set_bundle_thresholds(path, threshold=float("nan"))
    assert not load_bundle(path)[0].is_calibrated


def test_extra_must_be_primitive(tmp_path):
    cfg = _small_cfg()
    with pytest.raises(TypeError, match="only primitives"):
        save_bundle(SIDN(cfg.model), cfg, tmp_path / "m.pt", extra={"bad": object()})
    assert not (tmp_path / "m.pt").exists()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(BundleError, match="not found") as ei:
        load_bundle(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("content", [b"", b"this is not a torch file", b"PK\x03\x04garbage"])
def test_garbage_file_names_path(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(BundleError) as ei:
        load_bundle(path)
    assert str(ei.value).startswith(str(path))


def test_truncated_bundle(saved):
    _, _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="corrupt") as ei:
        load_bundle(path)
    assert str(path) in str(ei.value)


def test_wrong_format_tag(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something/9", "state_dict": {}, "config": {}, "extra": {}}, path)
    with pytest.raises(BundleError, match="wrong bundle format") as ei:
        load_bundle(path)
    assert str(path) in str(ei.value)
    torch.save({"model": {}, "optimizer": {}, "step": 3}, path)
    with pytest.raises(BundleError, match="training checkpoint"):
        load_bundle(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(BundleError, match="top level is list"):
        load_bundle(path)


def test_state_dict_mismatch(saved, tmp_path):
    model, cfg, path = saved
    raw = read_bundle_raw(path)
    raw["config"]["model"]["channels"] = 8  # weights are for channels=4
    bad = tmp_path / "mismatch.pt"
    torch.save(raw, bad)
    with pytest.raises(BundleError, match="does not match") as ei:
        load_bundle(bad)
    assert str(bad) in str(ei.value)


def test_invalid_config_in_bundle(saved, tmp_path):
    _, _, path = saved
    raw = read_bundle_raw(path)
    raw["config"]["model"]["bogus_key"] = 1
    bad = tmp_path / "badcfg.pt"
    torch.save(raw, bad)
    with pytest.raises(BundleError, match="bogus_key"):
        load_bundle(bad)


def test_extra_scalars_are_converted_to_plain_types(tmp_path):
    import numpy as np

    cfg = _small_cfg()
    path = tmp_path / "m.pt"
    save_bundle(SIDN(cfg.model), cfg, path,
                extra={"torch": torch.__version__, "auc": np.float32(0.5), "n": np.int64(3), "t": (1, 2)})
    extra = load_bundle(path)[2]  # weights_only=True load succeeds
    assert extra == {"torch": str(torch.__version__), "auc": 0.5, "n": 3, "t": [1, 2]}
    assert type(extra["torch"]) is str and type(extra["n"]) is int


class _RunsCode:
    """Pickles as a call to ``os.system``: what a malicious "model.pt" would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_unsafe_bundle_refused_without_unsafe_hint(saved, tmp_path):
    _, _, path = saved
    raw = read_bundle_raw(path)
    marker = tmp_path / "code_ran"
    raw["extra"]["payload"] = _RunsCode(marker)
    evil = tmp_path / "evil.pt"
    torch.save(raw, evil)
    with pytest.raises(BundleError) as info:
        load_bundle(evil)
    msg = str(info.value)
    assert msg.startswith(str(evil)) and "refused" in msg and "system" in msg  # names the file and the problem
    for hint in ("weights_only", "safe_globals", "trusted source"):
        assert hint not in msg, f"the message repeats torch's unsafe hint ({hint}): {msg}"
    assert info.value.__cause__ is None  # the torch error (with the hint) is not chained either
    assert not marker.exists()


def test_non_finite_weights_refused(saved, tmp_path):
    _, _, path = saved
    for value in (float("nan"), float("inf")):
        raw = read_bundle_raw(path)
        raw["state_dict"]["fem.block1.conv1.weight"][0, 0, 0, 0] = value
        bad = tmp_path / "diverged.pt"
        torch.save(raw, bad)
        with pytest.raises(BundleError, match="fem.block1.conv1.weight") as info:
            load_bundle(bad)
        assert str(info.value).startswith(str(bad)) and "1 NaN/inf" in str(info.value)
    raw = read_bundle_raw(path)  # NaN thresholds (uncalibrated) are fine, an infinite one is not
    raw["state_dict"]["threshold"] = torch.tensor(float("inf"))
    torch.save(raw, bad)
    with pytest.raises(BundleError, match="'threshold' is infinite"):
        load_bundle(bad)


def test_weights_sha256_ignores_calibration_and_layout(saved):
    from sidn.weights_hash import weights_sha256

    model, _, path = saved
    digest = weights_sha256(model.state_dict())
    assert len(digest) == 64
    assert weights_sha256(load_bundle(path)[0].state_dict()) == digest
    set_bundle_thresholds(path, threshold=0.3, score_threshold=0.4)  # recalibrating keeps the hash
    assert weights_sha256(load_bundle(path)[0].state_dict()) == digest
    contiguous = {k: v.contiguous() for k, v in model.state_dict().items()}  # channels_last or not
    assert weights_sha256(contiguous) == digest
    changed = dict(contiguous)
    changed["fem.stem.0.weight"] = changed["fem.stem.0.weight"] + 1e-6
    assert weights_sha256(changed) != digest
