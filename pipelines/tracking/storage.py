"""Object storage for datasets and model bundles, through boto3 (S3 or any S3-compatible server).

Where the bytes go is configuration, never code: the endpoint and credentials come from the standard
AWS environment variables or config files (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``). With
a custom endpoint (the local Swift store started by ``infra/up``, MinIO, Ceph...) path-style
addressing is used; ``SIDN_S3_ADDRESSING_STYLE`` overrides it. Secrets are never logged or put into
error messages.

Guarantees:

* **Integrity** - every upload stores the SHA-256 of the content in the object's metadata
  (``x-amz-meta-sha256``); every download is verified against it (or against the manifest of a
  bundle) in a temporary file that is renamed into place only when the digest matches; on a
  mismatch the temporary file is removed and :class:`ChecksumMismatchError` is raised.
* **Idempotence** - an object whose stored SHA-256 and size equal the local file's is not uploaded
  again; a local file that already matches is not downloaded again.
* **Large files** - multipart transfers above a threshold (``TransferConfig``), a few in parallel.
* **Transient errors** - botocore's ``standard`` retry mode with bounded attempts and exponential
  backoff with jitter (connection errors, 5xx, throttling). Authentication errors are not
  transient: they raise :class:`StorageAuthError` at once (one request, no retry storm).
* **No half-written versions** - :func:`publish_bundle` uploads the files of a dataset or model
  version under its prefix and only then writes ``<prefix>/_COMPLETE`` (a JSON manifest with each
  file's size and SHA-256) in one atomic PUT. Readers (:func:`fetch_bundle`, :func:`list_bundles`,
  :func:`read_manifest`) only accept prefixes that carry the marker, so an upload interrupted half
  way (server stopped, process killed) is never taken for a version. A multipart upload that was
  never completed is not an object at all; :func:`abort_incomplete_uploads` frees its parts.

Bucket conventions (see ``infra/README.md``): ``s3://sidn-data/dvc`` is the DVC remote,
``s3://sidn-data/bundles/<kind>/<name>/<version>/`` holds published bundles, and
``s3://sidn-mlflow/artifacts`` is MLflow's artifact destination.

This module is part of ``pipelines/``; the ``sidn`` library never imports it (nor boto3).
Over 400 lines: one concept, the checksummed S3 store; its upload, download, manifest and
multipart pieces share the client, the digests and the error mapping.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: Files above this size are sent in parts (S3's minimum part size is 5 MiB).
DEFAULT_MULTIPART_THRESHOLD = 64 * MB
DEFAULT_MULTIPART_CHUNKSIZE = 16 * MB
#: Total attempts per request (first try + retries) for transient errors.
DEFAULT_MAX_ATTEMPTS = 5
SHA256_META = "sha256"  # stored as x-amz-meta-sha256
MARKER = "_COMPLETE"
MANIFEST_FORMAT = "sidn-bundle-manifest/1"
DEFAULT_REGION = "us-east-1"

#: Error codes that mean "your credentials are wrong or not allowed": never retried.
AUTH_ERROR_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "AuthorizationHeaderMalformed",
        "AccountProblem",
        "AllAccessDisabled",
        "403",
        "401",
    }
)
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class StorageError(RuntimeError):
    """An object-storage operation failed; the message names the s3:// location and the cause."""


class StorageAuthError(StorageError):
    """The store rejected the credentials (or none were found). Not retried."""


class StorageUnavailableError(StorageError):
    """The store could not be reached or kept failing after the bounded retries."""


class ChecksumMismatchError(StorageError):
    """Downloaded bytes do not match the SHA-256 recorded at upload; nothing was left in place."""


class IncompleteBundleError(StorageError):
    """A bundle prefix has no ``_COMPLETE`` marker: it is not a published version."""


class BundleExistsError(StorageError):
    """A bundle version is already published with different content (versions are immutable)."""


@dataclass(frozen=True)
class TransferResult:
    """What happened to one file."""

    key: str
    path: Path
    sha256: str
    size: int
    skipped: bool  # True when the destination already held the same bytes


# ----------------------------------------------------------------------------------------------
# client and errors


