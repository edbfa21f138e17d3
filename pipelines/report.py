"""The pipeline report: one self-contained HTML page and a markdown summary over all categories.

Inputs, per category (the layout of :class:`pipelines.params.CategoryPaths`)::

    runs/<category>/eval/metrics.json     pixel_auroc, aupro, image_auroc (+ per defect type)
    runs/<category>/eval/roc.csv          fpr, tpr
    runs/<category>/eval/pro.csv          fpr, pro
    runs/<category>/eval/overlays/*.png   image | ground truth | heatmap | mask, worst first by name
    runs/<category>/calibration.json      threshold, method, achieved false-alarm rates
    runs/<category>/train/history.csv     training curves (optional)

Outputs: ``index.html`` -- a table of pixel AUROC, AUPRO, image AUROC and the calibrated
threshold per category with the mean; ROC and PRO curves; training-loss curves; the overlay
gallery, worst cases first -- and ``summary.md`` (the same table, for terminals and Prefect
artifacts). The HTML opens offline: plots are drawn with matplotlib's Agg backend and every
image is embedded as a base64 ``data:`` URI; no script, font or stylesheet is fetched.

A category whose outputs are missing (e.g. it failed validation) is listed as such instead of
failing the report, so a partial run still produces a readable page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd

from pipelines.params import CategoryPaths
from sidn.io import atomic_write_text

METRIC_COLUMNS = [("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"), ("image_auroc", "image AUROC")]
GALLERY_PER_CATEGORY = 8
GALLERY_MAX_WIDTH = 1024  # px; overlay panels are re-encoded (JPEG) to keep the page small


@dataclass
class CategoryResult:
    category: str
    metrics: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    roc: pd.DataFrame | None = None
    pro: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    overlays: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.metrics is not None and self.calibration is not None

    def value(self, key: str) -> float:
        source = self.calibration if key == "threshold" else self.metrics
        try:
            return float((source or {}).get(key))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return float("nan")


@dataclass
class Report:
    html: Path
    markdown: Path
    categories: list[CategoryResult]
    mean: dict[str, float]


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable ({exc})")
        return None


def _read_csv(path: Path, columns: Sequence[str], problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable ({exc})")
        return None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        problems.append(f"{path}: missing column(s) {', '.join(missing)}")
        return None
    return df


def collect(runs_root: Path, categories: Sequence[str]) -> list[CategoryResult]:
    """Read every category's evaluation, calibration and curves (missing pieces are noted)."""
    results = []
    for category in categories:
        paths = CategoryPaths(Path(runs_root), category)
        r = CategoryResult(category)
        r.metrics = _read_json(paths.metrics, r.problems)
        r.calibration = _read_json(paths.calibration, r.problems)
        r.roc = _read_csv(paths.roc, ["fpr", "tpr"], r.problems)
        r.pro = _read_csv(paths.pro, ["fpr", "pro"], r.problems)
        r.history = _read_csv(paths.history, ["step"], r.problems)
        if paths.overlays.is_dir():
            r.overlays = sorted(paths.overlays.glob("*.png"))
        results.append(r)
    return results


def mean_row(results: Sequence[CategoryResult]) -> dict[str, float]:
    out = {}
    for key in [k for k, _ in METRIC_COLUMNS] + ["threshold"]:
        values = [r.value(key) for r in results if r.complete and not math.isnan(r.value(key))]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figure_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return _data_uri(buf.getvalue(), "image/png")


