"""Model bundles through the S3 store: ``sidn registry publish`` and ``--model s3://...`` (pipelines/tracking/distribution.py).

Without a server: the ``s3`` resolver is registered and a URI that is not a published bundle is a
clear error (exit 2) naming it.

Against a real MLflow server (tests/helpers/fixtures_mlflow.py) and a real S3 store (tests/helpers/fixtures_s3.py:
Swift + s3api): the champion of a registered model is published to the store, and
``sidn predict --model s3://...@champion`` gives byte-identical outputs to
``--model models:/...@champion``; the second call uses the per-version cache; publishing again
sends nothing; moving the champion and publishing again moves the alias pointer, and ``@champion``
resolves to the new version. A version without ``_COMPLETE`` and a tampered ``model.pt`` are
refused naming the URI, and nothing is left in the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from helpers.fixtures_mlflow import RELEASE_MANAGER, VIEWER, as_user, mlflow_auth, mlflow_env, mlflow_server  # noqa: F401
from helpers.fixtures_s3 import s3_env, s3_server  # noqa: F401
from sidn import cli
from test_model_uri import _bundle, _photos, registered  # noqa: F401  (same tiny models and photos)

BUCKET = "sidn-data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _outputs(folder: Path) -> dict[str, bytes]:
    """What `sidn predict` wrote that must not depend on where the bundle came from."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}
    files["predictions.csv"] = (folder / "predictions.csv").read_bytes()
    doc = json.loads((folder / "predictions.json").read_text())
    files["images"] = json.dumps(doc["images"], sort_keys=True).encode()
    files["threshold"] = json.dumps(doc["threshold"]).encode()
    return files


def _count_writes(client) -> dict[str, int]:
    """Count the requests of ``client`` that write (PUT, multipart) to the store."""
    counts: dict[str, int] = {}

    def hook(event_name: str = "", **kwargs) -> None:  # noqa: ANN003
        op = event_name.rsplit(".", 1)[-1]
        if op in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject"):
            counts[op] = counts.get(op, 0) + 1

    client.meta.events.register("before-send.s3", hook)
    return counts


# ---------------------------------------------------------------------------------------------
# no server
# ---------------------------------------------------------------------------------------------


def test_s3_resolver_is_registered() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group=cli.MODEL_URI_GROUP)}
    assert eps.get("s3") == "pipelines.tracking.distribution:resolve", "re-run pip install -e . after editing pyproject.toml"


def test_uris_are_parsed_and_bad_ones_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from pipelines.tracking import distribution, model_uri

    ref = distribution.parse("s3://sidn-data/bundles/models/sidn-carpet@champion")
    assert ref == distribution.BundleRef("sidn-data", "sidn-carpet", alias="champion")
    assert distribution.parse("s3://b/bundles/models/sidn-carpet/3/").version == "3"
    assert distribution.version_uri("b", "n", "3") == "s3://b/bundles/models/n/3"
    assert distribution.alias_key("n", "champion") == "bundles/models/n/aliases/champion.json"
    assert issubclass(distribution.DistributionError, model_uri.ModelURIError)

    monkeypatch.chdir(tmp_path)
    _photos(tmp_path)
    for bad in ("s3://bucket/model.pt", "s3://sidn-data/bundles/models/sidn-carpet",
                "s3://sidn-data/bundles/models/sidn-carpet/aliases"):
        code, _, err = _cli(capsys, "predict", "--model", bad, "photos", "--out", "p")
        assert code == 2 and bad in err and "s3://BUCKET/bundles/models/NAME/VERSION" in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------------------------------------
