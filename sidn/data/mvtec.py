"""Reader for any MVTec-AD-layout folder.

Layout (MVTec AD, Bergmann et al. 2019; the paper's Sec. IV-A datasets use it)::

    <root>/<category>/train/good/*.png                     defect-free training images
    <root>/<category>/test/good/*.png                      defect-free test images
    <root>/<category>/test/<defect>/<name>.png             defective test images
    <root>/<category>/ground_truth/<defect>/<name>_mask.png   their masks

Images may be PNG, JPEG, BMP or TIFF, 8- or 16-bit, gray, RGB or RGBA; they are read with
``cv2.IMREAD_UNCHANGED`` and turned into grayscale float32 in [0, 1] (the paper works on
grayscale images). Masks must be binary: {0, 255} or {0, 1} (16-bit: {0, 65535} or {0, 1}).

Every problem raises :class:`DataError` whose message starts with the offending file (or the
folder that was expected) and says what is wrong.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

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


class DataError(ValueError):
    """A data file or folder is missing or unusable. The message starts with its path."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable across processes (Dask)
        return (type(self), (self.path, self.problem))


# --------------------------------------------------------------------------- decoding


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file's bytes; DataError if it is missing, not a file or empty."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file does not exist")
    if not p.is_file():
        raise DataError(p, "is not a regular file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(p, f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise DataError(p, "file is empty (0 bytes)")
    return data


def _looks_truncated(data: bytes) -> str | None:
    """Cheap structural end-of-file check for PNG and JPEG.

    Some decoder builds return a partly grey image for a truncated file instead of failing, so we
    check that the end marker (PNG ``IEND`` chunk, JPEG ``FFD9``) is present near the end.
    """
    tail = data[-4096:]
    if data.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in tail:
        return "truncated PNG file (no IEND chunk at the end)"
    if data.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        return "truncated JPEG file (no end-of-image marker)"
    return None


def decode_bytes(data: bytes, path: str | os.PathLike) -> np.ndarray:
    """Decode image bytes with ``cv2.IMREAD_UNCHANGED``; DataError naming ``path`` on failure.

    Returns the raw array (uint8 or uint16; [H, W] or [H, W, C] in BGR(A) order).
    """
    problem = _looks_truncated(data)
    if problem:
        raise DataError(path, problem)
    try:
        raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # pragma: no cover - imdecode normally returns None
        raise DataError(path, f"cannot decode image: {exc}") from exc
    if raw is None or raw.size == 0:
        raise DataError(path, "cannot decode image (corrupt, truncated or unsupported format)")
    if raw.dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"unsupported sample type {raw.dtype} (expected 8- or 16-bit integers)")
    if raw.ndim == 3 and raw.shape[2] not in (1, 2, 3, 4):
        raise DataError(path, f"unsupported number of channels {raw.shape[2]} (expected 1, 3 or 4)")
    if raw.ndim not in (2, 3):
        raise DataError(path, f"unsupported image shape {raw.shape}")
    return raw


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file unchanged (dtype and channels as stored)."""
    return decode_bytes(read_bytes(path), path)


def image_info(raw: np.ndarray) -> tuple[int, int, int, int]:
    """(height, width, channels, bit_depth) of a decoded raw array."""
    channels = 1 if raw.ndim == 2 else int(raw.shape[2])
    bit_depth = 16 if raw.dtype == np.uint16 else 8
    return int(raw.shape[0]), int(raw.shape[1]), channels, bit_depth


def raw_to_gray(raw: np.ndarray, path: str | os.PathLike = "<array>") -> np.ndarray:
    """Raw decoded array -> float32 gray [H, W] in [0, 1] (16-bit scaled by 65535)."""
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    img = raw.astype(np.float32) / np.float32(scale)
    if img.ndim == 3:
        c = img.shape[2]
        if c == 1:
            img = img[:, :, 0]
        elif c == 2:  # gray + alpha
            img = img[:, :, 0]
        elif c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif c == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        else:  # pragma: no cover - rejected in decode_bytes
            raise DataError(path, f"unsupported number of channels {c}")
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any PNG/JPEG/BMP/TIFF (8/16-bit, gray/RGB/RGBA) as float32 gray [H, W] in [0, 1]."""
    return raw_to_gray(read_raw(path), path)


def raw_to_mask(raw: np.ndarray, path: str | os.PathLike = "<array>") -> np.ndarray:
    """Raw decoded mask -> uint8 {0, 1} [H, W]; DataError if it is not binary.

    Allowed value sets: {0, 255} or {0, 1} (and {0, 65535} for 16-bit masks). A mask with
    several channels is accepted only when all channels are equal.
    """
    m = raw
    if m.ndim == 3:
        if m.shape[2] == 4:
            m = m[:, :, :3]
        if m.shape[2] > 1 and not all(np.array_equal(m[:, :, 0], m[:, :, i]) for i in range(1, m.shape[2])):
            raise DataError(path, f"mask has {raw.shape[2]} channels with different values (expected a gray mask)")
        m = m[:, :, 0]
    values = np.unique(m)
    full = 65535 if m.dtype == np.uint16 else 255
    vs = {int(v) for v in values}
    if not (vs <= {0, 1} or vs <= {0, full}):
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise DataError(path, f"mask is not binary: values {{{shown}}} (allowed {{0,{full}}} or {{0,1}})")
    return (m > 0).astype(np.uint8)


def read_mask(path: str | os.PathLike, expected_shape: tuple[int, int] | None = None,
              image_path: str | os.PathLike | None = None) -> np.ndarray:
    """Read a ground-truth mask as uint8 {0, 1} [H, W].

    DataError if the file is unreadable, not binary, or (when ``expected_shape`` is given) its
    size differs from the image's.
    """
    m = raw_to_mask(read_raw(path), path)
    if expected_shape is not None and tuple(m.shape) != tuple(expected_shape):
        what = f"image {image_path}" if image_path else "its image"
        raise DataError(
            path,
            f"mask size {m.shape[1]}x{m.shape[0]} (WxH) differs from {what} size "
            f"{expected_shape[1]}x{expected_shape[0]}",
        )
    return m


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


def _manifest_row(cat_dir: Path, category: str, split: str, defect: str, path: Path) -> dict:
    raw = read_raw(path)
    h, w, c, bits = image_info(raw)
    mask_path = ""
    if defect != "good":
        mp = mask_path_for(cat_dir, defect, path)
        if not mp.is_file():
            raise DataError(path, f"defective image has no mask (expected {mp})")
        try:
            read_mask(mp, expected_shape=(h, w), image_path=path)
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
    ``strict=True`` raises :class:`DataError` on the first bad file. ``strict=False`` drops bad
    files, logs a warning for each and lists them in ``df.attrs["skipped"]`` as (path, reason).
    A missing category, or one without training images, raises in both modes.
    Files with other extensions are ignored and listed in ``df.attrs["ignored"]``.
    """
    cat_dir = check_category_dir(root, category)
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for split, defect, path in iter_layout(root, category):
        try:
            rows.append(_manifest_row(cat_dir, category, split, defect, path))
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
    if skipped:
        log.warning("%s: skipped %d bad file(s)", cat_dir, len(skipped))
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
