#!/usr/bin/env python3
"""The sidn project's local services: an S3 object store, an MLflow server and a Prefect server.

    infra/up [s3|mlflow|prefect ...]     start (all by default), health-checked, on 127.0.0.1
    infra/status                         running/stopped, port, health and start-up time of each
    infra/down                           stop exactly what `up` started (PID files), SIGTERM then SIGKILL

Everything lives under one git-ignored folder, ``.infra/`` at the repository root (``SIDN_INFRA_DIR``
overrides it): ``pids/<name>.pid`` (JSON), ``logs/<name>.log``, ``swift/`` (configuration, rings and
the object data), ``mlflow/mlflow.db``, ``prefect/`` (PREFECT_HOME), ``credentials.json`` (local
development S3 keys, generated, mode 0600) and ``env.sh`` (what clients export).

MLflow runs its built-in authentication (``mlflow server --app-name basic-auth``, see
:class:`MlflowAuth`): config and user database in ``mlflow/`` (``basic_auth.ini``,
``basic_auth.db``), generated passwords in ``mlflow/users.json`` (mode 0600). ``env.sh`` logs in
as the pipeline (``sidn-pipeline``: runs, versions, ``challenger``); ``release-env.sh`` as the
release manager (``sidn-release``), the only account the server lets move ``champion``
(``infra/mlflow_release_guard.py``); anyone else gets HTTP 403.

The object store is OpenStack Swift with its ``s3api`` middleware (a real S3 server, installed from
PyPI by ``infra/install-swift.sh`` into ``.infra/venv-swift``): four processes (account, container,
object servers and the proxy that speaks S3). MinIO's server is not installable from the package
registries these machines reach; moto is an in-process mock, not a server.

This module uses only the standard library at import time so tests can load it by path
(``tests/fixtures_s3.py``); boto3 is imported lazily to create buckets and check S3 end to end.
Secrets (the S3 secret key, a database URI with a password) are passed to processes through their
environment, never on a command line, and are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
HOST_DEFAULT = "127.0.0.1"

#: Telemetry switches, exported into every process this module starts (each tool has its own).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

#: Bucket conventions shared by DVC, MLflow and pipelines/storage.py (see infra/README.md).
DATA_BUCKET = "sidn-data"  # s3://sidn-data/dvc (DVC remote), s3://sidn-data/bundles/... (publish_bundle)
MLFLOW_BUCKET = "sidn-mlflow"  # s3://sidn-mlflow/artifacts (MLflow artifact destination)
BUCKETS = (DATA_BUCKET, MLFLOW_BUCKET)
DVC_REMOTE = "storage"
DVC_REMOTE_URL = f"s3://{DATA_BUCKET}/dvc"
MLFLOW_ARTIFACTS = f"s3://{MLFLOW_BUCKET}/artifacts"
WORK_POOL = "sidn-process"
WORKER_NAME = "sidn-local-worker"
S3_REGION = "us-east-1"

#: Default ports, each overridable by its environment variable.
PORT_DEFAULTS = {
    "s3": ("SIDN_S3_PORT", 9000),
    "swift-account": ("SIDN_SWIFT_ACCOUNT_PORT", 6202),
    "swift-container": ("SIDN_SWIFT_CONTAINER_PORT", 6201),
    "swift-object": ("SIDN_SWIFT_OBJECT_PORT", 6200),
    "mlflow": ("SIDN_MLFLOW_PORT", 5000),
    "prefect": ("SIDN_PREFECT_PORT", 4200),
}

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


class InfraError(RuntimeError):
    """A service could not be configured, started, checked or stopped; the message says which and why."""


class PortInUseError(InfraError):
    """A port that a service needs is already bound by another process."""


# ----------------------------------------------------------------------------------------------
# small helpers


def redact(text: str) -> str:
    """Hide the password of ``scheme://user:password@host`` URIs (database URLs) in ``text``."""
    return re.sub(r"(://[^:/@\s]+:)[^@/\s]+@", r"\1***@", text)


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """GET ``url`` without any HTTP proxy; returns (status, body); (0, b"") if nothing answers."""
    try:
        with _no_proxy_opener().open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() if exc.fp else b""
    except (OSError, urllib.error.URLError):
        return 0, b""


def http_post_json(url: str, payload: dict, timeout: float = 5.0) -> tuple[int, object]:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with _no_proxy_opener().open(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, urllib.error.URLError, ValueError):
        return 0, None


