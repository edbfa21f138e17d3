"""``--model models:/NAME@ALIAS`` and ``--model models:/NAME/VERSION`` for the ``sidn`` CLI.

Entry point ``sidn.model_uris: models = pipelines.tracking.model_uri:resolve`` (pyproject.toml): the CLI
(``sidn predict``, ``sidn export``, ``sidn evaluate``, ``sidn bench``) hands a ``models:/`` URI
to :func:`resolve` and gets back the path of a local SIDN bundle (``model.pt``), so ``sidn/``
never imports MLflow::

    sidn predict --model models:/sidn-carpet@champion photos/ --out predictions/
    sidn export  --model models:/sidn-carpet/3 --format onnx --out carpet.onnx

An alias is resolved to its version with ``MlflowClient.get_model_version_by_alias`` (one call
to the registry every time: the alias may have moved). Only the bundle artifact of the
registered pyfunc model is downloaded (``pipelines.tracking.pyfunc_model.BUNDLE_ARTIFACT``; its path
inside the model is read from the model's ``MLmodel``), into a per-version cache folder::

    $SIDN_MODEL_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/sidn/models)
        /<server>/<name>/v<version>-<digest>/model.pt     + source.json (URI, version, run, sha256)

``<server>`` names the registry (credentials never appear), ``<digest>`` the version's source
and run, so a version number reused on another server or after a model was deleted and
re-created is a different folder. The folder is written whole into a temporary sibling and
renamed into place (atomic; a concurrent download of the same version keeps the first one),
and is reused as is by the next call. The store is ``MLFLOW_TRACKING_URI`` if set, else the
repository's ``sqlite:///<repo>/mlflow.db`` (:func:`pipelines.tracking.runs.tracking_uri`);
``MLFLOW_REGISTRY_URI`` overrides the registry. Errors (no such model, version or alias; no
server; no bundle in the model) raise :class:`ModelURIError` naming the URI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

SCHEME = "models"
BUNDLE_FILE = "model.pt"
META_FILE = "source.json"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))/?$")

log = logging.getLogger(__name__)


class ModelURIError(ValueError):
    """A ``models:/`` URI that cannot be resolved to a bundle (the message names the URI)."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None


def parse(uri: str) -> ModelRef:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; anything else is a :class:`ModelURIError`."""
    m = _URI.match(uri.strip())
    if m is None:
        raise ModelURIError(f"{uri}: not a registered model URI; expected models:/NAME@ALIAS "
                            "(e.g. models:/sidn-carpet@champion) or models:/NAME/VERSION (e.g. models:/sidn-carpet/3)")
    return ModelRef(m["name"], m["alias"], m["version"])


def cache_root() -> Path:
    """``$SIDN_MODEL_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/sidn/models``."""
    if os.environ.get("SIDN_MODEL_CACHE"):
        return Path(os.environ["SIDN_MODEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sidn" / "models"


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def server_key(uri: str) -> str:
    """A readable, credential-free folder name for a tracking/registry URI (host_port or store name + hash)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    readable = f"{host}_{parts.port}" if host and parts.port else host or Path(parts.path).name or parts.scheme
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", readable)[:40] or "store"
    return f"{readable}-{_digest(uri)[:8]}"


def _quiet_and_quick() -> None:
    """Telemetry off; a CLI user waits seconds, not minutes, for an unreachable server."""
    from pipelines.telemetry import switch_off

    switch_off()
    for key, value in {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                       "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}.items():
        os.environ.setdefault(key, value)


def _store_uris() -> tuple[str, str]:
    from pipelines.tracking.runs import tracking_uri

    tracking = tracking_uri()
    return tracking, os.environ.get("MLFLOW_REGISTRY_URI") or tracking


def _model_version(client, uri: str, ref: ModelRef):  # -> mlflow.entities.model_registry.ModelVersion
    from mlflow.exceptions import MlflowException

    try:
        if ref.alias is not None:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            try:
                client.get_registered_model(ref.name)
            except MlflowException:
                raise ModelURIError(f"{uri}: no registered model '{ref.name}' (see `sidn registry`)") from exc
            what = f"alias '{ref.alias}'" if ref.alias is not None else f"version {ref.version}"
            raise ModelURIError(f"{uri}: registered model '{ref.name}' has no {what} "
                                f"(see `sidn registry`): {exc.message}") from exc
        if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):  # basic-auth also answers 403 for a missing model
            user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "anonymous"
            raise ModelURIError(f"{uri}: the registry denied access to registered model '{ref.name}' ({code}): "
                                f"it does not exist or the account '{user}' may not read it "
                                "(MLFLOW_TRACKING_USERNAME / _PASSWORD)") from exc
        raise ModelURIError(f"{uri}: the model registry refused or failed ({code}): {exc.message}") from exc


