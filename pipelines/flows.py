"""Prefect 3 flows: per-category tasks, the fan-out over categories, and scheduled retraining.

How this relates to DVC (``dvc.yaml``): the tasks here are thin wrappers around the same
``run()`` functions the DVC stages call (:mod:`pipelines.stages`), writing the same files
(:class:`pipelines.params.CategoryPaths`). DVC owns lineage (``dvc.lock``); Prefect owns
execution: retries, parallelism, schedules and run history.

* :func:`category_pipeline` -- one category: prepare -> defects -> train -> calibrate ->
  evaluate -> register, in order.
* :func:`all_categories` -- every category fanned out with a concurrency limit: a thread pool
  (one training at a time per GPU; ``max(1, cpus // 8)`` on a CPU machine) or a Dask cluster
  (local processes, or a scheduler address) where each training task asks for one ``GPU``
  worker resource. A failing category does not stop the others; the flow ends ``Failed`` with
  a summary naming the failed categories and stages, after writing the report and a markdown
  artifact for the ones that finished. ``commit=True`` records the outputs in ``dvc.lock``
  (``dvc commit``), so a later ``dvc repro`` does not redo them.
* :func:`retrain` -- the scheduled deployment: ``dvc pull`` (if a remote is configured), the
  embedded dataset (``dvc repro synth@C``, only when it is the data source), then
  :func:`all_categories` -- one task per category and stage, with their retries, the
  ``register`` tasks registering the challengers in MLflow -- which writes the report and
  ``reports/registered.json`` and records every stage in ``dvc.lock`` (``dvc commit``: the
  same functions wrote the files ``dvc.yaml`` declares, so ``dvc status`` is clean after it),
  ``dvc push`` (optional), and a markdown artifact with the metrics table linking to the report.

Retries: only transient errors are retried (``OSError`` other than missing/permission errors,
``ConnectionError``, ``TimeoutError``), with exponential backoff; bad data, failed
validation and bad parameters fail at once (:func:`retry_on_transient`).

Several machines: ``dask_address`` points the fan-out at a running Dask scheduler; the workers
need the repository (same path), the data and ``runs/`` on a shared filesystem, and GPU workers
started with ``--resources GPU=1`` (one per GPU). Task results then live on that filesystem too.

Resuming: task results are persisted under ``<runs_root>/.prefect/results`` with a cache key
made of the stage's declared params, the category's data fingerprint, the upstream task's
output hashes and the code fingerprint. Re-running after a crash returns cached results for
every finished task and resumes at the first unfinished one; a killed training continues from
its checkpoint (:mod:`pipelines.stages.train`). A task whose output files have gone missing is
re-run (``refresh_cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from pipelines.params import (
    REPORTS_DIR,
    RUNS_DIR,
    CategoryPaths,
    code_fingerprint,
    file_md5,
    load_params,
    params_hash,
    restrict,
    tree_fingerprint,
)
from pipelines.stages import StageError
from pipelines.stages import calibrate as calibrate_stage
from pipelines.stages import defects as defects_stage
from pipelines.stages import evaluate as evaluate_stage
from pipelines.stages import prepare as prepare_stage
from pipelines.stages import register as register_stage
from pipelines.stages import train as train_stage
from sidn.config import SIDNConfig
from sidn.data.mvtec import DataError

STAGES = ["prepare", "defects", "train", "calibrate", "evaluate", "register"]
STAGE_MODULES = {
    "prepare": prepare_stage, "defects": defects_stage, "train": train_stage,
    "calibrate": calibrate_stage, "evaluate": evaluate_stage, "register": register_stage,
}
from pipelines.params import RETRAIN_CRON as DEFAULT_CRON  # noqa: E402  (Sundays 03:00 UTC)
DEPLOYMENT_NAME = "sidn-retrain"

# ---------------------------------------------------------------------------------------------
# Retry policy
# ---------------------------------------------------------------------------------------------

DETERMINISTIC_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
TRANSIENT_ERRORS = (OSError, ConnectionError, TimeoutError)  # requests' errors are OSErrors too


class DataProblem(DataError):
    """A :class:`~sidn.data.mvtec.DataError` in a form that survives pickling (Dask, result storage)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.path, self.problem))


