"""Prefect flows against a real (temporary) Prefect server, on tiny data and params.

* retry policy: a transient error is retried and the task succeeds; bad data is not retried;
* the category flow end to end, its markdown artifact, and resuming after a failed stage
  (finished tasks come from the persisted results, the failed one runs again);
* the fan-out over categories on a local 2-process Dask cluster, with one category holding
  planted bad data: it fails in validation, the other category completes, the report lists both;
* the retraining deployment's cron schedule (from Python and from prefect.yaml);
* a model registered through Prefect can be promoted (one data-version definition for every path);
* the prefect.yaml deployment on a real process worker: a scheduled run in a tiny copy of the
  repository runs one task per category and stage, records dvc.lock, and registers a challenger
  that `sidn promote` accepts.
"""

from __future__ import annotations

import json
import os
import pickle
from datetime import datetime, timezone
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.fixtures_mlflow import RELEASE_MANAGER, as_user, mlflow_auth, mlflow_env, mlflow_server, stop_group  # noqa: F401
from helpers.pipeline import REPO, make_tiny_repo, pipeline_env, run_python, write_tiny_params
from helpers.data import make_mvtec_tree

pytest_plugins = ["helpers.fixtures_prefect"]

#: A 4-step model cannot reach the real floors; these tests check the data-version path of the gate.
OPEN_GATE = {"min_pixel_auroc": 0.0, "min_catch_rate": 0.0, "max_false_alarm_rate": 1.0, "max_image_far": 1.0,
             "min_pixel_auroc_delta": -1.0, "min_aupro_delta": -1.0}

flows = pytest.importorskip("pipelines.orchestration.flows")

from prefect import flow  # noqa: E402

from pipelines.layout import CategoryPaths, file_md5  # noqa: E402
from pipelines.orchestration import RETRAIN_CRON, policy, tasks  # noqa: E402
from pipelines.orchestration.deployment import DEPLOYMENT_NAME, retrain_deployment  # noqa: E402
from sidn.data.errors import DataError  # noqa: E402


def _data(root: Path, categories=("carpet",), n_train: int = 12) -> Path:
    for i, category in enumerate(categories):
        make_mvtec_tree(root, category, n_train=n_train, n_test_good=2, defects={"cut": 2}, size=64, seed=i)
    return root


# ---------------------------------------------------------------------------------------------
# retry policy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, transient",
    [
        (OSError("stale NFS handle"), True),
        (ConnectionError("registry unreachable"), True),
        (TimeoutError("slow disk"), True),
        (policy.TransientError("try again"), True),
        (FileNotFoundError("gone"), False),
        (PermissionError("denied"), False),
        (DataError("data/x.png", "not an image"), False),
        (ValueError("bad parameter"), False),
        (RuntimeError("bug"), False),
    ],
)
def test_is_transient(exc, transient):
    assert policy.is_transient(exc) is transient


def test_data_problem_survives_pickling():
    err = policy.DataProblem("data/wood/train/good/000.png", "cannot decode")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, DataError) and str(back) == str(err)


@pytest.fixture
def tiny_cfg(tmp_path):
    params = write_tiny_params(tmp_path / "params.yaml", tmp_path / "data", ["carpet"])
    return flows.resolve_config(params).to_dict()


def test_transient_error_is_retried_then_succeeds(prefect_server, tmp_path, tiny_cfg, monkeypatch):
    calls = []

    def flaky(cfg, category, out_dir, work):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("simulated I/O hiccup")
        return {"category": category, "passed": True}

    monkeypatch.setattr(tasks.prepare_stage, "run", flaky)
    task = tasks.prepare.with_options(retry_delay_seconds=0, result_storage=tmp_path / "results")

    @flow
    def once():
        return task(tiny_cfg, "carpet", str(tmp_path / "runs"), "fp", None)

    result = once()
    assert result["passed"] is True and result["stage"] == "prepare"
    assert len(calls) == 2