def _bundle_path_in_model(mlmodel: Path, uri: str) -> str:
    """Where the bundle artifact lies inside the logged model (``artifacts/model.pt``), from ``MLmodel``."""
    import yaml

    from pipelines.tracking.pyfunc_model import BUNDLE_ARTIFACT

    doc = yaml.safe_load(mlmodel.read_text()) or {}
    artifacts = ((doc.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
    entry = artifacts.get(BUNDLE_ARTIFACT)
    path = entry.get("path") if isinstance(entry, dict) else None
    if not path:
        raise ModelURIError(f"{uri}: the registered model has no '{BUNDLE_ARTIFACT}' artifact "
                            f"(not a SIDN model logged by pipelines.tracking.pyfunc_model); artifacts: {sorted(artifacts)}")
    return str(path)


def _download(version_uri: str, dest: Path, tracking: str, registry: str, uri: str) -> str:
    """Download the version's MLmodel, then its bundle artifact, as ``dest/model.pt``; returns its sha256."""
    from mlflow.artifacts import download_artifacts

    scratch = dest / ".download"
    mlmodel = Path(download_artifacts(artifact_uri=f"{version_uri}/MLmodel", dst_path=str(scratch / "meta"),
                                      tracking_uri=tracking, registry_uri=registry))
    inner = _bundle_path_in_model(mlmodel, uri)
    got = Path(download_artifacts(artifact_uri=f"{version_uri}/{inner}", dst_path=str(scratch / "bundle"),
                                  tracking_uri=tracking, registry_uri=registry))
    if got.is_dir():  # the artifact was logged as a folder holding model.pt
        got = got / BUNDLE_FILE
    if not got.is_file() or got.stat().st_size == 0:
        raise ModelURIError(f"{uri}: the downloaded bundle {inner} is missing or empty")
    os.replace(got, dest / BUNDLE_FILE)
    shutil.rmtree(scratch, ignore_errors=True)
    return hashlib.sha256((dest / BUNDLE_FILE).read_bytes()).hexdigest()


def install_version_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create the cache folder ``target`` whole and return its ``model.pt``.

    ``fill(tmp)`` writes the folder's files into a temporary sibling, which is then renamed to
    ``target`` (atomic). A ``target`` left without its bundle (removed by hand) is replaced; when a
    concurrent call installed ``target`` first, its folder is kept. If ``fill`` raises, nothing is
    left behind and the error propagates.
    """
    bundle = target / BUNDLE_FILE
    if target.exists():  # a folder without its bundle: fetch it again
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        fill(tmp)
        if not (tmp / BUNDLE_FILE).is_file():
            raise ModelURIError(f"{target}: the download left no {BUNDLE_FILE}")
        try:
            os.rename(tmp, target)
        except OSError:
            if not bundle.is_file():  # not a concurrent download that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bundle


def version_dir(mv, registry: str) -> Path:
    """The cache folder of one model version (see the module docstring)."""
    identity = _digest(mv.name, mv.version, mv.source, mv.run_id, getattr(mv, "model_id", None))[:10]
    return cache_root() / server_key(registry) / re.sub(r"[^A-Za-z0-9._-]+", "_", mv.name) / f"v{mv.version}-{identity}"


def resolve(uri: str) -> Path:
    """The local bundle of ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``, downloaded once per version."""
    ref = parse(uri)
    _quiet_and_quick()
    try:
        from mlflow import MlflowClient
    except ImportError as exc:  # pragma: no cover - the entry point is only installed with the stack
        raise ModelURIError(f"{uri}: MLflow is not installed (pip install -e '.[stack]')") from exc

    tracking, registry = _store_uris()
    local_db = registry[len("sqlite:///"):] if registry.startswith("sqlite:///") else None
    if local_db and not Path(local_db).is_file():  # do not create an empty store as a side effect
        raise ModelURIError(f"{uri}: no model registry at {local_db}; set MLFLOW_TRACKING_URI to the MLflow "
                            "server (e.g. `. .infra/env.sh` after `make up`) or run the pipeline first")
    client = MlflowClient(tracking_uri=tracking, registry_uri=registry)
    mv = _model_version(client, uri, ref)
    target = version_dir(mv, registry)
    bundle = target / BUNDLE_FILE
    how = f"{uri} -> {mv.name} version {mv.version}"
    if bundle.is_file():
        log.info("%s (cached: %s)", how, bundle)
        return bundle

    def fill(tmp: Path) -> None:
        try:
            sha256 = _download(f"models:/{mv.name}/{mv.version}", tmp, tracking, registry, uri)
        except ModelURIError:
            raise
        except Exception as exc:  # MlflowException, HTTP and I/O errors
            raise ModelURIError(f"{uri}: cannot download {mv.name} version {mv.version}: {exc}") from exc
        (tmp / META_FILE).write_text(json.dumps({
            "uri": uri, "name": mv.name, "version": str(mv.version), "alias": ref.alias, "source": mv.source,
            "run_id": mv.run_id, "model_id": getattr(mv, "model_id", None), "registry": server_key(registry),
            "sha256": sha256, "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2) + "\n")

    install_version_dir(target, fill)
    log.info("%s (downloaded to %s)", how, bundle)
    return bundle


__all__ = ["ModelURIError", "ModelRef", "parse", "resolve", "cache_root", "server_key", "version_dir",
           "install_version_dir"]