class TransientError(RuntimeError):
    """Raise this (or an OSError) from a task for a failure worth retrying."""


def is_transient(exc: BaseException | None) -> bool:
    """True for failures a retry can fix (I/O hiccups, network, registry timeouts)."""
    if exc is None or isinstance(exc, (DataError, StageError, ValueError, TypeError, KeyError)):
        return False
    if isinstance(exc, DETERMINISTIC_OS_ERRORS):
        return False
    return isinstance(exc, TRANSIENT_ERRORS + (TransientError,))


def _exception_of(state: State) -> BaseException | None:
    data = state.data
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # the failure could not be read back: do not retry blindly
        return None
    return result if isinstance(result, BaseException) else None


def retry_on_transient(task: Any, task_run: Any, state: State) -> bool:
    """``retry_condition_fn``: retry transient errors only (see :func:`is_transient`)."""
    return is_transient(_exception_of(state))


@contextlib.contextmanager
def portable_errors() -> Iterator[None]:
    """Re-raise DataError as the picklable DataProblem (same message, same class hierarchy)."""
    try:
        yield
    except DataProblem:
        raise
    except DataError as exc:
        raise DataProblem(exc.path, exc.problem) from None


RETRY_DELAYS = exponential_backoff(backoff_factor=10)  # 10 s, 20 s, 40 s, ...

# ---------------------------------------------------------------------------------------------
# Caching (resume after a crash)
# ---------------------------------------------------------------------------------------------


def _cfg(raw: dict[str, Any]) -> SIDNConfig:
    return SIDNConfig.from_dict(raw, source="flow parameter cfg")


