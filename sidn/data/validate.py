"""Dataset validation with great-expectations 1.x (fails loudly on bad data).

:func:`build_validation_frame` describes every image of an MVTec-layout dataset in one row
(it never raises on a bad file: ``decodable`` is False and ``error`` says why).
:func:`validate_dataset` derives a few helper columns and runs a great-expectations suite
over that frame in an ephemeral GX context (nothing is written to a GX project):

========================  =====================================================================
check                     GX expectation
========================  =====================================================================
image_decodes             ExpectColumnValuesToBeInSet(decodable, [True])
size_consistent           ExpectColumnPairValuesToBeEqual(size, category_size) -- every image has
                          its category's most common size; with ``size_range`` instead
                          ExpectColumnValuesToBeBetween(height|width, lo, hi)
mask_decodes              ExpectColumnValuesToBeInSet(mask_decodable, [True])
mask_binary               ExpectColumnValuesToBeInSet(mask_binary, [True])
mask_size_matches         ExpectColumnPairValuesToBeEqual(mask_size, size)
defect_has_mask           ExpectColumnValuesToBeInSet(defect_mask_ok, [True])  (non-empty mask)
good_has_no_mask          ExpectColumnValuesToBeInSet(good_without_mask, [True])
unique_content            ExpectColumnValuesToBeUnique(content_hash)
no_train_test_overlap     ExpectColumnValuesToBeInSet(hash_in_both_splits, [False])
mask_has_image            ExpectColumnValuesToBeInSet(mask_used, [True])  -- on a third table,
                          one row per ``ground_truth/<defect>/`` folder and mask file
                          (:func:`ground_truth_frame`): a mask no test image uses fails
gt_folder_has_test        ExpectColumnValuesToBeInSet(test_folder_found, [True])  (same table):
                          a ``ground_truth/<defect>/`` folder without ``test/<defect>/`` fails
min_train_images          ExpectColumnValuesToBeBetween(train_count, max(1, min_train_images))
                          -- on a per-category table, so a missing or empty category fails too
has_categories            ExpectColumnValuesToBeBetween(category_count, 1) -- on a one-row
                          dataset table, so a data root without categories fails
========================  =====================================================================

Null values (e.g. ``mask_binary`` of an image without a mask) are ignored by GX column-map
expectations, which is how per-subset checks are expressed. The full GX results go to
``out_dir/validation.json``; ``out_dir/validation.html`` is our own small HTML rendering of them
(GX 1.x data docs need a file-backed context, which we avoid).

``great_expectations`` is imported lazily inside :func:`validate_dataset` (it takes seconds).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from sidn.data.decode import decode_bytes, image_info, read_bytes
from sidn.data.errors import DataError
from sidn.data.mvtec import IMAGE_EXTENSIONS, MASK_SUFFIX, iter_layout, list_images, mask_path_for
from sidn.io import atomic_write_text

log = logging.getLogger(__name__)
# GX logs ~200 INFO lines ("Skipping registering function ...") as it is imported: keep its warnings only
logging.getLogger("great_expectations").setLevel(logging.WARNING)

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

CHECKS: dict[str, str] = {
    "image_decodes": "every image file decodes",
    "size_consistent": "image sizes are consistent within a category (or inside the declared range)",
    "mask_decodes": "every mask file decodes",
    "mask_binary": "masks are binary ({0,255} or {0,1})",
    "mask_size_matches": "each mask has the size of its image",
    "defect_has_mask": "every defective image has a non-empty mask",
    "good_has_no_mask": "no good image has a mask",
    "unique_content": "no two images have the same content (sha256)",
    "no_train_test_overlap": "no image appears in both train and test (by content)",
    "mask_has_image": "every mask file belongs to a test image",
    "gt_folder_has_test": "every ground_truth/<defect> folder has a test/<defect> folder",
    "min_train_images": "each category has enough training images (at least one)",
    "has_categories": "the dataset has at least one category",
}

_MAX_LISTED_VALUES = 10


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_dataset`.

    ``failures`` holds one dict per offending file and check:
    ``{"expectation": check name, "file": path, "detail": what is wrong}``.
    """

    passed: bool
    failures: list[dict[str, str]] = field(default_factory=list)
    result_json: Path | None = None
    html: Path | None = None


