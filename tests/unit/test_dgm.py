"""Tests for the defect generation module (eq. 1) and its random masks. Tiny synthetic textures."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from sidn.config import DGMConfig
from sidn.data import masks as masks_mod
from sidn.data.dgm import DefectGenerator, make_validation_set, to_tensor_batch
from sidn.data.dgm_sources import SOURCES
from sidn.data.masks import SHAPES, MaskSampler


def _textures(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Striped + grainy textures in [0.15, 0.85] (each image a different phase/orientation)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(n):
        theta, f = rng.uniform(0, np.pi), rng.uniform(0.3, 0.8)
        stripes = np.sin(f * (x * np.cos(theta) + y * np.sin(theta)) + rng.uniform(0, 6))
        grain = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.0)
        out.append(0.5 + 0.2 * stripes + 0.1 * grain)
    return np.clip(np.stack(out), 0.15, 0.85).astype(np.float32)


def _cfg(**kw) -> DGMConfig:
    return dataclasses.replace(DGMConfig(), **kw)


IMGS = _textures(8, 64)


def test_shapes_types_and_range() -> None:
    gen = DefectGenerator(DGMConfig())
    out, m = gen(IMGS, np.random.default_rng(0))
    assert out.shape == IMGS.shape and m.shape == IMGS.shape
    assert out.dtype == np.float32 and m.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert set(np.unique(m)) <= {0.0, 1.0}
    n_in, n_m = to_tensor_batch(out, m)
    assert tuple(n_in.shape) == (8, 1, 64, 64) and tuple(n_m.shape) == (8, 1, 64, 64)


def test_deterministic_same_seed_and_differs_otherwise() -> None:
    gen = DefectGenerator(DGMConfig())
    a = gen(IMGS, np.random.default_rng(7))
    b = gen(IMGS, np.random.default_rng(7))
    c = gen(IMGS, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    # sample() on a single image is deterministic too, an int seed works as well
    s1, s2 = gen.sample(IMGS[0], 3), gen.sample(IMGS[0], np.random.default_rng(3))
    assert np.array_equal(s1[0], s2[0]) and np.array_equal(s1[1], s2[1])


def test_clean_share_and_nonclean_have_defects() -> None:
    gen = DefectGenerator(_cfg(clean_fraction=0.3))
    rng = np.random.default_rng(1)
    imgs = _textures(4, 32)
    n, clean = 0, 0
    for _ in range(75):
        out, m = gen(imgs, rng)
        for i in range(len(imgs)):
            n += 1
            if m[i].max() == 0:
                clean += 1
                assert np.array_equal(out[i], imgs[i])  # clean: unchanged image
            else:
                assert np.abs(out[i] - imgs[i])[m[i] > 0].mean() >= 0.02  # visible defect
    assert abs(clean / n - 0.3) < 0.06


def test_hard_edges_leave_outside_unchanged() -> None:
    gen = DefectGenerator(_cfg(soft_edge_probability=0.0, clean_fraction=0.0))
    for seed in range(5):
        out, m = gen(IMGS, np.random.default_rng(seed))
        assert (m.reshape(len(m), -1).max(1) == 1).all()
        assert np.array_equal(out[m == 0], IMGS[m == 0])


def test_soft_edges_blend_beyond_label() -> None:
    gen = DefectGenerator(_cfg(soft_edge_probability=1.0, clean_fraction=0.0, shapes={"ellipse": 1.0},
                               min_area_fraction=0.05))
    rng = np.random.default_rng(0)
    soft_seen = 0
    for _ in range(10):
        out, m, info = gen.sample_with_info(IMGS[0], rng)
        assert set(np.unique(m)) <= {0.0, 1.0} and m.max() == 1.0
        soft_seen += info["soft"]
        if info["soft"]:
            outside = (m == 0) & (np.abs(out - IMGS[0]) > 1e-6)
            assert outside.any()  # the blurred rim below 0.5 is blended but not labelled
    assert soft_seen >= 8


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_changes_masked_region(name: str) -> None:
    rng = np.random.default_rng(0)
    img = IMGS[0]
    mask = np.zeros_like(img)
    cv2.circle(mask, (30, 34), 12, 1.0, -1)
    for donors in (None, IMGS[1:3]):
        ig = SOURCES[name](img, mask, rng, donors)
        assert ig.shape == img.shape and ig.dtype == np.float32
        assert ig.min() >= 0.0 and ig.max() <= 1.0
        assert np.abs(ig - img)[mask > 0].mean() > 0.01, name
    # through the generator with only this source (hard edges): changed inside, same outside
    gen = DefectGenerator(_cfg(sources={name: 1.0}, clean_fraction=0.0, soft_edge_probability=0.0))
    out, m, info = gen.sample_with_info(img, rng, IMGS[1:2])
    assert info["source"] in (name, "forced_intensity")
    assert np.abs(out - img)[m > 0].mean() >= 0.02
    assert np.array_equal(out[m == 0], img[m == 0])


def test_foreign_patch_donor_of_other_size_and_no_donor() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), np.float32)
    mask[10:40, 20:50] = 1
    big = _textures(2, 96, seed=5)
    for donors in (big, None):
        ig = SOURCES["foreign_patch"](IMGS[0], mask, rng, donors)
        assert ig.shape == (64, 64) and np.abs(ig - IMGS[0])[mask > 0].mean() > 0.01
        assert np.array_equal(ig[mask == 0], IMGS[0][mask == 0])


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_mask_area_bounds(shape: str) -> None:
    lo, hi = 0.001, 0.15
    sampler = MaskSampler({shape: 1.0}, lo, hi, soft_edge_probability=0.5)
    rng = np.random.default_rng(2)
    h = w = 128
    fracs = []
    for _ in range(60):
        ms = sampler(h, w, rng)
        assert ms.shape == shape and ms.label.dtype == np.uint8
        assert set(np.unique(ms.label)) <= {0, 1} and ms.label.any()
        assert ms.alpha.min() >= 0 and ms.alpha.max() <= 1
        assert np.array_equal(ms.label, (ms.alpha > 0.5).astype(np.uint8))
        fracs.append(ms.label.sum() / (h * w))
    fracs = np.array(fracs)
    assert fracs.max() <= hi * 1.6  # rasterisation / thick strokes may overshoot a little
    assert fracs.min() < 0.01  # tiny ones occur ...
    if shape != "stroke":  # strokes are capped in length, so they stay thinner
        assert fracs.max() > 0.04  # ... and large ones
        assert np.median(fracs) > lo * 0.5


def test_validation_set_fixed_and_mostly_defective() -> None:
    cfg = _cfg(val_images=20, clean_fraction=0.5, seed=3)
    imgs = IMGS[:3]
    a_n, a_m = make_validation_set(imgs, cfg)
    b_n, b_m = make_validation_set(imgs, cfg)
    assert a_n.shape == (20, 64, 64) and a_m.shape == (20, 64, 64)
    assert np.array_equal(a_n, b_n) and np.array_equal(a_m, b_m)
    defective = a_m.reshape(20, -1).max(1) > 0
    assert defective.mean() >= 0.8 and not defective.all()  # clean share capped at 20 %
    c_n, _ = make_validation_set(imgs, dataclasses.replace(cfg, seed=4))
    assert not np.array_equal(a_n, c_n)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"sources": {"paper": 1.0, "lasers": 0.5}}, "lasers"),
        ({"shapes": {"ellipse": 1.0, "star": 1.0}}, "star"),
        ({"sources": {"paper": -1.0, "blur": 1.0}}, "paper"),
        ({"sources": {"paper": 0.0}}, "all shares are zero"),
        ({"clean_fraction": 1.0}, "clean_fraction"),
        ({"min_area_fraction": 0.5, "max_area_fraction": 0.1}, "min_area_fraction"),
        ({"soft_edge_probability": 2.0}, "soft_edge_probability"),
        ({"val_images": 0}, "val_images"),
    ],
)
def test_invalid_config(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        DefectGenerator(_cfg(**kw))


def test_invalid_inputs() -> None:
    gen = DefectGenerator(DGMConfig())
    with pytest.raises(ValueError, match="B,H,W"):
        gen(IMGS[0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        gen((IMGS * 255).astype(np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gen(IMGS * 255, np.random.default_rng(0))


def test_batch_uses_other_images_as_donors() -> None:
    # with foreign_patch only and a batch of two very different images, the patch comes from the other one
    a = np.full((1, 32, 32), 0.2, np.float32)
    b = np.full((1, 32, 32), 0.8, np.float32)
    gen = DefectGenerator(_cfg(sources={"foreign_patch": 1.0}, clean_fraction=0.0, soft_edge_probability=0.0))
    out, m = gen(np.concatenate([a, b]), np.random.default_rng(0))
    assert out[0][m[0] > 0].mean() > 0.6 and out[1][m[1] > 0].mean() < 0.4
    assert masks_mod.SHAPES is SHAPES
