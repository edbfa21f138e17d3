"""MVTec-layout reader: formats, manifest, bad inputs, holdout split, loading."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.data import make_mvtec_tree, write_png
from sidn.data.decode import read_image, read_mask
from sidn.data.errors import DataError
from sidn.data.mvtec import MANIFEST_COLUMNS, build_manifest, load_images, resize_image, split_holdout


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    make_mvtec_tree(tmp_path, "carpet", n_train=6, n_test_good=2, defects={"cut": 2, "hole": 1}, size=64)
    return tmp_path


# --------------------------------------------------------------------------- formats


def _gradient(dtype=np.uint8) -> np.ndarray:
    full = 65535 if dtype == np.uint16 else 255
    return (np.linspace(0, full, 32 * 48).reshape(32, 48)).astype(dtype)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".jpg"])
def test_read_gray_formats(tmp_path: Path, ext: str) -> None:
    g = _gradient()
    p = write_png(tmp_path / f"g{ext}", g)
    img = read_image(p)
    assert img.dtype == np.float32 and img.shape == (32, 48)
    assert 0.0 <= img.min() and img.max() <= 1.0
    tol = 0.05 if ext == ".jpg" else 1e-6
    np.testing.assert_allclose(img, g / 255.0, atol=tol)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_16bit(tmp_path: Path, ext: str) -> None:
    g = _gradient(np.uint16)
    p = write_png(tmp_path / f"g16{ext}", g)
    img = read_image(p)
    np.testing.assert_allclose(img, g / 65535.0, atol=1e-6)


def test_read_rgb_and_rgba(tmp_path: Path) -> None:
    g = _gradient()
    bgr = np.dstack([g, g, g])
    bgra = np.dstack([g, g, g, np.full_like(g, 128)])
    a = read_image(write_png(tmp_path / "rgb.png", bgr))
    b = read_image(write_png(tmp_path / "rgba.png", bgra))
    assert a.shape == b.shape == (32, 48)
    np.testing.assert_allclose(a, g / 255.0, atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(b, a, atol=1e-6)
    # colour conversion uses luma weights: pure blue (BGR) is dark
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 0] = 255
    assert read_image(write_png(tmp_path / "blue.png", blue)).max() < 0.2


def test_read_mask_binary_variants(tmp_path: Path) -> None:
    m = np.zeros((16, 16), np.uint8)
    m[4:8, 4:8] = 255
    np.testing.assert_array_equal(read_mask(write_png(tmp_path / "a.png", m)), m // 255)
    np.testing.assert_array_equal(read_mask(write_png(tmp_path / "b.png", m // 255)), m // 255)
    assert read_mask(write_png(tmp_path / "c.png", np.zeros((4, 4), np.uint8))).sum() == 0
    rgb = np.dstack([m, m, m])
    assert read_mask(write_png(tmp_path / "d.png", rgb)).dtype == np.uint8


# --------------------------------------------------------------------------- bad files


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    good = write_png(tmp_path / "ok.png", _gradient())
    data = good.read_bytes()
    cases = {
        "truncated.png": data[: len(data) // 2],
        "garbage.png": b"this is not an image at all",
        "empty.png": b"",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(DataError) as ei:
            read_image(p)
        assert str(ei.value).startswith(str(p)), ei.value
    assert "empty" in str(pytest.raises(DataError, read_image, tmp_path / "empty.png").value)
    assert "truncated" in str(pytest.raises(DataError, read_image, tmp_path / "truncated.png").value)
    assert "does not exist" in str(pytest.raises(DataError, read_image, tmp_path / "missing.png").value)


def test_data_error_pickles() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(DataError("/x/y.png", "file is empty (0 bytes)")))
    assert isinstance(err, DataError) and str(err) == "/x/y.png: file is empty (0 bytes)" and err.path == "/x/y.png"


def test_truncated_jpeg(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", _gradient())
    p = tmp_path / "t.jpg"
    p.write_bytes(buf.tobytes()[:-300])
    with pytest.raises(DataError, match="truncated JPEG"):
        read_image(p)


def test_non_binary_mask(tmp_path: Path) -> None:
    m = np.zeros((16, 16), np.uint8)
    m[2:5, 2:5] = 128
    m[6:9, 6:9] = 255
    p = write_png(tmp_path / "m.png", m)
    with pytest.raises(DataError, match="not binary") as ei:
        read_mask(p)
    assert str(ei.value).startswith(str(p)) and "128" in str(ei.value)
    three = np.zeros((4, 4), np.uint8)
    three[0, 0], three[1, 1] = 1, 255  # {0, 1, 255} is not allowed either
    with pytest.raises(DataError, match="not binary"):
        read_mask(write_png(tmp_path / "m3.png", three))


def test_mask_size_mismatch_in_manifest(tree: Path) -> None:
    mask = tree / "carpet" / "ground_truth" / "cut" / "000_mask.png"
    write_png(mask, np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match="differs from image") as ei:
        build_manifest(tree, "carpet")
    assert str(ei.value).startswith(str(mask))


def test_defect_without_mask(tree: Path) -> None:
    (tree / "carpet" / "ground_truth" / "hole" / "000_mask.png").unlink()
    img = tree / "carpet" / "test" / "hole" / "000.png"
    with pytest.raises(DataError, match="has no mask") as ei:
        build_manifest(tree, "carpet")
    assert str(ei.value).startswith(str(img))
    assert "ground_truth/hole/000_mask.png" in str(ei.value)


def test_missing_and_empty_category(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="category folder not found") as ei:
        build_manifest(tmp_path, "wood")
    assert str(tmp_path / "wood" / "train" / "good") in str(ei.value)
    (tmp_path / "tile" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no training images") as ei:
        build_manifest(tmp_path, "tile", strict=False)
    assert str(ei.value).startswith(str(tmp_path / "tile" / "train" / "good"))


# --------------------------------------------------------------------------- manifest


def test_manifest_columns_and_content(tree: Path) -> None:
    df = build_manifest(tree, "carpet")
    assert list(df.columns) == MANIFEST_COLUMNS
    assert len(df) == 6 + 2 + 2 + 1
    assert (df["split"] == "train").sum() == 6
    assert sorted(df["defect_type"].unique()) == ["cut", "good", "hole"]
    good = df[df["defect_type"] == "good"]
    bad = df[df["defect_type"] != "good"]
    assert (good["label"] == 0).all() and (good["mask_path"] == "").all()
    assert (bad["label"] == 1).all() and all(Path(p).is_file() for p in bad["mask_path"])
    assert (df[["height", "width", "channels", "bit_depth"]].to_numpy() == [64, 64, 1, 8]).all()
    assert df.attrs["skipped"] == []


def test_manifest_non_strict_skips_and_warns(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad_img = tree / "carpet" / "train" / "good" / "001.png"
    bad_img.write_bytes(b"")
    bad_mask = tree / "carpet" / "ground_truth" / "cut" / "001_mask.png"
    m = np.full((64, 64), 7, np.uint8)
    write_png(bad_mask, m)
    (tree / "carpet" / "train" / "good" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError):
        build_manifest(tree, "carpet", strict=True)
    with caplog.at_level(logging.WARNING, logger="sidn.data.mvtec"):
        df = build_manifest(tree, "carpet", strict=False)
    skipped = dict(df.attrs["skipped"])
    assert set(skipped) == {str(bad_img), str(bad_mask)}
    assert "empty" in skipped[str(bad_img)] and "not binary" in skipped[str(bad_mask)]
    assert str(bad_img) not in set(df["path"])
    assert str(tree / "carpet" / "test" / "cut" / "001.png") not in set(df["path"])
    assert len(df) == 11 - 2
    assert str(bad_img) in caplog.text
    assert df.attrs["ignored"] == [str(tree / "carpet" / "train" / "good" / "notes.txt")]


def test_split_holdout_deterministic(tree: Path) -> None:
    df = build_manifest(tree, "carpet")
    tr1, ho1 = split_holdout(df, 0.34, seed=3)
    tr2, ho2 = split_holdout(df.sample(frac=1.0, random_state=1), 0.34, seed=3)
    assert list(tr1["path"]) == list(tr2["path"]) and list(ho1["path"]) == list(ho2["path"])
    assert len(ho1) == 2 and len(tr1) == 4
    assert set(tr1["path"]).isdisjoint(ho1["path"])
    assert (tr1["split"] == "train").all() and (ho1["split"] == "train").all()
    _, ho3 = split_holdout(df, 0.01, seed=0)
    assert len(ho3) == 1  # at least one holdout image when fraction > 0
    tr0, ho0 = split_holdout(df, 0.0, seed=0)
    assert len(ho0) == 0 and len(tr0) == 6
    with pytest.raises(ValueError):
        split_holdout(df, 1.0, seed=0)


def test_load_images_and_resize(tree: Path) -> None:
    df = build_manifest(tree, "carpet")
    paths = list(df["path"][:3])
    arr = load_images(paths, 32)
    assert arr.shape == (3, 32, 32) and arr.dtype == np.float32
    np.testing.assert_allclose(arr[0], resize_image(read_image(paths[0]), 32))
    full = load_images(paths, None)
    assert full.shape == (3, 64, 64)
    other = write_png(tree / "odd.png", np.zeros((40, 50), np.uint8))
    with pytest.raises(DataError, match="differs") as ei:
        load_images([paths[0], other], None)
    assert str(ei.value).startswith(str(other))
    assert load_images([other], 16).shape == (1, 16, 16)
    # INTER_AREA averages: a 2x2 checkerboard block becomes its mean
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    np.testing.assert_allclose(resize_image(checker, 32), 0.5, atol=1e-6)
