"""The pipeline report: one self-contained HTML page and a markdown summary over all categories.

Inputs, per category (the layout of :class:`pipelines.layout.CategoryPaths`)::

    runs/<category>/evaluate/metrics.json     pixel_auroc, aupro, image_auroc (+ per defect type)
    runs/<category>/evaluate/roc.csv          fpr, tpr
    runs/<category>/evaluate/pro.csv          fpr, pro
    runs/<category>/evaluate/overlays/*.png   image | ground truth | heatmap | mask, worst first by name
    runs/<category>/calibration.json      threshold, method, achieved false-alarm rates
    runs/<category>/train/history.csv     training curves (optional)

Outputs: ``index.html`` -- a table of pixel AUROC, AUPRO, image AUROC and the calibrated
threshold per category with the mean, and the figures people approve on, at that threshold on
the test split (``operating_point`` of ``eval/metrics.json``): catch rate (caught / defective),
false-alarm rate on good test images (alarms / good) with its 95 % interval, pixel precision /
recall / IoU; the same per defect type; ROC and PRO curves; training-loss curves; the overlay
gallery, worst cases first -- and ``summary.md`` (the same tables, for terminals and Prefect
artifacts). The HTML opens offline: plots are drawn with matplotlib's Agg backend and every
image is embedded as a base64 ``data:`` URI; no script, font or stylesheet is fetched.

Status column: ``ok`` only when the category is complete and passes the absolute floors of the
promotion gate (``register:`` in ``params.yaml``: ``min_pixel_auroc``, ``min_catch_rate``,
``max_false_alarm_rate``); otherwise ``below floor: <which>`` or ``missing: <what>``.

Champion side by side: where a category has a ``champion`` in the MLflow registry, its figures
(as logged when it was registered) are shown in the row under this run's, in both tables. They
are looked up when ``MLFLOW_TRACKING_URI`` points at a server (one quick try; a failure is noted
in the report, never fatal), or passed as ``champions``.

A category whose outputs are missing (e.g. it failed validation) is listed as such instead of
failing the report, so a partial run still produces a readable page.

The rendering is here; what is read from the runs is :mod:`pipelines.report_data`, the figures
:mod:`pipelines.report_plots`.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipelines.report_data import (METRIC_COLUMNS, CategoryResult, Report, collect, default_floors, floor_failures, fmt,
                                   lookup_champions, mean_row)
from pipelines.report_plots import curve_plot, loss_plot, overlay_uri
from pipelines.tracking.registry import catch_text, false_alarm_text
from pipelines.tracking.runs import operating_point_metrics
from sidn.config import RegisterConfig
from sidn.io import atomic_write_text

GALLERY_PER_CATEGORY = 8


def _status(r: CategoryResult, floors: RegisterConfig | None = None) -> str:
    """``ok``, ``below floor: ...`` or ``missing: ...``."""
    if not r.complete:
        return "missing: " + "; ".join(r.problems[:2])
    below = floor_failures(r, floors or default_floors())
    return "below floor: " + "; ".join(below) if below else "ok"


#: headers of the figures at the calibrated threshold
OP_HEADERS = ["catch rate", "false alarms [95% CI]", "px precision", "px recall", "px IoU"]


def _op_cells(op: dict[str, float | None]) -> list[str]:
    """Catch rate, false alarms with interval, pixel precision / recall / IoU of a flat operating point."""
    return [catch_text(op), false_alarm_text(op), fmt(op.get("pixel_precision"), 3),
            fmt(op.get("pixel_recall"), 3), fmt(op.get("pixel_iou"), 3)]


def _champion_label(r: CategoryResult) -> str:
    champ = r.champion or {}
    return f"champion v{champ.get('version', '?')}"


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _champion_cells(r: CategoryResult) -> list[str]:
    """The champion's metrics (threshold and image FAR left blank), then its figures at the threshold."""
    champ = r.champion or {}
    return ([fmt(_num(champ.get(k))) for k, _ in METRIC_COLUMNS] + ["", ""]
            + _op_cells(operating_point_metrics(champ.get("operating_point"))))


