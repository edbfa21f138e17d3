"""Telemetry off: the switch of every tool we run, in one place.

MLflow, Prefect, great-expectations and DVC would otherwise try to phone home (this project runs
offline). The Makefile exports the same switches for the shell (a test checks that they agree).
"""

from __future__ import annotations

import os
from typing import MutableMapping

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}


def switch_off(env: MutableMapping[str, str] = os.environ) -> None:
    """Set every switch of :data:`TELEMETRY_OFF` in ``env`` that is not set yet."""
    for key, value in TELEMETRY_OFF.items():
        env.setdefault(key, value)


__all__ = ["TELEMETRY_OFF", "switch_off"]