def test_bad_data_is_not_retried(prefect_server, tmp_path, tiny_cfg, monkeypatch):
    calls = []

    def bad(cfg, category, out_dir, work):
        calls.append(1)
        raise DataError(tmp_path / "data/carpet/train/good/000.png", "cannot decode image")

    monkeypatch.setattr(tasks.prepare_stage, "run", bad)
    task = tasks.prepare.with_options(retry_delay_seconds=0, result_storage=tmp_path / "results")

    @flow
    def once():
        return task(tiny_cfg, "carpet", str(tmp_path / "runs"), "fp", None)

    state = once(return_state=True)
    assert state.is_failed()
    assert len(calls) == 1
    with pytest.raises(DataError, match="000.png: cannot decode image"):
        state.result()


# ---------------------------------------------------------------------------------------------
# category flow end to end + resume
# ---------------------------------------------------------------------------------------------


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_category_flow_end_to_end_and_resume(prefect_server, tmp_path, monkeypatch, mlflow_tmp):
    _data(tmp_path / "data")
    params = write_tiny_params(tmp_path / "params.yaml", "data", ["carpet"])  # relative to the params file
    runs = tmp_path / "runs"
    paths = CategoryPaths(runs, "carpet")
    # the code fingerprint is part of every cache key; pin it so that edits elsewhere in the
    # working tree during the test cannot invalidate the cache between the two runs
    monkeypatch.setattr(policy, "code_fingerprint", lambda: "pinned")

    # 1st run: calibration fails deterministically (after validate, defects and train finished)
    def broken(*args, **kwargs):
        raise ValueError("simulated calibration bug")

    real_calibrate = tasks.calibrate_stage.run
    monkeypatch.setattr(tasks.calibrate_stage, "run", broken)
    state = flows.category_pipeline("carpet", str(params), runs_root=str(runs), return_state=True)
    assert state.is_failed() and "simulated calibration bug" in str(state.message)
    assert paths.trained_model.is_file() and not paths.model.exists() and not paths.metrics.exists()
    trained_md5 = file_md5(paths.trained_model)

    # 2nd run: the finished stages must come from the persisted results (they would fail now)
    monkeypatch.setattr(tasks.calibrate_stage, "run", real_calibrate)
    for stage in (tasks.prepare_stage, tasks.defects_stage, tasks.train_stage):
        monkeypatch.setattr(stage, "run", broken)
    results = flows.category_pipeline("carpet", str(params), runs_root=str(runs))

    assert set(results) == {"prepare", "defects", "train", "calibrate", "evaluate", "register"}
    assert file_md5(paths.trained_model) == trained_md5
    for path in paths.outputs("calibrate") + paths.outputs("evaluate"):
        assert path.exists(), path
    metrics = results["evaluate"]
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and 0.0 <= metrics["aupro"] <= 1.0
    registered = results["register"]
    assert registered["status"] == "registered" and registered["model"] == "sidn-carpet", registered
    assert registered["version"] >= 1 and registered["alias"] == "challenger"
    assert not (paths.dir / ".work").exists(), "scratch folders are removed after success"

    artifacts = _artifacts("sidn-metrics")
    assert artifacts and any("| carpet |" in (a.data or "") for a in artifacts)


# ---------------------------------------------------------------------------------------------
# fan-out on a local Dask cluster, one category with bad data
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_fan_out_on_local_dask_cluster_isolates_a_bad_category(prefect_server, tmp_path, mlflow_tmp):
    data = _data(tmp_path / "data", ("carpet", "wood"))
    bad = data / "wood" / "train" / "good" / "003.png"
    bad.write_bytes(b"this is not a PNG")  # planted bad data
    params = write_tiny_params(tmp_path / "params.yaml", data, ["carpet", "wood"])
    runs = tmp_path / "runs"

    state = flows.all_categories(
        params_path=str(params), runs_root=str(runs), dask_workers=2, gpus=True,
        register_models=False, return_state=True,
    )
    assert state.is_failed() and "wood (prepare)" in state.message
    summary = state.result(raise_on_failure=False)
    assert summary["carpet"]["status"] == "completed"
    assert summary["wood"] == {**summary["wood"], "status": "failed", "stage": "prepare"}
    assert "003.png" in summary["wood"]["message"]

    carpet, wood = CategoryPaths(runs, "carpet"), CategoryPaths(runs, "wood")
    for stage in ("prepare", "defects", "train", "calibrate", "evaluate"):
        assert all(p.exists() for p in carpet.outputs(stage)), stage
        assert not any(p.exists() for p in wood.outputs(stage)), stage
    assert (wood.work("prepare") / "validation.md").is_file(), "the failed validation report is kept"

    summary_md = (tmp_path / "reports" / "summary.md").read_text()
    assert "| carpet |" in summary_md and "wood" in summary_md and "1/2" in summary_md


