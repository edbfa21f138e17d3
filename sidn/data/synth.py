"""Embedded default dataset: procedural textures with realistic defects, MVTec AD layout.

``synthesize`` writes, for each category::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<defect>/000.png ...
    <root>/<category>/ground_truth/<defect>/000_mask.png      (uint8 0/255, same size)
    <root>/<category>/.synth.json                               (generator parameters)

The five categories are modelled on the MVTec AD textures (Bergmann et al. 2019), the data
the SIDN paper evaluates on (Sec. IV-A): carpet, leather, tile and wood are 3-channel
colour PNGs, grid is a 1-channel grayscale PNG, as in MVTec AD. Each material (texture and
its defects) has its own module, named in ``sidn.data.synth_materials``; the defects' ground
truth is in ``sidn.data.synth_mask``, the simulated camera in ``sidn.data.synth_camera`` and
the worker processes in ``sidn.data.synth_workers``.

Determinism: every image has its own seed, derived from ``(seed, category, split,
index)``, so the output is byte-identical for any number of worker processes and a partial
re-run reproduces the same files. Atomicity: a category is generated into
``<root>/.<category>.tmp`` and renamed into place when complete; an interrupted run leaves
no half category (the stale ``.tmp`` is removed by the next run).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from sidn.config import TEXTURE_CATEGORIES
from sidn.data.synth_camera import camera
from sidn.data.synth_mask import change_mask
from sidn.data.synth_materials import DEFECT_TYPES, DEFECTS, TEXTURES
from sidn.data.synth_workers import cpu_count, init_worker, mp_context
from sidn.io import atomic_write

__all__ = [
    "DEFECT_TYPES",
    "GENERATOR_VERSION",
    "contact_sheet",
    "defect_counts",
    "render_sample",
    "synthesize",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the rendering changes: existing categories are then regenerated
MARKER = ".synth.json"
LOW_CONTRAST_FRACTION = 0.25  # share of defects rendered with reduced visibility
SMALL_FRACTION = 0.3  # share of defects drawn with a small extent (mostly < 0.5 % of the image)
MAX_TRIES = 12
MIN_SIZE = 64  # below this the textures' structure (wires, yarns) is not resolved
MIN_DEFECT_FRACTION = 1.5e-4  # a defect must change at least this share of the image ...
MAX_DEFECT_FRACTION = 0.3  # ... and at most this share
# "up" filter + Huffman-only zlib: ~4x faster than OpenCV's default PNG settings and only ~10 %
# larger on these (sensor-noisy) textures; encoding would otherwise be a third of the run time
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
        cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


# ----------------------------------------------------------------------------- one image


def image_seed(seed: int, category: str, split: str, index: int) -> np.random.SeedSequence:
    """Seed of one image; ``split`` is ``train``, ``test/good`` or ``test/<defect>``."""
    return np.random.SeedSequence([int(seed), zlib.crc32(category.encode()), zlib.crc32(split.encode()), int(index)])


def render_sample(category: str, defect: str | None, seed: np.random.SeedSequence,
                  size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one image: uint8 [H, W] (grid) or RGB [H, W, 3], and for a defect its mask
    (uint8 {0, 1} [H, W]; None for a good image)."""
    if category not in TEXTURES:
        raise ValueError(f"unknown category '{category}' (known: {', '.join(TEXTURES)})")
    if defect is not None and defect not in DEFECTS[category]:
        raise ValueError(f"unknown defect '{defect}' for {category} (known: {', '.join(DEFECTS[category])})")
    # children built explicitly (SeedSequence.spawn would depend on earlier spawns of ``seed``)
    ss_tex, ss_def, ss_cam = (
        np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, k)) for k in range(3)
    )
    tex = TEXTURES[category](np.random.default_rng(ss_tex), size)
    clean = tex.render()
    img, mask = clean, None
    if defect is not None:
        rng = np.random.default_rng(ss_def)
        low = bool(rng.random() < LOW_CONTRAST_FRACTION)
        small = bool(rng.random() < SMALL_FRACTION)
        lo, hi = max(4, MIN_DEFECT_FRACTION * size * size), MAX_DEFECT_FRACTION * size * size
        for attempt in range(MAX_TRIES):
            if attempt >= MAX_TRIES - 4:  # last resort: full visibility, normal extent
                low = small = False
            img, close_px, fill = DEFECTS[category][defect](tex, clean, rng, size, low, small)
            mask = change_mask(clean, img, close_px, fill)
            if lo <= int(mask.sum()) <= hi:
                break
        else:
            raise RuntimeError(
                f"{category}/{defect}: no visible defect after {MAX_TRIES} tries (size {size}, seed {seed.entropy})"
            )
    out = camera(img.astype(np.float32), np.random.default_rng(ss_cam), size)
    return out, mask