def stage_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key: stage, category, declared params, data fingerprint, upstream outputs, code."""
    stage = parameters["stage"] if "stage" in parameters else context.task.name
    module = STAGE_MODULES[stage]
    payload = {
        "stage": stage,
        "category": parameters["category"],
        "runs_root": str(Path(parameters["runs_root"]).resolve()),
        "params": params_hash(_cfg(parameters["cfg"]), module.PARAMS),
        "data": parameters.get("data_fp", ""),
        "upstream": (parameters.get("upstream") or {}).get("outputs_md5", {}),
        "code": code_fingerprint(),
    }
    return f"sidn-{stage}-{parameters['category']}-" + hashlib.sha256(
        json.dumps(payload, sort_keys=True, default=str).encode()
    ).hexdigest()[:24]


def _outputs_md5(paths: CategoryPaths, stage: str) -> dict[str, str]:
    out = {}
    for path in paths.outputs(stage):
        if path.is_file():
            out[path.name] = file_md5(path)
        elif path.is_dir():
            out[path.name] = tree_fingerprint(path)
    return out


def _outputs_present(paths: CategoryPaths, stage: str) -> bool:
    return all(p.exists() for p in paths.outputs(stage))


# ---------------------------------------------------------------------------------------------
# GPU slots for the thread-pool runner (Dask uses worker resources instead)
# ---------------------------------------------------------------------------------------------

_gpu_lock = threading.Lock()
_gpu_queue: "queue.Queue[int] | None" = None


@contextlib.contextmanager
def gpu_slot() -> Iterator[int | None]:
    """On a multi-GPU machine, hold one GPU for the duration of a training (thread-safe)."""
    global _gpu_queue
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n <= 1:
        yield None
        return
    with _gpu_lock:
        if _gpu_queue is None:
            _gpu_queue = queue.Queue()
            for i in range(n):
                _gpu_queue.put(i)
    index = _gpu_queue.get()
    try:
        with torch.cuda.device(index):
            yield index
    finally:
        _gpu_queue.put(index)


# ---------------------------------------------------------------------------------------------
# Tasks: thin wrappers around pipelines.stages.*.run (the functions DVC runs)
# ---------------------------------------------------------------------------------------------

_TASK_OPTIONS: dict[str, Any] = dict(
    persist_result=True,
    cache_key_fn=stage_cache_key,
    retry_condition_fn=retry_on_transient,
    retry_delay_seconds=RETRY_DELAYS,
)


def _finish(paths: CategoryPaths, stage: str, result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "stage": stage, "outputs_md5": _outputs_md5(paths, stage)}


@task(name="prepare", task_run_name="prepare[{category}]", retries=2, **_TASK_OPTIONS)
def prepare(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None) -> dict:
    """Manifest + great-expectations validation (bad data fails at once, never retried)."""
    paths = CategoryPaths(Path(runs_root), category)
    with portable_errors():
        result = prepare_stage.run(restrict(_cfg(cfg), prepare_stage.PARAMS), category, paths.validation,
                                   paths.work("prepare"))
    return _finish(paths, "prepare", result)


@task(name="defects", task_run_name="defects[{category}]", retries=2, **_TASK_OPTIONS)
def defects(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None) -> dict:
    """The fixed DGM validation set (eq. 1)."""
    paths = CategoryPaths(Path(runs_root), category)
    with portable_errors():
        result = defects_stage.run(restrict(_cfg(cfg), defects_stage.PARAMS), category, paths.defects,
                                   paths.work("defects"))
    return _finish(paths, "defects", result)


@task(name="train", task_run_name="train[{category}]", retries=1, **_TASK_OPTIONS)
def train(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None) -> dict:
    """Train one category (resumes from its checkpoint after a crash or a retry)."""
    paths = CategoryPaths(Path(runs_root), category)
    stage_cfg = restrict(_cfg(cfg), train_stage.PARAMS + train_stage.RUNTIME_PARAMS)
    with portable_errors(), gpu_slot():
        result = train_stage.run(stage_cfg, category, paths.train_dir, paths.work("train"), progress=False)
    return _finish(paths, "train", result)


@task(name="calibrate", task_run_name="calibrate[{category}]", retries=2, **_TASK_OPTIONS)
def calibrate(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None) -> dict:
    """Threshold from held-out good images + the DGM set, stored in runs/<category>/model.pt."""
    paths = CategoryPaths(Path(runs_root), category)
    with portable_errors():
        result = calibrate_stage.run(restrict(_cfg(cfg), calibrate_stage.PARAMS), category, paths.trained_model,
                                     paths.model, paths.calibration, paths.work("calibrate"))
    return _finish(paths, "calibrate", result)


@task(name="evaluate", task_run_name="evaluate[{category}]", retries=2, **_TASK_OPTIONS)
def evaluate(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None) -> dict:
    """Pixel AUROC, AUPRO, image AUROC, curves and overlays on the test split."""
    paths = CategoryPaths(Path(runs_root), category)
    with portable_errors():
        result = evaluate_stage.run(restrict(_cfg(cfg), evaluate_stage.PARAMS), category, paths.model,
                                    paths.eval_dir, paths.work("evaluate"))
    return _finish(paths, "evaluate", result)


@task(name="register", task_run_name="register[{category}]", retries=3, **_TASK_OPTIONS)
def register(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None,
             parent_run_id: str | None = None) -> dict:
    """Log the category's run to MLflow (under ``parent_run_id``) and register it as ``challenger``.

    Cached like the other tasks: an unchanged model is not registered twice."""
    with portable_errors():
        result = register_stage.register_category(restrict(_cfg(cfg), register_stage.PARAMS), category,
                                                  Path(runs_root), parent_run_id)
    return {**result, "stage": "register", "outputs_md5": {}}


TASKS = {"prepare": prepare, "defects": defects, "train": train, "calibrate": calibrate,
         "evaluate": evaluate, "register": register}


# ---------------------------------------------------------------------------------------------
# Helpers shared by the flows
# ---------------------------------------------------------------------------------------------


def resolve_config(params_path: str | Path = "params.yaml", profile: str | None = None,
                   overrides: Sequence[str] | None = None) -> SIDNConfig:
    """Load params; a relative ``data.root`` is taken relative to the params file's folder."""
    params_path = Path(params_path).resolve()
    cfg = load_params(params_path, profile, overrides)
    if not Path(cfg.data.root).is_absolute():
        cfg.data.root = str(params_path.parent / cfg.data.root)
    return cfg