# ---------------------------------------------------------------------------------------------
# schedule
# ---------------------------------------------------------------------------------------------


def test_retrain_deployment_has_the_cron_schedule(prefect_server):
    from prefect.client.orchestration import get_client

    deployment = retrain_deployment(cron="15 4 * * 1", name="sidn-retrain-test")
    assert deployment.schedules[0].schedule.cron == "15 4 * * 1"
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    assert [s.schedule.cron for s in stored.schedules] == ["15 4 * * 1"]
    assert stored.schedules[0].schedule.timezone == "UTC"
    # the repository is made absolute when the deployment is created, not where the server runs
    assert stored.parameters == {"repo": str(Path(".").resolve()), "push": False, "max_parallel": None}


def test_prefect_yaml_deployment():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == DEPLOYMENT_NAME]
    assert deployment["entrypoint"] == "pipelines/orchestration/flows.py:retrain"
    assert deployment["schedules"][0]["cron"] == RETRAIN_CRON
    assert deployment["work_pool"]["name"]
    module, _, name = deployment["entrypoint"].partition(":")
    assert (REPO / module).is_file() and getattr(flows, name).name == "sidn-retrain"
    assert set(deployment["parameters"]) <= set(flows.retrain.parameters.properties)
    # the working directory is a deploy-time value (a build step's output), not a worker variable
    (pull,) = spec["pull"]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert "$" not in directory, "a {{ $VAR }} is resolved on the worker, where nothing sets it"
    step_ids = [step[next(iter(step))].get("id") for step in spec["build"]]
    assert directory.strip("{} ").split(".")[0] in step_ids


# ---------------------------------------------------------------------------------------------
# registered through Prefect, then promoted
# ---------------------------------------------------------------------------------------------


