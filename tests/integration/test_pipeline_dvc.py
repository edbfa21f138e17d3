"""params.yaml + dvc.yaml: declarations match the code, and a real `dvc repro` on tiny settings.

The end-to-end test copies the repository (tracked and untracked-but-not-ignored files) into a
temporary git repo, shrinks params.yaml and the synth vars in dvc.yaml, and runs the real
pipeline: outputs, metrics, plots, the MLflow registration into the default local store, a
second `dvc repro` that does nothing, the Prefect retraining flow driving DVC (no remote: pull
skipped; nothing to do), and a failing validation that leaves none of the stage's outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.pipeline import REPO, TINY, make_tiny_repo, pipeline_env, run_python, set_tiny_params

pytest_plugins = ["helpers.fixtures_prefect"]

from pipelines import layout  # noqa: E402
from pipelines import params as P  # noqa: E402
from pipelines.stages import calibrate, defects, evaluate, prepare, register, report, train  # noqa: E402
from sidn.config import SIDNConfig  # noqa: E402

STAGE_MODULES = {"prepare": prepare, "defects": defects, "train": train, "calibrate": calibrate,
                 "evaluate": evaluate, "report": report, "register": register}


def _dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def _stage_body(spec: dict) -> dict:
    return spec["do"] if "foreach" in spec else spec


def _paths(entries: list) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


# ---------------------------------------------------------------------------------------------
# declarations
# ---------------------------------------------------------------------------------------------


def test_params_yaml_is_a_valid_config_with_a_paper_profile():
    cfg = SIDNConfig.from_yaml(REPO / "params.yaml")  # unknown keys would raise
    assert cfg.data.categories == ["carpet", "grid", "leather", "tile", "wood"]
    paper = P.load_params(REPO / "params.yaml", profile="paper")
    assert paper.train.steps > cfg.train.steps
    changed = {k for k in cfg.to_dict() if paper.to_dict()[k] != cfg.to_dict()[k]}
    assert changed == {"dgm", "train", "infer"}, "the paper profile sets the paper's DGM, training and post-processing"
    assert paper.infer.map_sigma == 0 and cfg.infer.map_sigma > 0  # the paper: a median filter, no blur
    args = P.profile_overrides(REPO / "params.yaml", "paper")
    assert f"train.steps={paper.train.steps}" in args
    from sidn.config import apply_overrides

    assert apply_overrides(cfg, args) == paper  # `dvc exp run -S ...` gives the same config
    with pytest.raises(ValueError, match="unknown profile 'nope'.*paper"):
        P.load_params(REPO / "params.yaml", profile="nope")


def test_every_stage_declares_exactly_the_params_its_code_reads():
    stages = _dvc_yaml()["stages"]
    assert set(STAGE_MODULES) | {"synth"} == set(stages)
    for name, module in STAGE_MODULES.items():
        declared = _stage_body(stages[name]).get("params", [])
        assert declared == module.PARAMS, f"dvc.yaml {name}.params != pipelines/stages/{name}.py PARAMS"
        for key in declared:
            P.select(SIDNConfig(), [key])  # every key exists in the config


def test_restricted_stage_config_ignores_undeclared_keys(tmp_path):
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["steps"] = 7
    raw["infer"]["median_kernel"] = 3
    params.write_text(yaml.safe_dump(raw))
    cfg = P.load_stage_config(calibrate.PARAMS, params)
    assert cfg.infer.median_kernel == 3 and cfg.train.steps == SIDNConfig().train.steps


def test_every_stage_lists_its_own_code_as_a_dependency():
    for name, spec in _dvc_yaml()["stages"].items():
        body = _stage_body(spec)
        assert f"pipelines.stages.{name} " in body["cmd"] + " "
        assert f"pipelines/stages/{name}.py" in body["deps"]
        for dep in body["deps"]:
            if "$" not in dep and not dep.startswith("runs"):  # runs/ is produced by the pipeline
                assert (REPO / dep).exists(), f"{name}: dependency {dep} does not exist"


def test_dvc_yaml_paths_follow_the_shared_layout():
    """dvc.yaml spells out the paths of pipelines.layout.CategoryPaths (which Prefect uses)."""
    stages = _dvc_yaml()["stages"]
    c = layout.CategoryPaths(Path("runs"), "${item}")
    expected = {
        "prepare": ({c.prepare}, set(), set()),
        "defects": ({c.defects}, set(), set()),
        "train": ({c.trained_model, c.train_config}, set(), {c.history}),
        "calibrate": ({c.model, c.calibration}, set(), set()),
        "evaluate": ({c.overlays, c.scores, c.metrics}, {c.headline}, {c.roc, c.pro}),
    }
    for name, (outs, metrics, plots) in expected.items():
        body = _stage_body(stages[name])
        assert _paths(body.get("outs")) == {str(p) for p in outs}, name
        assert _paths(body.get("metrics")) == {str(p) for p in metrics}, name
        assert _paths(body.get("plots")) == {str(p) for p in plots}, name
    assert _paths(stages["report"]["outs"]) == {f"{layout.REPORTS_DIR}/index.html", f"{layout.REPORTS_DIR}/summary.md"}
    assert stages["register"]["always_changed"] is False


def test_dvcignore_hides_scratch_and_prefect_results():
    text = (REPO / ".dvcignore").read_text()
    assert "runs/*/.work/" in text and "runs/.prefect/" in text


# ---------------------------------------------------------------------------------------------
# dvc repro, for real
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def repo_copy(tmp_path):
    return make_tiny_repo(tmp_path / "repo", ["carpet"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dvc_repro_end_to_end(repo_copy, prefect_server, monkeypatch):
    repo = repo_copy
    t0 = time.monotonic()
    first = run_python(repo, "-m", "dvc", "repro")
    first_s = time.monotonic() - t0
    log = first.stdout + first.stderr

    c = layout.CategoryPaths(repo / "runs", "carpet")
    for path in [c.prepare / "manifest.csv", c.defects, c.trained_model, c.train_config, c.history,
                 c.model, c.calibration, c.metrics, c.roc, c.pro, c.scores]:
        assert path.is_file(), f"{path} missing after dvc repro:\n{log[-3000:]}"
    assert list(c.overlays.glob("*.png"))
    assert not (c.dir / ".work").exists()
    assert (repo / "data/raw/sidn-default/carpet/train/good").is_dir()
    assert "<img" in (repo / "reports/index.html").read_text()
    assert "| carpet |" in (repo / "reports/summary.md").read_text()

    # registered in MLflow's default local store (no server configured)
    registered = json.loads((repo / "reports/registered.json").read_text())
    assert registered["categories"]["carpet"]["status"] == "registered", registered
    assert registered["tracking_uri"].startswith("sqlite:///") and (repo / "mlflow.db").is_file()

    metrics = json.loads(run_python(repo, "-m", "dvc", "metrics", "show", "--json").stdout)
    flat = json.dumps(metrics)
    for key in ("pixel_auroc", "aupro", "image_auroc", "threshold", "catch_rate", "false_alarm_rate"):
        assert f'"{key}"' in flat, key
    assert "per_defect" not in flat and "int8" not in flat  # the detail stays in metrics.json / calibration.json
    run_python(repo, "-m", "dvc", "plots", "show", "-o", str(repo / "plots-html"))
    assert (repo / "plots-html" / "index.html").is_file()

    # nothing changed -> nothing runs
    t0 = time.monotonic()
    second = run_python(repo, "-m", "dvc", "repro")
    second_s = time.monotonic() - t0
    assert "Running stage" not in second.stdout, second.stdout
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    print(f"\ndvc repro (tiny, 1 category): {first_s:.1f} s; no-op repro: {second_s:.1f} s")

    # the scheduled retraining flow: no remote -> pull skipped; the per-category Prefect tasks
    # (no task cache yet: they run), then dvc commit records them: nothing left to reproduce
    from pipelines.orchestration.flows import retrain

    monkeypatch.chdir(repo)  # MLflow: the copy's own local store and artifacts, never the repo's
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    summary = retrain(repo=str(repo), pull=True, push=True, max_parallel=1)
    assert summary["pull"] == "skipped" and summary["fan_out"] == "Completed" and summary["push"] == "skipped"
    assert summary["data"] == "reproduced"  # the embedded dataset's synth@carpet (up to date)
    assert summary["registered"]["categories"]["carpet"]["status"] == "registered"
    assert "up to date" in run_python(repo, "-m", "dvc", "status").stdout

    # a failing stage leaves none of its outputs behind, and says why
    set_tiny_params(repo, ["carpet"], min_train_images=1000)
    failed = run_python(repo, "-m", "dvc", "repro", check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "prepare FAILED" in text and "min_train_images" in text, text[-3000:]
    assert not c.prepare.exists(), "DVC removed the outputs and the stage did not publish new ones"
    assert (c.work("prepare") / "validation.md").is_file(), "the readable report is kept for inspection"
    assert "prepare@carpet" in run_python(repo, "-m", "dvc", "status").stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    """SIGTERM mid-training (as `dvc repro` or a Prefect worker being stopped would deliver):
    no output is published, the checkpoint stays in .work/train, and the next run resumes."""
    import signal

    from helpers.data import make_mvtec_tree

    make_mvtec_tree(tmp_path / "data", "carpet", n_train=12, n_test_good=2, defects={"cut": 2}, size=64)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    raw["data"].update(root=str(tmp_path / "data"), categories=["carpet"])
    raw["train"].update(steps=60, checkpoint_every=2, val_every=1000)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    c = layout.CategoryPaths(tmp_path / "runs", "carpet")
    ckpt = c.work("train") / "checkpoint.pt"

    proc = subprocess.Popen([sys.executable, "-m", "pipelines.stages.train", "carpet", str(c.train_dir),
                             "--quiet", "--params", str(params)], cwd=REPO, env=pipeline_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), f"no checkpoint appeared:\n{proc.communicate()[0][-3000:] if proc.poll() is not None else ''}"
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out[-2000:]
    assert not c.trained_model.exists(), "nothing is published by an interrupted training"
    assert ckpt.is_file() and (c.work("train") / "FINGERPRINT").is_file()

    result = train.run(P.load_stage_config(train.PARAMS + train.RUNTIME_PARAMS, params), "carpet",
                       c.train_dir, c.work("train"), progress=False)
    assert result["resumed"] is True and result["steps_done"] == 60
    assert c.trained_model.is_file() and not c.work("train").exists()
