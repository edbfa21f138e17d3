"""Prefect 3 flows: one category, every category fanned out, and the scheduled retraining.

Each flow is a short list of task calls (:mod:`pipelines.orchestration.tasks`); how a task is
retried, cached and placed is :mod:`pipelines.orchestration.policy`.

* :func:`category_pipeline` -- one category: prepare -> defects -> train -> calibrate ->
  evaluate -> register, in order.
* :func:`all_categories` -- every category fanned out with a concurrency limit: a thread pool
  (one training at a time per GPU; ``max(1, cpus // 8)`` on a CPU machine) or a Dask cluster
  (local processes, or a scheduler address) where each training task asks for one ``GPU``
  worker resource. A failing category does not stop the others; the flow ends ``Failed`` with
  a summary naming the failed categories and stages, after writing the report and a markdown
  artifact for the ones that finished. ``commit=True`` records the outputs in ``dvc.lock``
  (``dvc commit``), so a later ``dvc repro`` does not redo them.
* :func:`retrain` -- the scheduled deployment (:mod:`pipelines.orchestration.deployment`):
  ``dvc pull`` (if a remote is configured), the embedded dataset (``dvc repro synth@C``, only
  when it is the data source), then :func:`all_categories` -- one task per category and stage,
  with their retries, the ``register`` tasks registering the challengers in MLflow -- which
  writes the report and ``reports/registered.json`` and records every stage in ``dvc.lock``
  (``dvc commit``: the same functions wrote the files ``dvc.yaml`` declares, so ``dvc status``
  is clean after it), ``dvc push`` (optional), and a markdown artifact with the metrics table
  linking to the report.

Several machines: ``dask_address`` points the fan-out at a running Dask scheduler; the workers
need the repository (same path), the data and ``runs/`` on a shared filesystem, and GPU workers
started with ``--resources GPU=1`` (one per GPU). Task results then live on that filesystem too.

Resuming: re-running after a crash returns cached results for every finished task and resumes
at the first unfinished one (:mod:`pipelines.orchestration.policy`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed

from pipelines.layout import REPORTS_DIR, RUNS_DIR, CategoryPaths, tree_fingerprint
from pipelines.orchestration.dvc import dvc_pull, dvc_push, dvc_repro, run_dvc, synth_targets
from pipelines.orchestration.policy import exception_of, make_task_runner, task_config
from pipelines.orchestration.tasks import STAGES, prepared_task, stages_for
from pipelines.params import load_params
from sidn.config import SIDNConfig

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


def category_status(futures: dict[str, PrefectFuture]) -> dict[str, Any]:
    """Summarise one category's futures: completed, or the stage that failed and why."""
    for stage, future in futures.items():
        state = future.state
        if not state.is_completed():
            message = state.message or state.name
            if state.is_failed() or state.is_crashed():
                exc = exception_of(state)
                message = str(exc) if exc is not None else message
            return {"status": "failed", "stage": stage, "state": state.name, "message": message}
    return {"status": "completed", "results": {s: f.result() for s, f in futures.items()}}


def metrics_markdown(runs_root: str | Path, categories: Sequence[str], report_html: Path | None,
                     failures: dict[str, dict] | None = None, title: str = "SIDN metrics") -> str:
    """Per-category metrics table (markdown) with a link to the HTML report."""
    from pipelines.report import markdown_table
    from pipelines.report_data import collect, mean_row

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
        upstream = prepared_task(stage, paths, root)(cfg.to_dict(), category, root, data_fp, upstream)
        results[stage] = upstream
        logger.info("%s: %s done", category, stage)
    _artifact(metrics_markdown(root, [category], None, title=f"SIDN metrics: {category}"), f"sidn {category}")
    return results


@flow(name="sidn-fan-out", log_prints=True)
def fan_out(categories: list[str], cfg: dict, runs_root: str, gpus: bool = False,
            register_models: bool = True, parent_run_id: str | None = None) -> dict:
    """Submit every category's tasks (stage by stage, so ``N`` workers run ``N`` categories)."""
    sidn_cfg = task_config(cfg)
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
                futures[category][stage] = prepared_task(stage, paths, runs_root).submit(
                    cfg, category, runs_root, fingerprints[category], upstream, **extra
                )
    wait([f for per in futures.values() for f in per.values()])
    return {category: category_status(per) for category, per in futures.items()}


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
            run_dvc(repo, "commit", "--force", *targets)
    _artifact(metrics_markdown(root, categories, report_html, failed), "sidn per-category metrics")
    for category, info in failed.items():
        logger.error("%s failed in %s: %s", category, info["stage"], info["message"])
    if failed:
        names = ", ".join(f"{c} ({i['stage']})" for c, i in failed.items())
        return Failed(message=f"{len(failed)} of {len(summary)} categories failed: {names}", data=summary)
    return summary


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
