"""Secrets of the local stack: the S3 key pair (``credentials.json``), files only their owner may
read (mode 0600: ``env.sh``, ``release-env.sh``, configuration with keys), and redaction of
passwords from text that is shown."""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path


def redact(text: str) -> str:
    """Hide the password of ``scheme://user:password@host`` URIs (database URLs) in ``text``."""
    return re.sub(r"(://[^:/@\s]+:)[^@/\s]+@", r"\1***@", text)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (through ``path.tmp``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(str(path) + ".tmp", path)


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def write_env_file(path: Path, comments: list[str], env: dict[str, str]) -> Path:
    """A shell file (mode 0600) of ``# comment`` lines, then ``export KEY='value'`` per variable."""
    lines = [f"# {line}" for line in comments] + [f"export {k}={_shell_quote(v)}" for k, v in env.items()]
    write_private(path, "\n".join(lines) + "\n")
    return path


@dataclass
class S3Credentials:
    """An S3 access key pair; its ``repr`` never shows the secret."""

    access_key_id: str
    secret_access_key: str

    @staticmethod
    def generate(account: str = "sidn", user: str = "dev") -> "S3Credentials":
        """A fresh random secret; with Swift's tempauth the access key is ``<account>:<user>``."""
        return S3Credentials(f"{account}:{user}", secrets.token_hex(20))

    @staticmethod
    def load_or_create(path: Path) -> "S3Credentials":
        """The key pair stored in ``path`` (JSON), generated and written (mode 0600) on first use."""
        if path.exists():
            data = json.loads(path.read_text())
            return S3Credentials(data["access_key_id"], data["secret_access_key"])
        creds = S3Credentials.generate()
        write_private(path, json.dumps({"access_key_id": creds.access_key_id,
                                        "secret_access_key": creds.secret_access_key}))
        return creds

    def __repr__(self) -> str:
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"
