"""The sidn project's local services: an S3 object store, an MLflow server and a Prefect server.

    python -m infra up [s3|mlflow|prefect ...]   start (all by default), health-checked, on 127.0.0.1
    python -m infra status [--json]              running/stopped, port, health and start-up time of each
    python -m infra down                         stop exactly what `up` started (PID files), SIGTERM then SIGKILL

(``infra/up``, ``infra/status`` and ``infra/down`` run these from any folder; ``make up`` etc. too.)

Everything lives under one git-ignored folder, ``.infra/`` at the repository root (``SIDN_INFRA_DIR``
overrides it): ``pids/<name>.pid`` (JSON), ``logs/<name>.log``, ``swift/`` (configuration, rings and
the object data), ``mlflow/mlflow.db``, ``prefect/`` (PREFECT_HOME), ``credentials.json`` (local
development S3 keys, generated, mode 0600) and ``env.sh`` (what clients export).

The modules, in the order they build on each other: :mod:`infra.ports` (port numbers, free or
taken), :mod:`infra.http_client` (proxy-free HTTP for health checks), :mod:`infra.credentials`
(secrets: S3 keys, private files, redaction), :mod:`infra.environment` (telemetry switches and the
environment of every started process), :mod:`infra.processes` (the process manager),
:mod:`infra.swift` (the S3 store), :mod:`infra.dvc_remote`, :mod:`infra.mlflow_auth` (MLflow's
users and the release guard's configuration), :mod:`infra.stack` (which services, in which
order) and :mod:`infra.cli`. ``mlflow_release_guard.py`` is not part of the package: the MLflow
server imports it by name, with ``infra/`` on its ``PYTHONPATH``.

The package uses only the standard library at import time, so ``python -m infra`` runs with the
system ``python3`` before the venv exists; boto3 is imported lazily to create buckets and check S3
end to end. Secrets (the S3 secret key, a database URI with a password) are passed to processes
through their environment, never on a command line, and are never printed.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class InfraError(RuntimeError):
    """A service could not be configured, started, checked or stopped; the message says which and why."""
