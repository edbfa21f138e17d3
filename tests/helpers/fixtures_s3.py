"""A real S3 server for integration tests: OpenStack Swift + s3api on loopback, free ports, stopped after.

Use from ``tests/conftest.py`` (one server for the whole session) or a test module::

    from helpers.fixtures_s3 import s3_server, s3_env  # noqa: F401

``s3_server`` (session) installs Swift into ``.infra/venv-swift`` if it is missing (``infra/
install-swift.sh``, ~25 s, needs PyPI), writes its configuration and rings into a temporary folder,
starts the account, container and object servers and the S3 proxy on four free ports of
127.0.0.1, creates the buckets ``sidn-data`` and ``sidn-mlflow`` with throw-away credentials and
yields an :class:`S3Server`. All four processes are stopped (SIGTERM to each process group, SIGKILL
after a timeout) at the end of the session. The fixture is reference-counted, so importing it into
several modules still starts one server.

``s3_env`` (function) exports ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION`` and ``MLFLOW_S3_ENDPOINT_URL`` for one test and restores them after.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from infra.credentials import S3Credentials
from infra.ports import free_ports
from infra.processes import ProcessManager
from infra.swift import BUCKETS, S3_REGION, SwiftS3

REPO = Path(__file__).resolve().parents[2]


def swift_venv() -> Path:
    """The Swift venv, installed on first use (so a fresh CI machine needs no extra step)."""
    venv = Path(os.environ.get("SIDN_SWIFT_VENV", REPO / ".infra" / "venv-swift"))
    if not (venv / "bin" / "swift-proxy-server").exists():
        res = subprocess.run(
            ["bash", str(REPO / "infra" / "install-swift.sh")],
            env={**os.environ, "SIDN_SWIFT_VENV": str(venv)},
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            pytest.fail(f"infra/install-swift.sh failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return venv


@dataclass
class S3Server:
    """A running local S3 store (Swift + s3api) and the handles a test needs."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str
    buckets: tuple[str, ...]
    root: Path
    ports: dict[str, int]
    _pm: ProcessManager = field(repr=False)
    _swift: SwiftS3 = field(repr=False)

    def env(self) -> dict[str, str]:
        """Client environment: the standard AWS variables plus MLflow's S3 endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **config_kwargs: Any) -> Any:
        """A boto3 S3 client with the server's credentials (path-style)."""
        return self._swift.client(**config_kwargs)

    def log_text(self) -> str:
        """All four servers' logs, for assertions that nothing secret was logged."""
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.root / "logs").glob("*.log")))

    # failure injection: the S3 front end (the proxy) only; the data servers keep running
    def stop_proxy(self) -> None:
        self._pm.stop("s3", timeout=5)

    def start_proxy(self) -> None:
        spec = [s for s in self._swift.specs(60) if s.name == "s3"][0]
        self._pm.start(spec)

    def proxy_running(self) -> bool:
        return self._pm.is_running("s3")


_STATE: dict[str, Any] = {"server": None, "refs": 0}


def _start_server() -> S3Server:
    venv = swift_venv()
    root = Path(tempfile.mkdtemp(prefix="sidn-s3-"))
    names = ("s3", "swift-account", "swift-container", "swift-object")
    ports = dict(zip(names, free_ports(len(names))))
    creds = S3Credentials.generate("test", "tester")
    swift = SwiftS3(root / "swift", ports, creds, venv)
    pm = ProcessManager(root)
    swift.configure()
    specs = swift.specs(timeout=90)
    try:
        pm.start_all(specs[:3])
        pm.start_all(specs[3:])
        swift.ensure_buckets(BUCKETS)
    except BaseException:
        for s in reversed(specs):
            pm.stop(s.name, timeout=5)
        raise
    return S3Server(
        endpoint=swift.endpoint,
        access_key_id=creds.access_key_id,
        secret_access_key=creds.secret_access_key,
        region=S3_REGION,
        buckets=tuple(BUCKETS),
        root=root,
        ports=ports,
        _pm=pm,
        _swift=swift,
    )


def _stop_server(server: S3Server) -> None:
    for name in ("s3", "swift-object", "swift-container", "swift-account"):
        server._pm.stop(name, timeout=10)
    import shutil

    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One real S3 server (Swift + s3api) on loopback for the session."""
    if _STATE["server"] is None:
        _STATE["server"] = _start_server()
    _STATE["refs"] += 1
    try:
        yield _STATE["server"]
    finally:
        _STATE["refs"] -= 1
        if _STATE["refs"] == 0:
            server, _STATE["server"] = _STATE["server"], None
            _stop_server(server)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the standard AWS environment at ``s3_server`` for one test."""
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server