def _encode(img: np.ndarray) -> bytes:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, _PNG)
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a PNG")
    return buf.tobytes()


def _job(job: tuple) -> str:
    category, split, defect, index, name, seed, size, cat_tmp = job
    img, mask = render_sample(category, defect, image_seed(seed, category, split, index), size)
    base = Path(cat_tmp)
    (base / split / f"{name}.png").write_bytes(_encode(img))
    if mask is not None:
        (base / "ground_truth" / defect / f"{name}_mask.png").write_bytes(_encode(mask * np.uint8(255)))
    return category


# ----------------------------------------------------------------------------- dataset


def defect_counts(category: str, n_test_defect: int) -> dict[str, int]:
    """``n_test_defect`` spread evenly over the category's defect types (first ones get the rest)."""
    types = DEFECT_TYPES[category]
    q, r = divmod(n_test_defect, len(types))
    return {t: q + (i < r) for i, t in enumerate(types)}


def _names(n: int) -> list[str]:
    width = max(3, len(str(max(n - 1, 0))))
    return [f"{i:0{width}d}" for i in range(n)]


def _params(category: str, seed: int, size: int, n_train: int, n_test_good: int, n_test_defect: int) -> dict:
    return {
        "generator": "sidn.data.synth",
        "version": GENERATOR_VERSION,
        "category": category,
        "seed": seed,
        "size": size,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "defects": {d: n for d, n in defect_counts(category, n_test_defect).items() if n > 0},
        "channels": TEXTURES[category].channels,
    }


def _expected_files(params: dict) -> list[str]:
    files = [f"train/good/{n}.png" for n in _names(params["n_train"])]
    files += [f"test/good/{n}.png" for n in _names(params["n_test_good"])]
    for d, k in params["defects"].items():
        for n in _names(k):
            files += [f"test/{d}/{n}.png", f"ground_truth/{d}/{n}_mask.png"]
    return files


