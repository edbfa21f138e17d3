"""Tiny MVTec-layout trees for tests (shared by several test modules).

    from helpers.data import make_mvtec_tree
    cat_dir = make_mvtec_tree(tmp_path, "carpet", n_train=4, n_test_good=2, defects={"cut": 2})

writes::

    tmp_path/carpet/train/good/000.png ...            n_train textures
    tmp_path/carpet/test/good/000.png ...             n_test_good textures
    tmp_path/carpet/test/cut/000.png ...              textures with a rectangular defect
    tmp_path/carpet/ground_truth/cut/000_mask.png     its mask ({0,255} uint8 PNG)

Images are 8-bit gray PNGs of random smooth textures (every file differs, so content hashes
are unique); a defect is a rectangle that is brighter or darker than its surroundings.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["make_mvtec_tree", "texture", "write_png"]


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random smooth gray texture, uint8 [size, size]."""
    noise = rng.random((size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(size / 32.0, 1.0))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    f = rng.uniform(0.1, 0.5)
    stripes = 0.5 + 0.5 * np.sin(f * xx + rng.uniform(0, 6.28)) * np.cos(f * 0.7 * yy)
    img = 0.5 * (smooth - smooth.min()) / (np.ptp(smooth) + 1e-6) + 0.3 * stripes + 0.2 * noise
    img = (img - img.min()) / (np.ptp(img) + 1e-6)
    return np.clip(40 + img * 170, 0, 255).astype(np.uint8)


def write_png(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` (uint8/uint16, gray or BGR[A]) with cv2; raises if writing fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"{path}: cv2.imwrite failed")
    return path


def make_mvtec_tree(
    root: str | Path,
    category: str = "carpet",
    n_train: int = 4,
    n_test_good: int = 2,
    defects: dict[str, int] | None = None,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny MVTec-layout category under ``root`` and return ``root/category``.

    Args:
        root: dataset root (created if needed).
        category: category folder name.
        n_train: images in train/good.
        n_test_good: images in test/good.
        defects: defect type -> number of defective test images (default ``{"cut": 2}``);
            each gets a ``ground_truth/<defect>/<name>_mask.png`` with values {0, 255}.
        size: image side in pixels (square images).
        seed: RNG seed; the same arguments give byte-identical files.
    """
    defects = {"cut": 2} if defects is None else defects
    rng = np.random.default_rng(seed)
    cat = Path(root) / category
    for i in range(n_train):
        write_png(cat / "train" / "good" / f"{i:03d}.png", texture(rng, size))
    for i in range(n_test_good):
        write_png(cat / "test" / "good" / f"{i:03d}.png", texture(rng, size))
    for defect, n in defects.items():
        for i in range(n):
            img = texture(rng, size)
            mask = np.zeros((size, size), np.uint8)
            h = int(rng.integers(max(size // 8, 2), max(size // 3, 3)))
            w = int(rng.integers(max(size // 8, 2), max(size // 3, 3)))
            y = int(rng.integers(0, size - h))
            x = int(rng.integers(0, size - w))
            mask[y : y + h, x : x + w] = 255
            value = 250 if rng.random() < 0.5 else 5
            img[mask > 0] = value
            write_png(cat / "test" / defect / f"{i:03d}.png", img)
            write_png(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return cat