def _endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(
    endpoint_url: str | None = None,
    *,
    max_attempts: int | None = None,
    retry_mode: str = "standard",
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    session: boto3.session.Session | None = None,
) -> Any:
    """An S3 client configured from the standard AWS environment / config files.

    ``endpoint_url`` overrides ``AWS_ENDPOINT_URL(_S3)``. ``max_attempts`` defaults to
    ``AWS_MAX_ATTEMPTS`` or 5 (bounded); ``retry_mode`` is botocore's ``standard`` (or ``adaptive``).
    Raises :class:`StorageAuthError` when no credentials can be found.
    """
    session = session or boto3.session.Session()
    if session.get_credentials() is None:
        raise StorageAuthError(
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for the local "
            "store: `. .infra/env.sh` after `make up`) or AWS_PROFILE"
        )
    endpoint = endpoint_url or _endpoint_from_env()
    style = os.environ.get("SIDN_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    attempts = max_attempts or int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    cfg = Config(
        retries={"mode": retry_mode, "max_attempts": max(1, attempts)},
        s3={"addressing_style": style},
        signature_version="s3v4",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint,
        region_name=session.region_name or DEFAULT_REGION,
        config=cfg,
    )


def transfer_config(
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
    max_concurrency: int = 4,
) -> TransferConfig:
    """Multipart settings: files above ``multipart_threshold`` bytes go in ``multipart_chunksize`` parts."""
    return TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=multipart_chunksize,
        max_concurrency=max_concurrency,
        use_threads=max_concurrency > 1,
        preferred_transfer_client="classic",
    )


def _client_error(exc: BaseException) -> ClientError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ClientError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _error_code(exc: BaseException) -> str:
    ce = _client_error(exc)
    if ce is None:
        return ""
    return str(ce.response.get("Error", {}).get("Code", "")) or str(
        ce.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def _is_not_found(exc: BaseException) -> bool:
    return _error_code(exc) in _NOT_FOUND_CODES


def _translate(exc: BaseException, what: str, client: Any) -> StorageError:
    """Map a boto3/botocore error to a StorageError whose message has no secret in it."""
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "?")
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageAuthError(f"{what}: no usable S3 credentials ({type(exc).__name__}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    ce = _client_error(exc)
    if ce is not None:
        err = ce.response.get("Error", {})
        code = _error_code(ce)
        message = str(err.get("Message", ""))[:200]
        if code in AUTH_ERROR_CODES:
            return StorageAuthError(
                f"{what}: the S3 store at {endpoint} rejected the credentials ({code}: {message}). "
                "Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket policy."
            )
        status = ce.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
            return StorageUnavailableError(f"{what}: {endpoint} kept failing after retries ({code}: {message})")
        return StorageError(f"{what}: {code}: {message}")
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)):
        return StorageUnavailableError(f"{what}: S3 endpoint {endpoint} unreachable after retries ({type(exc).__name__})")
    if isinstance(exc, (BotoCoreError, OSError)):
        # s3transfer wraps some connection errors; keep the type name, not botocore's long repr
        return StorageUnavailableError(f"{what}: transfer failed ({type(exc).__name__}: {str(exc)[:200]})")
    return StorageError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")


