"""The real pipeline with its DVC remote and its MLflow artifacts in the real local object store.

Servers: the session's S3 store (OpenStack Swift + s3api, ``helpers.fixtures_s3.s3_server``) and an MLflow
tracking server whose ``--artifacts-destination`` is in the store's ``sidn-mlflow`` bucket. The
pipeline runs the way ``make run`` runs it after ``make up``: ``infra/with-env`` loads an
``env.sh`` written by the infra package itself (MLflow URI, S3 endpoint and keys), and the DVC remote
is in ``.dvc/config.local`` exactly as ``infra/up`` writes it.

* ``test_pipeline_round_trip_through_the_object_store``: `dvc repro` of the repository's own
  dvc.yaml (TINY params, one category; the stages up to ``report`` run while the MLflow server
  starts, then `dvc repro` runs ``register`` only) registers the model on the server, `dvc push`, wipe the
  local cache and every cached output, `dvc pull`: bytes identical, `dvc status` clean, cache and
  remote in sync. The registered bundle is an object in the MLflow bucket; the S3 secret is in
  ``.dvc/config.local`` only (not in params.yaml, dvc.yaml, dvc.lock, .dvc/config, any committed
  file, MLflow params/tags, the report or the command output). Prints repro/push/pull times.
* ``test_make_run_pushes_after_a_successful_repro_when_a_remote_is_set``: the ``make run`` recipe
  (``infra/with-env infra/repro-and-push``) on a one-stage dvc.yaml: no remote -> a line saying the
  push was skipped; a remote -> the output is pushed; a failing repro -> no push, non-zero exit.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.fixtures_s3 import S3Server, s3_server  # noqa: F401  (session server, refcounted)
from helpers.infra import BIN, clean_env, configure_dvc_remote, run_cmd, start_mlflow_s3, write_infra_state
from helpers.pipeline import REPO, git, make_tiny_repo, pipeline_env

from infra.ports import free_ports
from infra.swift import DATA_BUCKET, MLFLOW_BUCKET

pytestmark = pytest.mark.integration

WITH_ENV = str(REPO / "infra" / "with-env")
REPRO_AND_PUSH = str(REPO / "infra" / "repro-and-push")
DVC = str(BIN / "dvc")


def _cached_outs(repo: Path) -> list[Path]:
    """Every output DVC keeps in its cache and pushes (all `outs` not marked ``cache: false``)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return sorted({Path(out.fs_path) for out in dvc_repo.index.outs if out.use_cache})


def _files(repo: Path, paths: list[Path]) -> dict[str, bytes]:
    """``{path relative to repo: bytes}`` of every file in ``paths`` (files or folders)."""
    found = {}
    for path in paths:
        for f in ([path] if path.is_file() else sorted(path.rglob("*"))):
            if f.is_file():
                found[f.relative_to(repo).as_posix()] = f.read_bytes()
    return found


