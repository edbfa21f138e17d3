"""DVC from a Prefect flow: ``dvc`` as a subprocess of this interpreter, and the ``dvc-*`` tasks.

The retraining flow pulls the data (:func:`dvc_pull`), generates the embedded dataset when it
is the data source (:func:`dvc_repro` of :func:`synth_targets`), records what the tasks wrote
in ``dvc.lock`` (``run_dvc(repo, "commit", ...)``) and pushes (:func:`dvc_push`). Pull and push
are retried on failed ``dvc`` calls and transient errors; without a configured remote they skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.states import State

from pipelines.orchestration.policy import RETRY_DELAYS, exception_of, is_transient
from sidn.config import SIDNConfig


def run_dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``dvc ARGS`` in ``repo``, its output printed (the flow logs prints); CalledProcessError with ``check``."""
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
    """The names of the DVC remotes configured in ``repo``."""
    proc = run_dvc(repo, "remote", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _network_retry(task: Any, task_run: Any, state: State) -> bool:
    exc = exception_of(state)
    return isinstance(exc, subprocess.CalledProcessError) or is_transient(exc)


@task(name="dvc-pull", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_network_retry)
def dvc_pull(repo: str) -> str:
    remotes = dvc_remotes(Path(repo))
    if not remotes:
        get_run_logger().info("no DVC remote configured; skipping dvc pull (using the local data/cache)")
        return "skipped"
    run_dvc(Path(repo), "pull", "--allow-missing")
    return "pulled"


@task(name="dvc-repro")
def dvc_repro(repo: str, keep_going: bool = True, targets: list[str] | None = None) -> str:
    args = ["repro"] + (["--keep-going"] if keep_going else []) + list(targets or [])
    proc = run_dvc(Path(repo), *args, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return "reproduced"


@task(name="dvc-push", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_network_retry)
def dvc_push(repo: str) -> str:
    if not dvc_remotes(Path(repo)):
        get_run_logger().info("no DVC remote configured; skipping dvc push")
        return "skipped"
    run_dvc(Path(repo), "push")
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
