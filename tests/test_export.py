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
