"""ONNX / TorchScript export of a bundle: the eq. 26 map matches the torch model within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sidn.bundle import load_bundle, save_bundle
from sidn.config import SIDNConfig
from sidn.model.sidn import SIDN

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from sidn.export import OnnxModel, OnnxPredictor, export_onnx, export_torchscript, read_onnx_metadata  # noqa: E402

SIZE = 64
TOL = 1e-4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Randomly initialised SIDN (paper C=16, K=12) at 64 px with non-trivial BN stats and a threshold."""
    cfg = SIDNConfig()
    cfg.data.image_size = SIZE
    torch.manual_seed(0)
    model = SIDN(cfg.model)
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.rand(4, 1, SIZE, SIZE))
    model.eval()
    model.threshold.fill_(0.5)
    model.score_threshold.fill_(0.6)
    path = tmp_path_factory.mktemp("export") / "model.pt"
    save_bundle(model, cfg, path)
    return path


@pytest.fixture(scope="module")
def onnx_file(bundle):
    return export_onnx(bundle, bundle.parent / "model.onnx", image_size=SIZE)


def _torch_fused(bundle, x):
    model, _, _ = load_bundle(bundle)
    with torch.no_grad():
        return model(x).fused.numpy()


def test_onnx_parity_dynamic_batch(bundle, onnx_file):
    import onnx

    proto = onnx.load(str(onnx_file))
    assert proto.opset_import[0].version == 17
    torch.manual_seed(1)
    worst = 0.0
    for batch in (1, 3):
        x = torch.rand(batch, 1, SIZE, SIZE)
        ref = _torch_fused(bundle, x)
        out = OnnxModel(onnx_file)(x).fused.numpy()
        assert out.shape == ref.shape == (batch, 1, SIZE, SIZE)
        worst = max(worst, float(np.abs(out - ref).max()))
    print(f"ONNX max abs diff (fused map, 64 px): {worst:.3g}")
    assert worst < TOL


def test_onnx_metadata_and_threshold(onnx_file):
    meta = read_onnx_metadata(onnx_file)
    assert meta["sidn.format"] == "sidn-onnx/1"
    assert meta["sidn.image_size"] == str(SIZE)
    m = OnnxModel(onnx_file)
    assert float(m.threshold) == pytest.approx(0.5) and m.is_calibrated
    assert float(OnnxModel(onnx_file, threshold=0.7).threshold) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="exported for 64x64"):
        m(torch.rand(1, 1, 32, 32))


def test_onnx_predictor_matches_torch_predictor(bundle, onnx_file):
    from sidn.inference import Predictor

    model, cfg, _ = load_bundle(bundle)
    rng = np.random.default_rng(0)
    images = [rng.random((SIZE, SIZE), dtype=np.float32), rng.random((100, 80), dtype=np.float32)]
    ref = Predictor(model, cfg.infer, SIZE).predict(images)
    got = OnnxPredictor(onnx_file, bundle).predict(images)
    got_meta = OnnxPredictor(onnx_file).predict(images)  # config from the ONNX metadata
    for r, g, gm in zip(ref, got, got_meta):
        assert g.anomaly_map.shape == r.anomaly_map.shape
        assert np.abs(g.anomaly_map - r.anomaly_map).max() < TOL
        assert np.abs(gm.anomaly_map - r.anomaly_map).max() < TOL
        assert g.threshold == pytest.approx(0.5) and gm.threshold == pytest.approx(0.5)


def test_torchscript_parity(bundle, tmp_path):
    path = export_torchscript(bundle, tmp_path / "model.ts", image_size=SIZE)
    extra = {"sidn.json": ""}
    ts = torch.jit.load(str(path), _extra_files=extra)
    import json

    meta = json.loads(extra["sidn.json"])
    assert meta["threshold"] == pytest.approx(0.5) and meta["image_size"] == SIZE
    torch.manual_seed(2)
    for batch in (1, 3):
        x = torch.rand(batch, 1, SIZE, SIZE)
        with torch.no_grad():
            out = ts(x).numpy()
        assert np.abs(out - _torch_fused(bundle, x)).max() < TOL


def test_export_rejects_bad_size(bundle, tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        export_onnx(bundle, tmp_path / "x.onnx", image_size=50)
    assert not (tmp_path / "x.onnx").exists()


def _other_bundle(path):
    """Same config as ``bundle``, other weights."""
    cfg = SIDNConfig()
    cfg.data.image_size = SIZE
    torch.manual_seed(99)
    model = SIDN(cfg.model).eval()
    model.threshold.fill_(0.5)
    save_bundle(model, cfg, path)
    return path


def _without_hash(onnx_file, dst):
    import onnx

    proto = onnx.load(str(onnx_file))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != "sidn.weights_sha256"]
    del proto.metadata_props[:]
    for key, value in keep:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dst))
    return dst


def test_onnx_carries_the_bundle_weights_hash(bundle, onnx_file):
    from sidn.weights_hash import weights_sha256

    assert read_onnx_metadata(onnx_file)["sidn.weights_sha256"] == weights_sha256(load_bundle(bundle)[0].state_dict())


def test_predict_refuses_onnx_of_another_bundle(bundle, onnx_file, tmp_path, capsys):
    import cv2

    from sidn.bundle import set_bundle_thresholds
    from sidn.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), (np.random.default_rng(0).random((SIZE, SIZE)) * 255).astype(np.uint8))
    other = _other_bundle(tmp_path / "other.pt")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(other), str(photos), "--out", str(out), "--onnx", str(onnx_file)]) == 2
    err = capsys.readouterr().err
    assert str(onnx_file) in err and str(other) in err and "other weights" in err and "sidn export" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="other weights"):
        OnnxPredictor(onnx_file, other)

    old = _without_hash(onnx_file, tmp_path / "old.onnx")  # exported before the hash existed
    assert main(["predict", "--model", str(bundle), str(photos), "--out", str(out), "--onnx", str(old)]) == 2
    err = capsys.readouterr().err
    assert str(old) in err and "export it again" in err and not out.exists()

    recalibrated = tmp_path / "recalibrated.pt"  # a new threshold does not need a new export
    recalibrated.write_bytes(bundle.read_bytes())
    set_bundle_thresholds(recalibrated, threshold=0.45)
    assert main(["predict", "--model", str(recalibrated), str(photos), "--out", str(out),
                 "--onnx", str(onnx_file)]) == 0
    assert (out / "predictions.csv").is_file()