def _keys(s3_server: S3Server, bucket: str, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _md5_key(prefix: str, data: bytes) -> str:
    """Where a DVC 3 remote keeps a file: ``<remote>/files/md5/<2 hex>/<30 hex>``."""
    digest = hashlib.md5(data).hexdigest()
    return f"{prefix}/files/md5/{digest[:2]}/{digest[2:]}"


@pytest.mark.timeout(600)
def test_pipeline_round_trip_through_the_object_store(s3_server, tmp_path):
    secret = s3_server.secret_access_key
    run_prefix = f"pipeline-tests/{uuid.uuid4().hex[:8]}"
    data_prefix, mlflow_prefix = f"{run_prefix}/dvc", f"{run_prefix}/mlflow"
    mlflow_uri = f"http://127.0.0.1:{free_ports(1)[0]}"
    # no AWS_/MLFLOW_ variable of ours: what the stages see comes from env.sh via infra/with-env
    env = clean_env(pipeline_env(), SIDN_INFRA_DIR=str(write_infra_state(tmp_path / "infra", s3_server, mlflow_uri)))
    # the MLflow server starts (~15-25 s) while the stages before `register`, which need no MLflow, run
    pool = ThreadPoolExecutor(max_workers=1)
    starting = pool.submit(start_mlflow_s3, s3_server, tmp_path / "mlflow-server", mlflow_prefix,
                           port=int(mlflow_uri.rsplit(":", 1)[1]))
    try:
        repo = make_tiny_repo(tmp_path / "repo", ["carpet"])
        configure_dvc_remote(repo, s3_server, data_prefix)
        t0 = time.monotonic()
        repro = run_cmd([WITH_ENV, DVC, "repro", "report"], repo, env, timeout=480)
        server = starting.result()
        rest = run_cmd([WITH_ENV, DVC, "repro"], repo, env, timeout=300)  # what `make run` runs: now `register`
        t_repro = time.monotonic() - t0
        assert re.findall(r"Running stage '([^']+)'", rest.stdout) == ["register"], rest.stdout
        registered = json.loads((repo / "reports" / "registered.json").read_text())
        assert registered["tracking_uri"] == server.uri, "the register stage did not use the MLflow server"
        entry = registered["categories"]["carpet"]
        assert entry["status"] == "registered", registered
        for local_store in ("mlflow.db", "mlruns", "mlartifacts"):
            assert not (repo / local_store).exists(), f"{local_store} written locally instead of on the server"
        # what git keeps (dvc.lock, metrics and plots with cache: false); the rest is in DVC's cache
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "dvc repro")

        outs = _cached_outs(repo)
        rel_outs = {p.relative_to(repo).as_posix() for p in outs}
        for expected in ("data/raw/sidn-default/carpet", "runs/carpet/prepare", "runs/carpet/defects.npz",
                         "runs/carpet/train/model.pt", "runs/carpet/model.pt", "runs/carpet/evaluate/overlays",
                         "reports/index.html"):
            assert expected in rel_outs, f"{expected} is not a cached DVC output: {sorted(rel_outs)}"
        before = _files(repo, outs)
        size = sum(len(b) for b in before.values())

        # --- push: every cached file is an object of the remote, at its content address
        t0 = time.monotonic()
        push = run_cmd([DVC, "push"], repo, env, timeout=300)
        t_push = time.monotonic() - t0
        keys = set(_keys(s3_server, DATA_BUCKET, data_prefix))
        missing = [rel for rel, data in before.items() if _md5_key(data_prefix, data) not in keys]
        assert not missing, f"not in s3://{DATA_BUCKET}/{data_prefix} after dvc push: {missing[:10]}"

        # --- wipe the local cache and every cached output, then pull
        shutil.rmtree(repo / ".dvc" / "cache")
        for path in outs:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        assert not any(p.exists() for p in outs)
        t0 = time.monotonic()
        pull = run_cmd([DVC, "pull"], repo, env, timeout=300)
        t_pull = time.monotonic() - t0
        after = _files(repo, outs)
        assert sorted(after) == sorted(before), set(before) ^ set(after)
        differ = [rel for rel in before if after[rel] != before[rel]]
        assert not differ, f"bytes differ after dvc pull: {differ[:10]}"
        status = run_cmd([DVC, "status"], repo, env)
        assert "Data and pipelines are up to date" in status.stdout, status.stdout
        cloud = run_cmd([DVC, "status", "--cloud"], repo, env)
        assert "in sync" in cloud.stdout, cloud.stdout
        assert not git(repo, "status", "--porcelain").stdout.strip(), "dvc pull changed tracked files"

        # --- the registered model: its bundle is an object in the MLflow bucket, served back by the server
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts

        client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
        version = client.get_model_version(entry["model"], str(entry["version"]))
        bundle = (repo / "runs" / "carpet" / "model.pt").read_bytes()
        mlflow_keys = _keys(s3_server, MLFLOW_BUCKET, mlflow_prefix)
        # the server keeps the version's files under its artifact destination, s3://sidn-mlflow/<prefix>
        location = client.get_model_version_download_uri(entry["model"], str(entry["version"]))
        assert location.startswith("mlflow-artifacts:/"), f"model files not proxied by the server: {location}"
        model_dir = f"{mlflow_prefix}/{location.removeprefix('mlflow-artifacts:').strip('/')}"
        bundle_key = f"{model_dir}/artifacts/model.pt"  # a pyfunc model's artifact keeps its file name
        assert bundle_key in mlflow_keys, (f"bundle of {entry['model']} v{entry['version']} ({location}) is not "
                                           f"s3://{MLFLOW_BUCKET}/{bundle_key}; the bucket has {mlflow_keys}")
        assert f"{model_dir}/MLmodel" in mlflow_keys
        stored = s3_server.client().get_object(Bucket=MLFLOW_BUCKET, Key=bundle_key)["Body"].read()
        assert stored == bundle, "the bundle in the MLflow bucket is not the pipeline's calibrated model"
        served = download_artifacts(artifact_uri=f"{location}/artifacts/model.pt", dst_path=str(tmp_path / "served"),
                                    tracking_uri=server.uri)
        assert Path(served).read_bytes() == bundle, "the server does not serve the bundle it stored"

        # --- no secret anywhere but .dvc/config.local (where infra/up puts it)
        assert secret in (repo / ".dvc" / "config.local").read_text()
        for rel in ("params.yaml", "dvc.yaml", "dvc.lock", ".dvc/config", "reports/index.html",
                    "reports/summary.md", "reports/registered.json"):
            assert secret not in (repo / rel).read_text(errors="replace"), f"the S3 secret is in {rel}"
        committed = git(repo, "ls-files", "-z").stdout.split("\0")
        leaked = [rel for rel in filter(None, committed) if secret.encode() in (repo / rel).read_bytes()]
        assert not leaked, f"the S3 secret is in committed files: {leaked}"
        runs = [r for exp in client.search_experiments() for r in client.search_runs([exp.experiment_id])]
        assert len(runs) >= 2, "expected the parent run and the carpet run"
        for r in runs:
            for kind, values in (("param", r.data.params), ("tag", r.data.tags)):
                bad = [k for k, v in values.items() if secret in str(v)]
                assert not bad, f"the S3 secret is in MLflow {kind}s {bad} of run {r.info.run_id}"
        assert all(secret not in str(v) for v in version.tags.values())
        output = "".join(p.stdout + p.stderr for p in (repro, rest, push, pull, status, cloud))
        assert secret not in output and secret not in server.log.read_text()
    finally:
        pool.shutdown(wait=True)
        if starting.exception() is None:  # (a server that failed to start was stopped already)
            assert starting.result().stop() in ("stopped", "killed")

    print(f"\n[pipeline-store] MLflow server healthy in {server.startup_seconds:.1f}s (beside the first stages); "
          f"dvc repro (tiny, 1 category, MLflow server + S3) {t_repro:.1f}s; "
          f"dvc push {t_push:.1f}s; dvc pull {t_pull:.1f}s (after wiping the cache and {len(outs)} outputs); "
          f"{len(before)} files, {size / 1e6:.2f} MB; {len(mlflow_keys)} MLflow objects in the store")


