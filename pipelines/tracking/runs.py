"""MLflow tracking: one run per category (nested under one parent run per pipeline run).

Where runs go: ``MLFLOW_TRACKING_URI`` if set (a server such as ``http://127.0.0.1:5000``),
else the embedded default, a sqlite store in the repository (``<repo>/mlflow.db``, artifacts
in ``<repo>/mlruns``). Look at the local store with::

    mlflow ui --backend-store-uri sqlite:///mlflow.db          # from the repository root

Experiment: ``MLFLOW_EXPERIMENT_NAME`` if set, else ``sidn``.

What one category run holds (:func:`log_category_run`), read from the files the pipeline
stages wrote (layout of :class:`pipelines.layout.CategoryPaths`, ``runs/<category>/``):

* params: the resolved config the model carries (:func:`resolved_config`: the calibrated
  bundle's) flattened to ``section.key`` (``train.lr``, ``dgm.sources.blur``), plus
  ``category`` and ``dataset``;
* metrics with steps, from ``train/history.csv``: ``train/l_s``, ``train/l_z``, ``train/l_kl``,
  ``train/l_td``, ``train/total`` (eq. 5, 8, 17, 18, 25) and the other numeric columns
  (``train/radii_t_mean`` ...), ``val/loss`` and ``val/pixel_auroc`` on validation steps;
* final metrics: ``pixel_auroc``, ``aupro``, ``image_auroc`` (``eval/metrics.json``, also per
  defect type as ``<defect>/pixel_auroc`` ...); at the calibrated threshold (what people approve
  on, ``operating_point`` in ``eval/metrics.json``): ``catch_rate``, ``false_alarm_rate`` with
  ``false_alarm_ci95_low`` / ``_high``, ``pixel_precision``, ``pixel_recall``, ``pixel_iou`` and
  the counts ``caught``, ``n_defective``, ``false_alarms``, ``n_good_test`` (also per defect
  type: ``<defect>/catch_rate`` ...); the calibrated ``threshold``,
  ``score_threshold`` and the false-alarm rates it achieves on held-out good images,
  ``image_far``, ``image_far_upper95``, ``pixel_far`` (``calibration.json``);
* artifacts: ``plots/roc.png``, ``plots/pro.png``, ``plots/training.png`` (matplotlib, Agg),
  ``overlays/`` (the gallery, worst first), ``config/config.yaml`` (the same resolved config),
  ``data/manifest.csv`` and ``data/validation.{md,html}`` (data validation report),
  ``eval/metrics.json``, ``eval/calibration.json``; the MLflow model ``model`` (pyfunc, see
  :mod:`pipelines.tracking.pyfunc_model`) holding the calibrated bundle;
* tags: ``git_commit`` (``git rev-parse HEAD``, ``unknown`` outside git), ``git_dirty`` (tracked
  files other than the pipeline's own outputs changed against HEAD), ``data_version`` (see :func:`data_version`), ``data_validation`` (``passed`` / ``failed`` /
  ``missing``), ``dataset``, ``category``, ``model_uri``, and what the model was trained on as the
  bundle recorded it: ``train.cpu_model``, ``train.cpu_isa``, ``train.threads``, ``train.precision``
  (runs from different CPU kinds or precisions are two samples, not bit-comparable: README).

DVC keeps the data and the pipeline state; MLflow keeps runs and models: no dataset file is
logged here (only the manifest that lists it), and no environment variable is logged.

Over 400 lines: one concept, the content of a category run (where it goes, its tags, metrics,
plots and artifacts), all read from the category's files under ``runs/<category>/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd

from pipelines.layout import REPO_ROOT, CategoryPaths
from pipelines.telemetry import switch_off
from sidn.config import SIDNConfig

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

DEFAULT_EXPERIMENT = "sidn"
LOCAL_DB = REPO_ROOT / "mlflow.db"
LOCAL_ARTIFACTS = REPO_ROOT / "mlruns"
MODEL_NAME = "model"  # name of the logged MLflow model inside each category run

# history.csv column -> metric name (others: train/<column>)
_HISTORY_METRICS = {"val_loss": "val/loss", "val_pixel_auroc": "val/pixel_auroc"}
_HISTORY_SKIP = {"step", "elapsed_s"}


# ---------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------


def _telemetry_off() -> None:
    switch_off()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def default_local_uri() -> str:
    """``sqlite:///<repo>/mlflow.db``: the embedded default store."""
    return f"sqlite:///{LOCAL_DB}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else :func:`default_local_uri`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_local_uri()


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def get_client(uri: str | None = None) -> "MlflowClient":
    """An ``MlflowClient`` for ``uri`` (default :func:`tracking_uri`); also sets the fluent API's URI."""
    _telemetry_off()
    import mlflow
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)  # the registry follows the tracking URI
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def configure(uri: str | None = None, experiment: str | None = None) -> tuple["MlflowClient", str]:
    """Point MLflow (tracking and registry) at ``uri`` and make sure the experiment exists.

    Returns ``(client, experiment_id)``. For the local sqlite default the experiment's artifacts
    go to ``<repo>/mlruns`` (not to the current directory).
    """
    uri = uri or tracking_uri()
    client = get_client(uri)
    name = experiment or experiment_name()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return client, exp.experiment_id
    location = LOCAL_ARTIFACTS.as_uri() if uri == default_local_uri() else None
    try:
        return client, client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another task
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return client, exp.experiment_id


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------


