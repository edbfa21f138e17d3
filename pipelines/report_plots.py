"""The report's figures as self-contained ``data:`` URIs: ROC / PRO and loss curves (matplotlib Agg)
and re-encoded overlay panels, so the HTML page fetches nothing."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Sequence

import cv2

from pipelines.report_data import CategoryResult

GALLERY_MAX_WIDTH = 1024  # px; overlay panels are re-encoded (JPEG) to keep the page small


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return data_uri(buf.getvalue(), "image/png")


def pyplot() -> Any:
    """pyplot on the Agg backend (no display, no GUI toolkit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_plot(results: Sequence[CategoryResult], attr: str, y: str, title: str, xlim: float | None) -> str | None:
    plt = pyplot()
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
    return figure_uri(fig)


def loss_plot(results: Sequence[CategoryResult]) -> str | None:
    plt = pyplot()
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
    return figure_uri(fig)


def overlay_uri(path: Path, max_width: int = GALLERY_MAX_WIDTH) -> str | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:  # cv2 does not raise on unreadable files
        return None
    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return data_uri(encoded.tobytes(), "image/jpeg") if ok else None


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
