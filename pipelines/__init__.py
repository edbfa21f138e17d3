"""Orchestration around the ``sidn`` library: DVC stage entry points (``pipelines.stages``),
Prefect flows (``pipelines.flows``), the report (``pipelines.report``), MLflow tracking and
registry (``pipelines.tracking.runs``, ``pipelines.tracking.registry*``) and their CLI plug-ins."""