DVC_YAML_OK = 'stages:\n  build:\n    cmd: echo "$AWS_ENDPOINT_URL" > out.txt\n    outs:\n      - out.txt\n'


@pytest.mark.timeout(300)
def test_make_run_pushes_after_a_successful_repro_when_a_remote_is_set(s3_server, tmp_path):
    recipe = run_cmd(["make", "-n", "run"], REPO, clean_env()).stdout
    assert "infra/with-env infra/repro-and-push" in recipe, f"`make run` no longer runs the script tested here:\n{recipe}"

    repo = tmp_path / "repo"
    repo.mkdir()
    env = clean_env(pipeline_env(), SIDN_INFRA_DIR=str(write_infra_state(tmp_path / "infra", s3_server)))
    git(repo, "init", "-q")
    run_cmd([DVC, "init", "-q"], repo, env)
    (repo / "dvc.yaml").write_text(DVC_YAML_OK)
    make_run = [WITH_ENV, REPRO_AND_PUSH]

    # no DVC remote: repro runs (with the store's environment, from env.sh), the push is skipped with a line
    res = run_cmd(make_run, repo, env)
    assert "dvc push skipped: no default DVC remote" in res.stdout, res.stdout
    out = (repo / "out.txt").read_bytes()
    assert out.decode().strip() == s3_server.endpoint, "infra/with-env did not load env.sh"

    # a default remote (as infra/up writes it): the output is pushed
    prefix = f"make-run-tests/{uuid.uuid4().hex[:8]}"
    configure_dvc_remote(repo, s3_server, prefix)
    res = run_cmd(make_run, repo, env)
    assert "dvc push to the default remote 'storage'" in res.stdout, res.stdout
    key = _md5_key(prefix, out)
    assert key in _keys(s3_server, DATA_BUCKET, prefix), "out.txt was not pushed"
    assert s3_server.client().get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read() == out
    assert s3_server.secret_access_key not in res.stdout + res.stderr

    # a failing repro: non-zero exit, no push
    (repo / "dvc.yaml").write_text(DVC_YAML_OK.replace("> out.txt", "> out.txt; exit 3"))
    res = subprocess.run(make_run, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0, res.stdout + res.stderr
    assert "dvc push" not in res.stdout, res.stdout
