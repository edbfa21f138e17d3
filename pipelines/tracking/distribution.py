"""Model bundles distributed through the S3 store, for line machines that reach object storage only.

Publishing (``sidn registry publish``, on a machine that reaches the MLflow registry and may write
to the store)::

    sidn registry publish models:/sidn-carpet@champion      # or models:/sidn-carpet/3; --bucket sidn-data

resolves the registered version with :func:`pipelines.tracking.model_uri.resolve` (the bundle is downloaded
once, cached) and publishes it with :func:`pipelines.tracking.storage.publish_bundle` as one immutable
version (uploaded, checked, then marked ``_COMPLETE``)::

    s3://<bucket>/bundles/models/<name>/<version>/model.pt       the bundle, byte for byte
                                                 /source.json    registered model, version, alias, run, sha256
                                                 /_COMPLETE      manifest: size and sha256 of each file
    s3://<bucket>/bundles/models/<name>/aliases/<alias>.json     {"version": ..., "published_at": ...}

The alias pointer is written only after its version is complete, so a reader following it never
lands on a half-written version. Publishing a version that is already there is a no-op, and so is
re-pointing an alias at the version it already names.

Using (entry point ``sidn.model_uris: s3 = pipelines.tracking.distribution:resolve``)::

    sidn predict --model s3://sidn-data/bundles/models/sidn-carpet/3 photos/ --out predictions/
    sidn predict --model s3://sidn-data/bundles/models/sidn-carpet@champion photos/ --out predictions/

:func:`resolve` reads the alias pointer (every call: the alias may have moved) and the version's
manifest, and downloads the files with :func:`pipelines.tracking.storage.fetch_bundle` (each verified against
the manifest's SHA-256) into a per-version cache folder, written whole and renamed into place::

    <pipelines.tracking.model_uri.cache_root()>/s3/<endpoint>/<bucket>/<name>/v<version>-<sha256[:10]>/model.pt

Later calls use that copy. A version without ``_COMPLETE`` or whose bytes do not match the manifest
is refused with :class:`DistributionError` naming the URI, and nothing is left in the cache.
Endpoint and credentials are the standard AWS variables (see :mod:`pipelines.tracking.storage`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.tracking import model_uri, storage

SCHEME = "s3"
DEFAULT_BUCKET = "sidn-data"
KIND = "models"
ALIASES = "aliases"
_URI = re.compile(rf"^s3://(?P<bucket>[^/]+)/bundles/{KIND}/(?P<name>[^/@]+)"
                  r"(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))/?$")

log = logging.getLogger(__name__)


class DistributionError(model_uri.ModelURIError):
    """A bundle that cannot be published to or fetched from the store (the message names the URI)."""


@dataclass(frozen=True)
class BundleRef:
    """A model bundle in the store: ``s3://BUCKET/bundles/models/NAME/VERSION`` or ``...NAME@ALIAS``."""

    bucket: str
    name: str
    alias: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did."""

    version_uri: str  # s3://.../bundles/models/<name>/<version>
    alias_uri: str | None  # s3://.../bundles/models/<name>@<alias>, when published from an alias
    version: str
    uploaded: bool  # False: the version was already published with the same model.pt
    previous_version: str | None  # what the alias pointer named before (None: it did not exist)


def parse(uri: str) -> BundleRef:
    """``s3://BUCKET/bundles/models/NAME/VERSION`` or ``s3://BUCKET/bundles/models/NAME@ALIAS``."""
    m = _URI.match(uri.strip())
    if m is None:
        raise DistributionError(
            f"{uri}: not a published model bundle URI; expected s3://BUCKET/bundles/models/NAME/VERSION "
            "(e.g. s3://sidn-data/bundles/models/sidn-carpet/3) or s3://BUCKET/bundles/models/NAME@ALIAS "
            "(e.g. s3://sidn-data/bundles/models/sidn-carpet@champion), as printed by `sidn registry publish`"
        )
    return BundleRef(m["bucket"], m["name"], m["alias"], m["version"])


def version_uri(bucket: str, name: str, version: str) -> str:
    """``s3://BUCKET/bundles/models/NAME/VERSION``: one published version."""
    return f"s3://{bucket}/{storage.bundle_prefix(KIND, name, version)}"


def alias_uri(bucket: str, name: str, alias: str) -> str:
    """``s3://BUCKET/bundles/models/NAME@ALIAS``: whatever version the alias pointer names."""
    return f"s3://{bucket}/bundles/{KIND}/{name}@{alias}"


def alias_key(name: str, alias: str) -> str:
    """The key of an alias pointer: ``bundles/models/NAME/aliases/ALIAS.json``."""
    return f"{storage.bundle_prefix(KIND, name, ALIASES)}/{alias}.json"


def read_alias(bucket: str, name: str, alias: str, *, client: Any = None) -> str | None:
    """The version an alias pointer names, or None if there is no pointer (downloaded and verified)."""
    client = client or storage.make_client()
    key = alias_key(name, alias)
    if storage.head(bucket, key, client=client) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="sidn-alias-") as tmp:
        path = storage.download_file(bucket, key, Path(tmp) / "alias.json", client=client).path
        try:
            version = json.loads(path.read_text())["version"]
        except (ValueError, KeyError, TypeError):
            raise DistributionError(f"s3://{bucket}/{key}: not an alias pointer (no \"version\")") from None
    return str(version)


