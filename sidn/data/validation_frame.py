"""The tables :func:`sidn.data.validate.validate_dataset` runs its great-expectations suites on.

:func:`build_validation_frame` describes every image of an MVTec-layout dataset in one row
(it never raises on a bad file: ``decodable`` is False and ``error`` says why), and
:func:`derive_check_columns` adds the helper columns the expectations read.
:func:`category_frame`, :func:`ground_truth_frame` and :func:`dataset_frame` give the
per-category, per-``ground_truth/<defect>/`` and whole-dataset tables. The checks themselves
are listed in :mod:`sidn.data.validate`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from sidn.data.decode import decode_bytes, image_info, read_bytes
from sidn.data.errors import DataError
from sidn.data.mvtec import IMAGE_EXTENSIONS, MASK_SUFFIX, iter_layout, list_images, mask_path_for

FRAME_COLUMNS = [
    "category",
    "split",
    "defect_type",
    "path",
    "decodable",
    "error",
    "height",
    "width",
    "channels",
    "bit_depth",
    "mask_path",
    "mask_decodable",
    "mask_error",
    "mask_height",
    "mask_width",
    "mask_values",
    "mask_binary",
    "defect_area_fraction",
    "content_hash",
]

_MAX_LISTED_VALUES = 10


def _mask_values_string(values: np.ndarray) -> str:
    shown = [str(int(v)) for v in values[:_MAX_LISTED_VALUES]]
    if len(values) > _MAX_LISTED_VALUES:
        shown.append(f"...(+{len(values) - _MAX_LISTED_VALUES} more)")
    return ",".join(shown)


def _describe_mask(row: dict[str, Any], mask_path: Path) -> None:
    row["mask_path"] = str(mask_path)
    try:
        raw = decode_bytes(read_bytes(mask_path), mask_path)
    except DataError as exc:
        row["mask_decodable"] = False
        row["mask_error"] = exc.problem
        return
    row["mask_decodable"] = True
    row["mask_height"], row["mask_width"] = int(raw.shape[0]), int(raw.shape[1])
    m = raw
    consistent = True
    if m.ndim == 3:
        m3 = m[:, :, :3] if m.shape[2] == 4 else m
        consistent = all(np.array_equal(m3[:, :, 0], m3[:, :, i]) for i in range(1, m3.shape[2]))
        m = m3[:, :, 0]
    values = np.unique(m)
    full = 65535 if m.dtype == np.uint16 else 255
    vs = {int(v) for v in values}
    row["mask_values"] = _mask_values_string(values)
    row["mask_binary"] = bool(consistent and (vs <= {0, 1} or vs <= {0, full}))
    row["defect_area_fraction"] = float(np.count_nonzero(m)) / float(m.size)


def _describe_image(category: str, split: str, defect: str, path: Path, cat_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in FRAME_COLUMNS}
    row.update(category=category, split=split, defect_type=defect, path=str(path), mask_path="")
    try:
        data = read_bytes(path)
    except DataError as exc:
        row.update(decodable=False, error=exc.problem)
    else:
        row["content_hash"] = hashlib.sha256(data).hexdigest()
        try:
            raw = decode_bytes(data, path)
        except DataError as exc:
            row.update(decodable=False, error=exc.problem)
        else:
            h, w, c, bits = image_info(raw)
            row.update(decodable=True, error="", height=h, width=w, channels=c, bit_depth=bits)
    if split == "test":
        mp = mask_path_for(cat_dir, defect, path)
        if mp.is_file():
            _describe_mask(row, mp)
    return row


def build_validation_frame(root: str | os.PathLike, categories: Sequence[str]) -> pd.DataFrame:
    """One row per image file (columns: :data:`FRAME_COLUMNS`); never raises on a bad file.

    ``decodable`` is False (and ``error`` says why) for unreadable images; mask columns are
    null when an image has no mask; ``mask_values`` lists the distinct mask values as a string
    like ``"0,255"``; ``content_hash`` is the sha256 of the file bytes (null if unreadable).
    """
    rows = []
    for category in categories:
        cat_dir = Path(root) / category
        for split, defect, path in iter_layout(root, category):
            rows.append(_describe_image(category, split, defect, path, cat_dir))
    df = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    for col in ("height", "width", "channels", "bit_depth", "mask_height", "mask_width"):
        df[col] = df[col].astype("float64")  # NaN where unknown
    df["defect_area_fraction"] = df["defect_area_fraction"].astype("float64")
    for col in ("decodable", "mask_decodable", "mask_binary", "error", "mask_error", "mask_values", "content_hash"):
        df[col] = df[col].astype(object)
        df.loc[df[col].isna(), col] = None
    return df


def _size_str(h: Any, w: Any) -> str | None:
    if h is None or w is None or pd.isna(h) or pd.isna(w):
        return None
    return f"{int(w)}x{int(h)}"


def derive_check_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the helper columns the expectations read (see the module docstring)."""
    df = frame.copy()
    df["size"] = [_size_str(h, w) for h, w in zip(df["height"], df["width"])]
    df["mask_size"] = [_size_str(h, w) for h, w in zip(df["mask_height"], df["mask_width"])]
    modal: dict[str, str] = {}
    for cat, sub in df.groupby("category", sort=False):
        sizes = sub["size"].dropna()
        if len(sizes):
            counts = sizes.value_counts(sort=False)  # first-seen order (training images first) breaks ties
            modal[str(cat)] = str(counts.index[int(np.argmax(counts.to_numpy()))])
    df["category_size"] = [modal.get(c) if s is not None else None for c, s in zip(df["category"], df["size"])]
    is_defect = df["defect_type"] != "good"
    has_mask = df["mask_path"] != ""
    area = df["defect_area_fraction"].fillna(0.0)
    mask_ok = has_mask & (df["mask_decodable"] == True) & (area > 0)  # noqa: E712
    df["defect_mask_ok"] = [bool(ok) if d else None for ok, d in zip(mask_ok, is_defect)]
    df["good_without_mask"] = [(not m) if not d else None for m, d in zip(has_mask, is_defect)]
    hashes = df["content_hash"]
    train_h = set(hashes[(df["split"] == "train") & hashes.notna()])
    test_h = set(hashes[(df["split"] == "test") & hashes.notna()])
    df["hash_in_both_splits"] = [None if h is None else (h in train_h and h in test_h) for h in hashes]
    for col in ("size", "mask_size", "category_size", "defect_mask_ok", "good_without_mask", "hash_in_both_splits"):
        df[col] = df[col].astype(object)
        df.loc[df[col].isna(), col] = None
    return df


