"""`sidn predict` refuses to be wrong with exit 0 (issue 12, part A): non-finite weights, maps and
thresholds, outputs published as a set, its own outputs and hidden files never read, --skip-bad."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.data import texture, write_png
from sidn.bundle import BundleError, load_bundle, read_bundle_raw, save_bundle
from sidn.cli import main
from sidn.config import SIDNConfig
from sidn.model.sidn import SIDN
from sidn.predict_files import collect_images

SIZE = 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """Tiny random-init SIDN (C=4, K=3, 64 px) with a threshold set; batches of 2 images."""
    cfg = SIDNConfig()
    cfg.model.channels, cfg.model.clusters, cfg.data.image_size = 4, 3, SIZE
    cfg.infer.batch_size = 2  # several batches per run: a failure can come after outputs were written
    torch.manual_seed(0)
    model = SIDN(cfg.model).eval()
    model.threshold.fill_(0.5)
    path = tmp_path_factory.mktemp("bundle") / "model.pt"
    save_bundle(model, cfg, path)
    return path


def _edited_bundle(bundle: Path, dst: Path, name: str, value: float) -> Path:
    raw = read_bundle_raw(bundle)
    raw["state_dict"][name] = torch.full_like(raw["state_dict"][name], value)
    torch.save(raw, dst)
    return dst


def _photos(folder: Path, n: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_png(folder / f"img{i}.png", texture(rng, SIZE))
    return folder


def _predict(bundle: Path, inputs: list[Path], out: Path, *extra: str) -> int:
    return main(["predict", "--model", str(bundle), *map(str, inputs), "--out", str(out), *extra])


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".sidn-tmp-" in p.name]


def test_nan_weights_refused_naming_file_and_tensor(bundle, tmp_path, capsys):
    bad = _edited_bundle(bundle, tmp_path / "nan.pt", "fem.stem.0.weight", float("nan"))
    with pytest.raises(BundleError, match="fem.stem.0.weight") as info:
        load_bundle(bad)
    assert str(info.value).startswith(str(bad))
    out = tmp_path / "out"
    assert _predict(bad, [_photos(tmp_path / "photos")], out) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "fem.stem.0.weight" in err
    assert not out.exists() and not _leftovers(tmp_path)


def test_nonfinite_map_refused(bundle, tmp_path, capsys):
    """Finite weights that overflow to NaN maps: refused, not 'every image good' with a bare NaN."""
    bad = _edited_bundle(bundle, tmp_path / "overflow.pt", "fem.stem.0.weight", 3e38)
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    assert _predict(bad, [photos], out) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and str(bad) in err and "img0.png" in err
    assert not out.exists() and not _leftovers(tmp_path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nonfinite_threshold_refused(bundle, tmp_path, capsys, value):
    out = tmp_path / "out"
    assert _predict(bundle, [_photos(tmp_path / "photos", n=1)], out, f"--threshold={value}") == 2
    assert "finite" in capsys.readouterr().err
    assert not out.exists()


def test_failed_run_keeps_previous_outputs(bundle, tmp_path, capsys):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    assert _predict(bundle, [photos], out) == 0
    before = _snapshot(out)
    assert len(pd.read_csv(out / "predictions.csv")) == 3
    # a new image and a corrupt one (sorted last, in the third batch): the run fails after predicting the others
    write_png(photos / "img3.png", texture(np.random.default_rng(9), SIZE))
    (photos / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert _predict(bundle, [photos], out) == 2
    assert "zz_broken.png" in capsys.readouterr().err
    assert _snapshot(out) == before  # old csv beside old masks, nothing new, nothing half-written
    assert not _leftovers(tmp_path)
    # a successful run replaces the whole set (no stale mask of a removed image stays)
    (photos / "zz_broken.png").unlink()
    (photos / "img0.png").unlink()
    (out / "notes.txt").write_text("mine")
    assert _predict(bundle, [photos], out) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["img1.png", "img2.png", "img3.png"]
    assert (out / "notes.txt").read_text() == "mine" and not _leftovers(tmp_path)


def test_out_inside_input_folder_is_not_read(bundle, tmp_path):
    photos = _photos(tmp_path / "photos")
    out = photos / "pred"
    for _ in range(2):
        assert _predict(bundle, [photos], out) == 0
        table = pd.read_csv(out / "predictions.csv")
        assert sorted(Path(p).name for p in table["path"]) == ["img0.png", "img1.png", "img2.png"]
    # --out is the input folder itself: its masks/ and overlays/ are not inputs either
    assert _predict(bundle, [photos], photos) == 0
    assert _predict(bundle, [photos], photos) == 0
    assert len(pd.read_csv(photos / "predictions.csv")) == 3
    # an old output folder elsewhere under the input is skipped too
    assert len(collect_images([tmp_path], tmp_path / "elsewhere")) == 3


def test_hidden_files_and_folders_skipped(bundle, tmp_path):
    photos = _photos(tmp_path / "photos", n=2)
    (photos / "._img0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    write_png(photos / ".cache" / "thumb.png", texture(np.random.default_rng(1), SIZE))
    assert [p.name for p in collect_images([photos])] == ["img0.png", "img1.png"]
    assert _predict(bundle, [photos], tmp_path / "out") == 0


def test_skip_bad_reports_skipped_rows(bundle, tmp_path, capsys):
    photos = _photos(tmp_path / "photos", n=2)
    (photos / "img0b.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    assert _predict(bundle, [photos], out) == 2  # without --skip-bad: fails naming the file, writes nothing
    assert "img0b.png" in capsys.readouterr().err
    assert not out.exists() and not _leftovers(tmp_path)

    assert _predict(bundle, [photos], out, "--skip-bad") == 0
    assert "skipped" in capsys.readouterr().err
    table = pd.read_csv(out / "predictions.csv")
    assert [Path(p).name for p in table["path"]] == ["img0.png", "img0b.png", "img1.png"]  # input order
    assert table["status"].tolist() == ["ok", "skipped", "ok"]
    assert "decode" in table["reason"][1] and table["reason"].isna()[[0, 2]].all()
    doc = json.loads((out / "predictions.json").read_text())  # strict JSON: no bare NaN
    assert doc["skipped"] == 1 and doc["images"][1]["status"] == "skipped" and doc["images"][1]["score"] is None
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["img0.png", "img1.png"]