# --------------------------------------------------------------------------- frame


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


# --------------------------------------------------------------------------- GX


def _gx_context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    if hasattr(ctx, "enable_analytics"):
        ctx.enable_analytics(False)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def _meta(check: str) -> dict[str, str]:
    """GX ``meta`` of an expectation: our check name (see :data:`CHECKS`) and its description."""
    return {"check": check, "description": CHECKS[check]}


def _image_expectations(size_range: tuple[int, int] | None) -> list[Any]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [gxe.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True], meta=_meta("image_decodes"))]
    if size_range is None:
        exps.append(
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="size", column_B="category_size", ignore_row_if="either_value_is_missing",
                meta=_meta("size_consistent"),
            )
        )
    else:
        lo, hi = size_range
        for col in ("height", "width"):
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi, meta=_meta("size_consistent")))
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="mask_decodable", value_set=[True], meta=_meta("mask_decodes")),
        gxe.ExpectColumnValuesToBeInSet(column="mask_binary", value_set=[True], meta=_meta("mask_binary")),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="mask_size", column_B="size", ignore_row_if="either_value_is_missing", meta=_meta("mask_size_matches")
        ),
        gxe.ExpectColumnValuesToBeInSet(column="defect_mask_ok", value_set=[True], meta=_meta("defect_has_mask")),
        gxe.ExpectColumnValuesToBeInSet(column="good_without_mask", value_set=[True], meta=_meta("good_has_no_mask")),
        gxe.ExpectColumnValuesToBeUnique(column="content_hash", meta=_meta("unique_content")),
        gxe.ExpectColumnValuesToBeInSet(column="hash_in_both_splits", value_set=[False], meta=_meta("no_train_test_overlap")),
    ]
    return exps


def _run_suite(ctx: Any, name: str, df: pd.DataFrame, expectations: list[Any], index_col: str) -> Any:
    import great_expectations as gx

    source = ctx.data_sources.add_pandas(f"sidn_{name}")
    batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"sidn_{name}_suite"))
    for e in expectations:
        suite.add_expectation(e)
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    return batch.validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index_col]}
    )


# --------------------------------------------------------------------------- failures


def _detail(check: str, row: pd.Series, df: pd.DataFrame, root: Path, min_train: int,
            size_range: tuple[int, int] | None) -> tuple[str, str]:
    """(file, detail) for one failing row of one check."""
    path = row.get("path", "")
    if check == "image_decodes":
        return path, str(row["error"] or "cannot decode image")
    if check == "size_consistent":
        if size_range is not None:
            return path, f"size {row['size']} (WxH) outside the declared range {size_range[0]}..{size_range[1]} px"
        return path, f"size {row['size']} (WxH) differs from the usual {row['category_size']} of category '{row['category']}'"
    if check == "mask_decodes":
        return row["mask_path"], f"mask of {path}: {row['mask_error']}"
    if check == "mask_binary":
        return row["mask_path"], f"mask of {path} is not binary: values {{{row['mask_values']}}} (allowed {{0,255}} or {{0,1}})"
    if check == "mask_size_matches":
        return row["mask_path"], f"mask size {row['mask_size']} (WxH) differs from image {path} size {row['size']}"
    if check == "defect_has_mask":
        if not row["mask_path"]:
            expected = mask_path_for(root / row["category"], row["defect_type"], Path(path))
            return path, f"defective image has no mask (expected {expected})"
        if row["mask_decodable"] is not True:
            return path, f"its mask {row['mask_path']} cannot be read"
        return path, f"its mask {row['mask_path']} is empty (all zeros)"
    if check == "good_has_no_mask":
        return path, f"good image has a mask {row['mask_path']}"
    if check == "unique_content":
        others = df[(df["content_hash"] == row["content_hash"]) & (df["path"] != path)]["path"].tolist()
        return path, f"same content (sha256 {str(row['content_hash'])[:12]}) as {', '.join(others)}"
    if check == "no_train_test_overlap":
        other_split = "test" if row["split"] == "train" else "train"
        others = df[(df["content_hash"] == row["content_hash"]) & (df["split"] == other_split)]["path"].tolist()
        return path, f"{row['split']} image has the same content as {other_split} image(s) {', '.join(others)}"
    if check == "min_train_images":
        if not row["exists"]:
            return row["train_dir"], f"category folder not found (expected {row['train_dir']} with training images)"
        return row["train_dir"], f"{int(row['train_count'])} usable training image(s), need at least {min_train}"
    if check in ("mask_has_image", "gt_folder_has_test"):
        return path, str(row["problem"])
    if check == "has_categories":
        return row["root"], str(row["problem"])
    return str(path), "failed"  # pragma: no cover


