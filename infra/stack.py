"""The local stack as a unit: which services (Swift S3, MLflow, Prefect server and worker), on which
ports, started in which order and stopped in reverse; what clients export (``env.sh``); status."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from infra import REPO, InfraError
from infra.credentials import S3Credentials, redact, write_env_file
from infra.dvc_remote import DVC_REMOTE, DVC_REMOTE_URL, configure_dvc_remote
from infra.environment import TELEMETRY_OFF, base_env, main_venv_bin
from infra.http_client import http_get, http_post_json
from infra.mlflow_auth import MLFLOW_PIPELINE_USER, MLFLOW_RELEASE_MANAGER, MlflowAuth, check_installed
from infra.ports import HOST_DEFAULT, PORT_DEFAULTS, PortInUseError, port_is_free, port_is_listening, who_listens
from infra.processes import ProcessManager, ServiceSpec, Started
from infra.swift import BUCKETS, DATA_BUCKET, MLFLOW_BUCKET, S3_REGION, SwiftS3

MLFLOW_ARTIFACTS = f"s3://{MLFLOW_BUCKET}/artifacts"
WORK_POOL = "sidn-process"
WORKER_NAME = "sidn-local-worker"

#: Start order; `down` stops in reverse.
SERVICE_ORDER = (
    "swift-account",
    "swift-container",
    "swift-object",
    "s3",
    "mlflow",
    "prefect",
    "prefect-worker",
)
GROUPS = {
    "s3": ("swift-account", "swift-container", "swift-object", "s3"),
    "mlflow": ("mlflow",),
    "prefect": ("prefect", "prefect-worker"),
}


@dataclass
class StackConfig:
    """Where the stack keeps its state, which host and ports it uses, where Swift is installed."""

    state: Path
    host: str
    ports: dict[str, int]
    swift_venv: Path
    mlflow_backend_uri: str | None = None  # None -> sqlite under state/mlflow
    start_timeout: float = 90.0

    @staticmethod
    def from_env() -> "StackConfig":
        """From ``SIDN_INFRA_DIR``, the ``SIDN_*_PORT`` variables, ``SIDN_INFRA_HOST``,
        ``SIDN_SWIFT_VENV``, ``MLFLOW_BACKEND_STORE_URI`` and ``SIDN_INFRA_START_TIMEOUT``."""
        state = Path(os.environ.get("SIDN_INFRA_DIR", REPO / ".infra")).resolve()
        ports = {}
        for name, (var, default) in PORT_DEFAULTS.items():
            raw = os.environ.get(var, str(default))
            try:
                ports[name] = int(raw)
            except ValueError:
                raise InfraError(f"{var}={raw!r} is not a port number") from None
        host = os.environ.get("SIDN_INFRA_HOST", HOST_DEFAULT)
        venv = Path(os.environ.get("SIDN_SWIFT_VENV", state / "venv-swift"))
        return StackConfig(
            state=state,
            host=host,
            ports=ports,
            swift_venv=venv,
            mlflow_backend_uri=os.environ.get("MLFLOW_BACKEND_STORE_URI") or None,
            start_timeout=float(os.environ.get("SIDN_INFRA_START_TIMEOUT", "120")),
        )


class Stack:
    """The local services of the project, started and stopped as a unit."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.pm = ProcessManager(cfg.state)
        self.creds = S3Credentials.load_or_create(cfg.state / "credentials.json")
        self.mlflow_auth = MlflowAuth(cfg.state / "mlflow")
        self.swift = SwiftS3(cfg.state / "swift", cfg.ports, self.creds, cfg.swift_venv, host=cfg.host)

    # --- URLs
    @property
    def s3_endpoint(self) -> str:
        """The S3 API's URL."""
        return self.swift.endpoint

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking server's URL."""
        return f"http://{self.cfg.host}:{self.cfg.ports['mlflow']}"

    @property
    def prefect_api(self) -> str:
        """The Prefect server's API URL (``PREFECT_API_URL``)."""
        return f"http://{self.cfg.host}:{self.cfg.ports['prefect']}/api"

    def client_env(self) -> dict[str, str]:
        """What a client (pipeline, dvc, mlflow, boto3) needs to use these services."""
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.creds.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.creds.secret_access_key,
            "AWS_DEFAULT_REGION": S3_REGION,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            # the pipeline's MLflow account: logs runs, registers versions, sets `challenger`
            **self.mlflow_auth.client_env(MLFLOW_PIPELINE_USER),
            "PREFECT_API_URL": self.prefect_api,
            "SIDN_DATA_BUCKET": DATA_BUCKET,
            "SIDN_MLFLOW_BUCKET": MLFLOW_BUCKET,
            **TELEMETRY_OFF,
        }

    # --- specs
    def mlflow_spec(self) -> ServiceSpec:
        """The MLflow server: basic-auth, artifacts in the object store, secrets in its environment."""
        port = self.cfg.ports["mlflow"]
        mlflow_dir = self.cfg.state / "mlflow"
        mlflow_dir.mkdir(parents=True, exist_ok=True)
        backend = self.cfg.mlflow_backend_uri or f"sqlite:///{mlflow_dir / 'mlflow.db'}"
        env = base_env(
            {
                # URIs and keys through the environment, not argv (visible in `ps`)
                "MLFLOW_BACKEND_STORE_URI": backend,
                "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
                "AWS_ENDPOINT_URL": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": self.creds.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.creds.secret_access_key,
                "AWS_DEFAULT_REGION": S3_REGION,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                **self.mlflow_auth.server_env(),  # basic-auth: config path, admin password, guard
            }
        )
        check_installed()
        return ServiceSpec(
            name="mlflow",
            argv=[
                main_venv_bin("mlflow"),
                "server",
                "--host",
                self.cfg.host,
                "--port",
                str(port),
                "--workers",
                "1",
                "--app-name",
                "basic-auth",
                "--artifacts-destination",
                MLFLOW_ARTIFACTS,
            ],
            env=env,
            port=port,
            health=lambda: http_get(f"{self.mlflow_uri}/health")[0] == 200,
            timeout=self.cfg.start_timeout,
            cwd=mlflow_dir,
            describe=f"MLflow tracking server (basic-auth, backend {redact(backend)}, artifacts {MLFLOW_ARTIFACTS})",
        )

    def _prefect_env(self) -> dict[str, str]:
        home = self.cfg.state / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        return base_env(
            {
                "PREFECT_HOME": str(home),
                "PREFECT_API_URL": self.prefect_api,
                "PREFECT_SERVER_API_HOST": self.cfg.host,
                "PREFECT_SERVER_API_PORT": str(self.cfg.ports["prefect"]),
                "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            }
        )

    def prefect_spec(self) -> ServiceSpec:
        """The Prefect server (API and UI)."""
        port = self.cfg.ports["prefect"]
        env = self._prefect_env()
        env.pop("PREFECT_API_URL")  # the server itself does not need a client API URL
        return ServiceSpec(
            name="prefect",
            argv=[main_venv_bin("prefect"), "server", "start", "--host", self.cfg.host, "--port", str(port), "--analytics-off"],
            env=env,
            port=port,
            health=lambda: http_get(f"{self.prefect_api}/health")[0] == 200,
            timeout=self.cfg.start_timeout,
            describe="Prefect server (API + UI)",
        )

    def worker_online(self) -> bool:
        """The stack's process worker is registered ONLINE in its work pool."""
        status, body = http_post_json(f"{self.prefect_api}/work_pools/{WORK_POOL}/workers/filter", {})
        if status != 200 or not isinstance(body, list):
            return False
        return any(w.get("name") == WORKER_NAME and w.get("status", "ONLINE") == "ONLINE" for w in body)

    def worker_spec(self) -> ServiceSpec:
        """The Prefect process worker of the ``sidn-process`` pool."""
        # flow runs started by this worker reach S3 and MLflow like any client
        env = self._prefect_env()
        env.update(self.client_env())
        return ServiceSpec(
            name="prefect-worker",
            argv=[main_venv_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", WORKER_NAME],
            env=env,
            port=None,
            health=self.worker_online,
            timeout=self.cfg.start_timeout,
            describe=f"Prefect process worker on pool {WORK_POOL}",
        )

    def check_work_pool(self) -> None:
        """The pool exists and is a process pool (not, say, a leftover of another type)."""
        status, body = http_get(f"{self.prefect_api}/work_pools/{WORK_POOL}")
        if status != 200:
            raise InfraError(f"work pool {WORK_POOL} not found on {self.prefect_api} (HTTP {status})")
        pool_type = json.loads(body).get("type")
        if pool_type != "process":
            raise InfraError(
                f"work pool {WORK_POOL} has type {pool_type!r}, expected 'process': delete it "
                f"(`prefect work-pool delete {WORK_POOL}`) and run `infra/up prefect` again"
            )

    # --- env.sh and DVC
    def write_env_sh(self) -> Path:
        """``env.sh`` (mode 0600): what a client exports to use the services, as the pipeline."""
        return write_env_file(self.cfg.state / "env.sh", [
            "Generated by infra/up: local development services. Source it: `. .infra/env.sh`.",
            "Holds local-only S3 credentials: never commit (the folder is git-ignored)."], self.client_env())

    def write_release_env_sh(self) -> Path:
        """``release-env.sh`` (mode 0600): MLflow as the release manager, for ``sidn promote --approve``."""
        env = {"MLFLOW_TRACKING_URI": self.mlflow_uri, **self.mlflow_auth.client_env(MLFLOW_RELEASE_MANAGER),
               **TELEMETRY_OFF}
        return write_env_file(self.cfg.state / "release-env.sh", [
            "Generated by infra/up: the MLflow release manager's account (the only one that may move",
            "the `champion` alias). Source it for `sidn promote ... --approve --by NAME`; never commit."], env)

    def configure_dvc(self, repo: Path = REPO) -> str:
        """Point the project's DVC remote `storage` at this store, in .dvc/config.local (git-ignored)."""
        if not (repo / ".dvc").is_dir():
            return "no .dvc folder: DVC remote not configured"
        configure_dvc_remote(repo, self.s3_endpoint, self.creds)
        return f"DVC remote '{DVC_REMOTE}' -> {DVC_REMOTE_URL} at {self.s3_endpoint} (.dvc/config.local)"

    # --- commands
    def up(self, groups: Sequence[str] = ("s3", "mlflow", "prefect"), configure_dvc: bool = True,
           echo: Callable[[str], None] = print) -> list[Started]:
        """Start ``groups`` (what already runs is kept), one line per service to ``echo``; on a
        failure stop again what this call started and raise :class:`InfraError`."""
        started: list[Started] = []
        fresh: list[str] = []
        self.preflight(groups)
        try:
            if "s3" in groups or "mlflow" in groups:
                self.swift.configure()
                specs = self.swift.specs(self.cfg.start_timeout)
                was = {spec.name: self.pm.is_running(spec.name) for spec in specs}
                fresh += [spec.name for spec in specs if not was[spec.name]]
                # the three storage servers start together, then the proxy that needs them
                sts = self.pm.start_all(specs[:3]) + self.pm.start_all(specs[3:])
                for spec, st in zip(specs, sts):
                    started.append(st)
                    echo(_started_line(st, spec, was[spec.name]))
                t0 = time.monotonic()
                self.swift.ensure_buckets()
                echo(f"  buckets     {', '.join(BUCKETS)} ready ({time.monotonic() - t0:.1f}s)")
            echo(f"  env         {self.write_env_sh()}")
            if configure_dvc and ("s3" in groups):
                echo(f"  dvc         {self.configure_dvc()}")
            # MLflow and the Prefect server need only the object store: they start side by side
            servers = ([self.mlflow_spec()] if "mlflow" in groups else []) + (
                [self.prefect_spec()] if "prefect" in groups else [])
            if servers:
                was = {spec.name: self.pm.is_running(spec.name) for spec in servers}
                fresh += [spec.name for spec in servers if not was[spec.name]]
                for spec, st in zip(servers, self.pm.start_all(servers)):
                    started.append(st)
                    echo(_started_line(st, spec, was[spec.name]))
            if "mlflow" in groups:
                changes = self.mlflow_auth.provision(self.mlflow_uri)
                echo(f"  mlflow auth users {MLFLOW_RELEASE_MANAGER} (release manager: alone moves `champion`), "
                     f"{MLFLOW_PIPELINE_USER} (env.sh){f'; created {len(changes)} users/roles/grants' if changes else ''}")
                echo(f"  release env {self.write_release_env_sh()}")
            if "prefect" in groups:
                # `prefect worker start --pool sidn-process --type process` creates the pool (with
                # Prefect's default process job template) when it does not exist yet; this saves a
                # separate `prefect work-pool create` (~5-10 s of CLI start-up here)
                spec = self.worker_spec()
                was_worker = self.pm.is_running(spec.name)
                fresh += [] if was_worker else [spec.name]
                st = self.pm.start(spec)
                started.append(st)
                echo(_started_line(st, spec, was_worker))
                self.check_work_pool()
                echo(f"  work pool   {WORK_POOL} (process) ready")
        except BaseException:
            for name in reversed(fresh):  # leave nothing half-started behind
                self.pm.stop(name)
            raise
        self._save_startup(started)
        return started

    def preflight(self, groups: Sequence[str]) -> None:
        """Before starting anything: every port of a service that is not running yet must be free."""
        names = [n for g in groups for n in GROUPS[g]]
        if "mlflow" in groups:
            names = [*GROUPS["s3"], *names]
        taken = []
        for name in dict.fromkeys(names):
            port = self.cfg.ports.get(name)
            if port is None or self.pm.is_running(name) or port_is_free(port, self.cfg.host):
                continue
            var = PORT_DEFAULTS[name][0]
            taken.append(f"port {port} on {self.cfg.host} needed by {name} is taken by {who_listens(port)}; "
                         f"set {var} to another port")
        if taken:
            raise PortInUseError("\n  ".join(["nothing was started:", *taken]))

    def _save_startup(self, started: list[Started]) -> None:
        path = self.cfg.state / "startup.json"
        data = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
        for st in started:
            if st.seconds > 0:
                data[st.name] = round(st.seconds, 2)
        path.write_text(json.dumps(data, indent=1, sort_keys=True))

    def down(self, echo: Callable[[str], None] = print, timeout: float = 15.0) -> dict[str, str]:
        """Stop every recorded service in reverse start order; returns name -> outcome of the stop."""
        names = self.pm.recorded()
        order = [n for n in reversed(SERVICE_ORDER) if n in names] + [n for n in names if n not in SERVICE_ORDER]
        result = {}
        for name in order:
            result[name] = self.pm.stop(name, timeout=timeout)
            echo(f"  {name:<16}{result[name]}")
        if not order:
            echo("  nothing recorded as running")
        return result

    def status(self) -> list[dict]:
        """One row per service: name, state, pid, port, healthy, startup_seconds."""
        health = {
            "s3": self.swift.healthy,
            "mlflow": lambda: http_get(f"{self.mlflow_uri}/health")[0] == 200,
            "prefect": lambda: http_get(f"{self.prefect_api}/health")[0] == 200,
            "prefect-worker": self.worker_online,
        }
        rows = []
        for name in SERVICE_ORDER:
            rec = self.pm.record(name)
            running = self.pm.is_running(name)
            port = self.cfg.ports.get(name) if name in self.cfg.ports else None
            if rec and rec.get("port"):
                port = rec["port"]
            if name not in health:
                healthy = running and port is not None and port_is_listening(port, self.cfg.host)
            else:
                healthy = running and health[name]()
            rows.append({
                "name": name,
                "state": "running" if running else ("stale pid file" if rec else "stopped"),
                "pid": rec["pid"] if running else None,
                "port": port,
                "healthy": bool(healthy),
                "startup_seconds": rec.get("startup_seconds") if rec else None,
            })
        return rows


def _started_line(st: Started, spec: ServiceSpec, was_running: bool) -> str:
    where = f"{HOST_DEFAULT}:{spec.port}" if spec.port else "-"
    if was_running:
        return f"  {st.name:<16}already running (pid {st.pid}) {where}"
    return f"  {st.name:<16}healthy in {st.seconds:5.1f}s  pid {st.pid:<7} {where}  {spec.describe}"
