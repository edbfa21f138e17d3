"""Prefect flows against a real (temporary) Prefect server, on tiny data and params.

* retry policy: a transient error is retried and the task succeeds; bad data is not retried;
* the category flow end to end, its markdown artifact, and resuming after a failed stage
  (finished tasks come from the persisted results, the failed one runs again);
* the fan-out over categories on a local 2-process Dask cluster, with one category holding
  planted bad data: it fails in validation, the other category completes, the report lists both;
* the retraining deployment's cron schedule (from Python and from prefect.yaml).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from helpers_pipeline import REPO, write_tiny_params
from helpers_data import make_mvtec_tree

pytest_plugins = ["fixtures_prefect"]

flows = pytest.importorskip("pipelines.flows")

from prefect import flow  # noqa: E402

from pipelines.params import CategoryPaths  # noqa: E402
from sidn.data.mvtec import DataError  # noqa: E402


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
        (flows.TransientError("try again"), True),
        (FileNotFoundError("gone"), False),
        (PermissionError("denied"), False),
        (DataError("data/x.png", "not an image"), False),
        (ValueError("bad parameter"), False),
        (RuntimeError("bug"), False),
    ],
)
def test_is_transient(exc, transient):
    assert flows.is_transient(exc) is transient


def test_data_problem_survives_pickling():
    err = flows.DataProblem("data/wood/train/good/000.png", "cannot decode")
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

    monkeypatch.setattr(flows.prepare_stage, "run", flaky)
    task = flows.validate_data.with_options(retry_delay_seconds=0, result_storage=tmp_path / "results")

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

    monkeypatch.setattr(flows.prepare_stage, "run", bad)
    task = flows.validate_data.with_options(retry_delay_seconds=0, result_storage=tmp_path / "results")

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
    monkeypatch.setattr(flows, "code_fingerprint", lambda: "pinned")

    # 1st run: calibration fails deterministically (after validate, defects and train finished)
    def broken(*args, **kwargs):
        raise ValueError("simulated calibration bug")

    real_calibrate = flows.calibrate_stage.run
    monkeypatch.setattr(flows.calibrate_stage, "run", broken)
    state = flows.category_pipeline("carpet", str(params), runs_root=str(runs), return_state=True)
    assert state.is_failed() and "simulated calibration bug" in str(state.message)
    assert paths.trained_model.is_file() and not paths.model.exists() and not paths.metrics.exists()
    trained_md5 = flows.file_md5(paths.trained_model)

    # 2nd run: the finished stages must come from the persisted results (they would fail now)
    monkeypatch.setattr(flows.calibrate_stage, "run", real_calibrate)
    for stage in (flows.prepare_stage, flows.defects_stage, flows.train_stage):
        monkeypatch.setattr(stage, "run", broken)
    results = flows.category_pipeline("carpet", str(params), runs_root=str(runs))

    assert set(results) == {"prepare", "defects", "train", "calibrate", "evaluate", "register"}
    assert flows.file_md5(paths.trained_model) == trained_md5
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

    deployment = flows.retrain_deployment(cron="15 4 * * 1", name="sidn-retrain-test")
    assert deployment.schedules[0].schedule.cron == "15 4 * * 1"
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    assert [s.schedule.cron for s in stored.schedules] == ["15 4 * * 1"]
    assert stored.schedules[0].schedule.timezone == "UTC"
    assert stored.parameters == {"repo": ".", "push": False, "parallel": False}


def test_prefect_yaml_deployment():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == flows.DEPLOYMENT_NAME]
    assert deployment["entrypoint"] == "pipelines/flows.py:retrain"
    assert deployment["schedules"][0]["cron"] == flows.DEFAULT_CRON
    assert deployment["work_pool"]["name"]
    module, _, name = deployment["entrypoint"].partition(":")
    assert (REPO / module).is_file() and getattr(flows, name).name == "sidn-retrain"
