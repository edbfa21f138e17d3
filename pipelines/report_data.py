"""What the pipeline report shows, read from the stages' outputs: one :class:`CategoryResult` per
category (missing outputs listed, not fatal), the mean row, the promotion floors and the champions."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from unittest import mock

import numpy as np
import pandas as pd

from pipelines.layout import REPO_ROOT, CategoryPaths
from pipelines.tracking.registry import catch_text, false_alarm_text
from pipelines.tracking.runs import operating_point_metrics
from sidn.config import RegisterConfig

METRIC_COLUMNS = [("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"), ("image_auroc", "image AUROC")]


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
    champion: dict[str, Any] | None = None  # the registry's champion, shaped like ``metrics``

    def op(self) -> dict[str, float | None]:
        """This run's figures at the calibrated threshold, flat (:func:`operating_point_metrics`)."""
        return operating_point_metrics((self.metrics or {}).get("operating_point"))

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
    floors: RegisterConfig = field(default_factory=RegisterConfig)
    champion_note: str | None = None


def default_floors() -> RegisterConfig:
    """The gate's floors from the repository's ``params.yaml`` (``register:``); defaults if unreadable."""
    try:
        from pipelines.params import load_params

        return load_params(REPO_ROOT / "params.yaml").register
    except (OSError, ValueError, TypeError):
        return RegisterConfig()


def floor_failures(r: CategoryResult, floors: RegisterConfig) -> list[str]:
    """Which absolute floors of the promotion gate a complete category misses ([] = passes all)."""
    if not r.complete:
        return []
    out = []
    auroc = r.value("pixel_auroc")
    if math.isnan(auroc) or auroc < floors.min_pixel_auroc:
        out.append(f"pixel AUROC {fmt(auroc)} < {floors.min_pixel_auroc}")
    op = r.op()
    if op["catch_rate"] is None:
        out.append("no catch rate at the calibrated threshold")
    elif op["catch_rate"] < floors.min_catch_rate:
        out.append(f"catch rate {catch_text(op)} < {floors.min_catch_rate}")
    if op["false_alarm_rate"] is None:
        out.append("no false-alarm rate at the calibrated threshold")
    elif op["false_alarm_rate"] > floors.max_false_alarm_rate:
        out.append(f"false-alarm rate {false_alarm_text(op, interval=False)} > {floors.max_false_alarm_rate}")
    return out


def lookup_champions(categories: Sequence[str], floors: RegisterConfig) -> tuple[dict[str, dict], str | None]:
    """``(champions, note)``: each category's registry champion, when ``MLFLOW_TRACKING_URI`` is a server.

    One quick try (no retries, 10 s timeout); on failure ``({}, why)``. Without a server URI (the
    local sqlite default) nothing is looked up: ``({}, None)``.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return {}, None
    try:
        from pipelines.tracking.registry import champion_figures
        from sidn.config import SIDNConfig

        cfg = SIDNConfig(register=floors)
        with mock.patch.dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
            return champion_figures(categories, cfg), None
    except Exception as exc:  # the report never fails over the registry
        return {}, f"champions not looked up ({type(exc).__name__}: {str(exc)[:200]})"


def read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable ({exc})")
        return None


def read_csv(path: Path, columns: Sequence[str], problems: list[str]) -> pd.DataFrame | None:
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
        r.metrics = read_json(paths.metrics, r.problems)
        r.calibration = read_json(paths.calibration, r.problems)
        r.roc = read_csv(paths.roc, ["fpr", "tpr"], r.problems)
        r.pro = read_csv(paths.pro, ["fpr", "pro"], r.problems)
        r.history = read_csv(paths.history, ["step"], r.problems)
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


def fmt(x: float, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
