"""``--model models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` in the CLI (pipelines/tracking/model_uri.py).

Without a server: the CLI's URI plumbing (``sidn.model_uris`` entry points): a plain path works
as before, an unknown scheme, no resolver installed, a resolver's failure and ``calibrate`` on a
URI are clear errors naming the URI (exit 2); the ``models`` resolver is registered.

Against a real MLflow server (tests/helpers/fixtures_mlflow.py: basic-auth, the release guard): a tiny
calibrated bundle is logged as the pyfunc model and registered, the release manager sets
``champion``; then, as a read-only user, ``sidn predict --model models:/NAME@champion`` and
``sidn export --model models:/NAME/VERSION`` give byte-identical outputs to the local bundle; a
second call uses the per-version cache (no download); moving the alias resolves to the new
version; an unknown alias, version or model exits 2 naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.fixtures_mlflow import (  # noqa: F401
    PIPELINE_USER, RELEASE_MANAGER, VIEWER, as_user, mlflow_auth, mlflow_env, mlflow_server,
)
from helpers.data import texture, write_png
from sidn import cli
from sidn.bundle import save_bundle
from sidn.config import SIDNConfig
from sidn.inference import Predictor
from sidn.model.sidn import SIDN

SIZE = 64


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _photos(root: Path) -> Path:
    rng = np.random.default_rng(3)
    photos = root / "photos"
    for i, size in enumerate((64, 100, 64)):
        img = texture(rng, size)
        if i == 2:
            img[10:30, 20:40] = 250  # a bright defect
        write_png(photos / f"{i}.png", img)
    return photos


def _bundle(path: Path, seed: int = 0, quantile: float = 0.8) -> Path:
    """A random-init SIDN (64 px, C=4, K=3) calibrated to cut a texture's map at ``quantile``."""
    cfg = SIDNConfig()
    cfg.model.channels, cfg.model.clusters, cfg.data.image_size = 4, 3, SIZE
    torch.manual_seed(seed)
    model = SIDN(cfg.model)
    with torch.no_grad():
        model.train()
        model(torch.rand(4, 1, SIZE, SIZE))
    model.eval()
    image = texture(np.random.default_rng(seed), SIZE).astype(np.float32) / 255.0
    amap = Predictor(model, cfg.infer, SIZE).predict([image])[0].anomaly_map
    model.threshold.fill_(float(np.quantile(amap, quantile)))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_bundle(model, cfg, path)
    return path


# ---------------------------------------------------------------------------------------------
# no server
# ---------------------------------------------------------------------------------------------


def test_models_resolver_is_registered() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group=cli.MODEL_URI_GROUP)}
    assert eps.get("models") == "pipelines.tracking.model_uri:resolve", "re-run pip install -e . after editing pyproject.toml"


def test_paths_and_uris_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.model_uri_scheme("runs/carpet/model.pt") is None
    assert cli.model_uri_scheme("C:/models/model.pt") is None  # a drive letter is not a scheme
    assert cli.model_uri_scheme("models:/sidn-carpet@champion") == "models"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd:name.pt").write_bytes(b"x")
    assert cli.model_uri_scheme("odd:name.pt") is None  # an existing file is a path
    assert cli.resolve_model("runs/x/model.pt") == Path("runs/x/model.pt")


def test_uri_errors_name_the_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path)

    def run(*argv: str) -> tuple[int, str]:
        code = cli.main(list(argv))
        return code, capsys.readouterr().err

    code, err = run("predict", "--model", "gs://bucket/model.pt", "photos", "--out", "p")
    assert code == 2 and "gs://bucket/model.pt" in err and "no resolver for 'gs:'" in err

    monkeypatch.setattr(cli, "model_uri_resolvers", lambda: {})  # the stack extras not installed
    code, err = run("export", "--model", "models:/sidn-carpet@champion", "--out", "c.onnx")
    assert code == 2 and "models:/sidn-carpet@champion" in err and "pip install" in err

    def broken(uri: str) -> Path:
        raise ConnectionError("server down")

    monkeypatch.setattr(cli, "model_uri_resolvers", lambda: {"models": broken})
    code, err = run("evaluate", "--model", "models:/sidn-carpet/3", "--category", "carpet", "--out", "e")
    assert code == 2 and "models:/sidn-carpet/3" in err and "server down" in err

    code, err = run("calibrate", "--model", "models:/sidn-carpet/3", "--category", "carpet", "--out", "c")
    assert code == 2 and "models:/sidn-carpet/3" in err and "local model.pt" in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "c.onnx").exists()


def test_resolver_parses_and_needs_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from pipelines.tracking import model_uri

    assert model_uri.parse("models:/sidn-carpet@champion") == model_uri.ModelRef("sidn-carpet", alias="champion")
    assert model_uri.parse("models:/sidn-carpet/3") == model_uri.ModelRef("sidn-carpet", version="3")
    for bad in ("models:/sidn-carpet", "models:/sidn-carpet/latest", "models:/a@b/c"):
        with pytest.raises(model_uri.ModelURIError, match="models:/NAME@ALIAS"):
            model_uri.parse(bad)
    key = model_uri.server_key("http://alice:secret@127.0.0.1:5000")
    assert key.startswith("127.0.0.1_5000-") and "secret" not in key and "alice" not in key
    # the default local store is not created as a side effect of a look-up
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(model_uri.ModelURIError, match="no model registry"):
        model_uri.resolve("models:/sidn-carpet@champion")
    assert not db.exists()


