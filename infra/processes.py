"""The process manager: start each service in its own process group, record it in a PID file, wait
until it is healthy, and stop exactly what was started (the whole group, SIGTERM then SIGKILL).

Why hand-written: a move onto supervisord was tried and abandoned. supervisord loses a service's
children when its main process dies (uvicorn, gunicorn and flow-run children stay behind), so a
marker-based sweep was still needed next to it; the services' secrets would have landed in
``supervisord.conf``; and the code grew instead of shrinking. Here a PID file records the
process group and the kernel start time of its leader, which is enough to signal every member,
even after the leader died, and never a process that merely reuses the PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from infra import REPO, InfraError
from infra.credentials import redact
from infra.ports import HOST_DEFAULT, PORT_DEFAULTS, PortInUseError, port_is_free, who_listens


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


def group_members(pgid: int) -> list[int]:
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
    while time.monotonic() < deadline and group_members(pgid):
        time.sleep(0.05)


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
    """A healthy service: its PID and how long it took to become healthy (0.0: was already running)."""

    name: str
    pid: int
    seconds: float


class ProcessManager:
    """Start processes in their own process group, record them in PID files, stop exactly those."""

    def __init__(self, state_dir: Path) -> None:
        self.state = Path(state_dir)
        self.pids = self.state / "pids"
        self.logs = self.state / "logs"
        self.children: dict[str, subprocess.Popen] = {}

    def pidfile(self, name: str) -> Path:
        """``<state>/pids/<name>.pid``."""
        return self.pids / f"{name}.pid"

    def record(self, name: str) -> dict | None:
        """The PID file of ``name`` (pid, pgid, start_time, port, ...), None if there is none."""
        try:
            return json.loads(self.pidfile(name).read_text())
        except (OSError, ValueError):
            return None

    def is_running(self, name: str) -> bool:
        """True if the recorded process still runs (same PID and same kernel start time)."""
        rec = self.record(name)
        return bool(rec) and _proc_start_time(rec["pid"]) == rec.get("start_time")

    def log_tail(self, name: str, lines: int = 25) -> str:
        """The last ``lines`` lines of the service's log, passwords redacted."""
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
            while time.monotonic() < deadline and group_members(pgid):
                self._reap(name)
                time.sleep(0.1)
            if group_members(pgid):
                outcome = "killed"
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and group_members(pgid):
                    self._reap(name)
                    time.sleep(0.1)
        elif _leader_gone(pid) and group_members(pgid):
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
        """Names of the services that have a PID file."""
        if not self.pids.exists():
            return []
        return sorted(p.stem for p in self.pids.glob("*.pid"))
