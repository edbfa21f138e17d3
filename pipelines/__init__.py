"""Orchestration around the ``sidn`` library, one sub-package per tool: DVC stage entry points
(``pipelines.stages``), Prefect (``pipelines.orchestration``), MLflow and the S3 store
(``pipelines.tracking``); beside them the run layout (``pipelines.layout``), params
(``pipelines.params``), the report (``pipelines.report``) and the telemetry switches."""