def port_is_free(port: int, host: str = HOST_DEFAULT) -> bool:
    """True if a server could bind ``host:port`` now (SO_REUSEADDR, as servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_is_listening(port: int, host: str = HOST_DEFAULT) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_ports(n: int, host: str = HOST_DEFAULT) -> list[int]:
    """``n`` distinct ports that are free now (the kernel picks them; a small race remains)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def who_listens(port: int) -> str:
    """Best effort: 'pid N (command line)' of the process listening on TCP ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    if not inodes:
        return "another process"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        return f"pid {proc.name} ({redact(cmd.strip())[:120]})"
    return "another process (not visible to this user)"


def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat.rsplit(")", 1)[1].split()
    if rest[0] in ("Z", "X"):
        return None
    return rest[19]


def _leader_gone(pid: int) -> bool:
    """True if ``pid`` no longer exists or is a zombie (so its PID is still ours, not reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            rest = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] not in ("Z", "X") and int(rest[2]) == pgid:
            members.append(int(proc.name))
    return members


def _wait_until_gone(pgid: int, timeout: float) -> None:
    """Wait (bounded) for a signalled group to disappear: delivery of SIGKILL is asynchronous."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_members(pgid):
        time.sleep(0.05)


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment with telemetry off, Python output unbuffered, plus ``extra``."""
    env = dict(os.environ)
    env.update(TELEMETRY_OFF)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def main_venv_bin(name: str) -> str:
    """Path of an executable of the project's venv (the one running this script), else from PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise InfraError(f"`{name}` not found next to {sys.executable} nor on PATH: run `make install` first")
    return found


# ----------------------------------------------------------------------------------------------
# process management


@dataclass
class ServiceSpec:
    """How to start one process and how to tell it is healthy."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None
    health: Callable[[], bool]
    timeout: float = 60.0
    cwd: Path = REPO
    describe: str = ""


@dataclass
class Started:
    name: str
    pid: int
    seconds: float


