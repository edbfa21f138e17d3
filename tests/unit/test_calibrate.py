"""Threshold calibration: image FAR, pixel FAR, max-F1, method selection, JSON."""

import json
import math

import numpy as np
import pytest
import torch

from sidn.calibrate import (
    Calibration,
    binomial_upper,
    calibrate,
    critical_thresholds,
    threshold_for_count,
)
from sidn.config import CalibrateConfig, InferConfig
from sidn.inference import has_alarm


def _good_maps(n, rng, size=24):
    """Noise maps whose level varies per image, like the smoothed maps of good images."""
    return [(rng.random((size, size)) * rng.uniform(0.2, 0.6)).astype(np.float32) for _ in range(n)]


def _val_set(n, rng, size=24):
    maps, masks = [], []
    for _ in range(n):
        mk = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 8, 2)
        mk[y : y + 8, x : x + 8] = 1
        maps.append((rng.random((size, size)) * 0.4 + 0.5 * mk).astype(np.float32))
        masks.append(mk)
    return maps, masks


NO_POST = InferConfig(median_kernel=0, morph_kernel=0, min_region_area=1)
POST = InferConfig(median_kernel=0, morph_kernel=3, min_region_area=6)


@pytest.mark.parametrize("infer", [NO_POST, POST], ids=["raw", "morph"])
@pytest.mark.parametrize("target", [0.0, 0.05, 0.2])
def test_image_far_target_is_met(infer, target):
    rng = np.random.default_rng(0)
    good = _good_maps(40, rng)
    cal = calibrate(good, None, None, CalibrateConfig(method="image_far", target_image_far=target), infer)
    alarms = [has_alarm(m, cal.threshold, infer.morph_kernel, infer.min_region_area) for m in good]
    k = math.floor(target * 40 + 1e-9)
    assert sum(alarms) / 40 == cal.image_far <= target
    assert sum(alarms) == k  # distinct per-image levels: the target is used fully
    assert cal.n_good_images == 40 and cal.method == "image_far"
    # lowest such threshold: just below the next critical value, one more image alarms
    crit = np.sort(critical_thresholds(good, infer))[::-1]
    if k < 40:
        assert crit[k] <= cal.threshold < (crit[k - 1] if k else np.inf)


def test_image_far_generalises_on_fresh_images():
    rng = np.random.default_rng(1)
    cal = calibrate(_good_maps(300, rng, 12), None, None, CalibrateConfig(target_image_far=0.1), NO_POST)
    fresh = _good_maps(2000, rng, 12)
    far = np.mean([m.max() > cal.threshold for m in fresh])
    assert 0.06 < far < 0.14
    assert cal.score_threshold == pytest.approx(cal.threshold)  # no post-processing: same decision


def test_critical_thresholds_match_bruteforce():
    rng = np.random.default_rng(2)
    maps = _good_maps(4, rng, 16)
    crit = critical_thresholds(maps, POST)
    for m, c in zip(maps, crit):
        vals = np.unique(m)
        first_quiet = next(v for v in vals if not has_alarm(m, float(v), POST.morph_kernel, POST.min_region_area))
        assert c == pytest.approx(float(first_quiet))
        assert c <= m.max()


def test_pixel_far_target_is_met():
    rng = np.random.default_rng(3)
    good = _good_maps(10, rng, 32)
    cfg = CalibrateConfig(method="pixel_far", target_pixel_far=0.01)
    cal = calibrate(good, None, None, cfg, NO_POST)
    px = np.concatenate([m.ravel() for m in good])
    k = math.floor(0.01 * px.size)
    assert cal.threshold == cal.thresholds["pixel_far"]
    assert np.count_nonzero(px > cal.threshold) == k  # distinct values: exactly k allowed pixels
    assert cal.pixel_far == pytest.approx(k / px.size) and cal.pixel_far <= 0.01
    below = px[px <= cal.threshold].max()
    assert np.count_nonzero(px >= below) > k  # any lower data threshold exceeds the target


def test_threshold_for_count_with_ties():
    v = np.array([1, 2, 2, 2, 3], np.float32)
    for k in range(6):
        t = threshold_for_count(v, k)
        assert np.count_nonzero(v > t) <= k
    assert 2 <= threshold_for_count(v, 2) < 3  # 3 ties at 2 cannot be split
    assert threshold_for_count(v, 5) < 1


def test_max_f1_and_achieved_report():
    rng = np.random.default_rng(4)
    good = _good_maps(20, rng)
    vmaps, vmasks = _val_set(8, rng)
    cal = calibrate(good, vmaps, vmasks, CalibrateConfig(method="max_f1"), NO_POST)
    assert 0.4 <= cal.threshold < 0.5  # defects 0.5..0.9, background 0..0.4: perfect split
    assert cal.achieved["max_f1"]["f1"] == pytest.approx(1.0) and cal.achieved["max_f1"]["iou"] == pytest.approx(1.0)
    assert cal.n_val_images == 8
    for name in ("image_far", "pixel_far", "max_f1"):
        a = cal.achieved[name]
        assert set(a) >= {"threshold", "image_far", "image_far_upper95", "pixel_far", "f1", "iou"}
        assert a["threshold"] == cal.thresholds[name]
        assert a["image_far"] <= a["image_far_upper95"]
    assert cal.image_far == cal.achieved["max_f1"]["image_far"]


def test_method_selection_and_errors():
    rng = np.random.default_rng(5)
    good = _good_maps(20, rng)
    with pytest.raises(ValueError, match="method must be one of"):
        calibrate(good, None, None, CalibrateConfig(method="best"), NO_POST)
    with pytest.raises(ValueError, match="'max_f1' needs validation maps"):
        calibrate(good, None, None, CalibrateConfig(method="max_f1"), NO_POST)
    with pytest.raises(ValueError, match="'image_far' needs held-out good maps"):
        calibrate([], None, None, CalibrateConfig(method="image_far"), NO_POST)
    with pytest.raises(ValueError, match="target_image_far"):
        calibrate(good, None, None, CalibrateConfig(target_image_far=1.5), NO_POST)
    with pytest.raises(ValueError, match="shape"):
        calibrate(good, [np.zeros((4, 4))], [np.zeros((5, 5))], CalibrateConfig(), NO_POST)


def test_few_images_note_and_upper_bound():
    rng = np.random.default_rng(6)
    good = _good_maps(10, rng)
    cal = calibrate(good, None, None, CalibrateConfig(target_image_far=0.05), NO_POST)
    assert cal.image_far == 0.0
    assert cal.threshold >= max(m.max() for m in good)
    assert any("too few" in n for n in cal.notes) and any("10 good images" in n for n in cal.notes)
    assert cal.achieved["image_far"]["image_far_upper95"] == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-6)
    assert binomial_upper(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20), abs=1e-6)
    assert binomial_upper(3, 3) == 1.0


def test_to_dict_is_json_and_round_trips():
    rng = np.random.default_rng(7)
    cal = calibrate(_good_maps(20, rng), None, None, CalibrateConfig(), POST)
    d = cal.to_dict()
    assert d["thresholds"]["max_f1"] is None  # NaN -> None
    text = json.dumps(d, allow_nan=False)
    back = Calibration.from_dict(json.loads(text))
    assert back.threshold == cal.threshold and math.isnan(back.thresholds["max_f1"])
    model = torch.nn.Module()
    model.register_buffer("threshold", torch.tensor(float("nan")))
    model.register_buffer("score_threshold", torch.tensor(float("nan")))
    cal.apply(model)
    assert float(model.threshold) == pytest.approx(cal.threshold)
    assert float(model.score_threshold) == pytest.approx(cal.score_threshold)
