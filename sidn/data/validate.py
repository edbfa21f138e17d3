"""Dataset validation with great-expectations 1.x (fails loudly on bad data).

:func:`sidn.data.validation_frame.build_validation_frame` describes every image of an
MVTec-layout dataset in one row (it never raises on a bad file: ``decodable`` is False and
``error`` says why). :func:`validate_dataset` derives a few helper columns and runs a
great-expectations suite over that frame in an ephemeral GX context (nothing is written to a
GX project):

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

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from sidn.data.mvtec import mask_path_for
from sidn.data.validation_frame import (
    build_validation_frame,
    category_frame,
    dataset_frame,
    derive_check_columns,
    ground_truth_frame,
)
from sidn.io import atomic_write_text

log = logging.getLogger(__name__)
# GX logs ~200 INFO lines ("Skipping registering function ...") as it is imported: keep its warnings only
logging.getLogger("great_expectations").setLevel(logging.WARNING)

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