def _collect_failures(result_dict: dict[str, Any], df: pd.DataFrame, index_col: str, full_df: pd.DataFrame,
                      root: Path, min_train: int, size_range: tuple[int, int] | None) -> list[dict[str, str]]:
    by_key = df.set_index(index_col, drop=False)
    failures: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for res in result_dict.get("results", []):
        if res.get("success"):
            continue
        cfg = res.get("expectation_config", {})
        check = (cfg.get("meta") or {}).get("check", cfg.get("type", "?"))
        exc = res.get("exception_info") or {}
        if exc.get("raised_exception"):
            failures.append({"expectation": check, "file": "", "detail": f"expectation raised: {exc.get('exception_message')}"})
            continue
        index_list = (res.get("result") or {}).get("unexpected_index_list") or []
        if not index_list:
            failures.append({"expectation": check, "file": "", "detail": f"{cfg.get('type')} failed: {res.get('result')}"})
            continue
        for item in index_list:
            key = item.get(index_col) if isinstance(item, dict) else item
            row = by_key.loc[key]
            if isinstance(row, pd.DataFrame):
                row = row.iloc[0]
            file, detail = _detail(check, row, full_df, root, min_train, size_range)
            if (check, file) in seen:
                continue
            seen.add((check, file))
            failures.append({"expectation": check, "file": str(file), "detail": detail})
    return failures


# --------------------------------------------------------------------------- report output