def markdown_table(results: Sequence[CategoryResult], mean: dict[str, float],
                   floors: RegisterConfig | None = None) -> str:
    """Per category: metrics, threshold, the figures at the threshold and the status (with the
    champion's row under it where one is known), then the mean."""
    floors = floors or default_floors()
    header = ("| category | " + " | ".join(label for _, label in METRIC_COLUMNS) + " | threshold | image FAR | "
              + " | ".join(OP_HEADERS) + " | status |")
    lines = [header, "|" + "---|" * (len(METRIC_COLUMNS) + 4 + len(OP_HEADERS))]
    for r in results:
        far = (r.calibration or {}).get("image_far")
        cells = ([fmt(r.value(k)) for k, _ in METRIC_COLUMNS] + [fmt(r.value("threshold")), fmt(far, 3)]
                 + (_op_cells(r.op()) if r.complete else [""] * len(OP_HEADERS)))
        lines.append(f"| {r.category} | " + " | ".join(cells) + f" | {_status(r, floors)} |")
        if r.champion:
            lines.append(f"| {r.category}: {_champion_label(r)} | " + " | ".join(_champion_cells(r))
                         + f" | serving (data {r.champion.get('data_version', '?')}) |")
    passing = sum(r.complete and not floor_failures(r, floors) for r in results)
    cells = [f"**{fmt(mean[k])}**" for k, _ in METRIC_COLUMNS] + [fmt(mean["threshold"]), ""] + [""] * len(OP_HEADERS)
    lines.append("| **mean** | " + " | ".join(cells) + f" | {sum(r.complete for r in results)}/{len(results)} complete, "
                 f"{passing}/{len(results)} pass the floors |")
    return "\n".join(lines)


def defect_rows(results: Sequence[CategoryResult]) -> list[tuple[str, str, str, list[str]]]:
    """``(category, defect, model, cells)`` per defect type: this run, then the champion if known.

    Cells: pixel AUROC, then :data:`OP_HEADERS` (good test images count for every defect type).
    """
    rows = []
    for r in results:
        if not r.complete:
            continue
        sources = [("this run", (r.metrics or {}).get("per_defect") or {})]
        if r.champion:
            sources.append((_champion_label(r), r.champion.get("per_defect") or {}))
        for defect in sorted({d for _, source in sources for d in source}):
            for model, source in sources:
                entry = source.get(defect)
                if entry is None:
                    rows.append((r.category, defect, model, ["(no such defect type)"] + [""] * len(OP_HEADERS)))
                    continue
                op = operating_point_metrics(entry.get("operating_point"))
                rows.append((r.category, defect, model, [fmt(_num(entry.get("pixel_auroc")))] + _op_cells(op)))
    return rows


def defect_table_markdown(results: Sequence[CategoryResult]) -> str:
    """The per-defect-type table (markdown); '' when no category has defect types."""
    rows = defect_rows(results)
    if not rows:
        return ""
    lines = ["| category | defect type | model | pixel AUROC | " + " | ".join(OP_HEADERS) + " |",
             "|" + "---|" * (4 + len(OP_HEADERS))]
    lines += [f"| {c} | {d} | {m} | " + " | ".join(cells) + " |" for c, d, m, cells in rows]
    return "\n".join(lines)


def _floors_line(floors: RegisterConfig) -> str:
    return (f"Floors of the promotion gate (params.yaml `register:`): pixel AUROC >= {floors.min_pixel_auroc}, "
            f"catch rate >= {floors.min_catch_rate}, false-alarm rate on good test images <= "
            f"{floors.max_false_alarm_rate}. Catch and false-alarm rates are at the calibrated threshold on the "
            "test split.")


