"""Shared test set-up: telemetry off, deterministic single-threaded torch, shared fixtures."""

import os

from pipelines.telemetry import switch_off  # noqa: E402

switch_off()
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import torch  # noqa: E402

torch.set_num_threads(1)