# a real MLflow server and a real S3 store
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_publish_the_champion_and_predict_from_the_store(registered, mlflow_env, mlflow_auth, s3_env, tmp_path,
                                                         monkeypatch, caplog, capsys):
    from pipelines.tracking import distribution, storage

    name, (v1, v2), (b1, b2) = registered["name"], registered["versions"], registered["bundles"]
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(tmp_path / "publisher-cache"))
    champion = f"models:/{name}@champion"
    s3_champion = f"s3://{BUCKET}/bundles/models/{name}@champion"
    s3_v1 = f"s3://{BUCKET}/bundles/models/{name}/{v1}"

    # publish (read access to the registry is enough; the store needs write access)
    with as_user(mlflow_auth, VIEWER):
        code, out, err = _cli(capsys, "registry", "publish", champion)
    assert code == 0, err
    assert out.splitlines() == [f"{s3_v1}  version {v1} (published)", f"{s3_champion}  -> version {v1} (set)"]
    client = s3_env.client()
    prefix = f"bundles/models/{name}/{v1}"
    manifest = storage.read_manifest(BUCKET, prefix, client=client)
    assert sorted(manifest["files"]) == ["model.pt", "source.json"]
    assert manifest["files"]["model.pt"]["sha256"] == _sha256(b1)
    pointer = json.loads(client.get_object(Bucket=BUCKET, Key=distribution.alias_key(name, "champion"))["Body"].read())
    assert pointer["version"] == str(v1) and pointer["published_at"]

    # the line: only the store, no registry at all
    photos = _photos(tmp_path)
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(tmp_path / "line-cache"))
    with as_user(mlflow_auth, VIEWER):
        assert _cli(capsys, "predict", "--model", champion, photos, "--out", tmp_path / "reg")[0] == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # unreachable: the s3 path must not need it
    caplog.set_level(logging.INFO, logger="pipelines.tracking.distribution")
    code, _, err = _cli(capsys, "predict", "--model", s3_champion, photos, "--out", tmp_path / "s3")
    assert code == 0, err
    assert "downloaded" in caplog.text and f"version {v1}" in caplog.text
    assert _outputs(tmp_path / "s3") == _outputs(tmp_path / "reg")
    assert json.loads((tmp_path / "s3" / "predictions.json").read_text())["model_uri"] == s3_champion
    cached = sorted((tmp_path / "line-cache" / "s3").rglob("model.pt"))
    assert len(cached) == 1 and _sha256(cached[0]) == _sha256(b1)
    source = json.loads((cached[0].parent / "source.json").read_text())
    assert source["registered_model"] == name and source["version"] == str(v1) and source["alias"] == "champion"
    assert source["sha256"] == _sha256(b1) and source["run_id"]

    # a second call uses the cache; the version URI names the same bundle
    caplog.clear()
    assert _cli(capsys, "predict", "--model", s3_v1, photos, "--out", tmp_path / "s3v")[0] == 0
    assert "cached" in caplog.text and "downloaded" not in caplog.text
    assert _outputs(tmp_path / "s3v") == _outputs(tmp_path / "reg")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_env)
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(tmp_path / "publisher-cache"))

    # publishing again sends nothing
    writes = _count_writes(client)
    with as_user(mlflow_auth, VIEWER):
        again = distribution.publish(champion, BUCKET, client=client)
    assert writes == {}, f"a second publish wrote to the store: {writes}"
    assert not again.uploaded and again.previous_version == str(v1) and again.version_uri == s3_v1
    assert storage.read_manifest(BUCKET, prefix, client=client) == manifest

    # the champion moves to v2 and is published: the pointer follows, @champion resolves to v2
    with as_user(mlflow_auth, RELEASE_MANAGER):
        registered["client"].set_registered_model_alias(name, "champion", v2)
    try:
        with as_user(mlflow_auth, VIEWER):
            code, out, err = _cli(capsys, "registry", "publish", champion)
        assert code == 0, err
        assert f"{s3_champion}  -> version {v2} (moved from version {v1})" in out
        monkeypatch.setenv("SIDN_MODEL_CACHE", str(tmp_path / "line-cache"))
        path = distribution.resolve(s3_champion)
        assert _sha256(path) == _sha256(b2) and path.parent.name.startswith(f"v{v2}-")
        assert _sha256(distribution.resolve(s3_v1)) == _sha256(b1)  # v1 stays published
        assert not list((tmp_path / "line-cache").rglob(".*tmp*")), "temporary folder left behind"
    finally:
        with as_user(mlflow_auth, RELEASE_MANAGER):
            registered["client"].set_registered_model_alias(name, "champion", v1)


@pytest.mark.integration
def test_incomplete_versions_and_missing_aliases_are_refused(s3_env, tmp_path, monkeypatch, capsys):
    from pipelines.tracking import storage

    name = f"sidn-partial-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(tmp_path / "cache"))
    bundle = _bundle(tmp_path / "b" / "model.pt")
    storage.upload_file(bundle, BUCKET, f"bundles/models/{name}/7/model.pt")  # no _COMPLETE: an interrupted publish
    photos = _photos(tmp_path)
    cases = {
        f"s3://{BUCKET}/bundles/models/{name}/7": "_COMPLETE",
        f"s3://{BUCKET}/bundles/models/{name}/8": "_COMPLETE",
        f"s3://{BUCKET}/bundles/models/{name}@champion": "no alias pointer",
    }
    for uri, named in cases.items():
        code, _, err = _cli(capsys, "predict", "--model", uri, photos, "--out", tmp_path / "out")
        assert code == 2, (uri, err)
        assert uri in err and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").rglob("model.pt"))


@pytest.mark.integration
def test_a_tampered_bundle_is_refused_and_not_cached(s3_env, tmp_path, monkeypatch, capsys):
    from pipelines.tracking import storage

    name = f"sidn-tampered-{uuid.uuid4().hex[:8]}"
    cache = tmp_path / "cache"
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(cache))
    folder = tmp_path / "bundle"
    _bundle(folder / "model.pt")
    prefix = f"bundles/models/{name}/1"
    storage.publish_bundle(folder, BUCKET, prefix)
    uri = f"s3://{BUCKET}/{prefix}"
    other = _bundle(tmp_path / "other" / "model.pt", seed=5)
    storage.upload_file(other, BUCKET, f"{prefix}/model.pt")  # other bytes; the manifest is kept

    photos = _photos(tmp_path)
    code, _, err = _cli(capsys, "predict", "--model", uri, photos, "--out", tmp_path / "out")
    assert code == 2, err
    assert uri in err and "checksum mismatch" in err and _sha256(folder / "model.pt") in err, err
    assert not (tmp_path / "out").exists()
    assert not [p for p in cache.rglob("*") if p.is_file()], "a file was left in the cache"
    assert not [p for p in cache.rglob(".*tmp*")], "a temporary folder was left in the cache"
