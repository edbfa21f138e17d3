"""The scheduled retraining: the Prefect deployment of :func:`~pipelines.orchestration.flows.retrain`
(``prefect.yaml`` declares the same one for ``prefect deploy``) and ``sidn pipeline serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.orchestration import RETRAIN_CRON
from pipelines.orchestration.flows import retrain

DEPLOYMENT_NAME = "sidn-retrain"


def retrain_deployment(cron: str = RETRAIN_CRON, name: str = DEPLOYMENT_NAME, repo: str = ".",
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


def serve(cron: str = RETRAIN_CRON, repo: str = ".", push: bool = False, max_parallel: int | None = None) -> None:
    """Serve the retraining deployment from this process (runs on the cron schedule)."""
    from prefect import serve as prefect_serve

    prefect_serve(retrain_deployment(cron=cron, repo=repo, push=push, max_parallel=max_parallel))