def _render_html(report: ValidationReport, results: dict[str, Any], root: Path, categories: Sequence[str],
                 n_images: int) -> str:
    e = html.escape
    status = "PASSED" if report.passed else "FAILED"
    colour = "#1a7f37" if report.passed else "#cf222e"
    rows = []
    for part, res in results.items():
        for r in res.get("results", []):
            cfg = r.get("expectation_config", {})
            kw = {k: v for k, v in (cfg.get("kwargs") or {}).items() if k != "batch_id"}
            check = (cfg.get("meta") or {}).get("check", "")
            stats = r.get("result") or {}
            ok = r.get("success")
            rows.append(
                f"<tr><td>{e(part)}</td><td>{e(check)}</td><td>{e(CHECKS.get(check, ''))}</td>"
                f"<td><code>{e(str(cfg.get('type')))}</code><br><small>{e(json.dumps(kw, default=str))}</small></td>"
                f"<td>{stats.get('element_count', '')}</td><td>{stats.get('unexpected_count', '')}</td>"
                f"<td style='color:{'#1a7f37' if ok else '#cf222e'}'>{'ok' if ok else 'FAIL'}</td></tr>"
            )
    fails = "".join(
        f"<tr><td>{e(f['expectation'])}</td><td><code>{e(f['file'])}</code></td><td>{e(f['detail'])}</td></tr>"
        for f in report.failures
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sidn data validation: {status}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}</style>
</head><body>
<h1>Data validation: <span style="color:{colour}">{status}</span></h1>
<p>Dataset <code>{e(str(root))}</code>, categories {e(', '.join(categories))}: {n_images} image(s),
{len(report.failures)} problem(s). Rendered by sidn from the great-expectations results in
<code>{e(report.result_json.name if report.result_json else '')}</code>.</p>
<h2>Problems</h2>
<table><tr><th>check</th><th>file</th><th>detail</th></tr>{fails or '<tr><td colspan=3>none</td></tr>'}</table>
<h2>Expectations</h2>
<table><tr><th>table</th><th>check</th><th>meaning</th><th>GX expectation</th><th>rows</th><th>unexpected</th><th>result</th></tr>
{''.join(rows)}</table>
</body></html>
"""


def validate_dataset(
    root: str | os.PathLike,
    categories: Sequence[str],
    out_dir: str | os.PathLike,
    min_train_images: int = 10,
    size_range: tuple[int, int] | None = None,
) -> ValidationReport:
    """Validate an MVTec-layout dataset with great-expectations; write JSON + HTML reports.

    Args:
        root: dataset root holding ``<category>/train/good`` etc.
        categories: categories to check (a missing one fails ``min_train_images``; none at all
            fails ``has_categories``).
        out_dir: where ``validation.json`` (full GX results) and ``validation.html`` go (atomic writes).
        min_train_images: least number of decodable training images per category (at least 1
            is always required).
        size_range: ``(lo, hi)`` in pixels: accept any height and width in this range instead of
            requiring one size per category.

    Returns a :class:`ValidationReport`; it never raises for bad data (see ``report.passed``).
    """
    root = Path(root)
    out_dir = Path(out_dir)
    categories = list(categories)
    min_train = max(1, int(min_train_images))  # a category without training images never passes
    frame = build_validation_frame(root, categories)
    df = derive_check_columns(frame)
    cats = category_frame(root, categories, frame)
    gt = ground_truth_frame(root, categories, frame)
    dataset = dataset_frame(root, categories, frame)

    import great_expectations.expectations as gxe

    ctx = _gx_context()
    suites = {
        "images": (df, _image_expectations(size_range), "path"),
        "ground_truth": (gt, [
            gxe.ExpectColumnValuesToBeInSet(column="mask_used", value_set=[True], meta=_meta("mask_has_image")),
            gxe.ExpectColumnValuesToBeInSet(column="test_folder_found", value_set=[True], meta=_meta("gt_folder_has_test")),
        ], "path"),
        "categories": (cats, [
            gxe.ExpectColumnValuesToBeBetween(column="train_count", min_value=min_train, meta=_meta("min_train_images")),
        ], "train_dir"),
        "dataset": (dataset, [
            gxe.ExpectColumnValuesToBeBetween(column="category_count", min_value=1, meta=_meta("has_categories")),
        ], "root"),
    }
    results: dict[str, Any] = {}
    failures: list[dict[str, str]] = []
    passed = True
    for name, (table, expectations, index_col) in suites.items():
        res = _run_suite(ctx, name, table, expectations, index_col)
        passed = passed and bool(res.success)
        results[name] = res.to_json_dict()
        failures += _collect_failures(results[name], table, index_col, df, root, min_train, size_range)
    order = {c: i for i, c in enumerate(CHECKS)}
    failures.sort(key=lambda f: (order.get(f["expectation"], 99), f["file"]))
    passed = passed and not failures

    report = ValidationReport(
        passed=passed, failures=failures, result_json=out_dir / "validation.json", html=out_dir / "validation.html"
    )
    payload = {
        "passed": passed,
        "root": str(root),
        "categories": categories,
        "n_images": int(len(df)),
        "failures": failures,
        "gx_results": results,
    }
    atomic_write_text(report.result_json, json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(report.html, _render_html(report, results, root, categories, len(df)))
    if passed:
        log.info("data validation passed: %d images in %s", len(df), ", ".join(categories))
    else:
        log.warning("data validation failed: %d problem(s); see %s", len(failures), report.result_json)
    return report


def format_report(report: ValidationReport) -> str:
    """Readable text: one block per failing check, one line per offending file."""
    if report.passed:
        lines = ["Data validation passed."]
    else:
        n_checks = len({f["expectation"] for f in report.failures})
        lines = [f"Data validation FAILED: {len(report.failures)} problem(s) in {n_checks} check(s)."]
        current = None
        for f in report.failures:
            if f["expectation"] != current:
                current = f["expectation"]
                lines.append(f"[{current}] {CHECKS.get(current, '')}".rstrip())
            lines.append(f"  - {f['file']}: {f['detail']}" if f["file"] else f"  - {f['detail']}")
    if report.result_json or report.html:
        lines.append(f"Full results: {report.result_json}  HTML: {report.html}")
    return "\n".join(lines)
