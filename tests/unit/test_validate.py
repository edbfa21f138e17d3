"""Dataset validation with great-expectations 1.x: clean data passes, each kind of bad data is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import cv2

from helpers.data import make_mvtec_tree, texture, write_png
from sidn.data.validate import CHECKS, ValidationReport, format_report, validate_dataset
from sidn.data.validation_frame import FRAME_COLUMNS, build_validation_frame

pytest.importorskip("great_expectations")


def _fail_map(report: ValidationReport) -> dict[str, dict[str, str]]:
    """check -> {file: detail}"""
    out: dict[str, dict[str, str]] = {}
    for f in report.failures:
        out.setdefault(f["expectation"], {})[f["file"]] = f["detail"]
    return out


def test_clean_dataset_passes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_mvtec_tree(root, "carpet", n_train=3, n_test_good=1, defects={"cut": 2})
    make_mvtec_tree(root, "wood", n_train=3, n_test_good=1, defects={}, size=48, seed=1)  # no masks at all
    report = validate_dataset(root, ["carpet", "wood"], tmp_path / "out", min_train_images=3)
    assert report.passed, format_report(report)
    assert report.failures == []
    assert report.result_json == tmp_path / "out" / "validation.json"
    payload = json.loads(report.result_json.read_text())
    assert payload["passed"] is True and payload["n_images"] == 10
    gx_types = {r["expectation_config"]["type"] for r in payload["gx_results"]["images"]["results"]}
    assert {"expect_column_values_to_be_unique", "expect_column_pair_values_to_be_equal"} <= gx_types
    assert "PASSED" in report.html.read_text()
    assert format_report(report).startswith("Data validation passed")
    assert not list((tmp_path / "out").glob("*.tmp"))  # atomic writes leave no temp files


def test_every_problem_is_named(tmp_path: Path) -> None:
    root = tmp_path / "data"
    c = make_mvtec_tree(root, "carpet", n_train=5, n_test_good=2, defects={"cut": 3})
    w = make_mvtec_tree(root, "wood", n_train=2, n_test_good=1, defects={"hole": 1}, seed=7)
    corrupt = c / "train" / "good" / "001.png"
    corrupt.write_bytes(corrupt.read_bytes()[:100])  # truncated PNG
    empty = c / "train" / "good" / "003.png"
    empty.write_bytes(b"")
    odd_size = write_png(c / "train" / "good" / "004.png", np.full((50, 64), 90, np.uint8))
    leaked = c / "test" / "good" / "000.png"
    shutil.copy(c / "train" / "good" / "002.png", leaked)  # train/test leak (and a duplicate)
    gray_mask = write_png(c / "ground_truth" / "cut" / "000_mask.png", np.full((64, 64), 9, np.uint8))
    small_mask = write_png(c / "ground_truth" / "cut" / "001_mask.png", np.full((32, 32), 255, np.uint8))
    empty_mask = write_png(c / "ground_truth" / "cut" / "002_mask.png", np.zeros((64, 64), np.uint8))
    good_mask = write_png(c / "ground_truth" / "good" / "001_mask.png", np.zeros((64, 64), np.uint8))
    (w / "ground_truth" / "hole" / "000_mask.png").unlink()

    out = tmp_path / "out"
    report = validate_dataset(root, ["carpet", "wood", "tile"], out, min_train_images=2)
    assert not report.passed
    fails = _fail_map(report)
    assert set(fails) == set(CHECKS) - {"mask_decodes", "mask_has_image", "gt_folder_has_test", "has_categories"}, fails

    assert set(fails["image_decodes"]) == {str(corrupt), str(empty)}
    assert "truncated" in fails["image_decodes"][str(corrupt)]
    assert "empty" in fails["image_decodes"][str(empty)]
    assert set(fails["size_consistent"]) == {str(odd_size)}
    assert "64x50" in fails["size_consistent"][str(odd_size)]
    assert set(fails["mask_binary"]) == {str(gray_mask)} and "{9}" in fails["mask_binary"][str(gray_mask)]
    assert set(fails["mask_size_matches"]) == {str(small_mask)}
    assert set(fails["defect_has_mask"]) == {str(c / "test" / "cut" / "002.png"), str(w / "test" / "hole" / "000.png")}
    assert str(empty_mask) in fails["defect_has_mask"][str(c / "test" / "cut" / "002.png")]
    assert "no mask" in fails["defect_has_mask"][str(w / "test" / "hole" / "000.png")]
    assert set(fails["good_has_no_mask"]) == {str(c / "test" / "good" / "001.png")}
    assert str(good_mask) in fails["good_has_no_mask"][str(c / "test" / "good" / "001.png")]
    assert set(fails["unique_content"]) == {str(leaked), str(c / "train" / "good" / "002.png")}
    assert set(fails["no_train_test_overlap"]) == {str(leaked), str(c / "train" / "good" / "002.png")}
    # carpet: 5 train files, 2 undecodable -> 3 usable; wood has 2; tile is missing
    assert set(fails["min_train_images"]) == {str(root / "tile" / "train" / "good")}
    assert "not found" in fails["min_train_images"][str(root / "tile" / "train" / "good")]

    text = format_report(report)
    assert text.startswith("Data validation FAILED")
    for f in report.failures:
        assert f["file"] in text and f["expectation"] in text
    payload = json.loads((out / "validation.json").read_text())
    assert payload["passed"] is False and len(payload["failures"]) == len(report.failures)
    page = (out / "validation.html").read_text()
    assert "FAILED" in page and str(gray_mask) in page

    # the declared size range replaces the per-category size check
    report2 = validate_dataset(root, ["carpet"], out, min_train_images=4, size_range=(60, 70))
    fails2 = _fail_map(report2)
    assert set(fails2["size_consistent"]) == {str(odd_size)}
    assert "60..70" in fails2["size_consistent"][str(odd_size)]
    assert "3 usable training image(s), need at least 4" in fails2["min_train_images"][str(c / "train" / "good")]


def test_validation_frame_never_raises(tmp_path: Path) -> None:
    c = make_mvtec_tree(tmp_path, "tile", n_train=2, n_test_good=0, defects={"crack": 1})
    (c / "train" / "good" / "000.png").write_bytes(b"not a png")
    unreadable_mask = c / "ground_truth" / "crack" / "000_mask.png"
    unreadable_mask.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rgb16 = np.zeros((64, 64, 3), np.uint16)
    write_png(c / "train" / "good" / "001.png", rgb16)
    df = build_validation_frame(tmp_path, ["tile", "absent"])
    assert list(df.columns) == FRAME_COLUMNS and len(df) == 3
    bad = df[df["path"] == str(c / "train" / "good" / "000.png")].iloc[0]
    assert bad["decodable"] is False and bad["error"] and bad["content_hash"]
    ok = df[df["path"] == str(c / "train" / "good" / "001.png")].iloc[0]
    assert (ok["channels"], ok["bit_depth"], ok["height"]) == (3, 16, 64)
    d = df[df["split"] == "test"].iloc[0]
    assert d["mask_path"] == str(unreadable_mask) and d["mask_decodable"] is False

    report = validate_dataset(tmp_path, ["tile"], tmp_path / "out", min_train_images=1)
    fails = _fail_map(report)
    assert set(fails["mask_decodes"]) == {str(unreadable_mask)}
    assert str(c / "test" / "crack" / "000.png") in fails["defect_has_mask"]


def test_no_categories_at_all(tmp_path: Path) -> None:
    report = validate_dataset(tmp_path / "nothing", ["carpet"], tmp_path / "out")
    assert not report.passed
    assert [f["expectation"] for f in report.failures] == ["min_train_images"]
    assert report.failures[0]["file"] == str(tmp_path / "nothing" / "carpet" / "train" / "good")


def test_root_without_categories_fails(tmp_path: Path) -> None:
    root = tmp_path / "empty_root"
    root.mkdir()
    for where in (root, tmp_path / "missing_root"):
        report = validate_dataset(where, [], tmp_path / "out")
        assert not report.passed
        assert [(f["expectation"], f["file"]) for f in report.failures] == [("has_categories", str(where))]
        assert "no category" in report.failures[0]["detail"]
        assert format_report(report).startswith("Data validation FAILED")
        assert json.loads(report.result_json.read_text())["n_images"] == 0


def test_category_without_images_fails_even_with_min_zero(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "carpet" / "train" / "good").mkdir(parents=True)  # folders, no images
    (root / "carpet" / "test" / "good").mkdir(parents=True)
    (root / "wood").mkdir()  # category folder with nothing in it
    report = validate_dataset(root, ["carpet", "wood"], tmp_path / "out", min_train_images=0)
    assert not report.passed
    fails = _fail_map(report)
    assert set(fails) == {"min_train_images"}
    assert set(fails["min_train_images"]) == {str(root / "carpet" / "train" / "good"), str(root / "wood" / "train" / "good")}
    assert "0 usable training image(s), need at least 1" in fails["min_train_images"][str(root / "carpet" / "train" / "good")]


def test_masks_and_mask_folders_without_images_fail(tmp_path: Path) -> None:
    root = tmp_path / "data"
    c = make_mvtec_tree(root, "carpet", n_train=3, n_test_good=1, defects={"cut": 2})
    gt = c / "ground_truth"
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:20] = 255
    orphan = write_png(gt / "cut" / "007_mask.png", mask)  # no test/cut/007.*
    misnamed = write_png(gt / "cut" / "001.png", mask)  # not <name>_mask.*
    unused = write_png(gt / "cut" / "000_mask.bmp", mask)  # test/cut/000.png uses 000_mask.png
    stray_dir = gt / "hole"  # no test/hole/
    write_png(stray_dir / "000_mask.png", mask)
    write_png(stray_dir / "001_mask.png", mask)

    report = validate_dataset(root, ["carpet"], tmp_path / "out", min_train_images=3)
    assert not report.passed
    fails = _fail_map(report)
    assert set(fails) == {"mask_has_image", "gt_folder_has_test"}, fails
    assert set(fails["mask_has_image"]) == {str(orphan), str(misnamed), str(unused)}
    assert "no test image" in fails["mask_has_image"][str(orphan)] and str(c / "test" / "cut" / "007") in fails[
        "mask_has_image"][str(orphan)]
    assert "does not end in '_mask'" in fails["mask_has_image"][str(misnamed)]
    assert str(gt / "cut" / "000_mask.png") in fails["mask_has_image"][str(unused)]
    assert set(fails["gt_folder_has_test"]) == {str(stray_dir)}  # the folder once, not each of its masks
    assert str(c / "test" / "hole") in fails["gt_folder_has_test"][str(stray_dir)]
    text = format_report(report)
    assert str(orphan) in text and str(stray_dir) in text
    assert "FAILED" in report.html.read_text()

    for p in (orphan, misnamed, unused):
        p.unlink()
    shutil.rmtree(stray_dir)
    assert validate_dataset(root, ["carpet"], tmp_path / "out", min_train_images=3).passed


def test_damaged_jpegs_fail_validation(tmp_path: Path) -> None:
    root = tmp_path / "data"
    c = make_mvtec_tree(root, "carpet", n_train=3, n_test_good=2, defects={})
    rng = np.random.default_rng(3)
    ok, buf = cv2.imencode(".jpg", texture(rng, 64), [cv2.IMWRITE_JPEG_QUALITY, 90])
    truncated = c / "train" / "good" / "003.jpg"
    truncated.write_bytes(buf.tobytes()[: len(buf) // 2] + b"\xff\xd9")  # cut, end marker appended again
    ok, buf = cv2.imencode(".jpg", texture(rng, 64), [cv2.IMWRITE_JPEG_QUALITY, 90])
    corrupt = bytearray(buf.tobytes())
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 2] = b"\xff\xd5"  # stray restart marker in the image data
    corrupt_path = c / "test" / "good" / "002.jpg"
    corrupt_path.write_bytes(bytes(corrupt))
    for p in (truncated, corrupt_path):  # OpenCV alone decodes both
        assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None

    report = validate_dataset(root, ["carpet"], tmp_path / "out", min_train_images=3)
    fails = _fail_map(report)
    assert not report.passed and set(fails) == {"image_decodes"}, fails
    assert set(fails["image_decodes"]) == {str(truncated), str(corrupt_path)}
    assert "damaged JPEG" in fails["image_decodes"][str(truncated)]
    assert "restart marker" in fails["image_decodes"][str(corrupt_path)]