def _url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _join(prefix: str, rel: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{rel}" if prefix else rel


def sha256_file(path: Path, bufsize: int = 4 * MB) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _md5_file(path: Path, bufsize: int = 4 * MB) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def head(bucket: str, key: str, *, client: Any = None) -> dict | None:
    """The object's metadata (``HeadObject``), or None if there is no such object."""
    client = client or make_client()
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - translated below
        if _is_not_found(exc):
            return None
        raise _translate(exc, f"HEAD {_url(bucket, key)}", client) from None


# ----------------------------------------------------------------------------------------------
# single files


def upload_file(
    path: str | os.PathLike,
    bucket: str,
    key: str,
    *,
    client: Any = None,
    config: TransferConfig | None = None,
    metadata: dict[str, str] | None = None,
    skip_if_same: bool = True,
) -> TransferResult:
    """Upload ``path`` to ``s3://bucket/key`` with its SHA-256 in the object metadata.

    Skips the upload when the object already has the same SHA-256 and size (idempotent re-upload).
    Multipart above ``config.multipart_threshold``. After the upload the stored size and digest are
    checked. Raises StorageAuthError / StorageUnavailableError / StorageError.
    """
    client = client or make_client()
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: not a file, nothing to upload to {_url(bucket, key)}")
    size = path.stat().st_size
    digest = sha256_file(path)
    if skip_if_same:
        existing = head(bucket, key, client=client)
        if existing and existing.get("Metadata", {}).get(SHA256_META) == digest and existing.get("ContentLength") == size:
            log.debug("unchanged, not uploaded: %s", _url(bucket, key))
            return TransferResult(key, path, digest, size, skipped=True)
    extra = {"Metadata": {**(metadata or {}), SHA256_META: digest}}
    t0 = time.monotonic()
    try:
        client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=config or transfer_config())
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, f"upload {path} -> {_url(bucket, key)}", client) from None
    stored = head(bucket, key, client=client)
    if not stored or stored.get("ContentLength") != size or stored.get("Metadata", {}).get(SHA256_META) != digest:
        raise StorageError(f"upload {path} -> {_url(bucket, key)}: the stored object does not match the local file")
    log.info("uploaded %s (%d bytes, %.1fs)", _url(bucket, key), size, time.monotonic() - t0)
    return TransferResult(key, path, digest, size, skipped=False)


def download_file(
    bucket: str,
    key: str,
    path: str | os.PathLike,
    *,
    client: Any = None,
    config: TransferConfig | None = None,
    expected_sha256: str | None = None,
    require_checksum: bool = True,
) -> TransferResult:
    """Download ``s3://bucket/key`` to ``path``, verified, atomically.

    The expected digest is ``expected_sha256`` (e.g. from a bundle manifest) or the object's
    ``sha256`` metadata; objects without one are checked against a plain-MD5 ETag (single-part
    uploads) or, if that is not possible either, refused unless ``require_checksum=False``. The bytes
    land in a temporary file next to ``path`` that is renamed into place only when they match; on a
    mismatch it is deleted and ChecksumMismatchError is raised. A local file that already matches is
    left alone (``skipped=True``).
    """
    client = client or make_client()
    path = Path(path)
    meta = head(bucket, key, client=client)
    if meta is None:
        raise StorageError(f"{_url(bucket, key)}: no such object")
    want = expected_sha256 or meta.get("Metadata", {}).get(SHA256_META)
    etag = str(meta.get("ETag", "")).strip('"')
    want_md5 = etag if (not want and etag and "-" not in etag and len(etag) == 32) else None
    if not want and not want_md5 and require_checksum:
        raise StorageError(
            f"{_url(bucket, key)}: no sha256 metadata and a multipart ETag, so the download cannot be "
            "verified (upload it with pipelines.tracking.storage, or pass require_checksum=False)"
        )
    if want and path.is_file() and sha256_file(path) == want:
        return TransferResult(key, path, want, path.stat().st_size, skipped=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.part-{uuid.uuid4().hex[:8]}"
    try:
        try:
            client.download_file(bucket, key, str(tmp), Config=config or transfer_config())
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"download {_url(bucket, key)} -> {path}", client) from None
        got = sha256_file(tmp)
        if want and got != want:
            raise ChecksumMismatchError(
                f"{_url(bucket, key)}: downloaded bytes have sha256 {got}, expected {want}; "
                f"the partial file was removed and {path} left untouched"
            )
        if want_md5 and _md5_file(tmp) != want_md5:
            raise ChecksumMismatchError(
                f"{_url(bucket, key)}: downloaded bytes do not match the ETag (MD5) {want_md5}; "
                f"the partial file was removed and {path} left untouched"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("downloaded %s -> %s (%d bytes)", _url(bucket, key), path, path.stat().st_size)
    return TransferResult(key, path, got, path.stat().st_size, skipped=False)


# ----------------------------------------------------------------------------------------------
# prefixes (folders)


def _local_files(local_dir: Path) -> list[tuple[str, Path]]:
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory")
    out = []
    for p in sorted(local_dir.rglob("*")):
        if p.is_file():
            rel = p.relative_to(local_dir).as_posix()
            if rel == MARKER:
                raise StorageError(f"{p}: a file may not be named {MARKER} (reserved for the bundle marker)")
            out.append((rel, p))
    return out


def _parallel(fn, items: list, max_workers: int) -> list:
    if max_workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        futures = [pool.submit(fn, i) for i in items]
        results, first_error = [], None
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after all finished
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results


def upload_prefix(
    local_dir: str | os.PathLike,
    bucket: str,
    prefix: str,
    *,
    client: Any = None,
    config: TransferConfig | None = None,
    max_workers: int = 4,
) -> list[TransferResult]:
    """Upload every file under ``local_dir`` to ``s3://bucket/prefix/<relative path>`` (idempotent)."""
    client = client or make_client()
    files = _local_files(Path(local_dir))
    return _parallel(
        lambda item: upload_file(item[1], bucket, _join(prefix, item[0]), client=client, config=config),
        files,
        max_workers,
    )


def list_keys(bucket: str, prefix: str, *, client: Any = None) -> Iterator[dict]:
    """Objects under ``prefix/`` (dicts with Key, Size, ETag), paginated."""
    client = client or make_client()
    pfx = prefix.strip("/") + "/" if prefix.strip("/") else ""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=pfx):
            yield from page.get("Contents", [])
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, f"list {_url(bucket, pfx)}", client) from None


