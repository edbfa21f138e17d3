"""Shared fixtures for the pipeline tests: one Prefect server per session, a throw-away MLflow store.

Loaded with ``pytest_plugins = ["helpers.fixtures_prefect"]`` in the test modules that need it, so the
session-scoped Prefect server is started once for all of them.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect server (sqlite) for the whole session (~15 s to start)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def mlflow_tmp(tmp_path, monkeypatch):
    """Point MLflow at a throw-away sqlite store (never the repo's); artifacts land in tmp_path/mlruns."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a sqlite store without a server puts artifacts in ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return uri
