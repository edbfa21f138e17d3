"""Hostile image files: damaged JPEGs, EXIF orientation, a bad test image that must not block training."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.data import make_mvtec_tree, texture, write_png
from sidn.data import decode
from sidn.data.decode import decode_bytes, read_image, read_raw
from sidn.data.errors import DataError
from sidn.data.mvtec import build_manifest


def _jpeg(img: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90, *params])
    assert ok
    return buf.tobytes()


def _scan_data(data: bytes) -> tuple[int, int]:
    """(start, end) of the entropy-coded data of the first scan of a baseline JPEG."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    return start, data.index(b"\xff\xd9", start)


def _color(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = texture(rng, size)
    return np.dstack([g, texture(rng, size), 255 - g])


# --------------------------------------------------------------------------- damaged JPEGs


def _truncated(data: bytes, fraction: float) -> bytes:
    """Cut the file and append an end-of-image marker again, so its end looks intact."""
    return data[: int(len(data) * fraction)] + b"\xff\xd9"


def _byte_set_to_ff(data: bytes) -> bytes:
    """One byte in the middle of the image data corrupted to 0xFF (the next byte is not 0x00)."""
    start, end = _scan_data(data)
    b = bytearray(data)
    p = (start + end) // 2
    while b[p + 1] == 0x00 or b[p] == 0xFF:
        p += 1
    b[p] = 0xFF
    return bytes(b)


def _restart_marker_mid_stream(data: bytes) -> bytes:
    start, end = _scan_data(data)
    b = bytearray(data)
    b[(start + end) // 2 : (start + end) // 2 + 2] = b"\xff\xd3"
    return bytes(b)


def _progressive_cut_between_scans(data: bytes) -> bytes:
    """Progressive JPEG cut right before its last scan (a valid-looking file with scans missing)."""
    return data[: data.rindex(b"\xff\xda")] + b"\xff\xd9"


DAMAGED = {
    "gray-truncated-half": (lambda: _truncated(_jpeg(texture(np.random.default_rng(1), 64)), 0.5), "ends before"),
    "color-truncated-90%": (lambda: _truncated(_jpeg(_color()), 0.9), "ends before"),
    "restart-interval-truncated": (lambda: _truncated(_jpeg(_color(), cv2.IMWRITE_JPEG_RST_INTERVAL, 2), 0.6),
                                   "ends before"),
    "progressive-truncated": (lambda: _truncated(_jpeg(_color(), cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 0.7), "JPEG"),
    "progressive-cut-between-scans": (lambda: _progressive_cut_between_scans(
        _jpeg(_color(), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), "scans are missing"),
    "byte-set-to-ff-mid-stream": (lambda: _byte_set_to_ff(_jpeg(_color())), "damaged JPEG"),
    "restart-marker-mid-stream": (lambda: _restart_marker_mid_stream(_jpeg(_color())), "restart marker"),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_jpeg_is_refused(tmp_path: Path, name: str) -> None:
    make, expected = DAMAGED[name]
    data = make()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None  # OpenCV decodes it (with grey or blurred parts) without complaint
    p = tmp_path / f"{name}.jpg"
    p.write_bytes(data)
    with pytest.raises(DataError, match=expected) as ei:
        read_image(p)
    assert str(ei.value).startswith(f"{p}: ") and "JPEG" in str(ei.value)


def test_grey_rows_of_a_truncated_jpeg_are_what_we_refuse(tmp_path: Path) -> None:
    img = texture(np.random.default_rng(1), 64)
    damaged = _truncated(_jpeg(img), 0.5)
    rows = cv2.imdecode(np.frombuffer(damaged, np.uint8), cv2.IMREAD_UNCHANGED)
    assert (rows[-8:] == 128).all()  # libjpeg fills the missing blocks with mid-grey
    with pytest.raises(DataError, match="damaged JPEG: the image data ends before the last blocks"):
        decode_bytes(damaged, "x.jpg")


VALID = {
    "png-gray": lambda: cv2.imencode(".png", texture(np.random.default_rng(2), 40))[1].tobytes(),
    "png-16bit-rgb": lambda: cv2.imencode(".png", _color(40).astype(np.uint16) * 257)[1].tobytes(),
    "png-rgba": lambda: cv2.imencode(".png", np.dstack([_color(40), np.full((40, 40), 200, np.uint8)]))[1].tobytes(),
    "bmp": lambda: cv2.imencode(".bmp", _color(40))[1].tobytes(),
    "tiff-16bit": lambda: cv2.imencode(".tif", texture(np.random.default_rng(3), 40).astype(np.uint16) * 257)[1].tobytes(),
    "jpeg-gray": lambda: _jpeg(texture(np.random.default_rng(4), 57)),
    "jpeg-color-q100": lambda: _jpeg(_color(57), cv2.IMWRITE_JPEG_QUALITY, 100),
    "jpeg-progressive": lambda: _jpeg(_color(57), cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "jpeg-optimized": lambda: _jpeg(_color(57), cv2.IMWRITE_JPEG_OPTIMIZE, 1),
    "jpeg-restart-interval": lambda: _jpeg(_color(57), cv2.IMWRITE_JPEG_RST_INTERVAL, 1),
    "jpeg-444": lambda: _jpeg(_color(57), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    "jpeg-trailing-bytes": lambda: _jpeg(_color(57)) + b"\x00" * 10000,  # data after the end marker is ignored
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_files_still_read(name: str) -> None:
    data = VALID[name]()
    raw = decode_bytes(data, name)
    np.testing.assert_array_equal(raw, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))


def test_check_costs_one_extra_decode_for_jpeg_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = cv2.imdecode

    def counting(buf, flags):  # type: ignore[no-untyped-def]
        calls.append(len(buf))
        return real(buf, flags)

    monkeypatch.setattr(decode.cv2, "imdecode", counting)
    decode_bytes(_jpeg(_color()), "a.jpg")
    assert len(calls) == 2
    calls.clear()
    decode_bytes(cv2.imencode(".png", _color())[1].tobytes(), "a.png")
    assert len(calls) == 1


def test_damaged_jpeg_in_train_split_fails_the_manifest(tmp_path: Path) -> None:
    cat = make_mvtec_tree(tmp_path, "carpet", n_train=3, n_test_good=1, defects={})
    bad = cat / "train" / "good" / "001.jpg"
    (cat / "train" / "good" / "001.png").unlink()
    bad.write_bytes(_truncated(_jpeg(texture(np.random.default_rng(5), 64)), 0.5))
    with pytest.raises(DataError, match="damaged JPEG") as ei:
        build_manifest(tmp_path, "carpet")
    assert str(ei.value).startswith(str(bad))


# --------------------------------------------------------------------------- EXIF orientation


def _exif_tiff(orientation: int, order: str = "II") -> bytes:
    """A TIFF-structured EXIF block holding only IFD0 with the Orientation tag (0x0112)."""
    e = "<" if order == "II" else ">"
    return (order.encode() + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", 1)
            + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0))


def _jpeg_with_orientation(data: bytes, orientation: int, order: str = "II") -> bytes:
    """Insert an APP1 Exif segment right after the start-of-image marker."""
    payload = b"Exif\x00\x00" + _exif_tiff(orientation, order)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def _png_with_orientation(data: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk right after IHDR."""
    payload = _exif_tiff(orientation, "MM")
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + chunk + data[ihdr_end:]


# stored pixels -> displayed pixels, written out per EXIF orientation value
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.T,
    6: lambda a: a.T[:, ::-1],  # rotate 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: a.T[::-1, :],  # rotate 90 degrees counter-clockwise
}


@pytest.mark.parametrize("order", ["II", "MM"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied(tmp_path: Path, orientation: int, order: str) -> None:
    stored = np.zeros((24, 40), np.uint8)
    stored[:8, :16] = 255  # bright block in the stored top-left corner
    stored[-8:, -8:] = 100
    data = _jpeg_with_orientation(_jpeg(stored, cv2.IMWRITE_JPEG_QUALITY, 100), orientation, order)
    p = tmp_path / "rotated.jpg"
    p.write_bytes(data)
    raw = read_raw(p)
    plain = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # ignores the tag
    np.testing.assert_array_equal(raw, DISPLAYED[orientation](plain))
    # OpenCV's own EXIF handling (IMREAD_GRAYSCALE applies the tag) agrees
    np.testing.assert_array_equal(raw, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE))
    assert read_image(p).shape == ((40, 24) if orientation >= 5 else (24, 40))


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_invalid_orientation_values_are_ignored(orientation: int) -> None:
    data = _jpeg(texture(np.random.default_rng(6), 32)[:, :24])
    assert decode_bytes(_jpeg_with_orientation(data, orientation), "x").shape == (32, 24)


def test_png_exif_orientation_is_applied() -> None:
    stored = np.arange(24 * 40, dtype=np.uint16).reshape(24, 40)  # every pixel differs
    data = _png_with_orientation(cv2.imencode(".png", stored)[1].tobytes(), 6)
    np.testing.assert_array_equal(decode_bytes(data, "x.png"), DISPLAYED[6](stored))


def test_tiff_orientation_is_applied_once() -> None:
    image = pytest.importorskip("PIL.Image")
    import io

    stored = np.zeros((24, 40), np.uint8)
    stored[:8, :16] = 255
    buf = io.BytesIO()
    image.fromarray(stored).save(buf, "TIFF", tiffinfo={0x0112: 6})
    np.testing.assert_array_equal(decode_bytes(buf.getvalue(), "x.tif"), DISPLAYED[6](stored))


def test_mask_drawn_on_the_displayed_image_matches(tmp_path: Path) -> None:
    make_mvtec_tree(tmp_path, "carpet", n_train=2, n_test_good=0, defects={})
    stored = np.full((32, 48), 60, np.uint8)
    stored[4:12, 30:44] = 250  # the defect, in stored (sensor) orientation
    img = tmp_path / "carpet" / "test" / "cut" / "000.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(_jpeg_with_orientation(_jpeg(stored, cv2.IMWRITE_JPEG_QUALITY, 100), 6))
    displayed_mask = (DISPLAYED[6](stored) > 150).astype(np.uint8) * 255  # drawn over the viewer's picture
    write_png(tmp_path / "carpet" / "ground_truth" / "cut" / "000_mask.png", displayed_mask)
    df = build_manifest(tmp_path, "carpet")
    row = df[df["defect_type"] == "cut"].iloc[0]
    assert (row["height"], row["width"]) == (48, 32)
    gray = read_image(img)
    mask = decode.read_mask(row["mask_path"], expected_shape=gray.shape)
    assert gray[mask > 0].mean() > 0.9 and gray[mask == 0].mean() < 0.3  # the mask covers the defect


# --------------------------------------------------------------------------- bad test image vs training


@pytest.fixture()
def tree_with_bad_test_image(tmp_path: Path) -> tuple[Path, Path]:
    make_mvtec_tree(tmp_path, "carpet", n_train=4, n_test_good=2, defects={"cut": 2})
    bad = tmp_path / "carpet" / "test" / "cut" / "000.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    return tmp_path, bad


def test_bad_test_image_does_not_stop_the_manifest(tree_with_bad_test_image, caplog: pytest.LogCaptureFixture) -> None:
    root, bad = tree_with_bad_test_image
    with caplog.at_level(logging.WARNING, logger="sidn.data.mvtec"):
        df = build_manifest(root, "carpet")
    assert df.attrs["unreadable"] == [(str(bad), "truncated PNG file (no IEND chunk at the end)")]
    row = df[df["path"] == str(bad)].iloc[0]
    assert (row["split"], row["height"], row["width"]) == ("test", 0, 0)
    assert row["mask_path"].endswith("ground_truth/cut/000_mask.png")
    assert str(bad) in caplog.text
    assert (df[df["path"] != str(bad)]["height"] == 64).all()
    # non-strict mode still drops it
    lenient = build_manifest(root, "carpet", strict=False)
    assert str(bad) not in set(lenient["path"]) and dict(lenient.attrs["skipped"])[str(bad)].startswith("truncated")


def test_bad_train_image_still_stops_the_manifest(tree_with_bad_test_image) -> None:
    root, _ = tree_with_bad_test_image
    bad = root / "carpet" / "train" / "good" / "002.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as ei:
        build_manifest(root, "carpet")
    assert str(ei.value).startswith(str(bad))


def test_training_ignores_a_bad_test_image_evaluation_names_it(tree_with_bad_test_image, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sidn import jobs
    from sidn.bundle import save_bundle
    from sidn.config import SIDNConfig
    from sidn.model import SIDN

    root, bad = tree_with_bad_test_image
    cfg = SIDNConfig()
    cfg.data.root, cfg.data.image_size, cfg.data.holdout_fraction = str(root), 64, 0.25
    cfg.model.channels, cfg.model.clusters = 4, 4
    seen: dict[str, np.ndarray] = {}

    def fake_train(cfg, train_images, val_images, out_dir, **kw):  # type: ignore[no-untyped-def]
        seen["train"], seen["val"] = train_images, val_images
        return "trained"

    monkeypatch.setattr(jobs, "train", fake_train)
    assert jobs.train_category(cfg, "carpet", tmp_path / "run", progress=False) == "trained"
    assert seen["train"].shape == (3, 64, 64) and seen["val"].shape == (1, 64, 64)

    torch.manual_seed(0)
    bundle = tmp_path / "model.pt"
    save_bundle(SIDN(cfg.model), cfg, bundle)
    with pytest.raises(DataError) as ei:
        jobs.evaluate_category(bundle, "carpet", tmp_path / "eval", data_root=str(root), overlays=0)
    assert str(ei.value).startswith(f"{bad}: truncated PNG")