def _safe_rel(key: str, prefix: str) -> str:
    pfx = prefix.strip("/") + "/" if prefix.strip("/") else ""
    rel = key[len(pfx):]
    norm = posixpath.normpath(rel)
    if not rel or norm.startswith("../") or norm == ".." or norm.startswith("/") or norm != rel:
        raise StorageError(f"s3 key {key!r} would be written outside the target folder; refusing")
    return rel


def download_prefix(
    bucket: str,
    prefix: str,
    local_dir: str | os.PathLike,
    *,
    client: Any = None,
    config: TransferConfig | None = None,
    max_workers: int = 4,
    require_checksum: bool = True,
) -> list[TransferResult]:
    """Download every object under ``s3://bucket/prefix/`` into ``local_dir``, each verified."""
    client = client or make_client()
    local_dir = Path(local_dir)
    items = [(obj["Key"], _safe_rel(obj["Key"], prefix)) for obj in list_keys(bucket, prefix, client=client)
             if not obj["Key"].endswith("/")]
    return _parallel(
        lambda it: download_file(bucket, it[0], local_dir / it[1], client=client, config=config,
                                 require_checksum=require_checksum),
        items,
        max_workers,
    )


# ----------------------------------------------------------------------------------------------
# bundles: a dataset or model version that is complete or does not exist


def bundle_prefix(kind: str, name: str, version: str) -> str:
    """The conventional prefix of a bundle: ``bundles/<kind>/<name>/<version>`` (kind: datasets|models)."""
    for part, label in ((kind, "kind"), (name, "name"), (version, "version")):
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"bundle {label} {part!r} must be a non-empty path segment without '/'")
    return f"bundles/{kind}/{name}/{version}"


def _local_manifest(local_dir: Path) -> dict[str, dict]:
    return {rel: {"sha256": sha256_file(p), "size": p.stat().st_size} for rel, p in _local_files(local_dir)}


def read_manifest(bucket: str, prefix: str, *, client: Any = None) -> dict:
    """The manifest stored in ``prefix/_COMPLETE``; IncompleteBundleError if there is none."""
    client = client or make_client()
    key = _join(prefix, MARKER)
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # noqa: BLE001
        if _is_not_found(exc):
            raise IncompleteBundleError(
                f"{_url(bucket, prefix.strip('/'))}/ has no {MARKER} marker: not a published version "
                "(an upload may have been interrupted)"
            ) from None
        raise _translate(exc, f"GET {_url(bucket, key)}", client) from None
    try:
        manifest = json.loads(body)
    except ValueError:
        raise StorageError(f"{_url(bucket, key)}: marker is not valid JSON") from None
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise StorageError(f"{_url(bucket, key)}: not a {MANIFEST_FORMAT} manifest")
    return manifest


