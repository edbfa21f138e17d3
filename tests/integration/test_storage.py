"""pipelines/tracking/storage.py against a real S3 server (OpenStack Swift + s3api on loopback).

Round trips with checksums, multipart, idempotent re-uploads, corrupted objects, wrong credentials
(one request, no retry storm), the store stopped in the middle of a bundle upload (clear failure, no
``_COMPLETE`` marker, nothing registered), a short outage (retried), and no secret in any log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpers.fixtures_s3 import s3_env, s3_server  # noqa: F401  (session server, shared through a refcount)
from pipelines.tracking import storage

MB = 1024 * 1024
BUCKET = "sidn-data"


def _prefix(name: str) -> str:
    return f"tests/{name}-{uuid.uuid4().hex[:8]}"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _count_requests(client) -> dict[str, int]:
    """Count HTTP requests (every attempt, retries included) made by ``client``, per operation."""
    counts: dict[str, int] = {}

    def hook(event_name: str = "", **kwargs):  # noqa: ANN003
        op = event_name.rsplit(".", 1)[-1]  # before-send.s3.<Operation>
        counts[op] = counts.get(op, 0) + 1
        counts["total"] = counts.get("total", 0) + 1

    client.meta.events.register("before-send.s3", hook)
    return counts


def _small_mp() -> storage.TransferConfig:
    # S3's minimum part size is 5 MiB: a 12 MB file goes in 3 parts
    return storage.transfer_config(multipart_threshold=5 * MB, multipart_chunksize=5 * MB, max_concurrency=1)


# ----------------------------------------------------------------------------------------------
# no server needed


def test_bundle_prefix_and_key_safety():
    assert storage.bundle_prefix("models", "sidn-carpet", "v3") == "bundles/models/sidn-carpet/v3"
    with pytest.raises(ValueError):
        storage.bundle_prefix("models", "a/b", "v1")
    assert storage._safe_rel("p/sub/a.png", "p") == "sub/a.png"
    for bad in ("p/../x", "p//x", "p/./x"):
        with pytest.raises(storage.StorageError, match="outside the target folder"):
            storage._safe_rel(bad, "p")


def test_no_credentials_is_a_clear_error(monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe the instance metadata service
    with pytest.raises(storage.StorageAuthError, match="AWS_ACCESS_KEY_ID"):
        storage.make_client(endpoint_url="http://127.0.0.1:9")


# ----------------------------------------------------------------------------------------------
# against the real server



@pytest.mark.integration
def test_prefix_round_trip_with_checksums(s3_env, tmp_path):
    src = tmp_path / "src"
    files = {
        "train/good/000.png": os.urandom(3000),
        "train/good/001.png": os.urandom(70_000),
        "ground_truth/crack/000_mask.png": b"\x89PNG" + os.urandom(100),
        "manifest.csv": b"path,label\nx,0\n",
    }
    for rel, data in files.items():
        _write(src / rel, data)
    prefix = _prefix("roundtrip")
    client = storage.make_client()
    up = storage.upload_prefix(src, BUCKET, prefix, client=client)
    assert sorted(r.key for r in up) == sorted(f"{prefix}/{k}" for k in files)
    assert not any(r.skipped for r in up)
    # every object carries its sha256
    for rel, data in files.items():
        meta = client.head_object(Bucket=BUCKET, Key=f"{prefix}/{rel}")["Metadata"]
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    dst = tmp_path / "dst"
    down = storage.download_prefix(BUCKET, prefix, dst, client=client)
    assert len(down) == len(files)
    assert _tree(dst) == files
    assert not list(dst.rglob(".*.part-*")), "temporary files left behind"
    # a second download finds everything in place and transfers nothing
    again = storage.download_prefix(BUCKET, prefix, dst, client=client)
    assert all(r.skipped for r in again)


@pytest.mark.integration
def test_multipart_upload_and_idempotent_reupload(s3_env, tmp_path):
    big = _write(tmp_path / "big.bin", os.urandom(12 * MB))
    key = f"{_prefix('multipart')}/big.bin"
    client = storage.make_client()
    counts = _count_requests(client)
    res = storage.upload_file(big, BUCKET, key, client=client, config=_small_mp())
    assert not res.skipped
    assert counts.get("UploadPart") == 3 and counts.get("CompleteMultipartUpload") == 1
    etag = client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    assert etag.endswith("-3"), f"expected a 3-part multipart ETag, got {etag}"

    counts.clear()
    again = storage.upload_file(big, BUCKET, key, client=client, config=_small_mp())
    assert again.skipped and again.sha256 == res.sha256
    assert counts == {"HeadObject": 1, "total": 1}, f"re-upload sent more than a HEAD: {counts}"

    out = tmp_path / "out" / "big.bin"
    got = storage.download_file(BUCKET, key, out, client=client, config=_small_mp())
    assert got.sha256 == res.sha256 and out.read_bytes() == big.read_bytes()

    # a changed file is uploaded again
    big.write_bytes(os.urandom(6 * MB))
    third = storage.upload_file(big, BUCKET, key, client=client, config=_small_mp())
    assert not third.skipped and third.sha256 != res.sha256


@pytest.mark.integration
def test_corrupted_object_is_rejected_and_nothing_left_in_place(s3_env, tmp_path):
    client = storage.make_client()
    good = os.urandom(50_000)
    key = f"{_prefix('corrupt')}/weights.pt"
    storage.upload_file(_write(tmp_path / "w.pt", good), BUCKET, key, client=client)
    # the object's bytes change behind our back; its recorded sha256 stays
    client.put_object(Bucket=BUCKET, Key=key, Body=good[:-1] + b"\0",
                      Metadata={"sha256": hashlib.sha256(good).hexdigest()})
    target = tmp_path / "dl" / "weights.pt"
    _write(target, b"previous version")
    with pytest.raises(storage.ChecksumMismatchError, match="sha256"):
        storage.download_file(BUCKET, key, target, client=client)
    assert target.read_bytes() == b"previous version", "the old file must be left untouched"
    assert [p.name for p in target.parent.iterdir()] == ["weights.pt"], "partial file not removed"

    # an object without sha256 metadata, uploaded by another tool in one part: checked by its MD5 ETag
    key2 = f"{_prefix('plain')}/x.bin"
    client.put_object(Bucket=BUCKET, Key=key2, Body=good)
    assert storage.download_file(BUCKET, key2, tmp_path / "x.bin", client=client).size == len(good)


@pytest.mark.integration
@pytest.mark.parametrize("which", ["secret", "access_key"])
def test_wrong_credentials_fail_fast_without_retry_storm(s3_env, tmp_path, monkeypatch, which):
    wrong = "not-the-secret-" + uuid.uuid4().hex
    if which == "secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody:intruder")
    client = storage.make_client(max_attempts=5)
    counts = _count_requests(client)
    f = _write(tmp_path / "a.bin", os.urandom(1000))
    t0 = time.monotonic()
    with pytest.raises(storage.StorageAuthError) as info:
        storage.upload_file(f, BUCKET, f"{_prefix('auth')}/a.bin", client=client)
    elapsed = time.monotonic() - t0
    assert counts["total"] == 1, f"auth failure was retried: {counts}"
    assert elapsed < 5, f"auth failure took {elapsed:.1f}s"
    msg = str(info.value)
    assert "rejected the credentials" in msg and "AWS_SECRET_ACCESS_KEY" in msg
    assert wrong not in msg and s3_env.secret_access_key not in msg

    # downloads and listings too
    counts.clear()
    with pytest.raises(storage.StorageAuthError):
        storage.download_prefix(BUCKET, "tests", tmp_path / "x", client=client)
    assert counts["total"] == 1


@pytest.mark.integration
def test_publish_bundle_marker_idempotent_and_immutable(s3_env, tmp_path):
    client = storage.make_client()
    src = tmp_path / "bundle"
    _write(src / "model.pt", os.urandom(20_000))
    _write(src / "config.yaml", b"model: {C: 16}\n")
    base = _prefix("bundles")
    prefix = f"{base}/v1"
    manifest = storage.publish_bundle(src, BUCKET, prefix, client=client, metadata={"category": "carpet"})
    assert set(manifest["files"]) == {"model.pt", "config.yaml"}
    assert storage.is_complete(BUCKET, prefix, client=client)
    assert storage.list_bundles(BUCKET, base, client=client) == [prefix]

    counts = _count_requests(client)
    again = storage.publish_bundle(src, BUCKET, prefix, client=client, metadata={"category": "carpet"})
    assert again["files"] == manifest["files"]
    assert "PutObject" not in counts and "UploadPart" not in counts, counts

    out = tmp_path / "fetched"
    storage.fetch_bundle(BUCKET, prefix, out, client=client)
    assert _tree(out) == _tree(src)

    _write(src / "model.pt", os.urandom(20_000))
    with pytest.raises(storage.BundleExistsError, match="immutable"):
        storage.publish_bundle(src, BUCKET, prefix, client=client)


@pytest.mark.integration
def test_store_stopped_mid_upload_leaves_no_version(s3_env, tmp_path):
    """The S3 front end dies after the first part of a multipart upload: the publish fails clearly
    after bounded retries, and the version is never visible as complete."""
    src = tmp_path / "bundle"
    _write(src / "a_config.yaml", b"x: 1\n")
    _write(src / "model.bin", os.urandom(12 * MB))
    base = _prefix("interrupted")
    prefix = f"{base}/v1"
    client = storage.make_client(max_attempts=3, connect_timeout=2, read_timeout=10)
    counts = _count_requests(client)
    stopped = threading.Event()

    def kill_after_first_part(**kwargs):  # noqa: ANN003
        if not stopped.is_set():
            stopped.set()
            s3_env.stop_proxy()

    client.meta.events.register("after-call.s3.UploadPart", kill_after_first_part)
    t0 = time.monotonic()
    try:
        with pytest.raises(storage.StorageUnavailableError, match="unreachable|transfer failed|kept failing"):
            storage.publish_bundle(src, BUCKET, prefix, client=client, config=_small_mp(), max_workers=1)
        elapsed = time.monotonic() - t0
        assert stopped.is_set()
        # bounded: one good part, then at most max_attempts (3) tries for each of the other two parts
        assert counts.get("UploadPart", 0) <= 1 + 2 * 3, f"bounded retries expected, got {counts}"
        assert elapsed < 60
    finally:
        s3_env.start_proxy()

    fresh = storage.make_client()
    assert not storage.is_complete(BUCKET, prefix, client=fresh)
    assert storage.list_bundles(BUCKET, base, client=fresh) == []
    with pytest.raises(storage.IncompleteBundleError, match="_COMPLETE"):
        storage.fetch_bundle(BUCKET, prefix, tmp_path / "out", client=fresh)
    # the half-done multipart upload is not an object; housekeeping frees its parts
    keys = [o["Key"] for o in storage.list_keys(BUCKET, base, client=fresh)]
    assert f"{prefix}/model.bin" not in keys
    storage.abort_incomplete_uploads(BUCKET, base, client=fresh)
    # once the store is back, publishing the same version succeeds
    storage.publish_bundle(src, BUCKET, prefix, client=fresh, config=_small_mp())
    assert storage.list_bundles(BUCKET, base, client=fresh) == [prefix]


@pytest.mark.integration
def test_short_outage_is_retried(s3_env, tmp_path):
    """The store is down for ~2 s when an upload starts: botocore's backoff rides it out."""
    f = _write(tmp_path / "a.bin", os.urandom(200_000))
    key = f"{_prefix('outage')}/a.bin"
    client = storage.make_client(max_attempts=10, connect_timeout=2)
    counts = _count_requests(client)
    s3_env.stop_proxy()
    restarter = threading.Timer(1.0, s3_env.start_proxy)
    restarter.start()
    try:
        res = storage.upload_file(f, BUCKET, key, client=client, skip_if_same=False)
    finally:
        restarter.join()
        if not s3_env.proxy_running():
            s3_env.start_proxy()
    assert counts["total"] >= 2, "expected at least one retried request"
    assert storage.head(BUCKET, key, client=client)["Metadata"]["sha256"] == res.sha256


@pytest.mark.integration
def test_nothing_secret_in_logs(s3_env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="pipelines.tracking.storage")
    src = _write(tmp_path / "d" / "f.txt", b"data")
    storage.upload_prefix(src.parent, BUCKET, _prefix("logs"))
    secret = s3_env.secret_access_key
    assert secret not in caplog.text
    assert secret not in s3_env.log_text(), "the S3 server logged the secret key"
