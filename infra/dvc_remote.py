"""The project's DVC remote in the local object store, written into ``.dvc/config.local``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra import InfraError
from infra.credentials import S3Credentials, redact
from infra.environment import base_env, main_venv_bin
from infra.swift import DATA_BUCKET, S3_REGION

DVC_REMOTE = "storage"
DVC_REMOTE_URL = f"s3://{DATA_BUCKET}/dvc"


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
