"""One Prefect task per pipeline stage: thin wrappers around ``pipelines.stages.<stage>.run``.

Each task has the name of its DVC stage and the task-run name ``<stage>[<category>]``
(tests/unit/test_layout.py keeps DVC stage, task, function and run name the same word). The tasks
take the config as a plain dict, the category, the runs root, the category's data fingerprint
and the upstream task's result (for the cache key, :func:`~pipelines.orchestration.policy.stage_cache_key`),
and return the stage's result with the md5 of the files it wrote. A task whose output files have
gone missing is re-run (``refresh_cache``, :func:`prepared_task`).

The five per-category stages share one wrapper (:func:`_stage_task`) around a small call each;
``register`` is written out, as it also takes the MLflow parent run.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from prefect import task

from pipelines.layout import CategoryPaths, file_md5, tree_fingerprint
from pipelines.orchestration.policy import (
    RETRY_DELAYS,
    gpu_slot,
    portable_errors,
    retry_on_transient,
    stage_cache_key,
    task_config,
)
from pipelines.params import restrict
from pipelines.stages import calibrate as calibrate_stage
from pipelines.stages import defects as defects_stage
from pipelines.stages import evaluate as evaluate_stage
from pipelines.stages import prepare as prepare_stage
from pipelines.stages import register as register_stage
from pipelines.stages import train as train_stage
from sidn.config import SIDNConfig

STAGES = ["prepare", "defects", "train", "calibrate", "evaluate", "register"]


def _options(keys: Sequence[str]) -> dict[str, Any]:
    """What every stage task shares: persisted results, the cache key over ``keys``, the retry policy."""
    return dict(persist_result=True, cache_key_fn=stage_cache_key(keys), retry_condition_fn=retry_on_transient,
                retry_delay_seconds=RETRY_DELAYS)


def outputs_md5(paths: CategoryPaths, stage: str) -> dict[str, str]:
    """md5 (files) or fingerprint (folders) of what ``stage`` wrote, by name."""
    out = {}
    for path in paths.outputs(stage):
        if path.is_file():
            out[path.name] = file_md5(path)
        elif path.is_dir():
            out[path.name] = tree_fingerprint(path)
    return out


def _stage_task(stage: str, retries: int, module: ModuleType,
                call: Callable[[SIDNConfig, str, CategoryPaths], dict[str, Any]]) -> Any:
    """The task ``stage``: ``call(cfg, category, paths)`` with picklable errors, cached on the params
    ``module.PARAMS``; returns its result with the md5 of the outputs. ``call``'s docstring is the task's."""

    def run_stage(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None) -> dict:
        paths = CategoryPaths(Path(runs_root), category)
        with portable_errors():
            result = call(task_config(cfg), category, paths)
        return {**result, "stage": stage, "outputs_md5": outputs_md5(paths, stage)}

    run_stage.__name__ = run_stage.__qualname__ = stage
    run_stage.__doc__ = call.__doc__
    return task(name=stage, task_run_name=f"{stage}[{{category}}]", retries=retries,
                **_options(module.PARAMS))(run_stage)


def _prepare(cfg: SIDNConfig, category: str, paths: CategoryPaths) -> dict[str, Any]:
    """Manifest + great-expectations validation (bad data fails at once, never retried)."""
    return prepare_stage.run(restrict(cfg, prepare_stage.PARAMS), category, paths.prepare, paths.work("prepare"))


def _defects(cfg: SIDNConfig, category: str, paths: CategoryPaths) -> dict[str, Any]:
    """The fixed DGM validation set (eq. 1)."""
    return defects_stage.run(restrict(cfg, defects_stage.PARAMS), category, paths.defects, paths.work("defects"))


def _train(cfg: SIDNConfig, category: str, paths: CategoryPaths) -> dict[str, Any]:
    """Train one category (resumes from its checkpoint after a crash or a retry)."""
    stage_cfg = restrict(cfg, train_stage.PARAMS + train_stage.RUNTIME_PARAMS)
    with gpu_slot():
        return train_stage.run(stage_cfg, category, paths.train_dir, paths.work("train"), progress=False)


def _calibrate(cfg: SIDNConfig, category: str, paths: CategoryPaths) -> dict[str, Any]:
    """Threshold from held-out good images + the DGM set, stored in runs/<category>/model.pt."""
    return calibrate_stage.run(restrict(cfg, calibrate_stage.PARAMS), category, paths.trained_model, paths.model,
                               paths.calibration, paths.work("calibrate"))


def _evaluate(cfg: SIDNConfig, category: str, paths: CategoryPaths) -> dict[str, Any]:
    """Pixel AUROC, AUPRO, image AUROC, curves and overlays on the test split."""
    return evaluate_stage.run(restrict(cfg, evaluate_stage.PARAMS), category, paths.model, paths.evaluate_dir,
                              paths.work("evaluate"))


prepare = _stage_task("prepare", 2, prepare_stage, _prepare)
defects = _stage_task("defects", 2, defects_stage, _defects)
train = _stage_task("train", 1, train_stage, _train)
calibrate = _stage_task("calibrate", 2, calibrate_stage, _calibrate)
evaluate = _stage_task("evaluate", 2, evaluate_stage, _evaluate)


@task(name="register", task_run_name="register[{category}]", retries=3, **_options(register_stage.PARAMS))
def register(cfg: dict, category: str, runs_root: str, data_fp: str = "", upstream: dict | None = None,
             parent_run_id: str | None = None) -> dict:
    """Log the category's run to MLflow (under ``parent_run_id``) and register it as ``challenger``.

    Cached like the other tasks: an unchanged model is not registered twice."""
    with portable_errors():
        result = register_stage.register_category(restrict(task_config(cfg), register_stage.PARAMS), category,
                                                  Path(runs_root), parent_run_id)
    return {**result, "stage": "register", "outputs_md5": {}}


TASKS = {"prepare": prepare, "defects": defects, "train": train, "calibrate": calibrate,
         "evaluate": evaluate, "register": register}


def stages_for(register_models: bool) -> list[str]:
    """The stages a flow runs: all of them, or all but ``register``."""
    return STAGES if register_models else STAGES[:-1]


def prepared_task(stage: str, paths: CategoryPaths, runs_root: str) -> Any:
    """The stage's task with result storage under runs_root, refreshing when outputs are gone."""
    storage = Path(runs_root) / ".prefect" / "results"
    refresh = stage != "register" and not all(p.exists() for p in paths.outputs(stage))
    return TASKS[stage].with_options(result_storage=storage, refresh_cache=refresh)