class ProcessManager:
    """Start processes in their own process group, record them in PID files, stop exactly those."""

    def __init__(self, state_dir: Path):
        self.state = Path(state_dir)
        self.pids = self.state / "pids"
        self.logs = self.state / "logs"
        self.children: dict[str, subprocess.Popen] = {}

    def pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def record(self, name: str) -> dict | None:
        try:
            return json.loads(self.pidfile(name).read_text())
        except (OSError, ValueError):
            return None

    def is_running(self, name: str) -> bool:
        rec = self.record(name)
        return bool(rec) and _proc_start_time(rec["pid"]) == rec.get("start_time")

    def log_tail(self, name: str, lines: int = 25) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return redact("\n".join(text[-lines:]))

    def start(self, spec: ServiceSpec) -> Started:
        """Start ``spec`` unless it already runs; wait until healthy; raise InfraError otherwise."""
        return self.start_all([spec])[0]

    def start_all(self, specs: Sequence[ServiceSpec]) -> list[Started]:
        """Launch every spec that is not running yet, then wait for all of them to become healthy.

        Ports are all checked before anything is launched. If one fails, those launched here are
        stopped again and InfraError says which service failed and shows the end of its log.
        """
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        done: dict[str, Started] = {}
        todo: list[ServiceSpec] = []
        for spec in specs:
            if self.is_running(spec.name):
                rec = self.record(spec.name)
                if not spec.health():
                    raise InfraError(
                        f"{spec.name} (pid {rec['pid']}) is running but not healthy; `infra/down` then "
                        f"`infra/up`. Log: {self.logs / (spec.name + '.log')}"
                    )
                done[spec.name] = Started(spec.name, rec["pid"], 0.0)
            else:
                self.pidfile(spec.name).unlink(missing_ok=True)
                todo.append(spec)
        for spec in todo:
            if spec.port is not None and not port_is_free(spec.port):
                env_var = PORT_DEFAULTS.get(spec.name, (None,))[0]
                hint = f" Set {env_var} to another port." if env_var else ""
                raise PortInUseError(
                    f"port {spec.port} on {HOST_DEFAULT} needed by {spec.name} is taken by "
                    f"{who_listens(spec.port)}.{hint}"
                )
        launched: list[tuple[ServiceSpec, subprocess.Popen, float]] = []
        try:
            for spec in todo:
                launched.append((spec, self._launch(spec), time.monotonic()))
            for spec, proc, t0 in launched:
                done[spec.name] = self._wait_healthy(spec, proc, t0)
        except BaseException:
            for spec, _, _ in launched:
                self.stop(spec.name)
            raise
        return [done[s.name] for s in specs]

    def _launch(self, spec: ServiceSpec) -> subprocess.Popen:
        log_path = self.logs / f"{spec.name}.log"
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                spec.argv,
                env=spec.env,
                cwd=str(spec.cwd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: `down` signals the whole group
            )
        self.children[spec.name] = proc
        self._write_record(spec.name, {
            "name": spec.name,
            "pid": proc.pid,
            "pgid": proc.pid,
            "start_time": _proc_start_time(proc.pid),
            "port": spec.port,
            "command": Path(spec.argv[0]).name,
            "started_at": time.time(),
        })
        return proc

    def _write_record(self, name: str, rec: dict) -> None:
        tmp = self.pidfile(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        tmp.replace(self.pidfile(name))

    def _wait_healthy(self, spec: ServiceSpec, proc: subprocess.Popen, t0: float) -> Started:
        log_path = self.logs / f"{spec.name}.log"
        deadline = t0 + spec.timeout
        while True:
            if proc.poll() is not None:
                self.pidfile(spec.name).unlink(missing_ok=True)
                raise InfraError(
                    f"{spec.name} exited with code {proc.returncode} while starting. Last lines of "
                    f"{log_path}:\n{self.log_tail(spec.name)}"
                )
            if spec.health():
                break
            if time.monotonic() > deadline:
                raise InfraError(
                    f"{spec.name} was not healthy after {spec.timeout:.0f}s (stopped it). Last lines of "
                    f"{log_path}:\n{self.log_tail(spec.name)}"
                )
            time.sleep(0.25)
        seconds = time.monotonic() - t0
        rec = self.record(spec.name) or {}
        rec["startup_seconds"] = round(seconds, 2)
        self._write_record(spec.name, rec)
        return Started(spec.name, proc.pid, seconds)

    def stop(self, name: str, timeout: float = 15.0) -> str:
        """SIGTERM the recorded process group, SIGKILL what is left after ``timeout``; remove the PID file.

        Returns 'stopped', 'killed' or 'not running'. A PID whose kernel start time differs from the
        recorded one belongs to another process now and is never signalled.
        """
        rec = self.record(name)
        if rec is None:
            return "not running"
        pid, pgid = rec["pid"], rec.get("pgid", rec["pid"])
        outcome = "not running"
        if _proc_start_time(pid) == rec.get("start_time") and rec.get("start_time") is not None:
            outcome = "stopped"
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _group_members(pgid):
                self._reap(name)
                time.sleep(0.1)
            if _group_members(pgid):
                outcome = "killed"
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and _group_members(pgid):
                    self._reap(name)
                    time.sleep(0.1)
        elif _leader_gone(pid) and _group_members(pgid):
            # the leader died but members of its group are left (the kernel does not reuse a PID
            # that is still some group's ID, so these are ours). If the PID exists with another
            # start time, it was reused: that group belongs to someone else and is left alone.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            outcome = "killed"
            _wait_until_gone(pgid, timeout=5)
        self._reap(name)
        self.pidfile(name).unlink(missing_ok=True)
        return outcome

    def _reap(self, name: str) -> None:
        proc = self.children.get(name)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.poll()

    def recorded(self) -> list[str]:
        if not self.pids.exists():
            return []
        return sorted(p.stem for p in self.pids.glob("*.pid"))


# ----------------------------------------------------------------------------------------------
# the S3 store: OpenStack Swift + s3api + tempauth


@dataclass
class S3Credentials:
    access_key_id: str
    secret_access_key: str

    @staticmethod
    def generate(account: str = "sidn", user: str = "dev") -> "S3Credentials":
        # tempauth: S3 access key is "<account>:<user>", the secret is the user's key
        return S3Credentials(f"{account}:{user}", secrets.token_hex(20))

    @staticmethod
    def load_or_create(path: Path) -> "S3Credentials":
        if path.exists():
            data = json.loads(path.read_text())
            return S3Credentials(data["access_key_id"], data["secret_access_key"])
        creds = S3Credentials.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(path) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"access_key_id": creds.access_key_id, "secret_access_key": creds.secret_access_key}, fh)
        os.replace(str(path) + ".tmp", path)
        return creds

    def __repr__(self) -> str:  # never print the secret
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(str(path) + ".tmp", path)


_RING_SCRIPT = r"""
import json, sys
from swift.common.ring import RingBuilder
cfg = json.loads(sys.argv[1])
for kind, port in cfg["ports"].items():
    b = RingBuilder(8, 1, 1)          # 2**8 partitions, 1 replica, min_part_hours 1
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": cfg["host"], "port": port,
               "device": "d1", "weight": 100, "meta": ""})
    b.rebalance()
    b.save(f"{cfg['etc']}/{kind}.builder")
    b.get_ring().save(f"{cfg['etc']}/{kind}.ring.gz")
"""