def _runs_root(runs_root: str | Path, params_path: str | Path) -> str:
    root = Path(runs_root)
    return str(root if root.is_absolute() else Path(params_path).resolve().parent / root)


def _prepared_task(stage: str, paths: CategoryPaths, runs_root: str) -> Any:
    """The stage's task with result storage under runs_root, refreshing when outputs are gone."""
    base = TASKS[stage]
    storage = Path(runs_root) / ".prefect" / "results"
    refresh = stage != "register" and not _outputs_present(paths, stage)
    return base.with_options(result_storage=storage, refresh_cache=refresh)


def stages_for(register_models: bool) -> list[str]:
    return STAGES if register_models else STAGES[:-1]


def category_status(futures: dict[str, PrefectFuture]) -> dict[str, Any]:
    """Summarise one category's futures: completed, or the stage that failed and why."""
    for stage, future in futures.items():
        state = future.state
        if not state.is_completed():
            message = state.message or state.name
            if state.is_failed() or state.is_crashed():
                exc = _exception_of(state)
                message = str(exc) if exc is not None else message
            return {"status": "failed", "stage": stage, "state": state.name, "message": message}
    return {"status": "completed", "results": {s: f.result() for s, f in futures.items()}}


def metrics_markdown(runs_root: str | Path, categories: Sequence[str], report_html: Path | None,
                     failures: dict[str, dict] | None = None, title: str = "SIDN metrics") -> str:
    """Per-category metrics table (markdown) with a link to the HTML report."""
    from pipelines.report import collect, markdown_table, mean_row

    results = collect(Path(runs_root), categories)
    text = [f"# {title}", "", markdown_table(results, mean_row(results)), ""]
    if report_html is not None:
        text.append(f"Report: [{report_html}]({Path(report_html).resolve().as_uri()})")
    for category, info in (failures or {}).items():
        text.append(f"- **{category} failed** in `{info.get('stage')}`: {str(info.get('message', ''))[:500]}")
    return "\n".join(text) + "\n"


def _artifact(markdown: str, description: str) -> None:
    try:
        create_markdown_artifact(key="sidn-metrics", markdown=markdown, description=description)
    except Exception as exc:  # artifacts are a convenience; never fail a run over one
        get_run_logger().warning("could not create the markdown artifact: %s", exc)


# ---------------------------------------------------------------------------------------------
# Flows
# ---------------------------------------------------------------------------------------------


@flow(name="sidn-category", log_prints=True)
def category_pipeline(category: str, params_path: str = "params.yaml", profile: str | None = None,
                      overrides: list[str] | None = None, runs_root: str = str(RUNS_DIR),
                      register_model: bool = True) -> dict:
    """One category's pipeline, stage after stage; raises at the first failing stage."""
    logger = get_run_logger()
    cfg = resolve_config(params_path, profile, overrides)
    root = _runs_root(runs_root, params_path)
    paths = CategoryPaths(Path(root), category)
    data_fp = tree_fingerprint(Path(cfg.data.root) / category)
    upstream: dict | None = None
    results: dict[str, dict] = {}
    for stage in stages_for(register_model):
        upstream = _prepared_task(stage, paths, root)(cfg.to_dict(), category, root, data_fp, upstream)
        results[stage] = upstream
        logger.info("%s: %s done", category, stage)
    _artifact(metrics_markdown(root, [category], None, title=f"SIDN metrics: {category}"), f"sidn {category}")
    return results