def _read_marker(cat_dir: Path) -> dict | None:
    try:
        return json.loads((cat_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(cat_dir: Path, params: dict) -> bool:
    marker = _read_marker(cat_dir)
    if marker is None or marker.get("params") != params:
        return False
    return all((cat_dir / f).is_file() for f in _expected_files(params))


def _jobs(category: str, params: dict, cat_tmp: Path) -> list[tuple]:
    seed, size = params["seed"], params["size"]
    jobs = [(category, "train/good", None, i, n, seed, size, str(cat_tmp)) for i, n in enumerate(_names(params["n_train"]))]
    jobs += [(category, "test/good", None, i, n, seed, size, str(cat_tmp))
             for i, n in enumerate(_names(params["n_test_good"]))]
    for d, k in params["defects"].items():
        jobs += [(category, f"test/{d}", d, i, n, seed, size, str(cat_tmp)) for i, n in enumerate(_names(k))]
    return jobs


def _finish(root: Path, category: str, params: dict, started: float) -> None:
    tmp, final = root / f".{category}.tmp", root / category
    # the marker is part of the output: keep it deterministic (no timestamps)
    marker = {"params": params, "files": len(_expected_files(params))}
    (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    old = root / f".{category}.old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    log.info("synth: %s complete (%d files) in %.1f s", final, marker["files"], time.perf_counter() - started)


def synthesize(
    root: Path | str,
    categories: Iterable[str] | None = None,
    seed: int = 0,
    size: int = 512,
    n_train: int = 200,
    n_test_good: int = 40,
    n_test_defect: int = 60,
    workers: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write the procedural texture dataset in MVTec AD layout under ``root``.

    ``categories`` defaults to all five (``sidn.config.TEXTURE_CATEGORIES``). A category
    that already exists complete with the same parameters is skipped unless ``overwrite``;
    one previously written by this generator with other parameters (or incomplete) is
    regenerated; a directory of that name not written by this generator is an error unless
    ``overwrite``. ``workers``: processes (None = the CPUs available, as ``os.cpu_count()``;
    1 = in this process).
    """
    root = Path(root)
    cats = list(TEXTURE_CATEGORIES if categories is None else categories)
    for c in cats:
        if c not in TEXTURES:
            raise ValueError(f"{root}: unknown category '{c}' (known: {', '.join(TEXTURES)})")
    if len(set(cats)) != len(cats):
        raise ValueError(f"{root}: duplicate categories in {cats}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{root}: seed must be a non-negative integer, got {seed!r}")
    if size < MIN_SIZE:
        raise ValueError(f"{root}: size must be >= {MIN_SIZE} px, got {size}")
    for name, v in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_defect", n_test_defect)):
        if v < 0:
            raise ValueError(f"{root}: {name} must be >= 0, got {v}")
    root.mkdir(parents=True, exist_ok=True)

    todo: dict[str, dict] = {}
    jobs: list[tuple] = []
    for c in cats:
        params = _params(c, int(seed), int(size), int(n_train), int(n_test_good), int(n_test_defect))
        final = root / c
        if final.exists():
            if not overwrite and _is_complete(final, params):
                log.info("synth: %s exists and is complete, skipped", final)
                continue
            if not overwrite and _read_marker(final) is None:
                raise FileExistsError(
                    f"{final}: exists and was not written by sidn.data.synth (no {MARKER}); "
                    "remove it or pass overwrite=True"
                )
        tmp = root / f".{c}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        for split in ["train/good", "test/good"] + [f"test/{d}" for d in params["defects"]]:
            (tmp / split).mkdir(parents=True)
        for d in params["defects"]:
            (tmp / "ground_truth" / d).mkdir(parents=True)
        todo[c] = params
        jobs += _jobs(c, params, tmp)
    if not todo:
        return

    remaining = {c: sum(1 for j in jobs if j[0] == c) for c in todo}
    started = {c: time.perf_counter() for c in todo}
    for c in [c for c, n in remaining.items() if n == 0]:
        _finish(root, c, todo[c], started[c])
    n_workers = cpu_count() if workers is None else max(1, int(workers))
    n_workers = min(n_workers, max(1, len(jobs)))
    if n_workers == 1:
        cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for j in jobs:
                c = _job(j)
                remaining[c] -= 1
                if remaining[c] == 0:
                    _finish(root, c, todo[c], started[c])
        finally:
            cv2.setNumThreads(cv2_threads)
        return
    ctx = mp_context()
    chunk = max(1, min(8, len(jobs) // (4 * n_workers)))
    with ctx.Pool(n_workers, initializer=init_worker) as pool:
        for c in pool.imap_unordered(_job, jobs, chunksize=chunk):
            remaining[c] -= 1
            if remaining[c] == 0:
                _finish(root, c, todo[c], started[c])


# ----------------------------------------------------------------------------- contact sheet


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: cannot read image")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img[..., :3]


def _spread(items: list, k: int) -> list:
    if k >= len(items):
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, k).round()]


def contact_sheet(root: Path | str, category: str, out_png: Path | str, n_good: int = 4, n_defect: int = 8,
                  tile: int = 256, columns: int = 4) -> Path:
    """PNG grid of ``n_good`` good test images and ``n_defect`` defective ones (spread over
    the defect types) with their ground-truth outlines in red and a label (type, file, mask
    area in %). Written atomically; returns ``out_png``."""
    cat_dir = Path(root) / category
    test = cat_dir / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{test}: no such directory (not an MVTec-layout category?)")
    entries: list[tuple[str, Path, Path | None]] = []
    goods = sorted((test / "good").glob("*.png"))
    entries += [("good", p, None) for p in _spread(goods, n_good)]
    types = sorted(d.name for d in test.iterdir() if d.is_dir() and d.name != "good")
    per_type = {t: sorted((test / t).glob("*.png")) for t in types}
    want = {t: 0 for t in types}
    for i in range(n_defect):
        if types:
            want[types[i % len(types)]] += 1
    for t in types:
        for p in _spread(per_type[t], want[t]):
            entries.append((t, p, cat_dir / "ground_truth" / t / f"{p.stem}_mask.png"))
    if not entries:
        raise FileNotFoundError(f"{test}: no test images")
    bar = max(14, tile // 12)
    tiles = []
    for label, p, mpath in entries:
        img = cv2.resize(_read_rgb(p), (tile, tile), interpolation=cv2.INTER_AREA)
        text = f"{label} {p.stem}"
        if mpath is not None:
            m = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise ValueError(f"{mpath}: cannot read mask")
            text += f" {100.0 * float((m > 127).mean()):.2f}%"
            m = cv2.resize((m > 127).astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, (0, 0, 255), 1, cv2.LINE_AA)
        head = np.full((bar, tile, 3), 30, np.uint8)
        cv2.putText(head, text, (4, bar - 4), cv2.FONT_HERSHEY_SIMPLEX, bar / 32.0, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(np.vstack([head, img]))
    cols = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (rows * cols - len(tiles))
    grid = np.vstack([np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(rows)])
    title = np.full((bar + 6, grid.shape[1], 3), 0, np.uint8)
    cv2.putText(title, f"{category}: {cat_dir}", (4, bar), cv2.FONT_HERSHEY_SIMPLEX, bar / 30.0,
                (255, 255, 255), 1, cv2.LINE_AA)
    sheet = np.vstack([title, grid])
    ok, buf = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError(f"{out_png}: cv2.imencode failed")
    out = Path(out_png)
    atomic_write(out, lambda tmp: tmp.write_bytes(buf.tobytes()))
    return out