class SwiftS3:
    """One-node OpenStack Swift with s3api: configuration, rings, process specs, buckets.

    Layout under ``root``: ``etc/`` (swift.conf, *-server.conf, rings), ``srv/d1`` (object data; the
    filesystem must support user extended attributes: ext4/xfs do, tmpfs before Linux 6.6 may not),
    ``run/`` (recon cache).
    """

    def __init__(
        self,
        root: Path,
        ports: dict[str, int],
        credentials: S3Credentials,
        venv: Path,
        host: str = HOST_DEFAULT,
        log_level: str = "INFO",
    ):
        self.root = Path(root).resolve()
        self.etc = self.root / "etc"
        self.srv = self.root / "srv"
        self.run = self.root / "run"
        self.ports = ports  # keys: s3, swift-account, swift-container, swift-object
        self.credentials = credentials
        self.venv = Path(venv)
        self.host = host
        self.log_level = log_level

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    def check_installed(self) -> None:
        if not (self.venv / "bin" / "swift-proxy-server").exists():
            raise InfraError(
                f"OpenStack Swift is not installed in {self.venv}: run infra/install-swift.sh "
                "(or `make up`, which runs it)"
            )

    def configure(self) -> None:
        """Write the configuration and (re)build the rings when the ports changed. Idempotent."""
        self.check_installed()
        for d in (self.etc, self.srv / "d1", self.run):
            d.mkdir(parents=True, exist_ok=True)
        user = getpass.getuser()
        swift_conf = self.etc / "swift.conf"
        if not swift_conf.exists():
            _write_private(
                swift_conf,
                "[swift-hash]\n"
                f"swift_hash_path_suffix = {secrets.token_hex(8)}\n"
                f"swift_hash_path_prefix = {secrets.token_hex(8)}\n\n"
                "[storage-policy:0]\nname = Policy-0\ndefault = yes\n",
            )
        common = (
            "[DEFAULT]\n"
            f"swift_dir = {self.etc}\n"
            f"devices = {self.srv}\n"
            "mount_check = false\n"
            f"bind_ip = {self.host}\n"
            "workers = 0\n"
            f"user = {user}\n"
            f"recon_cache_path = {self.run}\n"
            f"log_level = {self.log_level}\n"
        )
        for kind in ("account", "container", "object"):
            _write_private(
                self.etc / f"{kind}-server.conf",
                common
                + f"bind_port = {self.ports['swift-' + kind]}\nlog_name = {kind}-server\n\n"
                f"[pipeline:main]\npipeline = {kind}-server\n\n"
                f"[app:{kind}-server]\nuse = egg:swift#{kind}\n\n"
                f"[{kind}-replicator]\n\n[{kind}-auditor]\n"
                + ("\n[container-updater]\n\n[container-sync]\n" if kind == "container" else "")
                + ("\n[object-updater]\n" if kind == "object" else ""),
            )
        account, user_name = self.credentials.access_key_id.split(":", 1)
        _write_private(
            self.etc / "proxy-server.conf",
            "[DEFAULT]\n"
            f"swift_dir = {self.etc}\n"
            f"bind_ip = {self.host}\n"
            f"bind_port = {self.ports['s3']}\n"
            "workers = 0\n"
            f"user = {user}\n"
            "log_name = proxy-server\n"
            f"log_level = {self.log_level}\n\n"
            "[pipeline:main]\n"
            "pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats s3api tempauth "
            "copy slo dlo proxy-logging proxy-server\n\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
            "[filter:catch_errors]\nuse = egg:swift#catch_errors\n\n"
            "[filter:gatekeeper]\nuse = egg:swift#gatekeeper\n\n"
            "[filter:healthcheck]\nuse = egg:swift#healthcheck\n\n"
            "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n\n"
            "[filter:listing_formats]\nuse = egg:swift#listing_formats\n\n"
            "[filter:s3api]\nuse = egg:swift#s3api\n"
            f"location = {S3_REGION}\n\n"
            "[filter:tempauth]\nuse = egg:swift#tempauth\n"
            f"user_{account}_{user_name} = {self.credentials.secret_access_key} .admin\n\n"
            "[filter:copy]\nuse = egg:swift#copy\n\n"
            "[filter:slo]\nuse = egg:swift#slo\n\n"
            "[filter:dlo]\nuse = egg:swift#dlo\n",
        )
        ring_ports = {k: self.ports["swift-" + k] for k in ("account", "container", "object")}
        stamp = self.etc / "rings.json"
        wanted = json.dumps({"host": self.host, "ports": ring_ports}, sort_keys=True)
        if not stamp.exists() or stamp.read_text() != wanted or not (self.etc / "object.ring.gz").exists():
            cfg = json.dumps({"host": self.host, "ports": ring_ports, "etc": str(self.etc)})
            res = subprocess.run(
                [str(self.venv / "bin" / "python"), "-c", _RING_SCRIPT, cfg],
                capture_output=True,
                text=True,
                env=base_env(),
            )
            if res.returncode != 0:
                raise InfraError(f"building Swift rings in {self.etc} failed:\n{res.stderr[-2000:]}")
            stamp.write_text(wanted)

    def specs(self, timeout: float = 60.0) -> list[ServiceSpec]:
        env = base_env()
        specs = []
        for kind in ("account", "container", "object"):
            port = self.ports["swift-" + kind]
            specs.append(
                ServiceSpec(
                    name=f"swift-{kind}",
                    argv=[str(self.venv / "bin" / f"swift-{kind}-server"), str(self.etc / f"{kind}-server.conf"), "-v"],
                    env=env,
                    port=port,
                    health=lambda port=port: port_is_listening(port, self.host),
                    timeout=timeout,
                    describe=f"Swift {kind} server",
                )
            )
        specs.append(
            ServiceSpec(
                name="s3",
                argv=[str(self.venv / "bin" / "swift-proxy-server"), str(self.etc / "proxy-server.conf"), "-v"],
                env=env,
                port=self.ports["s3"],
                health=self.healthy,
                timeout=timeout,
                describe="S3 API (Swift proxy + s3api)",
            )
        )
        return specs

    def healthy(self) -> bool:
        status, body = http_get(f"{self.endpoint}/healthcheck", timeout=2)
        return status == 200 and body.strip() == b"OK"

    def client(self, **config_kwargs):
        """A boto3 S3 client for this store (path-style addressing, a few retries)."""
        import boto3
        from botocore.config import Config

        cfg = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=30,
            **config_kwargs,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.credentials.access_key_id,
            aws_secret_access_key=self.credentials.secret_access_key,
            region_name=S3_REGION,
            config=cfg,
        )

    def ensure_buckets(self, buckets: Iterable[str] = BUCKETS, timeout: float = 30.0) -> None:
        """Create the buckets if missing (this exercises account, container and S3 auth end to end)."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        s3 = self.client()
        deadline = time.monotonic() + timeout
        for bucket in buckets:
            while True:
                try:
                    s3.head_bucket(Bucket=bucket)
                    break
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    try:
                        if code in ("404", "NoSuchBucket", "NotFound"):
                            s3.create_bucket(Bucket=bucket)
                            break
                        raise
                    except ClientError as exc2:
                        code2 = exc2.response.get("Error", {}).get("Code", "")
                        if code2 in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            break
                        if time.monotonic() > deadline or code2 in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                            raise InfraError(f"creating bucket {bucket} at {self.endpoint} failed: {code2 or exc2}") from None
                        time.sleep(0.5)
                except EndpointConnectionError as exc:
                    if time.monotonic() > deadline:
                        raise InfraError(f"S3 endpoint {self.endpoint} does not answer: {exc}") from None
                    time.sleep(0.5)


def configure_dvc_remote(
    repo: Path,
    endpoint: str,
    creds: S3Credentials,
    url: str = DVC_REMOTE_URL,
    name: str = DVC_REMOTE,
) -> None:
    """`dvc remote add --local -d NAME URL` plus endpoint, region and credentials, all with --local.

    Everything goes to ``.dvc/config.local`` (ignored by git through ``.dvc/.gitignore``), so the
    committed ``.dvc/config`` stays free of endpoints and secrets; a team's shared remote can be set
    there instead (see infra/README.md).
    """
    dvc = main_venv_bin("dvc")
    env = base_env()
    cmds = [
        ["remote", "add", "--local", "--force", "--default", name, url],
        ["remote", "modify", "--local", name, "endpointurl", endpoint],
        ["remote", "modify", "--local", name, "region", S3_REGION],
        ["remote", "modify", "--local", name, "access_key_id", creds.access_key_id],
        ["remote", "modify", "--local", name, "secret_access_key", creds.secret_access_key],
    ]
    for args in cmds:
        res = subprocess.run([dvc, *args], cwd=str(repo), env=env, capture_output=True, text=True)
        if res.returncode != 0:
            shown = " ".join(args[:4])  # never the secret
            raise InfraError(f"`dvc {shown} ...` failed in {repo}:\n{redact(res.stderr)[-1500:]}")


# ----------------------------------------------------------------------------------------------
# MLflow authentication: the built-in basic-auth app, users, roles and the release guard

#: The MLflow users of the local stack. Only the release manager may move the `champion` alias
#: (infra/mlflow_release_guard.py); the pipeline logs runs, registers versions and sets `challenger`.
MLFLOW_ADMIN_USER = "sidn-admin"
MLFLOW_RELEASE_MANAGER = "sidn-release"
MLFLOW_PIPELINE_USER = "sidn-pipeline"
#: Roles (workspace "default"): (resource type, pattern, permission). Everyone else gets the
#: default READ. MLflow also gives the creator of an experiment or registered model MANAGE on it.
MLFLOW_ROLES = {
    "sidn-release-managers": [("registered_model", "*", "MANAGE")],
    "sidn-pipelines": [("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")],
}
MLFLOW_PROTECTED_ALIASES = ("champion",)
_WORKSPACE = "default"


def _check_mlflow_auth_installed() -> None:
    """MLflow's basic-auth app needs Flask-WTF (the ``mlflow[auth]`` extra) in the server's venv."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise InfraError("the MLflow server runs with basic-auth, which needs Flask-WTF: "
                         f"`{sys.executable} -m pip install 'mlflow[auth]'` (or `make install`)")


