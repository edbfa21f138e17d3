"""What every process the stack starts gets: the telemetry switches of each tool, unbuffered Python
output, and its executable from the project's venv."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from infra import InfraError

#: Telemetry switches, exported into every process this package starts (each tool has its own).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment with telemetry off, Python output unbuffered, plus ``extra``."""
    env = dict(os.environ)
    env.update(TELEMETRY_OFF)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def main_venv_bin(name: str) -> str:
    """Path of an executable of the project's venv (the one running this package), else from PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise InfraError(f"`{name}` not found next to {sys.executable} nor on PATH: run `make install` first")
    return found
