"""Inference / post-processing (Sec. III-E): sizes, median filter, masks, regions, tiling, calibration state."""

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from sidn.config import InferConfig, ModelConfig
from sidn.inference import (
    Prediction,
    Predictor,
    UncalibratedModelError,
    anomaly_maps,
    median_filter,
    postprocess,
    tile_positions,
    tile_weight,
    tiled_anomaly_map,
)


class PointwiseModel(nn.Module):
    """Stand-in for SIDN (contract): forward -> object with ``.fused`` [B,1,H,W]; NaN threshold buffers."""

    def __init__(self, fn=lambda x: x, multiple: int = 16) -> None:
        super().__init__()
        self.fn = fn
        self.multiple = multiple
        self.scale = nn.Parameter(torch.ones(()))
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.register_buffer("score_threshold", torch.tensor(float("nan")))

    def forward(self, x):
        assert x.ndim == 4 and x.shape[1] == 1
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(f"size {tuple(x.shape[-2:])} not a multiple of {self.multiple}")
        return SimpleNamespace(fused=self.fn(x) * self.scale)


def _cfg(**kw) -> InferConfig:
    base = dict(median_kernel=0, map_sigma=0.0, morph_kernel=0, min_region_area=1, tile=False, tile_overlap=16,
                batch_size=4)
    base.update(kw)
    return InferConfig(**base)


def _square_image(size=64, box=(20, 30, 10, 10), value=0.9, bg=0.1):
    img = np.full((size, size), bg, np.float32)
    y, x, h, w = box
    img[y : y + h, x : x + w] = value
    return img


def test_outputs_have_original_size():
    rng = np.random.default_rng(0)
    shapes = [(50, 70), (64, 64), (130, 90), (200, 33)]
    imgs = [rng.random(s).astype(np.float32) for s in shapes]
    preds = Predictor(PointwiseModel(), _cfg(median_kernel=3, morph_kernel=3), 64, threshold=0.5).predict(imgs)
    for p, s in zip(preds, shapes):
        assert p.anomaly_map.shape == s and p.anomaly_map.dtype == np.float32
        assert p.mask.shape == s and p.mask.dtype == np.uint8


def test_median_filter_is_applied():
    img = np.full((64, 64), 0.2, np.float32)
    img[10, 10] = 1.0  # salt pixel
    model = PointwiseModel()
    raw = Predictor(model, _cfg(median_kernel=0), 64).predict([img])[0]
    smooth = Predictor(model, _cfg(median_kernel=5), 64).predict([img])[0]
    assert raw.anomaly_map[10, 10] == pytest.approx(1.0) and raw.score == pytest.approx(1.0)
    assert smooth.anomaly_map[10, 10] == pytest.approx(0.2) and smooth.score == pytest.approx(0.2)


def test_map_is_blurred_after_the_median_at_network_resolution():
    img = np.full((64, 64), 0.2, np.float32)
    img[20:30, 20:30] = 1.0
    img[50, 50] = 1.0  # salt pixel: the median removes it before the blur could spread it
    model = PointwiseModel()
    sharp = Predictor(model, _cfg(median_kernel=3), 32).predict([img])[0].anomaly_map
    blurred = Predictor(model, _cfg(median_kernel=3, map_sigma=2.0), 32).predict([img])[0].anomaly_map
    small = median_filter(cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA), 3)
    expected = cv2.resize(cv2.GaussianBlur(small, (0, 0), 2.0), (64, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(blurred, expected, atol=1e-6)
    assert blurred.max() < sharp.max() and blurred[50, 50] == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="map_sigma"):
        Predictor(model, _cfg(map_sigma=-1.0), 32).predict([img])


@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_median_filter_matches_reference(k):
    a = np.random.default_rng(k).random((23, 31)).astype(np.float32)
    out = median_filter(a, k)
    r = k // 2
    p = np.pad(a, r, mode="edge")  # cv2.medianBlur replicates the border
    ref = np.array([[np.median(p[y : y + k, x : x + k]) for x in range(a.shape[1])] for y in range(a.shape[0])])
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-7)
    if k > 5:  # numpy path agrees with OpenCV's uint8 path on uint8-valued input
        q = (a * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(median_filter(q.astype(np.float32), k), cv2.medianBlur(q, k).astype(np.float32))
    with pytest.raises(ValueError, match="odd"):
        median_filter(a, 4)


def test_mask_binary_regions_and_score():
    img = _square_image()
    img[50:52, 5:7] = 0.8  # 2x2 blob, smaller than min_region_area
    pred = Predictor(PointwiseModel(), _cfg(median_kernel=3, morph_kernel=3, min_region_area=10), 64,
                     threshold=0.5).predict([img])[0]
    assert set(np.unique(pred.mask)) == {0, 1}
    assert pred.score == pytest.approx(float(pred.anomaly_map.max()))
    assert pred.defective is True and len(pred.regions) == 1
    r = pred.regions[0]
    assert set(r) == {"x", "y", "w", "h", "area", "max_score"}
    assert (r["x"], r["y"], r["w"], r["h"]) == (30, 20, 10, 10) and r["area"] == int(pred.mask.sum())
    assert r["max_score"] == pytest.approx(0.9) and pred.mask[50:52, 5:7].sum() == 0
    assert pred.threshold == 0.5


def test_min_region_area_and_morphology():
    amap = np.zeros((40, 40), np.float32)
    amap[2:5, 2:5] = 1.0  # area 9
    amap[20:24, 20:24] = 1.0  # area 16
    amap[10, 30] = 1.0  # single pixel: removed by opening
    mask, regions = postprocess(amap, 0.5, _cfg(morph_kernel=0, min_region_area=10))
    assert [r["area"] for r in regions] == [16] and mask.sum() == 16
    mask, regions = postprocess(amap, 0.5, _cfg(morph_kernel=3, min_region_area=1))
    assert mask[10, 30] == 0 and len(regions) == 2
    mask, regions = postprocess(amap, 1.0, _cfg())  # strict ">": nothing above 1.0
    assert mask.sum() == 0 and regions == []


def test_uncalibrated_model_gives_maps_but_no_masks():
    model = PointwiseModel()
    pred = Predictor(model, _cfg(), 64)
    out = pred.predict([_square_image()])[0]
    assert isinstance(out, Prediction) and out.mask is None and out.regions == [] and out.defective is None
    assert out.score == pytest.approx(0.9)
    with pytest.raises(UncalibratedModelError, match="sidn calibrate"):
        pred.require_threshold()
    with pytest.raises(UncalibratedModelError):
        pred.predict_masks([_square_image()])
    model.threshold.fill_(0.5)  # calibration written into the model is picked up
    assert pred.require_threshold() == 0.5
    assert pred.predict_masks([_square_image()])[0].sum() == 100
    assert Predictor(model, _cfg(), 64, threshold=0.95).predict([_square_image()])[0].mask.sum() == 0


def test_anomaly_maps_batches_and_restores_mode():
    model = PointwiseModel(fn=lambda x: torch.sigmoid(4 * x - 2))
    model.train()
    x = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    out = anomaly_maps(model, x, batch_size=2)
    assert out.shape == (5, 32, 32) and out.dtype == np.float32 and model.training
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-(4 * x - 2))), atol=1e-6)
    fast = anomaly_maps(model, x, batch_size=3, fast=True)
    np.testing.assert_allclose(fast, out, atol=2e-2)