class MlflowAuth:
    """Configuration, users and passwords of the MLflow server's built-in authentication.

    ``mlflow server --app-name basic-auth`` with the config file written here (``basic_auth.ini``:
    default permission READ, the user database, the release guard as ``authorization_function``,
    and the guard's ``[sidn]`` section naming the release managers). No password is ever in that
    file, on a command line or in a log: they live in ``users.json`` (mode 0600, generated on first
    use) and reach the server through its environment (``MLFLOW_AUTH_ADMIN_PASSWORD``) and the
    clients through ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.

    ``users`` maps user name -> role name (``None``: no role, default READ); ``release_managers``
    are the users the guard lets move a protected alias.
    """

    def __init__(self, root: Path, users: dict[str, str | None] | None = None,
                 release_managers: Sequence[str] = (MLFLOW_RELEASE_MANAGER,),
                 admin: str = MLFLOW_ADMIN_USER):
        self.root = Path(root).resolve()
        self.admin = admin
        self.users = dict(users if users is not None else {
            MLFLOW_RELEASE_MANAGER: "sidn-release-managers", MLFLOW_PIPELINE_USER: "sidn-pipelines"})
        self.release_managers = list(release_managers)
        self.config_path = self.root / "basic_auth.ini"
        self.secrets_path = self.root / "users.json"
        self._secrets: dict[str, str] | None = None

    def secrets(self) -> dict[str, str]:
        """``{user: password, ..., "__flask_secret_key__": ...}``, generated once (mode 0600)."""
        if self._secrets is None:
            data: dict[str, str] = {}
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(self.secrets_path.read_text())
            wanted = [self.admin, *self.users, "__flask_secret_key__"]
            if any(name not in data for name in wanted):
                for name in wanted:
                    data.setdefault(name, secrets.token_urlsafe(24))
                _write_private(self.secrets_path, json.dumps(data, indent=1))
            self._secrets = data
        return self._secrets

    def password(self, user: str) -> str:
        return self.secrets()[user]

    def write_config(self) -> Path:
        """Write ``basic_auth.ini`` (no secrets in it; mode 0600 anyway). Returns its path."""
        text = (
            "# Generated by infra/stack.py: MLflow basic-auth for the sidn stack. No passwords here:\n"
            "# the admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD, the users' are in users.json.\n"
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.root / 'basic_auth.db'}\n"
            f"admin_username = {self.admin}\n"
            "authorization_function = mlflow_release_guard:authenticate_request\n"
            "grant_default_workspace_access = false\n\n"
            "[sidn]\n"
            f"release_managers = {', '.join(self.release_managers)}\n"
            f"protected_aliases = {', '.join(MLFLOW_PROTECTED_ALIASES)}\n"
        )
        _write_private(self.config_path, text)
        return self.config_path

    def server_env(self) -> dict[str, str]:
        """What ``mlflow server --app-name basic-auth`` needs in its environment."""
        self.write_config()
        pythonpath = os.pathsep.join(p for p in (str(REPO / "infra"), os.environ.get("PYTHONPATH", "")) if p)
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.config_path),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.admin,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.password(self.admin),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets()["__flask_secret_key__"],
            "PYTHONPATH": pythonpath,  # the guard module, infra/mlflow_release_guard.py
        }

    def client_env(self, user: str) -> dict[str, str]:
        """``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` of ``user``."""
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": self.password(user)}

    # --- provisioning through the server's REST API (as the admin), idempotent
    def _call(self, uri: str, method: str, path: str, payload: dict | None = None,
              user: str | None = None) -> tuple[int, dict]:
        import base64

        user = user or self.admin
        token = base64.b64encode(f"{user}:{self.password(user)}".encode()).decode()
        url, data = f"{uri}{path}", None
        if method == "GET" and payload:
            url += "?" + urllib.parse.urlencode(payload)
        elif payload is not None:
            data = json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Basic {token}", "Content-Type": "application/json"})
        try:
            with _no_proxy_opener().open(req, timeout=30) as resp:
                body = resp.read()
                return resp.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as exc:
            body = exc.read() if exc.fp else b""
            try:
                return exc.code, json.loads(body) if body else {}
            except ValueError:
                return exc.code, {"message": body.decode(errors="replace")[:300]}

    def provision(self, uri: str) -> list[str]:
        """Create the users, the roles with their permissions, and assign them (idempotent).

        Returns one line per change made; raises :class:`InfraError` when the server refuses.
        """
        done = []
        for user in self.users:
            status, _ = self._call(uri, "GET", "/api/2.0/mlflow/users/get", {"username": user})
            if status == 200:
                continue
            status, body = self._call(uri, "POST", "/api/2.0/mlflow/users/create",
                                      {"username": user, "password": self.password(user)})
            if status != 200:
                raise InfraError(f"MLflow: creating user {user} failed (HTTP {status}: {body.get('message', '')})")
            done.append(f"user {user}")
        status, body = self._call(uri, "GET", "/api/3.0/mlflow/roles/list", {"workspace": _WORKSPACE})
        if status != 200:
            raise InfraError(f"MLflow: listing roles failed (HTTP {status}: {body.get('message', '')})")
        roles = {r["name"]: int(r["id"]) for r in body.get("roles", [])}
        for role in sorted({r for r in self.users.values() if r}):
            if role not in roles:
                status, body = self._call(uri, "POST", "/api/3.0/mlflow/roles/create",
                                          {"workspace": _WORKSPACE, "name": role})
                if status != 200:
                    raise InfraError(f"MLflow: creating role {role} failed (HTTP {status}: {body.get('message', '')})")
                roles[role] = int(body["role"]["id"])
                done.append(f"role {role}")
            _, body = self._call(uri, "GET", "/api/3.0/mlflow/roles/permissions/list", {"role_id": roles[role]})
            have = {(p["resource_type"], p["resource_pattern"], p["permission"])
                    for p in body.get("role_permissions", [])}
            for rtype, pattern, perm in MLFLOW_ROLES.get(role, []):
                if (rtype, pattern, perm) in have:
                    continue
                status, body = self._call(uri, "POST", "/api/3.0/mlflow/roles/permissions/add", {
                    "role_id": roles[role], "resource_type": rtype, "resource_pattern": pattern, "permission": perm})
                if status != 200:
                    raise InfraError(f"MLflow: role {role}: adding {perm} on {rtype} {pattern} failed "
                                     f"(HTTP {status}: {body.get('message', '')})")
                done.append(f"role {role}: {perm} on {rtype} {pattern}")
        for user, role in self.users.items():
            if not role:
                continue
            _, body = self._call(uri, "GET", "/api/3.0/mlflow/users/roles/list", {"username": user})
            if role in {r["name"] for r in body.get("roles", [])}:
                continue
            status, body = self._call(uri, "POST", "/api/3.0/mlflow/roles/assign",
                                      {"username": user, "role_id": roles[role]})
            if status != 200:
                raise InfraError(f"MLflow: assigning role {role} to {user} failed (HTTP {status}: {body.get('message', '')})")
            done.append(f"{user} -> {role}")
        return done


