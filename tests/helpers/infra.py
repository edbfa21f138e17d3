"""Helpers shared by the tests that use the real local services (tests/integration/test_infra.py,
tests/integration/test_pipeline_store.py): clean subprocess environments, an MLflow server whose artifacts
live in the S3 store of ``helpers.fixtures_s3.s3_server``, a DVC remote in that store, and the state
folder that ``infra/up`` would leave behind (``env.sh``, ``pids/s3.pid``) so ``infra/with-env``
can be run against the test servers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from helpers.fixtures_s3 import S3Server

from infra import dvc_remote
from infra.credentials import S3Credentials, write_private
from infra.environment import TELEMETRY_OFF, base_env
from infra.http_client import http_get
from infra.ports import free_ports
from infra.processes import ProcessManager, ServiceSpec
from infra.stack import Stack, StackConfig
from infra.swift import DATA_BUCKET, MLFLOW_BUCKET

BIN = Path(sys.executable).parent


def run_cmd(cmd: list[str], cwd: Path, env: Mapping[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; a non-zero exit fails the test with the end of its output."""
    res = subprocess.run(cmd, cwd=str(cwd), env=dict(env) if env is not None else None, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


def clean_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default ``os.environ``) without any AWS_/MLFLOW_/PREFECT_ variable (so no endpoint or
    key of the caller's reaches a client), telemetry off, a git identity; plus ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(("AWS_", "MLFLOW_", "PREFECT_"))}
    env.update(TELEMETRY_OFF)
    env.update({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"})
    env.update(extra)
    return env


def configure_dvc_remote(repo: Path, s3_server: S3Server, prefix: str) -> str:
    """Default DVC remote of ``repo`` -> ``s3://sidn-data/<prefix>`` on the test store, written the way
    ``infra/up`` writes it (``.dvc/config.local``, credentials included); returns the URL."""
    url = f"s3://{DATA_BUCKET}/{prefix}"
    creds = S3Credentials(s3_server.access_key_id, s3_server.secret_access_key)
    dvc_remote.configure_dvc_remote(repo, s3_server.endpoint, creds, url=url)
    return url


@dataclass
class MlflowS3Server:
    """A running ``mlflow server`` whose artifact destination is ``s3://sidn-mlflow/<prefix>``."""

    uri: str
    port: int
    prefix: str
    startup_seconds: float
    log: Path
    _pm: ProcessManager = field(repr=False)

    def stop(self) -> str:
        """Stop the server's process group: 'stopped', 'killed' or 'not running'."""
        return self._pm.stop("mlflow")


def start_mlflow_s3(s3_server: S3Server, state: Path, prefix: str, port: int | None = None,
                    timeout: float = 120) -> MlflowS3Server:
    """Start ``mlflow server --artifacts-destination s3://sidn-mlflow/<prefix>`` (sqlite backend in
    ``state``, S3 credentials through its environment only) on ``port`` (default: a free one); wait
    for ``/health``."""
    port = port or free_ports(1)[0]
    state.mkdir(parents=True, exist_ok=True)
    pm = ProcessManager(state)
    env = base_env({
        **s3_server.env(),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{state / 'mlflow.db'}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"http://127.0.0.1:{port}"
    spec = ServiceSpec(
        name="mlflow",
        argv=[str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
              "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/{prefix}"],
        env=env,
        port=port,
        health=lambda: http_get(f"{uri}/health")[0] == 200,
        timeout=timeout,
        cwd=state,
    )
    started = pm.start(spec)
    return MlflowS3Server(uri=uri, port=port, prefix=prefix, startup_seconds=started.seconds,
                          log=state / "logs" / "mlflow.log", _pm=pm)


def write_infra_state(state: Path, s3_server: S3Server, mlflow_uri: str | None = None) -> Path:
    """What ``infra/up`` leaves in its state folder for clients, pointing at the test servers:
    ``credentials.json`` and ``env.sh`` (both mode 0600, written by the infra package itself) and
    ``pids/s3.pid`` (the running test proxy's record), so that ``SIDN_INFRA_DIR=state
    infra/with-env CMD`` runs CMD with that environment. Returns ``state``."""
    state.mkdir(parents=True, exist_ok=True)
    write_private(state / "credentials.json", json.dumps(
        {"access_key_id": s3_server.access_key_id, "secret_access_key": s3_server.secret_access_key}))
    cfg = StackConfig.from_env()
    cfg.state = state
    cfg.ports = {**cfg.ports, **s3_server.ports}
    # MLflow: the test server (else a free port, where nothing answers); Prefect is not started
    cfg.ports["mlflow"] = int(mlflow_uri.rsplit(":", 1)[1]) if mlflow_uri else free_ports(1)[0]
    cfg.ports["prefect"] = free_ports(1)[0]
    s = Stack(cfg)
    assert s.creds.secret_access_key == s3_server.secret_access_key
    s.write_env_sh()
    (state / "pids").mkdir(exist_ok=True)
    shutil.copy2(s3_server.root / "pids" / "s3.pid", state / "pids" / "s3.pid")
    return state