def git_commit(repo: Path = REPO_ROOT) -> str:
    """``git rev-parse HEAD`` of ``repo``; ``unknown`` when git or the repository is missing."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def pipeline_outputs(repo: Path = REPO_ROOT) -> list[str]:
    """What ``dvc repro`` itself writes in the repository: ``dvc.lock`` and every stage output it
    records (files or folders, relative to ``repo``)."""
    import yaml

    lock = repo / "dvc.lock"
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        stages = {}
    outs = [o["path"] for stage in stages.values() for o in stage.get("outs", []) if "path" in o]
    return ["dvc.lock", *outs]


def git_dirty(repo: Path = REPO_ROOT) -> str:
    """``true`` if tracked files other than the pipeline's own outputs (:func:`pipeline_outputs`)
    differ from HEAD, ``false`` if not, ``unknown`` if git cannot tell.

    A run rewrites tracked metrics and ``dvc.lock`` before it registers; those changes say nothing
    about whether the code that produced them was committed.
    """
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--no-renames"], cwd=repo,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    outputs = pipeline_outputs(repo)
    changed = [line[3:].strip('"') for line in out.stdout.splitlines() if line.strip()]
    foreign = [p for p in changed if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in outputs)]
    return "true" if foreign else "false"


def data_version_of(path: str | Path) -> str:
    """DVC's content hash of a data folder (or file): the ``md5`` DVC records for it in ``dvc.lock``
    (without the ``.dir`` suffix); ``unknown`` if it does not exist or cannot be read.

    Computed from the files themselves (dvc-data's own hashing, nothing written), so it is the
    same whatever the path looks like (relative in ``dvc.lock``, absolute under Prefect) and
    whether or not ``dvc.lock`` has been written yet.
    """
    import tempfile

    target = Path(path)
    if not target.exists():
        return "unknown"
    try:
        from dvc_data.hashfile.build import build
        from dvc_data.hashfile.db import HashFileDB
        from dvc_objects.fs.local import LocalFileSystem

        fs = LocalFileSystem()
        with tempfile.TemporaryDirectory(prefix="sidn-dv-") as tmp:
            _, _, obj = build(HashFileDB(fs, tmp), str(target.resolve()), fs, "md5", dry_run=True)
    except (ImportError, OSError) as exc:  # pragma: no cover - dvc missing, unreadable files
        print(f"warning: data version of {target} unknown: {exc}")
        return "unknown"
    value = str(obj.hash_info.value or "")
    return value.removesuffix(".dir") or "unknown"


def data_version(cfg: SIDNConfig, category: str, data_root: str | Path | None = None) -> str:
    """Version of one category's data: :func:`data_version_of` ``<data.root>/<category>``.

    The one definition every path uses (the DVC ``register`` stage, the Prefect ``register``
    task, ``sidn promote``'s ``current_data`` check): DVC's md5 of the folder, i.e. the ``md5``
    of the ``<data.root>/<category>`` dependency of ``prepare@<category>`` in ``dvc.lock`` once
    DVC has recorded it. A relative ``data.root`` (or ``data_root``) is taken from the current
    directory, as the stages and ``sidn`` do.
    """
    root = Path(data_root if data_root is not None else cfg.data.root)
    return data_version_of(root / category)


def validation_status(paths: CategoryPaths) -> str:
    """``passed`` / ``failed`` from ``prepare/validation.json``; ``missing`` if absent/unreadable."""
    path = paths.prepare / "validation.json"
    try:
        return "passed" if json.loads(path.read_text()).get("passed") is True else "failed"
    except (OSError, ValueError, AttributeError):
        return "missing"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def flatten_config(cfg: SIDNConfig | dict[str, Any]) -> dict[str, str]:
    """Nested config -> ``{"train.lr": "0.0001", "dgm.sources.blur": "0.15", ...}`` (strings)."""
    raw = cfg.to_dict() if isinstance(cfg, SIDNConfig) else cfg
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[prefix] = json.dumps(node) if isinstance(node, (list, dict, bool)) or node is None else str(node)

    walk("", raw)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run the pipeline stage that writes it first)") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` if it is a finite number, else None (JSON-safe metrics)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _metric_key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _as_paths(paths: CategoryPaths | str | Path, category: str) -> CategoryPaths:
    if isinstance(paths, CategoryPaths):
        return paths
    p = Path(paths)
    if p.name != category:
        raise ValueError(f"{p}: expected the category folder runs/<category> (named '{category}')")
    return CategoryPaths(p.parent, category)


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib Figure objects, no pyplot state: safe in worker threads)
# ---------------------------------------------------------------------------------------------


def _figure():
    from matplotlib.figure import Figure

    return Figure(figsize=(5, 4), dpi=100)


def plot_roc(roc_csv: Path, out_png: Path, auroc: float | None = None) -> Path:
    df = pd.read_csv(roc_csv)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(df["fpr"], df["tpr"], lw=1.5)
    ax.plot([0, 1], [0, 1], "k--", lw=0.7)
    ax.set(xlabel="false positive rate (pixels)", ylabel="true positive rate",
           title=f"pixel ROC (AUROC {auroc:.4f})" if auroc is not None else "pixel ROC", xlim=(0, 1), ylim=(0, 1.01))
    fig.tight_layout()
    fig.savefig(out_png)
    return out_png


def plot_pro(pro_csv: Path, out_png: Path, aupro: float | None = None) -> Path:
    df = pd.read_csv(pro_csv)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(df["fpr"], df["pro"], lw=1.5)
    ax.set(xlabel="false positive rate (pixels)", ylabel="per-region overlap",
           title=f"PRO (AUPRO@0.3 {aupro:.4f})" if aupro is not None else "PRO", ylim=(0, 1.01))
    fig.tight_layout()
    fig.savefig(out_png)
    return out_png


def plot_training(history: pd.DataFrame, out_png: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    for col in ("total", "l_s", "l_z", "l_kl", "l_td", "val_loss"):
        if col in history and history[col].notna().any():
            d = history[["step", col]].dropna()
            ax.plot(d["step"], d[col], marker="o" if col == "val_loss" else None, ms=3, lw=1, label=col)
    ax.set(xlabel="step", ylabel="loss", title="training losses (eq. 25)")
    if ax.lines:
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    return out_png


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def base_tags(cfg: SIDNConfig) -> dict[str, str]:
    commit = git_commit()
    return {
        "git_commit": commit,
        "git_dirty": git_dirty(),
        "mlflow.source.git.commit": commit,
        "dataset": Path(cfg.data.root).name,
    }


TRAINING_MACHINE_KEYS = ("cpu_model", "cpu_isa", "threads", "precision")


def training_machine_tags(bundle: Path) -> dict[str, str]:
    """``train.<key>`` tags for the CPU model, ISA, thread count and precision the bundle was trained
    with (absent keys, e.g. from an older bundle, are left out; no bundle gives no tags)."""
    if not bundle.is_file():
        return {}
    from sidn.bundle import read_bundle_raw

    extra = read_bundle_raw(bundle)["extra"]
    return {f"train.{k}": str(extra[k]) for k in TRAINING_MACHINE_KEYS if k in extra}


@contextlib.contextmanager
def start_parent_run(cfg: SIDNConfig | None = None, name: str | None = None,
                     tags: dict[str, str] | None = None) -> Iterator[str]:
    """One parent run per pipeline run; yields its run id (pass it as ``parent_run_id``).

    The run ends ``FINISHED``, or ``FAILED`` if the block raises. It holds the dataset, the git
    commit and the categories (no per-category numbers: those are in the child runs). A run that
    finished without any child run (a rerun where every category was cached) is deleted (MLflow's
    soft delete: it stays restorable).
    """
    client, exp_id = configure()
    all_tags = {**(base_tags(cfg) if cfg else {"git_commit": git_commit()}), **(tags or {})}
    run = client.create_run(exp_id, run_name=name or time.strftime("pipeline-%Y%m%d-%H%M%S"), tags=all_tags)
    run_id = run.info.run_id
    if cfg is not None:
        client.log_param(run_id, "categories", json.dumps(cfg.data.categories))
        client.log_param(run_id, "data.root", cfg.data.root)
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    if not client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1):
        client.delete_run(run_id)  # nothing ran (every category cached): no empty parent in the UI


def _log_history(client: "MlflowClient", run_id: str, history_csv: Path) -> int:
    from mlflow.entities import Metric

    if not history_csv.is_file():
        return 0
    df = pd.read_csv(history_csv)
    if "step" not in df:
        raise ValueError(f"{history_csv}: no 'step' column")
    now = int(time.time() * 1000)
    metrics = []
    for col in df.columns:
        if col in _HISTORY_SKIP or not pd.api.types.is_numeric_dtype(df[col]):
            continue
        key = _HISTORY_METRICS.get(col, f"train/{col}")
        for step, value in zip(df["step"], df[col]):
            v = finite_or_none(value)
            if v is not None:
                metrics.append(Metric(key, v, now, int(step)))
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000], synchronous=True)
    return len(metrics)


#: figures at the shipped (calibrated) threshold, from ``eval/metrics.json["operating_point"]``
#: (:func:`sidn.operating_point.operating_point`), as MLflow metric names
OPERATING_POINT_METRICS = ("catch_rate", "false_alarm_rate", "false_alarm_ci95_low", "false_alarm_ci95_high",
                           "pixel_precision", "pixel_recall", "pixel_iou", "caught", "n_defective",
                           "false_alarms", "n_good_test")


def operating_point_metrics(op: dict[str, Any] | None, prefix: str = "") -> dict[str, float | None]:
    """``metrics.json``'s ``operating_point`` -> flat metrics (:data:`OPERATING_POINT_METRICS`).

    ``false_alarm_ci95 [lo, hi]`` becomes ``false_alarm_ci95_low`` / ``_high`` and the test's
    good-image count ``n_good`` becomes ``n_good_test`` (``n_good_images`` is the calibration
    hold-out's). Missing or non-finite values are None. ``prefix``: ``"<defect>/"``.
    """
    op = op or {}
    ci = op.get("false_alarm_ci95") or [None, None]
    ci = list(ci) + [None, None] if isinstance(ci, (list, tuple)) else [None, None]
    values = {
        "catch_rate": op.get("catch_rate"), "false_alarm_rate": op.get("false_alarm_rate"),
        "false_alarm_ci95_low": ci[0], "false_alarm_ci95_high": ci[1],
        "pixel_precision": op.get("pixel_precision"), "pixel_recall": op.get("pixel_recall"),
        "pixel_iou": op.get("pixel_iou"), "caught": op.get("caught"), "n_defective": op.get("n_defective"),
        "false_alarms": op.get("false_alarms"), "n_good_test": op.get("n_good"),
    }
    return {f"{prefix}{k}": finite_or_none(v) for k, v in values.items()}


def final_metrics(paths: CategoryPaths) -> dict[str, float]:
    """Evaluation + calibration numbers of one category (the run's final metrics).

    Besides the threshold-free metrics, the figures at the calibrated threshold
    (:data:`OPERATING_POINT_METRICS`: catch rate, false-alarm rate on good test images with its
    95 % interval, pixel precision / recall / IoU, and their counts), for the category and as
    ``<defect>/catch_rate`` ... per defect type.
    """
    ev = _read_json(paths.metrics)
    cal = _read_json(paths.calibration)
    out: dict[str, float | None] = {k: finite_or_none(ev.get(k)) for k in ("pixel_auroc", "aupro", "image_auroc")}
    out["n_test_images"] = finite_or_none(ev.get("n_images"))
    out.update(operating_point_metrics(ev.get("operating_point")))
    for defect, values in (ev.get("per_defect") or {}).items():
        for k in ("pixel_auroc", "aupro", "image_auroc"):
            out[f"{_metric_key(defect)}/{k}"] = finite_or_none((values or {}).get(k))
        out.update(operating_point_metrics((values or {}).get("operating_point"), f"{_metric_key(defect)}/"))
    out["threshold"] = finite_or_none(cal.get("threshold"))
    out["score_threshold"] = finite_or_none(cal.get("score_threshold"))
    out["image_far"] = finite_or_none(cal.get("image_far"))
    out["pixel_far"] = finite_or_none(cal.get("pixel_far"))
    achieved = (cal.get("achieved") or {}).get(cal.get("method") or "", {}) or {}
    out["image_far_upper95"] = finite_or_none(achieved.get("image_far_upper95"))
    out["target_image_far"] = finite_or_none(cal.get("target_image_far"))
    out["n_good_images"] = finite_or_none(cal.get("n_good_images"))
    return {k: v for k, v in out.items() if v is not None}


def resolved_config(paths: CategoryPaths, fallback: SIDNConfig) -> SIDNConfig:
    """The config the registered model carries: the calibrated bundle's (training config stamped with
    the calibration stage's keys), else ``train/config.yaml``, else ``fallback``.

    The caller's config may be restricted to one stage's keys (DVC stages see only their declared
    params), so it is not what the model was trained with.
    """
    try:
        from sidn.bundle import read_bundle_raw

        return SIDNConfig.from_dict(read_bundle_raw(paths.model)["config"], source=str(paths.model))
    except (OSError, ValueError, TypeError):
        pass
    if paths.train_config.is_file():
        try:
            return SIDNConfig.from_yaml(paths.train_config)
        except ValueError:
            pass
    return fallback


def _log_artifacts(client: "MlflowClient", run_id: str, paths: CategoryPaths, cfg: SIDNConfig,
                   metrics: dict[str, float], tmp: Path) -> None:
    plots = tmp / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    if paths.roc.is_file():
        plot_roc(paths.roc, plots / "roc.png", metrics.get("pixel_auroc"))
    if paths.pro.is_file():
        plot_pro(paths.pro, plots / "pro.png", metrics.get("aupro"))
    if paths.history.is_file():
        plot_training(pd.read_csv(paths.history), plots / "training.png")
    if any(plots.iterdir()):
        client.log_artifacts(run_id, str(plots), "plots")
    if paths.overlays.is_dir() and any(paths.overlays.iterdir()):
        client.log_artifacts(run_id, str(paths.overlays), "overlays")
    (tmp / "config").mkdir(exist_ok=True)
    cfg.save_yaml(tmp / "config" / "config.yaml")  # the resolved config (= the run's params)
    client.log_artifact(run_id, str(tmp / "config" / "config.yaml"), "config")
    for name in ("manifest.csv", "validation.md", "validation.html"):
        if (paths.prepare / name).is_file():
            client.log_artifact(run_id, str(paths.prepare / name), "data")
    client.log_artifact(run_id, str(paths.metrics), "eval")
    client.log_artifact(run_id, str(paths.calibration), "eval")


def log_category_run(
    cfg: SIDNConfig,
    category: str,
    paths: CategoryPaths | str | Path,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    log_model: bool = True,
    model_config: dict[str, Any] | None = None,
) -> str:
    """Log one category's training, evaluation and calibration as one MLflow run; returns its id.

    ``paths``: the category's :class:`CategoryPaths` (or its folder ``runs/<category>``); needs
    ``model.pt`` (calibrated), ``calibration.json`` and ``eval/metrics.json``; the other files are
    logged when present. ``parent_run_id`` nests the run under :func:`start_parent_run`'s run.
    ``tags`` are added last (they may override e.g. ``data_version``). With ``log_model`` the
    calibrated bundle is logged as the pyfunc model ``model`` (register it with
    :func:`pipelines.tracking.registry.register_challenger`).
    """
    import tempfile

    import mlflow

    paths = _as_paths(paths, category)
    metrics = final_metrics(paths)  # fails early, naming the missing file
    if log_model and not paths.model.is_file():
        raise FileNotFoundError(f"{paths.model}: calibrated model bundle missing (run the calibrate stage)")
    client, exp_id = configure()
    run_tags = {
        **base_tags(cfg),
        "category": category,
        "data_version": data_version(cfg, category),
        "data_validation": validation_status(paths),
        "image_size": str(cfg.data.image_size),
        "mlflow.runName": category,
        **training_machine_tags(paths.model),
    }
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run_tags.update({k: str(v) for k, v in (tags or {}).items()})
    run = client.create_run(exp_id, run_name=category, tags=run_tags)
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        run_cfg = resolved_config(paths, cfg)
        params = {**flatten_config(run_cfg), "category": category, "dataset": run_tags["dataset"]}
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100], synchronous=True)
        _log_history(client, run_id, paths.history)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()], synchronous=True)
        with tempfile.TemporaryDirectory(prefix="sidn-mlflow-") as tmp:
            _log_artifacts(client, run_id, paths, run_cfg, metrics, Path(tmp))
        if log_model:
            from pipelines.tracking.pyfunc_model import log_pyfunc_model

            with mlflow.start_run(run_id=run_id, nested=True):
                info = log_pyfunc_model(paths.model, name=MODEL_NAME, model_config=model_config)
            client.set_tag(run_id, "model_uri", info.model_uri)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


__all__ = [
    "configure", "get_client", "tracking_uri", "default_local_uri", "experiment_name", "start_parent_run", "log_category_run",
    "data_version", "data_version_of", "git_commit", "flatten_config", "final_metrics", "validation_status",
    "OPERATING_POINT_METRICS", "operating_point_metrics",
]