# ----------------------------------------------------------------------------------------------
# the whole local stack


@dataclass
class StackConfig:
    state: Path
    host: str
    ports: dict[str, int]
    swift_venv: Path
    mlflow_backend_uri: str | None = None  # None -> sqlite under state/mlflow
    start_timeout: float = 90.0

    @staticmethod
    def from_env() -> "StackConfig":
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

    def __init__(self, cfg: StackConfig):
        self.cfg = cfg
        self.pm = ProcessManager(cfg.state)
        self.creds = S3Credentials.load_or_create(cfg.state / "credentials.json")
        self.mlflow_auth = MlflowAuth(cfg.state / "mlflow")
        self.swift = SwiftS3(cfg.state / "swift", cfg.ports, self.creds, cfg.swift_venv, host=cfg.host)

    # --- URLs
    @property
    def s3_endpoint(self) -> str:
        return self.swift.endpoint

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports['mlflow']}"

    @property
    def prefect_api(self) -> str:
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
        _check_mlflow_auth_installed()
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
        status, body = http_post_json(f"{self.prefect_api}/work_pools/{WORK_POOL}/workers/filter", {})
        if status != 200 or not isinstance(body, list):
            return False
        return any(w.get("name") == WORKER_NAME and w.get("status", "ONLINE") == "ONLINE" for w in body)

    def worker_spec(self) -> ServiceSpec:
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
        lines = ["# Generated by infra/up: local development services. Source it: `. .infra/env.sh`.",
                 "# Holds local-only S3 credentials: never commit (the folder is git-ignored)."]
        lines += [f"export {k}={_shell_quote(v)}" for k, v in self.client_env().items()]
        path = self.cfg.state / "env.sh"
        _write_private(path, "\n".join(lines) + "\n")
        return path

    def write_release_env_sh(self) -> Path:
        """``release-env.sh`` (mode 0600): MLflow as the release manager, for ``sidn promote --approve``."""
        lines = ["# Generated by infra/up: the MLflow release manager's account (the only one that may move",
                 "# the `champion` alias). Source it for `sidn promote ... --approve --by NAME`; never commit."]
        env = {"MLFLOW_TRACKING_URI": self.mlflow_uri, **self.mlflow_auth.client_env(MLFLOW_RELEASE_MANAGER),
               **TELEMETRY_OFF}
        lines += [f"export {k}={_shell_quote(v)}" for k, v in env.items()]
        path = self.cfg.state / "release-env.sh"
        _write_private(path, "\n".join(lines) + "\n")
        return path

    def configure_dvc(self, repo: Path = REPO) -> str:
        """Point the project's DVC remote `storage` at this store, in .dvc/config.local (git-ignored)."""
        if not (repo / ".dvc").is_dir():
            return "no .dvc folder: DVC remote not configured"
        configure_dvc_remote(repo, self.s3_endpoint, self.creds)
        return f"DVC remote '{DVC_REMOTE}' -> {DVC_REMOTE_URL} at {self.s3_endpoint} (.dvc/config.local)"

    # --- commands
    def up(self, groups: Sequence[str] = ("s3", "mlflow", "prefect"), configure_dvc: bool = True,
           echo: Callable[[str], None] = print) -> list[Started]:
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


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _started_line(st: Started, spec: ServiceSpec, was_running: bool) -> str:
    where = f"{HOST_DEFAULT}:{spec.port}" if spec.port else "-"
    if was_running:
        return f"  {st.name:<16}already running (pid {st.pid}) {where}"
    return f"  {st.name:<16}healthy in {st.seconds:5.1f}s  pid {st.pid:<7} {where}  {spec.describe}"


