"""The services' TCP ports: defaults (each overridable by an environment variable), whether a port
is free or answering, free ports for tests, and who holds a port that is taken."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from infra import InfraError
from infra.credentials import redact

HOST_DEFAULT = "127.0.0.1"

#: Default ports, each overridable by its environment variable.
PORT_DEFAULTS = {
    "s3": ("SIDN_S3_PORT", 9000),
    "swift-account": ("SIDN_SWIFT_ACCOUNT_PORT", 6202),
    "swift-container": ("SIDN_SWIFT_CONTAINER_PORT", 6201),
    "swift-object": ("SIDN_SWIFT_OBJECT_PORT", 6200),
    "mlflow": ("SIDN_MLFLOW_PORT", 5000),
    "prefect": ("SIDN_PREFECT_PORT", 4200),
}


class PortInUseError(InfraError):
    """A port that a service needs is already bound by another process."""


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
    """True if something accepts TCP connections on ``host:port``."""
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