def _write_alias(bucket: str, name: str, alias: str, version: str, source: str, client: Any) -> None:
    doc = {"version": version, "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from": source}
    with tempfile.TemporaryDirectory(prefix="sidn-alias-") as tmp:
        path = Path(tmp) / "alias.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        storage.upload_file(path, bucket, alias_key(name, alias), client=client, skip_if_same=False)


def publish(uri: str, bucket: str = DEFAULT_BUCKET, *, client: Any = None) -> Published:
    """Publish the bundle of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` to ``bucket``.

    The version goes to ``bundles/models/NAME/VERSION/`` (model.pt + source.json, then ``_COMPLETE``);
    an already published version with the same model.pt is not sent again. For an alias, the pointer
    ``bundles/models/NAME/aliases/ALIAS.json`` is then set to the version (left alone if it already
    names it). Raises ModelURIError (registry side) or DistributionError (store side).
    """
    ref = model_uri.parse(uri)
    bundle = model_uri.resolve(uri)
    meta = json.loads((bundle.parent / model_uri.META_FILE).read_text())
    name, version = meta["name"], str(meta["version"])
    target = version_uri(bucket, name, version)
    prefix = storage.bundle_prefix(KIND, name, version)
    try:
        client = client or storage.make_client()
        try:
            existing = storage.read_manifest(bucket, prefix, client=client)
        except storage.IncompleteBundleError:
            existing = None
        uploaded = existing is None
        if existing is not None:
            have = existing["files"].get(model_uri.BUNDLE_FILE, {}).get("sha256")
            if have != meta["sha256"]:
                raise DistributionError(
                    f"{uri}: {target} is already published with another {model_uri.BUNDLE_FILE} "
                    f"(sha256 {have}, the registry's is {meta['sha256']}); published versions are immutable"
                )
            log.info("%s is already published as %s", uri, target)
        else:
            _publish_version(bundle, meta, ref, uri, bucket, prefix, client)
        previous = None
        if ref.alias is not None:
            previous = read_alias(bucket, name, ref.alias, client=client)
            if previous != version:
                _write_alias(bucket, name, ref.alias, version, uri, client)
    except storage.StorageError as exc:
        raise DistributionError(f"{uri} -> s3://{bucket}: {exc}") from exc
    return Published(target, alias_uri(bucket, name, ref.alias) if ref.alias else None, version, uploaded, previous)


def _publish_version(bundle: Path, meta: dict, ref: model_uri.ModelRef, uri: str, bucket: str, prefix: str,
                     client: Any) -> None:
    source = {"registered_model": meta["name"], "version": str(meta["version"]), "alias": ref.alias,
              "model_uri": uri, "run_id": meta.get("run_id"), "source": meta.get("source"),
              "registry": meta.get("registry"), "sha256": meta["sha256"]}
    with tempfile.TemporaryDirectory(prefix="sidn-publish-") as tmp:
        shutil.copyfile(bundle, Path(tmp) / model_uri.BUNDLE_FILE)
        (Path(tmp) / model_uri.META_FILE).write_text(json.dumps(source, indent=2) + "\n")
        storage.publish_bundle(tmp, bucket, prefix, client=client, metadata=source)


def cache_dir(endpoint: str, ref: BundleRef, version: str, sha256: str) -> Path:
    """The cache folder of one published version (see the module docstring)."""
    return (model_uri.cache_root() / SCHEME / model_uri.server_key(endpoint) / ref.bucket / ref.name
            / f"v{version}-{sha256[:10]}")


def resolve(uri: str) -> Path:
    """The local bundle of ``s3://BUCKET/bundles/models/NAME/VERSION`` or ``...NAME@ALIAS``, fetched once per version."""
    ref = parse(uri)
    try:
        client = storage.make_client()
        version = ref.version
        if version is None:
            version = read_alias(ref.bucket, ref.name, ref.alias, client=client)
            if version is None:
                raise DistributionError(
                    f"{uri}: no alias pointer s3://{ref.bucket}/{alias_key(ref.name, ref.alias)}; publish it with "
                    f"`sidn registry publish models:/{ref.name}@{ref.alias} --bucket {ref.bucket}`"
                )
        prefix = storage.bundle_prefix(KIND, ref.name, version)
        manifest = storage.read_manifest(ref.bucket, prefix, client=client)
        entry = manifest["files"].get(model_uri.BUNDLE_FILE)
        if entry is None:
            raise DistributionError(f"{uri}: s3://{ref.bucket}/{prefix}/ has no {model_uri.BUNDLE_FILE}: "
                                    "not a model bundle")
        target = cache_dir(client.meta.endpoint_url, ref, version, entry["sha256"])
        bundle = target / model_uri.BUNDLE_FILE
        how = f"{uri} -> version {version}"
        if bundle.is_file():
            log.info("%s (cached: %s)", how, bundle)
            return bundle
        model_uri.install_version_dir(target, lambda tmp: storage.fetch_bundle(ref.bucket, prefix, tmp, client=client))
    except storage.IncompleteBundleError as exc:
        raise DistributionError(f"{uri}: refused, the version is not completely published: {exc}") from exc
    except storage.ChecksumMismatchError as exc:
        raise DistributionError(f"{uri}: refused, checksum mismatch (the stored bundle is not what was "
                                f"published): {exc}") from exc
    except storage.StorageError as exc:
        raise DistributionError(f"{uri}: {exc}") from exc
    log.info("%s (downloaded to %s)", how, bundle)
    return bundle


__all__ = ["DistributionError", "BundleRef", "Published", "parse", "publish", "resolve", "read_alias",
           "version_uri", "alias_uri", "alias_key", "cache_dir", "DEFAULT_BUCKET"]
