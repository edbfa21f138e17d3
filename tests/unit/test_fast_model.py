"""Fast inference form (sidn.fast_model): BN folding, bf16 + fp32 tail, oneDNN fusion, Predictor use.

Tiny inputs, C = 16 channels (smaller counts are untypical for oneDNN's kernels), BatchNorm
statistics randomised and the SM heads scaled so the logits spread like a trained model's
(otherwise the fused map is ~constant and a 1e-2 check says nothing).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import sidn.fast_model as fm
from sidn.config import InferConfig, ModelConfig
from sidn.fast_choice import best_mode, make_fast
from sidn.fast_model import fast_mode, FastSIDN, float_fast_mode, fold_batchnorm, GemmHead, MAX_FAST_DIFF, mode_of
from sidn.inference import Predictor, anomaly_maps
from sidn.model import SIDN, SIDNOutput

SIZE = 64


def _model(seed: int = 0) -> SIDN:
    """Eval-mode SIDN (C=16) with random BN statistics/affines and logits of std ~3."""
    torch.manual_seed(seed)
    model = SIDN(ModelConfig(channels=16, clusters=4)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(0.2 * torch.randn(n, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(n, generator=g))
            bn.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
            bn.bias.copy_(0.1 * torch.randn(n, generator=g))
        out = model(_images(2, seed + 1))
        for sm, logits in ((model.sm_t, out.texture_logits), (model.sm_d, out.defect_logits)):
            k = 3.0 / float(logits.std())
            sm.head.weight.mul_(k)
            sm.head.bias.copy_(sm.head.bias * k - (k - 1.0) * float(logits.mean()))
    return model


def _images(n: int, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> torch.Tensor:
    return torch.rand(n, 1, *size, generator=torch.Generator().manual_seed(seed))


def _fused(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x).fused


def test_fold_batchnorm_preserves_fp32_outputs() -> None:
    model = _model()
    x = _images(3, 7)
    with torch.inference_mode():
        ref = model(x)
        folded_model = fold_batchnorm(model)
        got = folded_model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded_model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    assert float(ref.fused.std()) > 0.1  # a map that varies, so the comparison means something
    for f in dataclasses.fields(SIDNOutput):
        a, b = getattr(ref, f.name), getattr(got, f.name)
        scale = float(a.abs().max())
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, scale), f.name


def test_fast_model_keeps_the_output_contract_and_tolerance() -> None:
    model = _model()
    fast = make_fast(model)  # no int8 calibration: the float fast mode
    assert isinstance(fast, FastSIDN) and mode_of(fast) == float_fast_mode("cpu") == fast.mode
    assert sum(isinstance(m, GemmHead) for m in fast.modules()) == 2  # both SM heads
    x = _images(4, 3)
    with torch.inference_mode():
        ref = model(x)
    out = fast(x)
    assert isinstance(out, SIDNOutput)
    for f in dataclasses.fields(SIDNOutput):
        a, b = getattr(ref, f.name), getattr(out, f.name)
        assert b.dtype == torch.float32 and b.shape == a.shape, f.name
    assert float(ref.fused.std()) > 0.1
    assert float((out.fused - ref.fused).abs().max()) <= MAX_FAST_DIFF
    assert make_fast(fast) is fast  # already prepared
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fast_model_other_batch_sizes_and_image_sizes() -> None:
    """The oneDNN weights are laid out for the first shape seen; other shapes give the same maps."""
    model = _model(1)
    fast = make_fast(model)
    for shape in [(1, SIZE, SIZE), (3, SIZE, SIZE), (2, 32, 48)]:
        x = _images(shape[0], 5, shape[1:])
        diff = float((_fused(fast, x) - _fused(model, x)).abs().max())
        assert diff <= MAX_FAST_DIFF, (shape, diff)


def test_mode_names_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(2)
    x = _images(2, 9)
    ref = _fused(model, x)
    native = fm.bf16_autocast_supported("cpu", require_native=True)
    onednn = torch.backends.mkldnn.is_available()
    want = "foldbn" + ("+bf16+fp32tail" if native else "") + "+channels_last" + ("+onednn" if onednn else "")
    assert float_fast_mode("cpu") == want
    from sidn.int8.scheme import int8_mode_name, int8_scheme

    scheme = int8_scheme("cpu")  # the best mode: int8 where oneDNN runs it (served once calibrated)
    assert best_mode("cpu") == (int8_mode_name(scheme) if scheme else want)
    assert fast_mode("cpu") == want  # what a model without an int8 calibration gets
    assert float_fast_mode("meta") == best_mode("meta") == "foldbn+channels_last"

    monkeypatch.setattr(fm, "bf16_autocast_supported", lambda *a, **k: False)  # no native bf16: fp32
    fast = make_fast(model)
    assert "bf16" not in fast.mode.split("+") and float((_fused(fast, x) - ref).abs().max()) <= 1e-4

    monkeypatch.undo()
    monkeypatch.setattr(fm, "_onednn_ok", lambda device: False)  # no oneDNN ops: plain modules
    fast = make_fast(model)
    assert "onednn" not in fast.mode.split("+") and not any(isinstance(m, fm.FusedConv) for m in fast.modules())
    assert float((_fused(fast, x) - ref).abs().max()) <= MAX_FAST_DIFF


def test_non_sidn_models_are_left_alone() -> None:
    other = nn.Conv2d(1, 1, 1)
    assert make_fast(other) is other and mode_of(other) == "model"


def test_predictor_fast_serves_the_shared_fast_model() -> None:
    model = _model(3)
    infer = InferConfig(median_kernel=0, morph_kernel=0, min_region_area=0)
    fast = Predictor(model, infer, SIZE, fast=True)
    plain = Predictor(model, infer, SIZE)
    assert isinstance(fast.net, FastSIDN) and fast.fast_mode == float_fast_mode("cpu")
    assert plain.net is model and plain.fast_mode == "model"
    images = [img[0].numpy() for img in _images(3, 11)] + [_images(1, 12, (100, 90))[0, 0].numpy()]
    for a, b in zip(fast.maps(images), plain.maps(images)):
        assert a.shape == b.shape and float(np.abs(a - b).max()) <= MAX_FAST_DIFF
    batch = _images(2, 13)[:, 0].numpy()
    diff = np.abs(anomaly_maps(model, batch, fast=True) - anomaly_maps(model, batch)).max()
    assert diff <= MAX_FAST_DIFF