def _plt() -> Any:
    """pyplot on the Agg backend (no display, no GUI toolkit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve_plot(results: Sequence[CategoryResult], attr: str, y: str, title: str, xlim: float | None) -> str | None:
    plt = _plt()
    curves = [(r.category, getattr(r, attr)) for r in results if getattr(r, attr) is not None]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, df in curves:
        ax.plot(df["fpr"], df[y], label=name, linewidth=1.5)
    if attr == "roc":
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate" if y == "tpr" else "per-region overlap")
    ax.set_xlim(0, xlim or 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _figure_uri(fig)


def _loss_plot(results: Sequence[CategoryResult]) -> str | None:
    plt = _plt()
    curves = [(r.category, r.history) for r in results if r.history is not None and "total" in r.history]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i, (name, df) in enumerate(curves):
        color = f"C{i % 10}"
        ax.plot(df["step"], df["total"], color=color, alpha=0.45, linewidth=1, label=f"{name} train L")
        if "val_loss" in df:
            val = df.dropna(subset=["val_loss"])
            ax.plot(val["step"], val["val_loss"], color=color, marker="o", markersize=3, linewidth=1.5,
                    label=f"{name} val L_s")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("training loss (eq. 25) and validation L_s (eq. 5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _figure_uri(fig)


def _overlay_uri(path: Path, max_width: int = GALLERY_MAX_WIDTH) -> str | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:  # cv2 does not raise on unreadable files
        return None
    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return _data_uri(encoded.tobytes(), "image/jpeg") if ok else None


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def _fmt(x: float, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _status(r: CategoryResult) -> str:
    return "ok" if r.complete else "missing: " + "; ".join(r.problems[:2])


def markdown_table(results: Sequence[CategoryResult], mean: dict[str, float]) -> str:
    header = "| category | " + " | ".join(label for _, label in METRIC_COLUMNS) + " | threshold | image FAR | status |"
    lines = [header, "|" + "---|" * (len(METRIC_COLUMNS) + 4)]
    for r in results:
        far = (r.calibration or {}).get("image_far")
        cells = [_fmt(r.value(k)) for k, _ in METRIC_COLUMNS] + [_fmt(r.value("threshold")), _fmt(far, 3)]
        lines.append(f"| {r.category} | " + " | ".join(cells) + f" | {'ok' if r.complete else 'missing'} |")
    cells = [f"**{_fmt(mean[k])}**" for k, _ in METRIC_COLUMNS] + [_fmt(mean["threshold"]), ""]
    lines.append("| **mean** | " + " | ".join(cells) + f" | {sum(r.complete for r in results)}/{len(results)} |")
    return "\n".join(lines)


def render_markdown(results: Sequence[CategoryResult], mean: dict[str, float], html_link: str,
                    title: str) -> str:
    parts = [f"# {title}", "", markdown_table(results, mean), "", f"Full report (curves, overlay gallery): [{html_link}]({html_link})"]
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
tr.missing td{color:#a33} .plots{display:flex;flex-wrap:wrap;gap:1rem} .plots img{max-width:100%;border:1px solid #ddd}
figure{margin:.6rem 0} figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.85rem;color:#555}
.legend{font-size:.9rem;color:#555} code{background:#f4f4f4;padding:0 .2rem}
"""


def render_html(results: Sequence[CategoryResult], mean: dict[str, float], title: str,
                gallery_per_category: int = GALLERY_PER_CATEGORY) -> str:
    esc = html.escape
    rows = []
    for r in results:
        far = (r.calibration or {}).get("image_far")
        method = (r.calibration or {}).get("method", "")
        cells = "".join(f"<td>{_fmt(r.value(k))}</td>" for k, _ in METRIC_COLUMNS)
        rows.append(
            f"<tr class='{'ok' if r.complete else 'missing'}'><td>{esc(r.category)}</td>{cells}"
            f"<td>{_fmt(r.value('threshold'))}</td><td>{_fmt(far, 3)}</td><td>{esc(str(method))}</td>"
            f"<td>{esc(_status(r))}</td></tr>"
        )
    mean_cells = "".join(f"<td>{_fmt(mean[k])}</td>" for k, _ in METRIC_COLUMNS)
    rows.append(f"<tr class='mean'><td>mean</td>{mean_cells}<td>{_fmt(mean['threshold'])}</td><td></td><td></td>"
                f"<td>{sum(r.complete for r in results)}/{len(results)} complete</td></tr>")

    plots = []
    for uri, alt in (
        (_curve_plot(results, "roc", "tpr", "pixel ROC", None), "pixel ROC curves"),
        (_curve_plot(results, "pro", "pro", "PRO (FPR <= 0.3)", 0.3), "PRO curves"),
        (_loss_plot(results), "training loss curves"),
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
            uri = _overlay_uri(path)
            if uri is None:
                continue
            shown += 1
            gallery.append(f"<figure><img alt='{esc(path.stem)}' src='{uri}'><figcaption>{esc(path.name)}</figcaption></figure>")
        if not shown:
            gallery.append("<p>no overlays</p>")

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    headers = "".join(f"<th>{label}</th>" for _, label in METRIC_COLUMNS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="sub">generated {generated}; metrics on the test split at the ground truth's original resolution;
threshold calibrated on held-out good images + the DGM validation set (never the test split).</p>
<h2>Metrics</h2>
<table><tr><th>category</th>{headers}<th>threshold</th><th>image FAR</th><th>method</th><th>status</th></tr>
{''.join(rows)}</table>
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
                 gallery_per_category: int = GALLERY_PER_CATEGORY) -> Report:
    """Write ``out_dir/index.html`` and ``out_dir/summary.md`` (atomically)."""
    out_dir = Path(out_dir)
    results = collect(Path(runs_root), categories)
    mean = mean_row(results)
    html_path, md_path = out_dir / "index.html", out_dir / "summary.md"
    atomic_write_text(html_path, render_html(results, mean, title, gallery_per_category))
    atomic_write_text(md_path, render_markdown(results, mean, "index.html", title))
    return Report(html=html_path, markdown=md_path, categories=list(results), mean=mean)