@flow(name="sidn-fan-out", log_prints=True)
def fan_out(categories: list[str], cfg: dict, runs_root: str, gpus: bool = False,
            register_models: bool = True, parent_run_id: str | None = None) -> dict:
    """Submit every category's tasks (stage by stage, so ``N`` workers run ``N`` categories)."""
    sidn_cfg = _cfg(cfg)
    futures: dict[str, dict[str, PrefectFuture]] = {c: {} for c in categories}
    fingerprints = {c: tree_fingerprint(Path(sidn_cfg.data.root) / c) for c in categories}
    for stage in stages_for(register_models):
        for category in categories:
            paths = CategoryPaths(Path(runs_root), category)
            upstream = futures[category][STAGES[STAGES.index(stage) - 1]] if stage != STAGES[0] else None
            annotate = contextlib.nullcontext()
            if gpus and stage == "train":  # Dask: only a worker offering a GPU resource runs it
                import dask

                annotate = dask.annotate(resources={"GPU": 1})
            extra = {"parent_run_id": parent_run_id} if stage == "register" else {}
            with annotate:
                futures[category][stage] = _prepared_task(stage, paths, runs_root).submit(
                    cfg, category, runs_root, fingerprints[category], upstream, **extra
                )
    wait([f for per in futures.values() for f in per.values()])
    return {category: category_status(per) for category, per in futures.items()}


@contextlib.contextmanager
def mlflow_parent_run(cfg: SIDNConfig) -> Iterator[str | None]:
    """The MLflow parent run of a fan-out (None, with a warning, if MLflow cannot be reached:
    the register tasks then fail and retry on their own)."""
    try:
        from pipelines.tracking import runs

        manager = runs.start_parent_run(cfg, tags={"orchestrator": "prefect"})
        run_id = manager.__enter__()
    except Exception as exc:
        get_run_logger().warning("no MLflow parent run (%s); category runs are not nested", exc)
        yield None
        return
    try:
        yield run_id
    except BaseException:
        if not manager.__exit__(*sys.exc_info()):
            raise
    else:
        manager.__exit__(None, None, None)


def make_task_runner(max_parallel: int | None = None, dask_address: str | None = None,
                     dask_workers: int = 0, gpus: bool = False) -> Any:
    """Thread pool by default; Dask with ``dask_address`` (a running cluster) or ``dask_workers``
    local worker processes (one thread each; with ``gpus`` each worker offers one ``GPU``)."""
    if dask_address or dask_workers:
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        kwargs: dict[str, Any] = {"n_workers": dask_workers, "threads_per_worker": 1, "processes": True,
                                  "dashboard_address": None}
        if gpus:
            kwargs["resources"] = {"GPU": 1}
        return DaskTaskRunner(cluster_kwargs=kwargs)
    return ThreadPoolTaskRunner(max_workers=max_parallel or default_parallelism())