def render_markdown(results: Sequence[CategoryResult], mean: dict[str, float], html_link: str,
                    title: str, floors: RegisterConfig | None = None, champion_note: str | None = None) -> str:
    floors = floors or default_floors()
    parts = [f"# {title}", "", markdown_table(results, mean, floors), "", _floors_line(floors)]
    defects = defect_table_markdown(results)
    if defects:
        parts += ["", "## Per defect type at the calibrated threshold", "",
                  "(every defect type is scored together with all good test images)", "", defects]
    if champion_note:
        parts += ["", f"Note: {champion_note}"]
    parts += ["", f"Full report (curves, overlay gallery): [{html_link}]({html_link})"]
    incomplete = [r for r in results if not r.complete]
    if incomplete:
        parts += ["", "Categories without results:"]
        parts += [f"- {r.category}: {'; '.join(r.problems) or 'no outputs'}" for r in incomplete]
    return "\n".join(parts) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1180px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0} th,td{border:1px solid #ccc;padding:.3rem .7rem;text-align:right}
th:first-child,td:first-child{text-align:left} tr.mean td{font-weight:bold;background:#f3f3f3}
tr.missing td,tr.below td:last-child{color:#a33} tr.champion td{color:#555;font-style:italic;background:#fafafa} .plots{display:flex;flex-wrap:wrap;gap:1rem} .plots img{max-width:100%;border:1px solid #ddd}
figure{margin:.6rem 0} figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.85rem;color:#555}
.legend{font-size:.9rem;color:#555} code{background:#f4f4f4;padding:0 .2rem}
"""


def render_html(results: Sequence[CategoryResult], mean: dict[str, float], title: str,
                gallery_per_category: int = GALLERY_PER_CATEGORY, floors: RegisterConfig | None = None,
                champion_note: str | None = None) -> str:
    esc = html.escape
    floors = floors or default_floors()
    rows = []
    for r in results:
        far = (r.calibration or {}).get("image_far")
        method = (r.calibration or {}).get("method", "")
        status = _status(r, floors)
        cells = "".join(f"<td>{fmt(r.value(k))}</td>" for k, _ in METRIC_COLUMNS)
        op = "".join(f"<td>{esc(c)}</td>" for c in (_op_cells(r.op()) if r.complete else [""] * len(OP_HEADERS)))
        css = "missing" if not r.complete else ("ok" if status == "ok" else "below")
        rows.append(
            f"<tr class='{css}'><td>{esc(r.category)}</td>{cells}"
            f"<td>{fmt(r.value('threshold'))}</td><td>{fmt(far, 3)}</td><td>{esc(str(method))}</td>{op}"
            f"<td>{esc(status)}</td></tr>"
        )
        if r.champion:
            cells_c = _champion_cells(r)
            split = len(METRIC_COLUMNS) + 2
            rows.append(f"<tr class='champion'><td>{esc(r.category)}: {esc(_champion_label(r))}</td>"
                        + "".join(f"<td>{esc(c)}</td>" for c in cells_c[:split]) + "<td></td>"
                        + "".join(f"<td>{esc(c)}</td>" for c in cells_c[split:])
                        + f"<td>serving (data {esc(str(r.champion.get('data_version', '?')))})</td></tr>")
    passing = sum(r.complete and not floor_failures(r, floors) for r in results)
    mean_cells = "".join(f"<td>{fmt(mean[k])}</td>" for k, _ in METRIC_COLUMNS)
    rows.append(f"<tr class='mean'><td>mean</td>{mean_cells}<td>{fmt(mean['threshold'])}</td><td></td><td></td>"
                + "<td></td>" * len(OP_HEADERS)
                + f"<td>{sum(r.complete for r in results)}/{len(results)} complete, "
                  f"{passing}/{len(results)} pass the floors</td></tr>")
    defect_html = ""
    drows = defect_rows(results)
    if drows:
        head = "".join(f"<th>{esc(h)}</th>" for h in ["category", "defect type", "model", "pixel AUROC", *OP_HEADERS])
        body = "".join(
            f"<tr class='{'ok' if m == 'this run' else 'champion'}'><td>{esc(c)}</td><td>{esc(d)}</td><td>{esc(m)}</td>"
            + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>" for c, d, m, cells in drows)
        defect_html = ("<h2>Per defect type at the calibrated threshold</h2>\n<p class='legend'>Each defect type is "
                       f"scored together with all good test images.</p>\n<table><tr>{head}</tr>{body}</table>")
    note = f"<p class='legend'>Note: {esc(champion_note)}</p>" if champion_note else ""

    plots = []
    for uri, alt in (
        (curve_plot(results, "roc", "tpr", "pixel ROC", None), "pixel ROC curves"),
        (curve_plot(results, "pro", "pro", "PRO (FPR <= 0.3)", 0.3), "PRO curves"),
        (loss_plot(results), "training loss curves"),
    ):
        if uri:
            plots.append(f"<img alt='{esc(alt)}' src='{uri}'>")

    gallery = []
    for r in results:
        gallery.append(f"<h3>{esc(r.category)}</h3>")
        shown = 0
        for path in r.overlays:
            if shown >= gallery_per_category:
                break
            uri = overlay_uri(path)
            if uri is None:
                continue
            shown += 1
            gallery.append(f"<figure><img alt='{esc(path.stem)}' src='{uri}'><figcaption>{esc(path.name)}</figcaption></figure>")
        if not shown:
            gallery.append("<p>no overlays</p>")

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    headers = "".join(f"<th>{label}</th>" for _, label in METRIC_COLUMNS)
    op_headers = "".join(f"<th>{esc(h)}</th>" for h in OP_HEADERS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="sub">generated {generated}; metrics on the test split at the ground truth's original resolution;
threshold calibrated on held-out good images + the DGM validation set (never the test split).</p>
<h2>Metrics</h2>
<table><tr><th>category</th>{headers}<th>threshold</th><th>image FAR</th><th>method</th>{op_headers}<th>status</th></tr>
{''.join(rows)}</table>
<p class="legend">{esc(_floors_line(floors))} Rows in italics: the registry's champion, as logged at registration.</p>
{note}
{defect_html}
<h2>Curves</h2>
<div class="plots">{''.join(plots) or '<p>no curves available</p>'}</div>
<h2>Overlay gallery</h2>
<p class="legend">Each panel: image | ground truth | anomaly heatmap | predicted mask at the calibrated threshold.
Worst cases first: defective images with the lowest per-image AUROC, then good images with the highest score.</p>
{''.join(gallery)}
</body></html>
"""


def build_report(runs_root: str | Path, categories: Sequence[str], out_dir: str | Path,
                 title: str = "SIDN defect segmentation report",
                 gallery_per_category: int = GALLERY_PER_CATEGORY,
                 floors: RegisterConfig | None = None,
                 champions: Mapping[str, Mapping[str, Any]] | None = None) -> Report:
    """Write ``out_dir/index.html`` and ``out_dir/summary.md`` (atomically).

    ``floors``: the gate whose absolute floors decide the status column (default: ``register:``
    of the repository's ``params.yaml``). ``champions``: ``{category: figures}`` as
    :func:`pipelines.tracking.registry.champion_figures` returns them; None looks them up on the MLflow
    server of ``MLFLOW_TRACKING_URI`` (:func:`lookup_champions`), ``{}`` shows none.
    """
    out_dir = Path(out_dir)
    floors = floors or default_floors()
    note = None
    if champions is None:
        champions, note = lookup_champions(categories, floors)
    results = collect(Path(runs_root), categories)
    for r in results:
        r.champion = dict(champions[r.category]) if r.category in champions else None
    mean = mean_row(results)
    html_path, md_path = out_dir / "index.html", out_dir / "summary.md"
    atomic_write_text(html_path, render_html(results, mean, title, gallery_per_category, floors, note))
    atomic_write_text(md_path, render_markdown(results, mean, "index.html", title, floors, note))
    return Report(html=html_path, markdown=md_path, categories=list(results), mean=mean, floors=floors,
                  champion_note=note)