# ----------------------------------------------------------------------------------------------
# CLI


def _ensure_swift_installed(cfg: StackConfig) -> None:
    if (cfg.swift_venv / "bin" / "swift-proxy-server").exists():
        return
    script = REPO / "infra" / "install-swift.sh"
    print(f"installing OpenStack Swift into {cfg.swift_venv} ...", flush=True)
    res = subprocess.run(["bash", str(script)], env=base_env({"SIDN_SWIFT_VENV": str(cfg.swift_venv)}))
    if res.returncode != 0:
        raise InfraError(f"{script} failed (exit {res.returncode})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the services (all by default)")
    p_up.add_argument("groups", nargs="*", metavar="{s3,mlflow,prefect}", help="services to start")
    p_up.add_argument("--no-dvc", action="store_true", help="do not write the DVC remote into .dvc/config.local")
    sub.add_parser("down", help="stop what `up` started")
    p_st = sub.add_parser("status", help="report each service")
    p_st.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print the path of env.sh (source it to use the services)")
    args = parser.parse_args(argv)

    try:
        cfg = StackConfig.from_env()
        if args.cmd == "up":
            groups = args.groups or list(GROUPS)
            bad = [g for g in groups if g not in GROUPS]
            if bad:
                parser.error(f"unknown service {bad[0]!r}: choose from {', '.join(GROUPS)}")
            if "mlflow" in groups and "s3" not in groups:
                groups = ["s3", *groups]  # MLflow keeps its artifacts in the object store
            _ensure_swift_installed(cfg)
            print(f"infra up: state in {cfg.state}")
            t0 = time.monotonic()
            stack = Stack(cfg)
            stack.up(groups, configure_dvc=not args.no_dvc)
            print(f"infra up: ready in {time.monotonic() - t0:.1f}s.  Use them with:  . {cfg.state / 'env.sh'}")
            return 0
        stack = Stack(cfg)
        if args.cmd == "down":
            print("infra down:")
            stack.down()
            return 0
        if args.cmd == "status":
            rows = stack.status()
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                print(f"{'service':<16}{'state':<16}{'pid':<8}{'port':<7}{'health':<9}start-up")
                for r in rows:
                    print(
                        f"{r['name']:<16}{r['state']:<16}{str(r['pid'] or '-'):<8}{str(r['port'] or '-'):<7}"
                        f"{('ok' if r['healthy'] else '-'):<9}"
                        f"{(str(r['startup_seconds']) + 's') if r['startup_seconds'] else '-'}"
                    )
            return 0 if all(r["healthy"] for r in rows if r["state"] == "running") else 1
        if args.cmd == "env":
            print(cfg.state / "env.sh")
            return 0
    except InfraError as exc:
        print(f"infra {args.cmd}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"infra {args.cmd}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