def is_complete(bucket: str, prefix: str, *, client: Any = None) -> bool:
    """True if ``prefix`` carries the ``_COMPLETE`` marker."""
    return head(bucket, _join(prefix, MARKER), client=client) is not None


def publish_bundle(
    local_dir: str | os.PathLike,
    bucket: str,
    prefix: str,
    *,
    client: Any = None,
    config: TransferConfig | None = None,
    metadata: dict[str, Any] | None = None,
    max_workers: int = 4,
) -> dict:
    """Publish the files of ``local_dir`` as one immutable version at ``s3://bucket/prefix/``.

    1. If the prefix is already published with the same files and digests, nothing is sent (idempotent);
       with different content BundleExistsError is raised (publish a new version instead).
    2. Every file is uploaded (multipart when large) with its SHA-256, and checked.
    3. Only then ``prefix/_COMPLETE`` is written in one PUT: the manifest (format, files with sha256
       and size, metadata, time). Until that PUT succeeds, readers see no version at this prefix.

    ``metadata`` is copied into the manifest: put no secrets in it. Returns the manifest.
    """
    client = client or make_client()
    local_dir = Path(local_dir)
    files = _local_manifest(local_dir)
    if not files:
        raise StorageError(f"{local_dir}: empty folder, nothing to publish")
    try:
        existing = read_manifest(bucket, prefix, client=client)
    except IncompleteBundleError:
        existing = None
    if existing is not None:
        if existing["files"] == files:
            log.info("bundle %s already published with the same content", _url(bucket, prefix))
            return existing
        raise BundleExistsError(
            f"{_url(bucket, prefix)} is already published with different content; versions are "
            "immutable: publish under a new version prefix"
        )
    upload_prefix(local_dir, bucket, prefix, client=client, config=config, max_workers=max_workers)
    manifest = {
        "format": MANIFEST_FORMAT,
        "bucket": bucket,
        "prefix": prefix.strip("/"),
        "files": files,
        "metadata": metadata or {},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    key = _join(prefix, MARKER)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                          Metadata={SHA256_META: hashlib.sha256(body).hexdigest()})
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, f"PUT {_url(bucket, key)}", client) from None
    log.info("published %s (%d files)", _url(bucket, prefix), len(files))
    return manifest


def fetch_bundle(
    bucket: str,
    prefix: str,
    local_dir: str | os.PathLike,
    *,
    client: Any = None,
    config: TransferConfig | None = None,
    max_workers: int = 4,
) -> dict:
    """Download a published bundle into ``local_dir``: exactly the manifest's files, each verified.

    IncompleteBundleError if the prefix has no ``_COMPLETE`` marker. Returns the manifest.
    """
    client = client or make_client()
    manifest = read_manifest(bucket, prefix, client=client)
    local_dir = Path(local_dir)
    items = []
    for rel, entry in sorted(manifest["files"].items()):
        _safe_rel(_join(prefix, rel), prefix)
        items.append((rel, entry["sha256"]))
    _parallel(
        lambda it: download_file(bucket, _join(prefix, it[0]), local_dir / it[0], client=client,
                                 config=config, expected_sha256=it[1]),
        items,
        max_workers,
    )
    return manifest


def list_bundles(bucket: str, prefix: str, *, client: Any = None) -> list[str]:
    """Prefixes under ``prefix`` that are published versions (carry the marker), sorted."""
    out = []
    for obj in list_keys(bucket, prefix, client=client):
        key = obj["Key"]
        if key.endswith("/" + MARKER):
            out.append(key[: -len(MARKER) - 1])
    return sorted(out)


def abort_incomplete_uploads(bucket: str, prefix: str = "", *, older_than_s: float = 0.0, client: Any = None) -> int:
    """Abort multipart uploads under ``prefix`` left by interrupted transfers; returns how many.

    Production buckets should also have a lifecycle rule (AbortIncompleteMultipartUpload).
    """
    client = client or make_client()
    n = 0
    now = time.time()
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix.strip("/")):
            for up in page.get("Uploads", []):
                if now - up["Initiated"].timestamp() >= older_than_s:
                    client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                    n += 1
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, f"abort incomplete uploads under {_url(bucket, prefix)}", client) from None
    return n