def _promote(cwd: Path, params: Path, auth, *extra: str) -> subprocess.CompletedProcess:
    """`sidn promote --category carpet --approve --by qa` as the release manager, in ``cwd``."""
    env = pipeline_env({"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
                        "MLFLOW_EXPERIMENT_NAME": os.environ["MLFLOW_EXPERIMENT_NAME"],
                        **auth.client_env(RELEASE_MANAGER)})
    sidn = Path(sys.executable).with_name("sidn")
    return subprocess.run([str(sidn), "promote", "--category", "carpet", "--params", str(params), "--approve",
                           "--by", "qa", *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(400)
def test_model_registered_through_prefect_is_promotable(prefect_server, tmp_path, monkeypatch, mlflow_env,
                                                        mlflow_auth):
    from mlflow import MlflowClient

    from pipelines.tracking.runs import data_version

    _data(tmp_path / "data")
    # a relative data root, as in params.yaml: the flow makes it absolute, DVC records it relative
    params = write_tiny_params(tmp_path / "params.yaml", "data", ["carpet"], extra={"register": OPEN_GATE})
    monkeypatch.setattr(policy, "code_fingerprint", lambda: "pinned")
    results = flows.category_pipeline("carpet", str(params), runs_root=str(tmp_path / "runs"))
    registered = results["register"]
    assert registered["status"] == "registered", registered

    client = MlflowClient(mlflow_env)
    tags = client.get_model_version("sidn-carpet", str(registered["version"])).tags
    monkeypatch.chdir(tmp_path)
    cfg = flows.load_params(params)
    assert tags["data_version"] == data_version(cfg, "carpet") != "unknown"

    proc = _promote(tmp_path, params, mlflow_auth)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "[PASS] current_data" in out and "REFUSED" not in out, out
    assert client.get_model_version_by_alias("sidn-carpet", "champion").version == str(registered["version"])


# ---------------------------------------------------------------------------------------------
# the prefect.yaml deployment on a real process worker, end to end
# ---------------------------------------------------------------------------------------------


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(1)
    tail = log.read_text()[-6000:] if log and log.exists() else ""
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{tail}")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_scheduled_deployment_on_a_process_worker(prefect_server, tmp_path, mlflow_env, mlflow_auth):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime
    from prefect.settings import PREFECT_API_URL

    from pipelines.tracking.runs import data_version

    repo = make_tiny_repo(tmp_path / "repo", ["carpet"])
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["register"].update(OPEN_GATE)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = pipeline_env({
        "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": mlflow_env, "MLFLOW_EXPERIMENT_NAME": os.environ["MLFLOW_EXPERIMENT_NAME"],
        **mlflow_auth.client_env("sidn-pipeline"),
    })
    env.pop("SIDN_REPO", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    pool = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]["work_pool"]["name"]

    # the worker as `make up` starts it (infra/stack.py), in another folder than the repository
    (tmp_path / "elsewhere").mkdir()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([prefect, "worker", "start", "--pool", pool, "--type", "process", "--name",
                                   "test-worker"], cwd=tmp_path / "elsewhere", env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with get_client(sync_client=True) as client:
            def pool_ready():
                try:
                    return client.read_work_pool(pool)
                except Exception:
                    return None

            _wait(pool_ready, 120, "the worker creating its pool", worker, log)
            deployed = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=repo, env=env,
                                      capture_output=True, text=True, timeout=300)
            assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-4000:]
            deployment = client.read_deployment_by_name(f"sidn-retrain/{DEPLOYMENT_NAME}")
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}}]
            assert [s.schedule.cron for s in deployment.schedules] == [RETRAIN_CRON]

            # a scheduled run, due now: the worker picks it up like the cron's
            t0 = datetime.now(timezone.utc)
            run = client.create_flow_run_from_deployment(deployment.id, parameters={"max_parallel": 1})
            final = _wait(lambda: (lambda r: r if r.state.is_final() else None)(client.read_flow_run(run.id)),
                          700, "the scheduled flow run finishing", worker, log)
            assert final.state.is_completed(), f"{final.state}\n{log.read_text()[-6000:]}"

            task_runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                start_time=TaskRunFilterStartTime(after_=t0)))
            by_name = {t.name: t for t in task_runs}
            for name in ("prepare", "defects", "train", "calibrate", "evaluate", "register"):
                task_run = by_name.get(f"{name}[carpet]")
                assert task_run is not None, sorted(by_name)
                assert task_run.state.is_completed(), (name, task_run.state)
                assert task_run.empirical_policy.retries >= 1, name
    finally:
        stop_group(worker)

    # lineage: every stage recorded in dvc.lock, nothing left to reproduce
    status = run_python(repo, "-m", "dvc", "status")
    assert "up to date" in status.stdout, status.stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {"prepare@carpet", "train@carpet", "evaluate@carpet", "report", "register"} <= set(lock)
    registered = json.loads((repo / "reports/registered.json").read_text())["categories"]["carpet"]
    assert registered["status"] == "registered", registered

    # the challenger's data version is what dvc.lock records; `sidn promote` accepts it
    (data_dep,) = [d for d in lock["prepare@carpet"]["deps"] if d["path"].startswith("data/")]
    cfg = flows.load_params(repo / "params.yaml")
    cfg.data.root = str(repo / cfg.data.root)
    from mlflow import MlflowClient

    tags = MlflowClient(mlflow_env).get_model_version("sidn-carpet", str(registered["version"])).tags
    assert tags["data_version"] + ".dir" == data_dep["md5"] == data_version(cfg, "carpet") + ".dir"
    proc = _promote(repo, repo / "params.yaml", mlflow_auth)
    assert proc.returncode == 0 and "[PASS] current_data" in proc.stdout, proc.stdout + proc.stderr
