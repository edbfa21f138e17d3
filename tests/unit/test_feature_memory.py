"""The defect-free feature memory behind the image score (sidn.feature_memory): what it scores,
how it travels in a bundle, and that calibration builds it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.data import make_mvtec_tree, texture
from helpers.training import tiny_config
from sidn.bundle import BundleError, load_bundle, read_bundle_raw, save_bundle, set_bundle_thresholds
from sidn.feature_memory import BUNDLE_KEY, FeatureMemory, greedy_coreset
from sidn.inference import Predictor, image_score
from sidn.jobs import calibrate_category
from sidn.model.sidn import SIDN

SIZE = 64


@pytest.fixture(scope="module")
def model() -> SIDN:
    torch.manual_seed(0)
    return SIDN(tiny_config().model).eval()


def _goods(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([texture(rng, SIZE) for _ in range(n)]).astype(np.float32) / 255.0


def test_a_foreign_patch_scores_above_every_good_image(model: SIDN) -> None:
    memory = FeatureMemory.from_images(model, _goods(8, seed=0), rows=2000)
    held_out = _goods(6, seed=1)
    damaged = held_out.copy()
    damaged[:, 20:36, 24:40] = 1.0  # a bright square the textures never have
    good, bad = memory.knn_scores(model, held_out), memory.knn_scores(model, damaged)
    assert bad.min() > good.max()


def _covering_radius(rows: torch.Tensor, picks: torch.Tensor) -> float:
    return float(torch.cdist(rows, rows[picks]).amin(1).max())


def test_the_coreset_keeps_a_rare_cluster_and_covers_tighter_than_random_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    common = torch.randn(3000, 2, generator=gen)
    rare = torch.randn(3, 2, generator=gen) * 0.1 + 12.0  # 0.1 % of the rows, far from the rest
    rows = torch.cat([common, rare])
    picks = greedy_coreset(rows, 60, seed=0)
    assert len(set(picks.tolist())) == 60
    assert (picks >= len(common)).any()
    at_random = torch.randperm(len(common), generator=gen)[:60]  # as a random draw without the rare rows would
    assert _covering_radius(common, picks[picks < len(common)]) < 0.7 * _covering_radius(common, at_random)
    assert torch.equal(greedy_coreset(rows[:40], 60), torch.arange(40))


def test_an_unknown_sampling_is_refused_by_its_key(model: SIDN) -> None:
    with pytest.raises(ValueError, match="infer.memory_sampling"):
        FeatureMemory.from_images(model, _goods(2, seed=0), rows=100, sampling="kmeans")


def test_the_fused_score_standardises_each_term(model: SIDN) -> None:
    memory = FeatureMemory.from_images(model, _goods(4, seed=0), rows=100)
    memory.set_references([1.0, 3.0], [10.0, 30.0])  # means 2 and 20, spreads 1 and 10
    np.testing.assert_allclose(memory.fuse([4.0, 2.0], [20.0, 40.0]), [2.0, 2.0])


def test_the_memory_travels_in_the_bundle_and_feeds_the_score(model: SIDN, tmp_path: Path) -> None:
    cfg = tiny_config()
    memory = FeatureMemory.from_images(model, _goods(4, seed=0), rows=300)
    memory.set_references([0.4, 0.6], [2.0, 4.0])
    path = tmp_path / "model.pt"
    save_bundle(model, cfg, path, extra={BUNDLE_KEY: memory.to_dict()})

    loaded, cfg, _ = load_bundle(path)
    torch.testing.assert_close(loaded.feature_memory.bank, memory.bank, rtol=0, atol=0)
    images = list(_goods(3, seed=2))
    predictor = Predictor(loaded, cfg.infer, SIZE)
    maps = predictor.maps(images)
    map_scores = [image_score(m, cfg.infer.score_sigma, SIZE) for m in maps]
    expected = memory.fuse(map_scores, memory.knn_scores(loaded, np.stack(images)))
    np.testing.assert_allclose([p.score for p in predictor.predict(images)], expected, rtol=1e-6)

    cfg.infer.memory_rows = 0  # the paper's setting: the map's maximum alone
    assert Predictor(loaded, cfg.infer, SIZE).scores(images, maps) == map_scores


def test_a_damaged_memory_is_refused_naming_the_file(model: SIDN, tmp_path: Path) -> None:
    memory = FeatureMemory.from_images(model, _goods(4, seed=0), rows=50).to_dict()
    path = tmp_path / "model.pt"
    save_bundle(model, tiny_config(), path, extra={BUNDLE_KEY: {**memory, "rows": 51}})
    with pytest.raises(BundleError, match=r"model\.pt: feature memory: bank holds"):
        load_bundle(path)
    set_bundle_thresholds(path, extra_update={BUNDLE_KEY: {**memory, "std": [0.0] * memory["dim"]}})
    with pytest.raises(BundleError, match="std > 0"):
        load_bundle(path)


def test_calibration_builds_the_memory_and_thresholds_its_score(model: SIDN, tmp_path: Path) -> None:
    make_mvtec_tree(tmp_path / "data", "carpet", n_train=14, n_test_good=2, defects={"cut": 2}, size=SIZE)
    cfg = tiny_config()
    cfg.data.root = str(tmp_path / "data")
    cfg.data.holdout_fraction = 0.3
    cfg.infer.memory_rows = 500
    trained = tmp_path / "trained.pt"
    save_bundle(model, cfg, trained)

    calibrate_category(trained, "carpet", tmp_path / "with")
    shipped, _, extra = load_bundle(tmp_path / "with" / "model.pt")
    assert extra[BUNDLE_KEY]["rows"] == 500
    refs = shipped.feature_memory.map_ref, shipped.feature_memory.knn_ref
    assert all(spread > 0 for _, spread in refs)
    assert torch.isfinite(shipped.score_threshold)

    cfg.infer.memory_images = 2  # 2 images of 8 x 8 positions: fewer than the 500 rows asked for
    calibrate_category(trained, "carpet", tmp_path / "two", cfg=cfg)
    assert read_bundle_raw(tmp_path / "two" / "model.pt")["extra"][BUNDLE_KEY]["rows"] == 2 * (SIZE // 8) ** 2
    cfg.infer.memory_images = 0
    with pytest.raises(ValueError, match="infer.memory_images"):
        calibrate_category(trained, "carpet", tmp_path / "none", cfg=cfg)

    cfg.infer.memory_rows = 0
    calibrate_category(trained, "carpet", tmp_path / "without", cfg=cfg)
    assert BUNDLE_KEY not in read_bundle_raw(tmp_path / "without" / "model.pt")["extra"]
    assert not hasattr(load_bundle(tmp_path / "without" / "model.pt")[0], "feature_memory")


def test_an_export_does_not_claim_the_memory_scores_threshold(model: SIDN, tmp_path: Path) -> None:
    """The exported graph is the map only, scored by its maximum: the fused score's threshold stays behind."""
    from sidn.export import export_torchscript

    memory = FeatureMemory.from_images(model, _goods(4, seed=0), rows=50)
    for name, extra in (("with", {BUNDLE_KEY: memory.to_dict()}), ("without", {})):
        bundle = tmp_path / f"{name}.pt"
        save_bundle(model, tiny_config(), bundle, extra=extra)
        set_bundle_thresholds(bundle, threshold=0.5, score_threshold=0.7)
        files = {"sidn.json": ""}
        torch.jit.load(str(export_torchscript(bundle, tmp_path / f"{name}.ts", image_size=SIZE)), _extra_files=files)
        expected = None if name == "with" else pytest.approx(0.7)
        assert json.loads(files["sidn.json"])["score_threshold"] == expected


def test_one_held_out_image_calibrates_without_a_memory(model: SIDN, tmp_path: Path) -> None:
    make_mvtec_tree(tmp_path / "data", "carpet", n_train=10, n_test_good=1, defects={"cut": 1}, size=SIZE)
    cfg = tiny_config()
    cfg.data.root = str(tmp_path / "data")
    cfg.data.holdout_fraction = 0.1  # one image: no spread to standardise the memory's term with
    trained = tmp_path / "trained.pt"
    save_bundle(model, cfg, trained)
    calibrate_category(trained, "carpet", tmp_path / "out")
    assert BUNDLE_KEY not in read_bundle_raw(tmp_path / "out" / "model.pt")["extra"]
