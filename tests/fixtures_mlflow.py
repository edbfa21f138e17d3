"""A real MLflow tracking server for integration tests (loopback, sqlite backend, stopped after).

Use from a test module or ``conftest.py``::

    from fixtures_mlflow import mlflow_server, mlflow_env  # noqa: F401

``mlflow_server`` (session) starts::

    mlflow server --backend-store-uri sqlite:///TMP/mlflow.db --artifacts-destination TMP/artifacts
                  --host 127.0.0.1 --port <free> --workers 1

with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (no background job workers: ~570 MB instead of
~2.8 GB) and telemetry off, waits for ``/health`` and yields the server URI. It is stopped with
SIGTERM to its process group (SIGKILL after 20 s). ``mlflow_env`` (module) points
``MLFLOW_TRACKING_URI`` at it with a fresh experiment name and restores the environment after.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_executable() -> str:
    exe = Path(sys.executable).with_name("mlflow")
    return str(exe) if exe.exists() else "mlflow"


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail with the log tail if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s:\n{tail}")


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session=True); SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def server_env() -> dict[str, str]:
    env = {**os.environ, **TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [
        mlflow_executable(), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env(), cwd=root,
                                start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, timeout=120, log=log)
        yield uri
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def mlflow_env(mlflow_server: str) -> Iterator[str]:
    """``MLFLOW_TRACKING_URI`` -> the test server, fresh ``MLFLOW_EXPERIMENT_NAME``; restored after."""
    keys = ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", *TELEMETRY_OFF]
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(TELEMETRY_OFF)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    os.environ["MLFLOW_EXPERIMENT_NAME"] = f"test-{uuid.uuid4().hex[:8]}"
    try:
        yield mlflow_server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import mlflow

        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # also unsets the env variable
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        if saved["MLFLOW_TRACKING_URI"] is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved["MLFLOW_TRACKING_URI"]
