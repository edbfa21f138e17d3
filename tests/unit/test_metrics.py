"""Metrics: AUROC vs sklearn, AUPRO on hand-made cases and a brute-force reference, F1/IoU."""

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sidn import metrics as M
from sidn import ranked_pixels, threshold_sweep
from sidn.ranked_pixels import RankedPixels


def _random_case(seed: int, n: int = 3, shape=(24, 32), decimals: int | None = 2):
    rng = np.random.default_rng(seed)
    masks = [(rng.random(shape) < 0.15).astype(np.uint8) for _ in range(n)]
    maps = [(rng.random(shape) + 0.5 * mk).astype(np.float32) for mk in masks]
    if decimals is not None:  # force ties
        maps = [np.round(m, decimals).astype(np.float32) for m in maps]
    return maps, masks


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (2, 2)])
def test_pixel_auroc_matches_sklearn(seed, decimals):
    maps, masks = _random_case(seed, decimals=decimals)
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([m.ravel() for m in maps])
    assert M.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_image_auroc_matches_sklearn_and_handles_one_class():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 50)
    scores = np.round(rng.random(50) + 0.3 * labels, 1)
    assert M.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    with pytest.warns(UserWarning, match="both classes"):
        assert np.isnan(M.image_auroc([0.1, 0.2], [0, 0]))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"anomaly map 0 has shape \(8, 8\) but mask 0 has shape \(16, 16\)"):
        M.pixel_auroc([np.zeros((8, 8), np.float32)], [np.zeros((16, 16), np.uint8)])
    with pytest.raises(ValueError, match="2 anomaly maps but 1 masks"):
        M.aupro([np.zeros((4, 4))] * 2, [np.zeros((4, 4))])


def test_degenerate_cases_return_nan_with_warning():
    maps = [np.random.default_rng(0).random((8, 8)).astype(np.float32)]
    good = [np.zeros((8, 8), np.uint8)]
    with pytest.warns(UserWarning):
        assert np.isnan(M.pixel_auroc(maps, good))
    with pytest.warns(UserWarning):
        assert np.isnan(M.aupro(maps, good))
    with pytest.warns(UserWarning):
        assert M.roc_curve_points(maps, good).empty
    with pytest.warns(UserWarning):
        assert M.pro_curve_points(maps, good).empty
    with pytest.warns(UserWarning):
        assert np.isnan(M.f1_iou_at(maps, good, 2.0)["f1"])


def test_aupro_perfect_map_is_one():
    mask = np.zeros((32, 32), np.uint8)
    mask[4:10, 4:10] = 1
    mask[20:30, 15:18] = 1
    amap = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
    amap += np.random.default_rng(0).random(amap.shape).astype(np.float32) * 0.05
    assert M.aupro([amap], [mask]) == pytest.approx(1.0)
    assert M.pixel_auroc([amap], [mask]) == pytest.approx(1.0)


def test_aupro_half_detected_plateau():
    """One of two equal regions scored above every good pixel, the other below: PRO = 0.5 plateau."""
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 40), np.uint8)
    mask[5:10, 5:10] = 1
    mask[25:30, 25:30] = 1
    amap = rng.random(mask.shape).astype(np.float32)  # good pixels in [0, 1)
    amap[5:10, 5:10] = 2.0
    amap[25:30, 25:30] = -1.0
    assert M.aupro([amap], [mask]) == pytest.approx(0.5)
    curve = M.pro_curve_points([amap], [mask])
    assert np.allclose(curve["pro"].iloc[1:], 0.5) and curve["fpr"].iloc[-1] == pytest.approx(0.3)
    # regions in different images count the same way
    m1, m2 = np.zeros_like(mask), np.zeros_like(mask)
    m1[5:10, 5:10] = 1
    m2[25:30, 25:30] = 1
    a1, a2 = rng.random(mask.shape).astype(np.float32), rng.random(mask.shape).astype(np.float32)
    a1[m1 > 0], a2[m2 > 0] = 2.0, -1.0
    assert M.aupro([a1, a2], [m1, m2]) == pytest.approx(0.5)


