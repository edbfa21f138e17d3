"""Reader for any MVTec-AD-layout folder.

Layout (MVTec AD, Bergmann et al. 2019; the paper's Sec. IV-A datasets use it)::

    <root>/<category>/train/good/*.png                     defect-free training images
    <root>/<category>/test/good/*.png                      defect-free test images
    <root>/<category>/test/<defect>/<name>.png             defective test images
    <root>/<category>/ground_truth/<defect>/<name>_mask.png   their masks

Image files are decoded by :mod:`sidn.data.decode` (any PNG/JPEG/BMP/TIFF, displayed
orientation, damaged files refused) into grayscale float32 in [0, 1]; masks must be binary.

Every problem raises :class:`sidn.data.errors.DataError` whose message starts with the
offending file (or the folder that was expected) and says what is wrong.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

from sidn.data.decode import image_info, read_image, read_mask, read_raw
from sidn.data.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = "_mask"
MANIFEST_COLUMNS = [
    "category",
    "path",
    "split",
    "defect_type",
    "label",
    "mask_path",
    "height",
    "width",
    "channels",
    "bit_depth",
]


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a float32 gray image to ``size`` x ``size`` with ``cv2.INTER_AREA``."""
    if img.ndim != 2:
        raise ValueError(f"resize_image expects a gray [H, W] image, got shape {img.shape}")
    if img.shape == (size, size):
        return np.ascontiguousarray(img, dtype=np.float32)
    out = cv2.resize(img.astype(np.float32, copy=False), (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- layout


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files (by extension) directly inside ``folder``, sorted by name; [] if absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _other_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not is_image_file(p))


def mask_path_for(category_dir: Path, defect_type: str, image_path: Path) -> Path:
    """Where the mask of a defective test image lives: ground_truth/<defect>/<stem>_mask.<ext>.

    Returns the existing file if one with an image extension is found (``.png`` first), else the
    expected ``.png`` path (which does not exist).
    """
    folder = category_dir / "ground_truth" / defect_type
    stem = image_path.stem + MASK_SUFFIX
    preferred = folder / f"{stem}.png"
    if preferred.is_file():
        return preferred
    for ext in IMAGE_EXTENSIONS:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return preferred


def iter_layout(root: str | os.PathLike, category: str) -> Iterable[tuple[str, str, Path]]:
    """Yield (split, defect_type, image_path) for every image file of a category, sorted."""
    cat_dir = Path(root) / category
    for p in list_images(cat_dir / "train" / "good"):
        yield "train", "good", p
    test_dir = cat_dir / "test"
    if test_dir.is_dir():
        for d in sorted(x for x in test_dir.iterdir() if x.is_dir() and not x.name.startswith(".")):
            for p in list_images(d):
                yield "test", d.name, p


def check_category_dir(root: str | os.PathLike, category: str) -> Path:
    """DataError naming the expected folder when the category or its training images are missing."""
    cat_dir = Path(root) / category
    if not cat_dir.is_dir():
        raise DataError(
            cat_dir,
            f"category folder not found (expected {cat_dir / 'train' / 'good'} with training images)",
        )
    train_dir = cat_dir / "train" / "good"
    if not train_dir.is_dir():
        raise DataError(train_dir, f"training folder not found in category '{category}'")
    if not list_images(train_dir):
        raise DataError(train_dir, f"no training images ({'/'.join(IMAGE_EXTENSIONS)}) in category '{category}'")
    return cat_dir


# --------------------------------------------------------------------------- manifest


def _manifest_row(cat_dir: Path, category: str, split: str, defect: str, path: Path,
                  unreadable: list[tuple[str, str]] | None = None) -> dict:
    """One manifest row; DataError for a bad image or mask.

    With ``unreadable`` given, an image that cannot be decoded does not raise: ``(path, problem)``
    is appended to it and the row gets height, width, channels and bit depth 0 (its mask is still
    checked, except for its size).
    """
    try:
        h, w, c, bits = image_info(read_raw(path))
    except DataError as exc:
        if unreadable is None:
            raise
        unreadable.append((exc.path, exc.problem))
        h = w = c = bits = 0
    mask_path = ""
    if defect != "good":
        mp = mask_path_for(cat_dir, defect, path)
        if not mp.is_file():
            raise DataError(path, f"defective image has no mask (expected {mp})")
        try:
            read_mask(mp, expected_shape=(h, w) if h else None, image_path=path)
        except DataError as exc:
            if str(path) in exc.problem:
                raise
            raise DataError(exc.path, f"{exc.problem} (mask of {path})") from exc
        mask_path = str(mp)
    return {
        "category": category,
        "path": str(path),
        "split": split,
        "defect_type": defect,
        "label": 0 if defect == "good" else 1,
        "mask_path": mask_path,
        "height": h,
        "width": w,
        "channels": c,
        "bit_depth": bits,
    }


def build_manifest(root: str | os.PathLike, category: str, strict: bool = True) -> pd.DataFrame:
    """One row per image of ``<root>/<category>`` (columns: :data:`MANIFEST_COLUMNS`).

    Every image is decoded and every mask read, so the manifest only lists usable files.
    ``strict=True`` raises :class:`DataError` on the first bad file, with one exception: a
    test-split image that cannot be decoded (corrupt, damaged JPEG, ...) does not stop the
    manifest, because training reads only ``train/good``. Its row stays in the manifest with
    height, width, channels and bit depth 0, it is listed in ``df.attrs["unreadable"]`` as
    (path, reason) and a warning names it; evaluation, which reads every test image, then fails
    with the DataError naming it. Missing or bad masks still raise.
    ``strict=False`` drops bad files (test images too), logs a warning for each and lists them
    in ``df.attrs["skipped"]`` as (path, reason).
    A missing category, or one without training images, raises in both modes.
    Files with other extensions are ignored and listed in ``df.attrs["ignored"]``.
    """
    cat_dir = check_category_dir(root, category)
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    unreadable: list[tuple[str, str]] = []
    for split, defect, path in iter_layout(root, category):
        try:
            rows.append(_manifest_row(cat_dir, category, split, defect, path,
                                      unreadable if strict and split == "test" else None))
        except DataError as exc:
            if strict:
                raise
            skipped.append((exc.path, exc.problem))
            log.warning("skipping bad file %s", exc)
    ignored = [str(p) for d in [cat_dir / "train" / "good", *sorted((cat_dir / "test").glob("*"))] for p in _other_files(d)]
    if ignored:
        log.info("%s: ignored %d non-image file(s), e.g. %s", cat_dir, len(ignored), ignored[0])
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df = df.astype({"label": "int64", "height": "int64", "width": "int64", "channels": "int64", "bit_depth": "int64"})
    if not (df["split"] == "train").any():
        raise DataError(cat_dir / "train" / "good", "no usable training images (all were skipped as bad files)")
    df.attrs["skipped"] = skipped
    df.attrs["ignored"] = ignored
    df.attrs["unreadable"] = unreadable
    if skipped:
        log.warning("%s: skipped %d bad file(s)", cat_dir, len(skipped))
    for bad, problem in unreadable:
        log.warning("%s: %s (test image kept in the manifest: training does not read it, evaluation will fail on it)",
                    bad, problem)
    return df


def split_holdout(manifest: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the train/good rows into (train, holdout), deterministically.

    Rows are sorted by path before a seeded permutation, so the result depends only on the set
    of files, ``fraction`` and ``seed``. With ``fraction > 0`` the holdout gets at least one image
    and the train part keeps at least one.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    good = manifest[(manifest["split"] == "train") & (manifest["defect_type"] == "good")]
    good = good.sort_values("path", kind="stable").reset_index(drop=True)
    n = len(good)
    n_hold = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_hold = min(max(n_hold, 1), n - 1)
    elif n < 2:
        n_hold = 0
    perm = np.random.default_rng(seed).permutation(n)
    hold_idx = np.sort(perm[:n_hold])
    train_idx = np.sort(perm[n_hold:])
    return good.iloc[train_idx].reset_index(drop=True), good.iloc[hold_idx].reset_index(drop=True)


def load_images(paths: Sequence[str | os.PathLike], size: int | None) -> np.ndarray:
    """Load images as float32 gray [N, H, W] in [0, 1], resized to ``size`` (INTER_AREA) if given.

    With ``size=None`` all images must have the same size (DataError naming the first that differs).
    """
    paths = list(paths)
    if not paths:
        s = size or 0
        return np.zeros((0, s, s), dtype=np.float32)
    out: np.ndarray | None = None
    for i, p in enumerate(paths):
        img = read_image(p)
        if size is not None:
            img = resize_image(img, size)
        if out is None:
            out = np.empty((len(paths), *img.shape), dtype=np.float32)
        elif img.shape != out.shape[1:]:
            raise DataError(
                p, f"image size {img.shape[1]}x{img.shape[0]} differs from {out.shape[2]}x{out.shape[1]} of {paths[0]} "
                "(pass size= to resize)",
            )
        out[i] = img
    assert out is not None
    return out