# ---------------------------------------------------------------------------------------------
# a real MLflow server
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(mlflow_env, mlflow_auth, tmp_path_factory):
    """Two versions of a fresh registered model (v1 and v2: other weights); ``champion`` -> v1."""
    import mlflow
    from mlflow import MlflowClient

    from pipelines.tracking.pyfunc_model import log_pyfunc_model

    root = tmp_path_factory.mktemp("model-uri")
    name = f"sidn-uri-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_env)
    bundles, versions = [], []
    for seed in (0, 1):
        bundle = _bundle(root / f"v{seed + 1}" / "model.pt", seed=seed)
        with mlflow.start_run():
            info = log_pyfunc_model(bundle)
        versions.append(mlflow.register_model(info.model_uri, name).version)
        bundles.append(bundle)
    with as_user(mlflow_auth, RELEASE_MANAGER):
        client.set_registered_model_alias(name, "champion", versions[0])
    return {"name": name, "versions": versions, "bundles": bundles, "client": client, "root": root}


def _cli(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


@pytest.mark.integration
def test_predict_and_export_from_the_registry(registered, mlflow_auth, tmp_path, monkeypatch, caplog, capsys):
    from pipelines.tracking import model_uri

    name, (v1, v2), (b1, b2) = registered["name"], registered["versions"], registered["bundles"]
    cache = tmp_path / "cache"
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(cache))
    photos = _photos(tmp_path)
    caplog.set_level(logging.INFO, logger="pipelines.tracking.model_uri")

    # the local bundle: the reference outputs
    assert _cli("predict", "--model", b1, photos, "--out", tmp_path / "local") == 0
    assert _cli("export", "--model", b1, "--format", "onnx", "--out", tmp_path / "local.onnx") == 0

    with as_user(mlflow_auth, VIEWER):  # a line station needs nothing but read access
        champion = f"models:/{name}@champion"
        assert _cli("predict", "--model", champion, photos, "--out", tmp_path / "reg") == 0
        assert "downloaded" in caplog.text and f"version {v1}" in caplog.text
        assert _cli("export", "--model", f"models:/{name}/{v1}", "--format", "onnx", "--out", tmp_path / "reg.onnx") == 0

    # the same outputs, byte for byte
    for sub in ("masks", "overlays"):
        local = sorted((tmp_path / "local" / sub).glob("*.png"))
        assert len(local) == 3
        for f in local:
            assert f.read_bytes() == (tmp_path / "reg" / sub / f.name).read_bytes(), f
    assert (tmp_path / "local" / "predictions.csv").read_text() == (tmp_path / "reg" / "predictions.csv").read_text()
    doc_local = json.loads((tmp_path / "local" / "predictions.json").read_text())
    doc_reg = json.loads((tmp_path / "reg" / "predictions.json").read_text())
    assert doc_reg["model_uri"] == champion and doc_reg["images"] == doc_local["images"]
    assert doc_reg["threshold"] == doc_local["threshold"]
    assert (tmp_path / "reg.onnx").read_bytes() == (tmp_path / "local.onnx").read_bytes()

    # one cache folder per version, holding exactly the registered bundle
    cached = sorted(cache.rglob("model.pt"))
    assert len(cached) == 1 and _sha256(cached[0]) == _sha256(b1)
    meta = json.loads((cached[0].parent / model_uri.META_FILE).read_text())
    assert meta["version"] == str(v1) and meta["sha256"] == _sha256(b1)
    assert not [p for p in cache.rglob(".*tmp*")], "no temporary folder left behind"

    # the second call uses the cache: no download at all
    import mlflow.artifacts

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded again although the version is cached")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    caplog.clear()
    with as_user(mlflow_auth, VIEWER):
        assert _cli("predict", "--model", champion, photos, "--out", tmp_path / "reg2") == 0
    assert "cached" in caplog.text
    assert (tmp_path / "reg2" / "predictions.csv").read_text() == (tmp_path / "local" / "predictions.csv").read_text()
    monkeypatch.undo()
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(cache))

    # the alias is looked up every time: moved to v2, the line uses v2
    with as_user(mlflow_auth, RELEASE_MANAGER):
        registered["client"].set_registered_model_alias(name, "champion", v2)
    try:
        path = model_uri.resolve(champion)
        assert _sha256(path) == _sha256(b2) and f"v{v2}-" in path.parent.name
        assert len(list(cache.rglob("model.pt"))) == 2
    finally:
        with as_user(mlflow_auth, RELEASE_MANAGER):
            registered["client"].set_registered_model_alias(name, "champion", v1)
    capsys.readouterr()


@pytest.mark.integration
def test_unknown_alias_version_or_model_exit_2_naming_it(registered, mlflow_auth, tmp_path, monkeypatch, capsys):
    name = registered["name"]
    monkeypatch.setenv("SIDN_MODEL_CACHE", str(tmp_path / "cache"))
    photos = _photos(tmp_path)
    cases = {
        f"models:/{name}@no-such-alias": "no-such-alias",
        f"models:/{name}/999": "version 999",
        # basic-auth answers 403 for a model it has no permission record of, i.e. a missing one
        "models:/sidn-no-such-model@champion": "registered model 'sidn-no-such-model'",
    }
    for uri, named in cases.items():
        code = _cli("predict", "--model", uri, photos, "--out", tmp_path / "out")
        err = capsys.readouterr().err
        assert code == 2, (uri, err)
        assert uri in err and named in err, err
        assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").rglob("model.pt"))