def test_aupro_uses_region_overlap_not_pixel_count():
    """A small fully detected region weighs as much as a large missed one (unlike pixel TPR)."""
    mask = np.zeros((40, 40), np.uint8)
    mask[2:4, 2:4] = 1  # 4 pixels, detected
    mask[20:36, 20:36] = 1  # 256 pixels, missed
    amap = np.full(mask.shape, 0.5, np.float32)
    amap[mask == 0] = np.linspace(0.1, 0.6, int((mask == 0).sum()), dtype=np.float32)
    amap[2:4, 2:4] = 1.0
    amap[20:36, 20:36] = 0.0
    assert M.aupro([amap], [mask]) == pytest.approx(0.5)


def test_aupro_interpolates_at_the_limit():
    """10 good pixels 0.0..0.9 and one region pixel tied with the good pixel at 0.8.

    Curve: (0,0) (0.1,0) (0.2,1) (0.3,1) ... -> diagonal from (0.1,0) to (0.2,1).
    """
    amap = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.8]], np.float32)
    mask = np.zeros_like(amap, dtype=np.uint8)
    mask[0, -1] = 1
    # limit 0.15: PRO(0.15) = 0.5, area = 0.5 * 0.05 * 0.5
    assert M.aupro([amap], [mask], fpr_limit=0.15) == pytest.approx(0.0125 / 0.15)
    # limit 0.3: area = 0.05 (triangle) + 0.1 (rectangle)
    assert M.aupro([amap], [mask], fpr_limit=0.3) == pytest.approx(0.15 / 0.3)
    assert M.aupro([amap], [mask], fpr_limit=1.0) == pytest.approx(0.85)


def test_aupro_uses_8_connectivity():
    """Diagonal neighbours are one region: detecting 1 of its 3 pixels gives PRO 1/3 (4-conn would give 1/2)."""
    mask = np.zeros((10, 10), np.uint8)
    mask[2, 2] = 1
    mask[3, 3] = mask[3, 4] = 1
    amap = np.random.default_rng(0).random(mask.shape).astype(np.float32)
    amap[2, 2] = 5.0
    amap[3, 3] = amap[3, 4] = -5.0
    assert M.aupro([amap], [mask]) == pytest.approx(1 / 3)


def _aupro_bruteforce(maps, masks, limit):
    """Loop over every distinct threshold (score >= t), recomputing PRO and FPR from scratch."""
    regions = []
    good = []
    for a, m in zip(maps, masks):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions += [(a, lab == i) for i in range(1, n)]
        good.append(a[m == 0])
    good = np.concatenate(good)
    ts = np.unique(np.concatenate([a.ravel() for a in maps]))[::-1]
    fpr = [0.0] + [float((good >= t).mean()) for t in ts]
    pro = [0.0] + [float(np.mean([(a[r] >= t).mean() for a, r in regions])) for t in ts]
    fpr, pro = np.array(fpr), np.array(pro)
    j = np.searchsorted(fpr, limit, side="right")
    y_lim = np.interp(limit, fpr[j - 1 : j + 1], pro[j - 1 : j + 1]) if j < len(fpr) else pro[-1]
    x = np.r_[fpr[:j], limit]
    y = np.r_[pro[:j], y_lim]
    return np.trapezoid(y, x) / limit


