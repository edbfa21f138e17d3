"""Embedded default dataset generator (sidn.data.synth): layout, determinism, atomicity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sidn.config import TEXTURE_CATEGORIES
from sidn.data import synth
from sidn.data.synth import DEFECT_TYPES, contact_sheet, defect_counts, render_sample, synthesize

SIZE = 64
SMALL = dict(size=SIZE, n_train=2, n_test_good=2, n_test_defect=5, workers=1)


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (hidden marker included)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, seed=0, **SMALL)
    return root


def test_layout_complete_and_consistent(small_set: Path):
    root = small_set
    assert sorted(p.name for p in root.iterdir()) == sorted(TEXTURE_CATEGORIES)  # no .tmp left
    for cat in TEXTURE_CATEGORIES:
        c = root / cat
        assert len(list((c / "train" / "good").glob("*.png"))) == 2
        assert len(list((c / "test" / "good").glob("*.png"))) == 2
        counts = defect_counts(cat, 5)
        assert sum(counts.values()) == 5 and max(counts.values()) - min(counts.values()) <= 1
        test_types = sorted(d.name for d in (c / "test").iterdir() if d.name != "good")
        assert test_types == sorted(DEFECT_TYPES[cat])
        gt_types = sorted(d.name for d in (c / "ground_truth").iterdir())
        assert gt_types == test_types  # no mask folder for good images
        for d in test_types:
            imgs = sorted((c / "test" / d).glob("*.png"))
            masks = sorted((c / "ground_truth" / d).glob("*.png"))
            assert len(imgs) == counts[d] and len(masks) == counts[d]
            for p in imgs:
                m = cv2.imread(str(c / "ground_truth" / d / f"{p.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
                img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                assert m is not None and m.ndim == 2 and m.dtype == np.uint8
                assert m.shape == img.shape[:2] == (SIZE, SIZE)
                assert set(np.unique(m)) <= {0, 255}
                frac = float((m > 0).mean())
                assert 0.0 < frac < 0.5, f"{p}: mask fraction {frac}"
        marker = json.loads((c / synth.MARKER).read_text())
        assert marker["params"]["size"] == SIZE and marker["params"]["defects"] == counts


def test_channels_gray_grid_colour_others(small_set: Path):
    for cat in TEXTURE_CATEGORIES:
        img = cv2.imread(str(small_set / cat / "train" / "good" / "000.png"), cv2.IMREAD_UNCHANGED)
        if cat == "grid":
            assert img.ndim == 2
        else:
            assert img.ndim == 3 and img.shape[2] == 3
            # really coloured: channels differ (grayscale conversion is exercised)
            assert np.abs(img[..., 0].astype(int) - img[..., 2].astype(int)).mean() > 3


def test_good_images_vary(small_set: Path):
    a = cv2.imread(str(small_set / "wood" / "train" / "good" / "000.png"))
    b = cv2.imread(str(small_set / "wood" / "train" / "good" / "001.png"))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_deterministic_and_independent_of_workers(small_set: Path, tmp_path: Path):
    synthesize(tmp_path / "again", categories=["grid", "leather"], seed=0, **{**SMALL, "workers": 2})
    for cat in ["grid", "leather"]:
        assert _tree(tmp_path / "again" / cat) == _tree(small_set / cat)


def test_other_seed_differs(small_set: Path, tmp_path: Path):
    synthesize(tmp_path, categories=["tile"], seed=1, **SMALL)
    a, b = _tree(tmp_path / "tile"), _tree(small_set / "tile")
    assert a.keys() == b.keys()
    images = [k for k in a if k.endswith(".png")]
    assert all(a[k] != b[k] for k in images)


def test_partial_rerun_reproduces_images(small_set: Path, tmp_path: Path):
    # per-image seeds: more images does not change the first ones
    synthesize(tmp_path, categories=["carpet"], seed=0, **{**SMALL, "n_train": 3})
    for name in ["000.png", "001.png"]:
        p = Path("carpet/train/good") / name
        assert (tmp_path / p).read_bytes() == (small_set / p).read_bytes()
    assert (tmp_path / "carpet/train/good/002.png").is_file()


def test_stale_tmp_and_interrupted_run(tmp_path: Path, monkeypatch):
    stale = tmp_path / ".wood.tmp" / "train" / "good"
    stale.mkdir(parents=True)
    (stale / "999.png").write_bytes(b"garbage")

    real_job = synth._job
    calls = {"n": 0}

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real_job(job)

    monkeypatch.setattr(synth, "_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path, categories=["wood"], seed=0, **SMALL)
    assert not (tmp_path / "wood").exists()  # no half category
    monkeypatch.setattr(synth, "_job", real_job)

    synthesize(tmp_path, categories=["wood"], seed=0, **SMALL)
    assert (tmp_path / "wood" / synth.MARKER).is_file()
    assert not (tmp_path / ".wood.tmp").exists()
    assert not (tmp_path / "wood" / "train" / "good" / "999.png").exists()


def test_skip_complete_overwrite_and_foreign_dir(tmp_path: Path):
    synthesize(tmp_path, categories=["grid"], seed=0, **SMALL)
    p = tmp_path / "grid" / "train" / "good" / "000.png"
    p.write_bytes(b"sentinel")  # a skipped category is not rewritten
    synthesize(tmp_path, categories=["grid"], seed=0, **SMALL)
    assert p.read_bytes() == b"sentinel"
    synthesize(tmp_path, categories=["grid"], seed=0, overwrite=True, **SMALL)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # other parameters: our own category is regenerated
    synthesize(tmp_path, categories=["grid"], seed=0, **{**SMALL, "n_train": 3})
    assert len(list((tmp_path / "grid" / "train" / "good").glob("*.png"))) == 3
    # a directory not written by the generator is never replaced silently
    (tmp_path / "tile").mkdir()
    with pytest.raises(FileExistsError, match="tile"):
        synthesize(tmp_path, categories=["tile"], seed=0, **SMALL)


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown category"):
        synthesize(tmp_path, categories=["bottle"], **SMALL)
    with pytest.raises(ValueError, match="size"):
        synthesize(tmp_path, categories=["grid"], **{**SMALL, "size": 16})


@pytest.mark.parametrize("cat", TEXTURE_CATEGORIES)
def test_every_defect_is_a_visible_local_change(cat: str):
    """The defect image differs from the same texture without the defect inside the mask."""
    for defect in DEFECT_TYPES[cat]:
        seed = synth.image_seed(3, cat, f"test/{defect}", 0)
        img, mask = render_sample(cat, defect, seed, 96)
        assert mask is not None and 0 < mask.mean() < 0.5
        # same seed children -> the same clean texture and camera: render it without the defect
        clean, none = render_sample(cat, None, seed, 96)
        assert none is None
        diff = np.abs(img.astype(int) - clean.astype(int))
        if diff.ndim == 3:
            diff = diff.max(axis=2)
        inside = diff[mask > 0].mean()
        outside = diff[mask == 0].mean()
        assert inside > 4 * outside + 3, f"{cat}/{defect}: inside {inside:.1f} outside {outside:.1f}"


def test_contact_sheet(small_set: Path, tmp_path: Path):
    out = contact_sheet(small_set, "carpet", tmp_path / "sheets" / "carpet.png", n_good=2, n_defect=4)
    assert out == tmp_path / "sheets" / "carpet.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    sheet = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert sheet is not None and sheet.shape[0] > 256 and sheet.shape[1] >= 4 * 256
    red = (sheet[..., 2] > 200) & (sheet[..., 1] < 60) & (sheet[..., 0] < 60)
    assert red.sum() > 20  # mask outlines drawn
    assert sorted(p.name for p in out.parent.iterdir()) == ["carpet.png"]  # no temp file left
    with pytest.raises(FileNotFoundError):
        contact_sheet(small_set, "nothing", tmp_path / "x.png")
