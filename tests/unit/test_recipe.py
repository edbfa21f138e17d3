"""Training recipe knobs (schedule, augmentation, image score, profiles) and the figures at the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import label
from scipy.stats import binomtest

from pipelines.params import load_params, profile_overrides
from sidn import metrics as M
from sidn.config import SIDNConfig, apply_overrides
from sidn.data.dgm import DefectGenerator
from sidn.inference import image_score
from sidn.losses import SIDNLoss
from sidn.model.sidn import SIDN
from sidn.operating_point import clopper_pearson, operating_point
from sidn.batches import augment_flips, sample_batch
from sidn.train import lr_factor, train
from helpers.training import TRAIN, VAL, tiny_config


def test_cosine_schedule_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, "cosine", 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warm-up
    assert f[-1] < 0.01
    assert lr_factor(57, 100, "constant", 10) == 1.0


def test_training_follows_the_schedule(tmp_path):
    result = train(tiny_config(steps=6, schedule="cosine", warmup_steps=2, lr=0.01), TRAIN, VAL, tmp_path, progress=False)
    lrs = result.history["lr"].tolist()
    assert lrs[0] == pytest.approx(0.005) and lrs[1] == pytest.approx(0.01)
    assert lrs[2] == pytest.approx(0.01) and lrs[-1] < lrs[3] < lrs[2]


@pytest.mark.parametrize("key,value", [("augment", "rotate"), ("schedule", "linear")])
def test_unknown_recipe_values_are_refused(tmp_path, key, value):
    with pytest.raises(ValueError, match=f"train.{key}"):
        train(tiny_config(steps=1, **{key: value}), TRAIN, VAL, tmp_path, progress=False)


def test_flips_keep_orientation_and_none_keeps_images():
    rng = np.random.default_rng(0)
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4).repeat(64, 0)
    out = augment_flips(img, rng)
    variants = {o.tobytes() for o in out}
    allowed = {img[0].tobytes(), img[0][:, ::-1].tobytes(), img[0][::-1].tobytes(), img[0][::-1, ::-1].tobytes()}
    assert variants == allowed  # all four flips occur, never a transpose (90-degree turn)
    batch, _ = sample_batch(img, 8, np.random.default_rng(1), augment="none")
    assert all(np.array_equal(b, img[0]) for b in batch)


def test_smoothed_image_score_ignores_a_speckle_but_not_a_region():
    speckle = np.zeros((256, 256), np.float32)
    speckle[100, 100] = 1.0
    region = np.zeros((256, 256), np.float32)
    region[90:110, 90:110] = 0.8
    assert image_score(speckle, 0, 256) > image_score(region, 0, 256)  # the plain max is fooled
    assert image_score(speckle, 4, 256) < image_score(region, 4, 256)
    # sigma is in pixels of the network input: the same picture at twice the size scores the same
    big = np.kron(region, np.ones((2, 2), np.float32))
    assert image_score(big, 4, 256) == pytest.approx(image_score(region, 4, 256), abs=0.02)


def test_operating_point_counts_and_interval():
    masks = [np.zeros((4, 4), np.uint8) for _ in range(4)]
    masks[2][1:3, 1:3] = 1
    masks[3][0, 0] = 1
    preds = [np.zeros((4, 4), np.uint8) for _ in range(4)]
    preds[1][0, 0] = 1  # a false alarm on a good image
    preds[2][1:3, 1:2] = 1  # half of the defect
    op = operating_point([False, True, True, False], [0, 0, 1, 1], preds, masks)
    assert op["catch_rate"] == 0.5 and op["false_alarm_rate"] == 0.5
    assert op["pixel_precision"] == pytest.approx(2 / 3)
    assert op["pixel_recall"] == pytest.approx(2 / 5)
    assert op["pixel_iou"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("k,n", [(0, 30), (2, 40), (40, 40)])
def test_clopper_pearson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def _write_params(tmp_path, profile: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(
        "dgm:\n  sources: {paper: 0.5, blur: 0.5}\ntrain:\n  lr: 0.001\n  steps: 10\n"
        f"profiles:\n  p:\n{profile}"
    )
    return str(path)


def test_profile_replaces_a_mapping_as_dvc_set_does(tmp_path):
    path = _write_params(tmp_path, "    dgm:\n      sources: {paper: 1.0}\n    train:\n      lr: 0.0001\n")
    prefect_route = load_params(path, profile="p")
    dvc_route = apply_overrides(load_params(path), profile_overrides(path, "p"))
    assert prefect_route.dgm.sources == {"paper": 1.0} == dvc_route.dgm.sources
    assert prefect_route.train == dvc_route.train and prefect_route.train.steps == 10


def test_repo_profiles_load_and_paper_profile_is_the_paper():
    paper = load_params("params.yaml", profile="paper")
    assert paper.dgm.sources == {"paper": 1.0}
    assert paper.dgm.clean_fraction == 0 and paper.train.augment == "none"
    assert (paper.train.lr, paper.train.batch_size, paper.train.crop_size) == (1e-4, 16, 0)
    assert paper.train.schedule == "constant" and paper.data.image_size == 256
    a = load_params("params.yaml", profile="ablation-a")
    b = load_params("params.yaml", profile="ablation-b")
    c = load_params("params.yaml", profile="ablation-c")
    d = load_params("params.yaml", profile="ablation-d")
    assert (a.model.use_clustering, a.model.use_gsrm) == (False, False)
    assert (b.loss.lambda4, b.model.use_gsrm, b.model.use_clustering) == (0.0, False, True)
    assert (c.model.use_gsrm, c.loss.lambda4) == (False, 0.01)
    assert (d.model.use_gsrm, d.model.use_clustering) == (True, True)


def test_model_overfits_one_dgm_batch():
    torch.manual_seed(0)
    cfg = SIDNConfig()
    cfg.model.clusters = 3
    cfg.dgm.clean_fraction = 0.0
    noisy, mask = DefectGenerator(cfg.dgm)(TRAIN[:4], np.random.default_rng(0))
    x = torch.from_numpy(noisy).unsqueeze(1)
    m = torch.from_numpy(mask).unsqueeze(1)
    model = SIDN(cfg.model)
    loss_fn = SIDNLoss(cfg.loss, cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model(x)
    model.init_centres_from(first.z_t.detach(), first.z_d.detach())
    for _ in range(40):
        loss = loss_fn(model(x), m, model).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    fused = model.eval()(x).fused.detach()
    on, off = fused[m > 0.5].mean(), fused[m < 0.5].mean()
    assert on > off + 0.2


def _mvtec_aupro(maps, masks, limit):
    """AUPRO as the MVTec AD evaluation code computes it (scipy.ndimage.label, sort, keep tie ends)."""
    fp_changes = np.zeros((len(maps),) + maps[0].shape, np.float64)
    pro_changes = np.zeros_like(fp_changes)
    n_ok, n_regions = 0, 0
    for i, gt in enumerate(masks):
        labeled, n = label(gt, structure=np.ones((3, 3), int))
        n_regions += n
        ok = labeled == 0
        n_ok += int(ok.sum())
        fp_changes[i, ok] = 1
        for k in range(n):
            region = labeled == k + 1
            pro_changes[i, region] = 1.0 / region.sum()
    scores = np.array(maps).ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order]) / n_ok
    pros = np.cumsum(pro_changes.ravel()[order]) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    fprs = np.r_[0.0, np.clip(fprs[keep], 0, 1)]
    pros = np.r_[0.0, np.clip(pros[keep], 0, 1)]
    ins = int(np.searchsorted(fprs, limit, side="right"))
    correction = 0.0
    if limit not in fprs:
        y = pros[ins - 1] + (pros[ins] - pros[ins - 1]) * (limit - fprs[ins - 1]) / (fprs[ins] - fprs[ins - 1])
        correction = 0.5 * (y + pros[ins - 1]) * (limit - fprs[ins - 1])
    x, y = fprs[fprs <= limit], pros[fprs <= limit]
    return (np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction) / limit


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_aupro_equals_the_mvtec_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(4):
        m = np.zeros((24, 24), np.uint8)
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, 20, 2)
            m[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = 1
        masks.append(m)
    masks[0][:] = 0  # one good image
    masks[1][2:4, 2:4] = 1  # at least one region
    maps = [np.round(rng.random(m.shape) + 0.5 * m, 1).astype(np.float32) for m in masks]  # many ties
    for limit in (0.05, 0.3):
        assert M.aupro(maps, masks, limit) == pytest.approx(_mvtec_aupro(maps, masks, limit), abs=1e-9)


@pytest.mark.parametrize("override,message", [
    ("train.steps=abc", "train.steps must be an integer, got 'abc'"),
    ("infer.median_kernel=five", "infer.median_kernel must be an integer"),
    ("data.categories=carpet", "data.categories must be a list"),
])
def test_a_value_of_the_wrong_type_is_a_message_not_a_traceback(tmp_path, capsys, override, message):
    from sidn.cli import main

    assert main(["train", "--data", str(tmp_path), "--category", "carpet", "--out", str(tmp_path / "t"),
                 "--set", override]) == 2
    assert message in capsys.readouterr().err


def test_yaml_on_off_reads_as_the_amp_words():
    assert apply_overrides(SIDNConfig(), ["train.amp=off"]).train.amp == "off"