def test_tile_positions_and_weight():
    assert tile_positions(64, 64, 16) == [0]
    pos = tile_positions(150, 64, 16)
    assert pos[0] == 0 and pos[-1] == 150 - 64 and all(b - a <= 48 for a, b in zip(pos, pos[1:]))
    w = tile_weight(64, 16)
    assert w.shape == (64, 64) and w.min() > 0 and w[32, 32] == 1.0


def test_tiling_constant_model_matches_non_tiled():
    model = PointwiseModel(fn=lambda x: torch.full_like(x, 0.3))
    img = np.random.default_rng(1).random((150, 200)).astype(np.float32)
    tiled = Predictor(model, _cfg(tile=True, median_kernel=5), 64).predict([img])[0]
    plain = Predictor(model, _cfg(tile=False, median_kernel=5), 64).predict([img])[0]
    assert tiled.anomaly_map.shape == plain.anomaly_map.shape == (150, 200)
    np.testing.assert_allclose(tiled.anomaly_map, plain.anomaly_map, atol=1e-6)


def test_tiling_pointwise_model_is_full_resolution():
    """With a pixel-wise model, overlapping tiles averaged by weights reproduce f(image) exactly."""
    model = PointwiseModel(fn=lambda x: x**2)
    rng = np.random.default_rng(2)
    for shape in [(150, 200), (40, 130), (64, 100)]:
        img = rng.random(shape).astype(np.float32)
        np.testing.assert_allclose(tiled_anomaly_map(model, img, 64, 16, batch_size=3), img**2, atol=1e-6)
        pred = Predictor(model, _cfg(tile=True), 64).predict([img])[0]
        assert pred.anomaly_map.shape == shape
        np.testing.assert_allclose(pred.anomaly_map, img**2, atol=1e-6)
    with pytest.raises(ValueError, match="tile_overlap"):
        tiled_anomaly_map(model, rng.random((100, 100)).astype(np.float32), 64, 64)


def test_bad_inputs():
    with pytest.raises(ValueError, match="image 0: expected a gray image"):
        Predictor(PointwiseModel(), _cfg(), 64).predict([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="multiple of 16"):
        Predictor(PointwiseModel(), _cfg(), 60)
    u8 = (_square_image() * 255).astype(np.uint8)  # 8-bit input is scaled to [0, 1]
    assert Predictor(PointwiseModel(), _cfg(), 64).predict([u8])[0].score == pytest.approx(229 / 255)


def test_real_sidn_64px():
    torch.manual_seed(0)
    from sidn.model import SIDN

    model = SIDN(ModelConfig(channels=4, clusters=4))
    assert math.isnan(float(model.threshold))
    rng = np.random.default_rng(0)
    imgs = [rng.random((64, 64)).astype(np.float32), rng.random((80, 100)).astype(np.float32)]
    pred = Predictor(model, _cfg(median_kernel=3, morph_kernel=3), 64)
    out = pred.predict(imgs)
    assert [p.anomaly_map.shape for p in out] == [(64, 64), (80, 100)]
    assert all(p.mask is None and 0.0 <= p.anomaly_map.min() and p.score <= 1.0 for p in out)
    with torch.inference_mode():
        ref = model(torch.from_numpy(imgs[0])[None, None]).fused[0, 0].numpy()
    np.testing.assert_allclose(anomaly_maps(model, imgs[0][None], batch_size=1), ref[None], atol=1e-5)
    np.testing.assert_allclose(anomaly_maps(model, imgs[0][None], batch_size=1, fast=True), ref[None], atol=0.05)
    model.threshold.fill_(float(np.median(ref)))
    assert pred.predict(imgs[:1])[0].mask is not None