def default_parallelism() -> int:
    """One training per GPU; on a CPU machine ``max(1, cpus // 8)`` (torch already uses all cores)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return max(1, (os.cpu_count() or 1) // 8)


@flow(name="sidn-all-categories", log_prints=True)
def all_categories(categories: list[str] | None = None, max_parallel: int | None = None,
                   params_path: str = "params.yaml", profile: str | None = None,
                   overrides: list[str] | None = None, runs_root: str = str(RUNS_DIR),
                   dask_address: str | None = None, dask_workers: int = 0, gpus: bool = False,
                   register_models: bool = True, report: bool = True, commit: bool = False) -> Any:
    """Every category in parallel (``max_parallel`` at a time); failures stay in their category.

    Returns the summary ``{category: {"status": "completed"|"failed", ...}}``; the flow run ends
    ``Failed`` (with that summary as its data) when any category failed. With ``report`` the HTML
    and markdown report go to ``reports/`` next to ``runs_root``; with ``register_models`` the
    category runs are nested under one MLflow parent run.
    """
    logger = get_run_logger()
    cfg = resolve_config(params_path, profile, overrides)
    categories = list(categories or cfg.data.categories)
    root = _runs_root(runs_root, params_path)
    runner = make_task_runner(max_parallel, dask_address, dask_workers, gpus)
    logger.info("fan-out over %s on %s", ", ".join(categories), type(runner).__name__)
    with (mlflow_parent_run(cfg) if register_models else contextlib.nullcontext(None)) as parent_run_id:
        summary = fan_out.with_options(task_runner=runner)(categories, cfg.to_dict(), root, gpus,
                                                           register_models, parent_run_id)

    done = [c for c, s in summary.items() if s["status"] == "completed"]
    failed = {c: s for c, s in summary.items() if s["status"] != "completed"}
    everything = not failed and set(categories) == set(cfg.data.categories)
    report_html = None
    if report:
        from pipelines.report import build_report

        report_html = build_report(root, categories, Path(root).parent / REPORTS_DIR).html
    if register_models and everything:  # what the DVC register stage writes, from the register tasks
        write_registered(cfg, summary, parent_run_id, Path(root).parent / REPORTS_DIR / "registered.json")
    if commit and done:
        repo = Path(params_path).resolve().parent
        if Path(root) != repo / RUNS_DIR:
            logger.warning("not committing to dvc.lock: outputs are in %s, not in %s", root, repo / RUNS_DIR)
        else:  # the same stage functions wrote the same files dvc.yaml declares: record them
            targets = [f"{stage}@{c}" for c in done for stage in STAGES[:-1]]
            targets += (["report"] if report and everything else []) + (["register"] if register_models and everything else [])
            _dvc(repo, "commit", "--force", *targets)
    _artifact(metrics_markdown(root, categories, report_html, failed), "sidn per-category metrics")
    for category, info in failed.items():
        logger.error("%s failed in %s: %s", category, info["stage"], info["message"])
    if failed:
        names = ", ".join(f"{c} ({i['stage']})" for c, i in failed.items())
        return Failed(message=f"{len(failed)} of {len(summary)} categories failed: {names}", data=summary)
    return summary


def write_registered(cfg: SIDNConfig, summary: dict[str, Any], parent_run_id: str | None, out_json: Path) -> dict:
    """``reports/registered.json`` as the DVC ``register`` stage writes it, from the register tasks."""
    from pipelines.tracking import runs
    from sidn.io import atomic_write_json

    results = {}
    for category, info in summary.items():
        result = dict(info.get("results", {}).get("register") or {"category": category, "status": "skipped"})
        results[category] = {k: v for k, v in result.items() if k not in ("stage", "outputs_md5")}
    payload = {"dataset": Path(cfg.data.root).name, "tracking_uri": runs.tracking_uri(),
               "parent_run_id": parent_run_id, "categories": results}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_json, payload)
    return payload


# ---------------------------------------------------------------------------------------------
# Retraining (the scheduled deployment): Prefect runs the per-category tasks, DVC records lineage
# ---------------------------------------------------------------------------------------------


def _dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # dvc.yaml's commands call `python`: this interpreter's, whatever PATH the worker started with
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, cwd=repo, env=env, text=True, capture_output=True)
    output = (proc.stdout + proc.stderr).strip()
    if output:
        print(output[-20000:])
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def dvc_remotes(repo: Path) -> list[str]:
    proc = _dvc(repo, "remote", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _network_retry(task: Any, task_run: Any, state: State) -> bool:
    exc = _exception_of(state)
    return isinstance(exc, subprocess.CalledProcessError) or is_transient(exc)


@task(name="dvc-pull", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_network_retry)
def dvc_pull(repo: str) -> str:
    remotes = dvc_remotes(Path(repo))
    if not remotes:
        get_run_logger().info("no DVC remote configured; skipping dvc pull (using the local data/cache)")
        return "skipped"
    _dvc(Path(repo), "pull", "--allow-missing")
    return "pulled"


@task(name="dvc-repro")
def dvc_repro(repo: str, keep_going: bool = True, targets: list[str] | None = None) -> str:
    args = ["repro"] + (["--keep-going"] if keep_going else []) + list(targets or [])
    proc = _dvc(Path(repo), *args, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return "reproduced"


@task(name="dvc-push", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_network_retry)
def dvc_push(repo: str) -> str:
    if not dvc_remotes(Path(repo)):
        get_run_logger().info("no DVC remote configured; skipping dvc push")
        return "skipped"
    _dvc(Path(repo), "push")
    return "pushed"


def synth_targets(repo: Path, cfg: SIDNConfig) -> list[str]:
    """``synth@<category>`` for each category whose data the embedded generator writes (when
    ``data.root`` is dvc.yaml's ``synth.dir``); none for another dataset."""
    import yaml

    try:
        raw = yaml.safe_load((repo / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    synth_dir = next((v["synth"].get("dir") for v in raw.get("vars") or []
                      if isinstance(v, dict) and isinstance(v.get("synth"), dict)), None)
    if not synth_dir or "synth" not in (raw.get("stages") or {}):
        return []
    if Path(cfg.data.root).resolve() != (repo / synth_dir).resolve():
        return []
    return [f"synth@{c}" for c in cfg.data.categories]


@flow(name="sidn-retrain", log_prints=True)
def retrain(repo: str = ".", pull: bool = True, push: bool = False, max_parallel: int | None = None,
            dask_address: str | None = None, dask_workers: int = 0, gpus: bool = False) -> dict:
    """The scheduled retraining (see module doc): ``dvc pull`` -> the embedded data (``dvc repro
    synth@C``, when it is the data source) -> :func:`all_categories` (one task per category and
    stage, with their retries; registers the challengers; writes the report and
    ``reports/registered.json``; records every stage in ``dvc.lock`` with ``dvc commit``) ->
    ``dvc push`` -> a markdown artifact."""
    repo_dir = Path(repo).resolve()
    logger = get_run_logger()
    params = repo_dir / "params.yaml"
    cfg = resolve_config(params)
    summary: dict[str, Any] = {"repo": str(repo_dir)}
    summary["pull"] = dvc_pull(str(repo_dir)) if pull else "disabled"
    targets = synth_targets(repo_dir, cfg)
    summary["data"] = dvc_repro(str(repo_dir), keep_going=False, targets=targets) if targets else "not generated"
    state = all_categories(params_path=str(params), runs_root=str(repo_dir / RUNS_DIR), max_parallel=max_parallel,
                           dask_address=dask_address, dask_workers=dask_workers, gpus=gpus,
                           register_models=True, report=True, commit=True, return_state=True)
    summary["fan_out"] = state.name
    per_category = state.result(raise_on_failure=False)
    if isinstance(per_category, dict):
        summary["categories"] = {c: {k: v for k, v in info.items() if k != "results"} for c, info in per_category.items()}
    summary["push"] = dvc_push(str(repo_dir)) if push and state.is_completed() else "disabled"
    registered = repo_dir / REPORTS_DIR / "registered.json"
    if registered.is_file() and state.is_completed():
        summary["registered"] = json.loads(registered.read_text())
    report_html = repo_dir / REPORTS_DIR / "index.html"
    _artifact(metrics_markdown(repo_dir / RUNS_DIR, cfg.data.categories,
                               report_html if report_html.is_file() else None), "sidn retraining metrics")
    if not state.is_completed():
        logger.error("retraining failed: %s", state.message)
        return Failed(message=f"retraining failed: {state.message}", data=summary)  # type: ignore[return-value]
    return summary


def retrain_deployment(cron: str = DEFAULT_CRON, name: str = DEPLOYMENT_NAME, repo: str = ".",
                       push: bool = False, max_parallel: int | None = None, timezone: str = "UTC") -> Any:
    """The retraining deployment (what ``sidn pipeline serve`` serves); ``repo`` is made absolute
    here, when the deployment is created, so a run does not depend on the server's directory."""
    from prefect.client.schemas.schedules import CronSchedule

    return retrain.to_deployment(
        name=name,
        schedules=[CronSchedule(cron=cron, timezone=timezone)],
        parameters={"repo": str(Path(repo).resolve()), "push": push, "max_parallel": max_parallel},
        tags=["sidn", "retrain"],
        description="Scheduled retraining: dvc pull -> per-category tasks (register challengers) -> dvc commit -> dvc push",
    )


def serve(cron: str = DEFAULT_CRON, repo: str = ".", push: bool = False, max_parallel: int | None = None) -> None:
    """Serve the retraining deployment from this process (runs on the cron schedule)."""
    from prefect import serve as prefect_serve

    prefect_serve(retrain_deployment(cron=cron, repo=repo, push=push, max_parallel=max_parallel))
