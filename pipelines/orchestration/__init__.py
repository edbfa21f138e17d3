"""Prefect: the per-category tasks, the flows over them, and the scheduled retraining deployment.

How this relates to DVC (``dvc.yaml``): the tasks are thin wrappers around the same ``run()``
functions the DVC stages call (:mod:`pipelines.stages`), writing the same files
(:class:`pipelines.layout.CategoryPaths`). DVC owns lineage (``dvc.lock``); Prefect owns
execution: retries, parallelism, schedules and run history.

* :mod:`~pipelines.orchestration.policy` -- how a task runs: which errors are retried, the
  cache keys that let a run resume, GPU slots and the task runner;
* :mod:`~pipelines.orchestration.tasks` -- one task per stage (``prepare`` ... ``register``);
* :mod:`~pipelines.orchestration.flows` -- one category, the fan-out over categories, and the
  retraining flow;
* :mod:`~pipelines.orchestration.dvc` -- ``dvc pull`` / ``repro`` / ``push`` / ``commit`` from a flow;
* :mod:`~pipelines.orchestration.deployment` -- the scheduled retraining deployment and ``serve``;
* :mod:`~pipelines.orchestration.cli` -- ``sidn pipeline ...`` and ``sidn report``.

This package module imports nothing, so ``sidn --help`` (which imports the CLI) does not import Prefect.
"""

# The retraining schedule (prefect.yaml spells the same cron; tests/integration/test_flows.py checks it).
RETRAIN_CRON = "0 3 * * 0"  # Sundays 03:00 UTC