@pytest.mark.parametrize("seed", [0, 1])
def test_aupro_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(3):
        m = np.zeros((20, 20), np.uint8)
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, 16, 2)
            m[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = 1
        masks.append(m)
    maps = [np.round(rng.random(m.shape) + 0.4 * m, 2).astype(np.float32) for m in masks]
    for limit in (0.05, 0.3):
        assert M.aupro(maps, masks, limit) == pytest.approx(_aupro_bruteforce(maps, masks, limit), abs=1e-9)


def test_curve_points_are_downsampled_and_monotone():
    maps, masks = _random_case(0, n=4, shape=(64, 64), decimals=None)
    roc = M.roc_curve_points(maps, masks)
    assert list(roc.columns) == ["fpr", "tpr", "threshold"] and 2 < len(roc) <= 500
    assert roc["fpr"].is_monotonic_increasing and roc["tpr"].is_monotonic_increasing
    assert (roc.iloc[0].fpr, roc.iloc[0].tpr, roc.iloc[-1].fpr, roc.iloc[-1].tpr) == (0, 0, 1, 1)
    pro = M.pro_curve_points(maps, masks, fpr_limit=0.3)
    assert len(pro) <= 500 and pro["fpr"].iloc[-1] == pytest.approx(0.3) and pro["fpr"].max() <= 0.3 + 1e-12
    assert np.trapezoid(pro["pro"], pro["fpr"]) / 0.3 == pytest.approx(M.aupro(maps, masks), abs=0.01)


def test_f1_iou_hand_case():
    amap = np.array([[0.9, 0.8, 0.2], [0.7, 0.1, 0.6]], np.float32)
    mask = np.array([[1, 1, 0], [1, 1, 0]], np.uint8)
    r = M.f1_iou_at([amap], [mask], 0.5)  # predicted: 0.9 0.8 0.7 0.6 -> tp 3, fp 1, fn 1
    assert (r["tp"], r["fp"], r["fn"]) == (3, 1, 1)
    assert r["f1"] == pytest.approx(6 / 8) and r["iou"] == pytest.approx(3 / 5)
    assert r["precision"] == pytest.approx(0.75) and r["recall"] == pytest.approx(0.75)
    assert M.f1_iou_at([amap], [mask], 0.9)["f1"] == 0.0  # strict ">": nothing predicted


def test_max_f1_threshold_is_optimal():
    maps, masks = _random_case(4, decimals=2)
    t, f1 = M.max_f1_threshold(maps, masks)
    assert M.f1_iou_at(maps, masks, t)["f1"] == pytest.approx(f1)
    for cand in np.unique(np.concatenate([m.ravel() for m in maps])):
        assert M.f1_iou_at(maps, masks, float(cand))["f1"] <= f1 + 1e-12


def test_threshold_between():
    assert M.threshold_between(0.2, 0.4) == pytest.approx(0.3)
    lo = np.float32(0.5)
    hi = np.nextafter(lo, np.float32(1))
    t = M.threshold_between(float(lo), float(hi))  # float32 neighbours: no midpoint exists
    assert np.float32(t) >= lo and np.float32(t) < hi
    assert M.threshold_between(0.5, None) == 0.5
    assert np.float32(M.threshold_between(None, 0.5)) < np.float32(0.5)


# --------------------------------------------------------------------------------------
# RankedPixels: one sort, subsets without re-sorting


def _typed_case(seed: int, decimals: int | None, shape=(20, 24)):
    """Seven images: two good, then two or three of each of two defect types; ties when ``decimals``."""
    rng = np.random.default_rng(seed)
    masks = []
    for i in range(7):
        m = np.zeros(shape, np.uint8)
        for _ in range(0 if i < 2 else int(rng.integers(1, 4))):
            y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
            m[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = 1
        masks.append(m)
    maps = [(rng.random(shape) + 0.4 * m - 0.5).astype(np.float32) for m in masks]  # negative scores too
    if decimals is not None:
        maps = [np.round(a, decimals).astype(np.float32) for a in maps]
    maps[0][0, :3] = [-0.0, 0.0, -0.0]  # -0.0 ties with 0.0
    return maps, masks


def _all_metrics(r):
    return (r.pixel_auroc(), r.aupro(), r.aupro(0.05), r.aupro(1.0), r.roc_curve_points(40),
            r.pro_curve_points(0.3, 40), r.pro_curve_points(1.0, 40))


def _assert_same(a, b, exact: bool):
    for x, y in zip(a, b):
        if isinstance(x, float):
            assert x == y if exact else x == pytest.approx(y, rel=1e-12, abs=1e-12)
        else:
            pd.testing.assert_frame_equal(x, y, check_exact=exact, rtol=1e-12, atol=1e-12)


def test_ranked_pixels_holds_every_pixel_sorted():
    maps, masks = _typed_case(0, decimals=1)
    r = RankedPixels(maps, masks)
    flat = np.concatenate([a.ravel() for a in maps])
    assert np.array_equal(r.scores, np.sort(flat)[::-1]) and r.scores.dtype == np.float32
    image = np.repeat(np.arange(len(maps)), maps[0].size)
    labels = np.concatenate([m.ravel() != 0 for m in masks])
    inv = []
    for m in masks:
        _, lab = cv2.connectedComponents(m, connectivity=8)
        area = np.bincount(lab.ravel())
        inv.append(np.where(lab > 0, 1.0 / area[lab], 0.0).ravel())
    inv = np.concatenate(inv)

    def rows(*columns):  # (score, image, label, 1/area) per pixel, as a sorted table
        return np.stack(columns)[:, np.lexsort(columns[::-1])]

    assert np.array_equal(rows(flat, image, labels, inv), rows(r.scores, r.image, r.labels, r.inv_area))
    assert (r.n_images, r.n_good, r.n_defect) == (7, int((~labels).sum()), int(labels.sum()))
    assert r.n_regions == sum(cv2.connectedComponents(m, connectivity=8)[0] - 1 for m in masks)


@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_subset_equals_direct_computation(decimals):
    maps, masks = _typed_case(1, decimals)
    r = RankedPixels(maps, masks)
    for idx in ([0, 1, 2, 3], [0, 1, 4, 5, 6], [2, 5], [3]):
        direct = _all_metrics(RankedPixels([maps[i] for i in idx], [masks[i] for i in idx]))
        sub = r.subset(idx)
        assert sub.n_images == len(idx) and np.array_equal(np.unique(sub.image), np.arange(len(idx)))
        _assert_same(_all_metrics(sub), direct, exact=True)
        _assert_same(_all_metrics(r.subset(idx[::-1])), direct, exact=True)  # the subset keeps index order
        # the public functions on the subset's images in another order: PRO sums may differ in the last bits
        rev = idx[::-1]
        _assert_same((M.pixel_auroc([maps[i] for i in rev], [masks[i] for i in rev]),
                      M.aupro([maps[i] for i in rev], [masks[i] for i in rev])), direct[:2], exact=False)
    # subset of a subset: indices refer to the subset's own (ascending) numbering
    _assert_same(_all_metrics(r.subset([1, 3, 4, 6]).subset([0, 2])), _all_metrics(r.subset([1, 4])), exact=True)


def test_subset_matches_sklearn_and_bruteforce():
    maps, masks = _typed_case(2, decimals=2)
    r = RankedPixels(maps, masks)
    idx = [0, 1, 5, 6]
    y = np.concatenate([masks[i].ravel() for i in idx])
    s = np.concatenate([maps[i].ravel() for i in idx])
    assert r.subset(idx).pixel_auroc() == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    ref = _aupro_bruteforce([maps[i] for i in idx], [masks[i] for i in idx], 0.3)
    assert r.subset(idx).aupro() == pytest.approx(ref, abs=1e-9)


def test_sweeps_do_not_depend_on_chunk_size(monkeypatch):
    maps, masks = _typed_case(3, decimals=2)
    whole = _all_metrics(RankedPixels(maps, masks))
    monkeypatch.setattr(threshold_sweep, "CHUNK", 7)
    monkeypatch.setattr(ranked_pixels, "CHUNK", 7)
    _assert_same(_all_metrics(RankedPixels(maps, masks)), whole, exact=True)
    assert M.pixel_auroc_per_image(maps, masks)[2] == M.pixel_auroc([maps[2]], [masks[2]])


def test_subset_degenerate_and_invalid():
    maps, masks = _typed_case(4, decimals=2)
    r = RankedPixels(maps, masks)
    good = r.subset([0, 1])
    with pytest.warns(UserWarning, match="needs both classes"):
        assert np.isnan(good.pixel_auroc())
    with pytest.warns(UserWarning, match="0 regions"):
        assert np.isnan(good.aupro())
    with pytest.warns(UserWarning):
        assert good.pro_curve_points().empty and good.roc_curve_points().empty
    with pytest.raises(ValueError, match="distinct"):
        r.subset([2, 2])
    with pytest.raises(IndexError):
        r.subset([7])
    with pytest.raises(ValueError, match="at least one"):
        r.subset([])
    with pytest.raises(ValueError, match="fpr_limit"):
        r.aupro(0.0)


def test_pixel_auroc_per_image():
    maps, masks = _typed_case(5, decimals=2)
    masks[6] = np.ones_like(masks[6])
    got = M.pixel_auroc_per_image(maps, masks)
    assert np.isnan(got[[0, 1, 6]]).all()
    for i in range(2, 6):
        assert got[i] == pytest.approx(roc_auc_score(masks[i].ravel(), maps[i].ravel()), abs=1e-12)
