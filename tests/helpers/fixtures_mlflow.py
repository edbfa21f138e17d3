"""A real MLflow tracking server for integration tests (loopback, sqlite backend, basic-auth, stopped after).

Use from a test module or ``conftest.py``::

    from helpers.fixtures_mlflow import mlflow_server, mlflow_env, mlflow_auth, as_user  # noqa: F401

``mlflow_server`` (session) starts, as ``make up`` does (``infra/stack.py``), MLflow with its
built-in authentication and the release guard::

    mlflow server --app-name basic-auth --backend-store-uri sqlite:///TMP/mlflow.db
                  --artifacts-destination TMP/artifacts --host 127.0.0.1 --port <free> --workers 1

with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (no background job workers: ~570 MB instead of
~2.8 GB) and telemetry off, waits for ``/health``, creates the users and roles
(:meth:`MlflowAuth.provision`) and yields the server URI. Users (throw-away passwords generated
at run time in the session's temporary folder, never in a committed file):

* ``sidn-release`` -- release manager: MANAGE on every registered model, the only account the
  server lets move ``champion``;
* ``sidn-pipeline`` -- EDIT on experiments and registered models (runs, versions, ``challenger``);
* ``sidn-viewer`` -- no role: the default READ.

It is stopped with SIGTERM to its process group (SIGKILL after 20 s). ``mlflow_env`` (module)
points ``MLFLOW_TRACKING_URI`` at it, logs in as ``sidn-pipeline`` (``MLFLOW_TRACKING_USERNAME``
/ ``_PASSWORD``) with a fresh experiment name and restores the environment after;
``as_user(auth, name)`` switches the account for a block.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from unittest import mock

import pytest

from infra.mlflow_auth import MlflowAuth
from pipelines import telemetry

TELEMETRY_OFF = {**telemetry.TELEMETRY_OFF, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


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


RELEASE_MANAGER = "sidn-release"
PIPELINE_USER = "sidn-pipeline"
VIEWER = "sidn-viewer"
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="session")
def mlflow_auth(tmp_path_factory: pytest.TempPathFactory) -> MlflowAuth:
    """The test server's :class:`MlflowAuth` (config, users, throw-away passwords in a temp folder)."""
    return MlflowAuth(tmp_path_factory.mktemp("mlflow-auth"), users={
        RELEASE_MANAGER: "sidn-release-managers", PIPELINE_USER: "sidn-pipelines", VIEWER: None})


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, mlflow_auth: MlflowAuth) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [
        mlflow_executable(), "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    env = {**server_env(), **mlflow_auth.server_env()}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, timeout=120, log=log)
        mlflow_auth.provision(uri)
        yield uri
    finally:
        stop_group(proc)


@contextmanager
def as_user(auth: MlflowAuth, user: str | None) -> Iterator[None]:
    """Within the block, MLflow clients of this process authenticate as ``user`` (None: anonymous)."""
    with mock.patch.dict(os.environ):
        for k in CREDENTIAL_VARS:
            os.environ.pop(k, None)
        if user is not None:
            os.environ.update(auth.client_env(user))
        yield


@pytest.fixture(scope="module")
def mlflow_env(mlflow_server: str, mlflow_auth: MlflowAuth) -> Iterator[str]:
    """``MLFLOW_TRACKING_URI`` -> the test server as ``sidn-pipeline``, fresh ``MLFLOW_EXPERIMENT_NAME``;
    restored after."""
    keys = ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", *CREDENTIAL_VARS, *TELEMETRY_OFF]
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(TELEMETRY_OFF)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    os.environ["MLFLOW_EXPERIMENT_NAME"] = f"test-{uuid.uuid4().hex[:8]}"
    os.environ.update(mlflow_auth.client_env(PIPELINE_USER))
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)  # an earlier module may have set the process-wide URI elsewhere
    try:
        yield mlflow_server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # also unsets the env variable
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        if saved["MLFLOW_TRACKING_URI"] is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved["MLFLOW_TRACKING_URI"]