def category_frame(root: str | os.PathLike, categories: Sequence[str], frame: pd.DataFrame) -> pd.DataFrame:
    """One row per category: train_dir, exists, train_count (decodable training images)."""
    rows = []
    for cat in categories:
        sub = frame[(frame["category"] == cat)]
        rows.append(
            {
                "category": cat,
                "train_dir": str(Path(root) / cat / "train" / "good"),
                "exists": (Path(root) / cat).is_dir(),
                "train_count": int(((sub["split"] == "train") & (sub["decodable"] == True)).sum()),  # noqa: E712
                "test_count": int((sub["split"] == "test").sum()),
            }
        )
    return pd.DataFrame(rows, columns=["category", "train_dir", "exists", "train_count", "test_count"])


def _unused_mask_problem(mask: Path, test_dir: Path, cat_dir: Path, defect: str) -> str:
    """Why no test image uses ``mask`` (the text shown when ``mask_has_image`` fails)."""
    exts = "|".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    if not mask.stem.endswith(MASK_SUFFIX):
        return (f"mask file name does not end in '{MASK_SUFFIX}': the mask of test image "
                f"{test_dir / '<name>'}.<{exts}> must be named <name>{MASK_SUFFIX}.png")
    stem = mask.stem[: -len(MASK_SUFFIX)]
    owners = [p for p in list_images(test_dir) if p.stem == stem]
    if owners:
        used = mask_path_for(cat_dir, defect, owners[0])
        return f"mask not used: test image {owners[0]} uses {used}"
    return f"mask without image: no test image {test_dir / stem}.<{exts}>"


def ground_truth_frame(root: str | os.PathLike, categories: Sequence[str], frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ``ground_truth/<defect>/`` folder and per mask file in it.

    Columns: category, path, kind (``"folder"`` or ``"mask"``), test_folder_found (folders:
    whether ``test/<defect>/`` exists), mask_used (masks: whether a test image of ``frame`` uses
    this file as its mask), problem (what to report if the row fails). Masks of a folder without
    a test folder get no rows of their own: the folder is reported once.
    """
    used = set(frame["mask_path"].dropna()) - {""}
    rows: list[dict[str, Any]] = []
    for category in categories:
        cat_dir = Path(root) / category
        gt_dir = cat_dir / "ground_truth"
        if not gt_dir.is_dir():
            continue
        for folder in sorted(d for d in gt_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
            test_dir = cat_dir / "test" / folder.name
            has_test = test_dir.is_dir()
            rows.append({
                "category": category, "path": str(folder), "kind": "folder", "test_folder_found": has_test,
                "mask_used": None,
                "problem": f"ground-truth folder without test images: {test_dir} does not exist",
            })
            if not has_test:
                continue
            for mask in list_images(folder):
                is_used = str(mask) in used
                rows.append({
                    "category": category, "path": str(mask), "kind": "mask", "test_folder_found": None,
                    "mask_used": is_used,
                    "problem": "" if is_used else _unused_mask_problem(mask, test_dir, cat_dir, folder.name),
                })
    df = pd.DataFrame(rows, columns=["category", "path", "kind", "test_folder_found", "mask_used", "problem"])
    for col in ("test_folder_found", "mask_used"):
        df[col] = df[col].astype(object)
        df.loc[df[col].isna(), col] = None
    return df


def dataset_frame(root: str | os.PathLike, categories: Sequence[str], frame: pd.DataFrame) -> pd.DataFrame:
    """One row for the whole dataset: root, category_count, image_count, problem."""
    root = Path(root)
    where = "does not exist" if not root.is_dir() else "has no category to validate"
    problem = f"no category: {root} {where} (expected {root / '<category>' / 'train' / 'good'} with training images)"
    return pd.DataFrame([{"root": str(root), "category_count": len(categories), "image_count": len(frame),
                          "problem": problem}])
