"""MLflow layer against a real ``mlflow server`` (sqlite backend, loopback, basic-auth) and ``mlflow models serve``.

Runs, metrics and artifacts land (the figures at the calibrated threshold included, per defect
type too); registration and aliases; the gate refuses a worse challenger and promotes a better
one only with approval; absolute floors refuse a bad first champion; a pending request without
approval; rollback only to a former champion, with a name; the server itself refuses (HTTP 403)
a ``champion`` change by anyone but the release manager; ``models:/sidn-x@champion`` loads and
predicts; the served model answers real images and refuses malformed payloads with 4xx while it
keeps serving.

Speed: no training. Each "run" is a tiny random-init SIDN bundle (64 px, C=4, K=3) with a set
threshold plus hand-written metrics/calibration files in the ``runs/<category>`` layout.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from helpers.fixtures_mlflow import (  # noqa: F401
    PIPELINE_USER, RELEASE_MANAGER, VIEWER, as_user, free_port, mlflow_auth, mlflow_env, mlflow_executable,
    mlflow_server, stop_group, wait_http,
)
from helpers.data import texture
from pipelines.layout import CategoryPaths
from sidn.bundle import load_bundle, save_bundle
from sidn.config import SIDNConfig
from sidn.inference import Predictor
from sidn.model.sidn import SIDN

pytest.importorskip("mlflow")

CATEGORY = "x"  # registered model: sidn-x
SIZE = 64


# ---------------------------------------------------------------------------------------------
# tiny runs
# ---------------------------------------------------------------------------------------------


def _cfg(tmp: Path) -> SIDNConfig:
    cfg = SIDNConfig()
    cfg.model.channels = 4
    cfg.model.clusters = 3
    cfg.data.image_size = SIZE
    cfg.data.root = str(tmp / "data" / "tiny-dataset")
    cfg.data.categories = [CATEGORY]
    return cfg


def _images() -> list[np.ndarray]:
    """Real-looking test images: 8-bit gray texture with a bright blob (100x120), and a colour one."""
    rng = np.random.default_rng(7)
    gray = cv2.resize(texture(rng, 128), (120, 100), interpolation=cv2.INTER_AREA)
    cv2.circle(gray, (60, 50), 12, 250, -1)
    colour = cv2.cvtColor(texture(rng, 256), cv2.COLOR_GRAY2BGR)
    colour[..., 2] = np.clip(colour[..., 2].astype(int) + 30, 0, 255).astype(np.uint8)
    return [gray, colour]


def _b64(image: np.ndarray, ext: str = ".png") -> str:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def _gray01(image: np.ndarray) -> np.ndarray:
    from sidn.data.decode import decode_bytes, raw_to_gray

    return raw_to_gray(decode_bytes(base64.b64decode(_b64(image)), "test"))


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory) -> Path:
    """A random-init SIDN whose threshold cuts the first test image's map at its 80th percentile."""
    tmp = tmp_path_factory.mktemp("bundle")
    cfg = _cfg(tmp)
    torch.manual_seed(0)
    model = SIDN(cfg.model)
    with torch.no_grad():
        model.train()
        model(torch.rand(4, 1, SIZE, SIZE))
    model.eval()
    amap = Predictor(model, cfg.infer, SIZE).predict([_gray01(_images()[0])])[0].anomaly_map
    model.threshold.fill_(float(np.quantile(amap, 0.8)))
    path = tmp / "model.pt"
    save_bundle(model, cfg, path, extra={"cpu_model": "Test CPU 9000", "cpu_isa": "avx2", "threads": 2,
                                         "precision": "fp32"})
    return path


def operating_point(catch_rate: float, n_defective: int = 60, false_alarm_rate: float = 0.05, n_good: int = 40,
                    pixel_iou: float = 0.45) -> dict:
    """An ``operating_point`` entry of ``eval/metrics.json`` (counts rounded from the rates)."""
    from sidn.operating_point import clopper_pearson

    caught, alarms = round(catch_rate * n_defective), round(false_alarm_rate * n_good)
    return {"threshold": 0.51, "catch_rate": caught / n_defective, "caught": caught, "n_defective": n_defective,
            "false_alarm_rate": alarms / n_good, "false_alarm_ci95": list(clopper_pearson(alarms, n_good)),
            "false_alarms": alarms, "n_good": n_good, "pixel_precision": 0.6, "pixel_recall": 0.7,
            "pixel_iou": pixel_iou}


def make_run(root: Path, bundle: Path, pixel_auroc: float, aupro: float, image_far: float = 0.05,
             validation_passed: bool = True, history_steps: int = 5, catch_rate: float = 0.95,
             false_alarm_rate: float = 0.05, category: str = CATEGORY) -> tuple[SIDNConfig, CategoryPaths]:
    """Write ``root/runs/<category>`` in the pipeline layout with the given numbers (defect types
    ``cut`` with 20 and ``hole`` with 40 of the 60 defective test images)."""
    cfg = _cfg(root)
    cfg.data.categories = [category]
    paths = CategoryPaths(root / "runs", category)
    paths.evaluate_dir.mkdir(parents=True)
    paths.train_dir.mkdir(parents=True)
    paths.prepare.mkdir(parents=True)
    paths.overlays.mkdir(parents=True)
    paths.model.write_bytes(bundle.read_bytes())
    paths.metrics.write_text(json.dumps({
        "category": category, "pixel_auroc": pixel_auroc, "aupro": aupro, "image_auroc": 0.9, "n_images": 100,
        "operating_point": operating_point(catch_rate, 60, false_alarm_rate),
        "per_defect": {
            "cut": {"pixel_auroc": pixel_auroc - 0.01, "aupro": aupro, "image_auroc": 0.8,
                    "operating_point": operating_point(catch_rate, 20, false_alarm_rate, pixel_iou=0.5)},
            "hole": {"pixel_auroc": pixel_auroc, "aupro": aupro, "image_auroc": 0.85,
                     "operating_point": operating_point(catch_rate, 40, false_alarm_rate, pixel_iou=0.4)},
        },
    }))
    paths.calibration.write_text(json.dumps({
        "threshold": 0.51, "method": "image_far", "image_far": image_far, "pixel_far": 0.001,
        "score_threshold": 0.6, "thresholds": {}, "n_good_images": 20, "target_image_far": 0.05,
        "achieved": {"image_far": {"image_far": image_far, "image_far_upper95": 0.14}},
    }))
    fpr = np.linspace(0, 1, 11)
    pd.DataFrame({"fpr": fpr, "tpr": np.sqrt(fpr)}).to_csv(paths.roc, index=False)
    pd.DataFrame({"fpr": fpr * 0.3, "pro": np.sqrt(fpr)}).to_csv(paths.pro, index=False)
    cv2.imwrite(str(paths.overlays / "00_cut_000.png"), np.zeros((8, 32, 3), np.uint8))
    steps = np.arange(1, history_steps + 1)
    hist = pd.DataFrame({"step": steps, "l_s": 1 / steps, "l_z": 0.1 / steps, "l_kl": 0.01 * steps,
                         "l_td": 0.5 / steps, "total": 2 / steps, "elapsed_s": steps * 0.1,
                         "val_loss": [np.nan] * (history_steps - 1) + [0.3], "val_pixel_auroc": np.nan})
    hist.to_csv(paths.history, index=False)
    cfg.save_yaml(paths.train_config)
    (paths.prepare / "manifest.csv").write_text("category,path,split\nx,a.png,train\n")
    (paths.prepare / "validation.json").write_text(json.dumps({"passed": validation_passed}))
    (paths.prepare / "validation.md").write_text("Data validation passed.\n")
    return cfg, paths


def log_and_register(tmp_path: Path, bundle: Path, data_version: str, **numbers) -> tuple[str, int, SIDNConfig]:
    from pipelines.tracking import registry, runs as tracking

    cfg, paths = make_run(tmp_path, bundle, **numbers)
    category = cfg.data.categories[0]
    run_id = tracking.log_category_run(cfg, category, paths, tags={"data_version": data_version})
    version = registry.register_challenger(run_id, category, cfg)
    return run_id, version, cfg


# ---------------------------------------------------------------------------------------------
# unit tests (no server)
# ---------------------------------------------------------------------------------------------


def test_tracking_uri_default_and_env(monkeypatch):
    from pipelines.tracking import runs as tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tracking.REPO_ROOT / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"


def test_flatten_config(tmp_path):
    from pipelines.tracking.runs import flatten_config

    cfg = SIDNConfig()
    flat = flatten_config(cfg)
    assert flat["train.lr"] == str(cfg.train.lr) and flat["dgm.sources.blur"] == "0.15"
    assert flat["data.categories"].startswith('["carpet"')


def test_git_dirty_ignores_what_the_pipeline_itself_rewrites(tmp_path):
    from pipelines.tracking.runs import git_dirty

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "runs/a/train").mkdir(parents=True)
    (tmp_path / "runs/a/eval").mkdir(parents=True)
    files = {"code.py": "x = 1\n", "runs/a/train/history.csv": "step\n1\n", "runs/a/eval/metrics.json": "{}\n",
             "dvc.lock": "schema: '2.0'\nstages:\n  train@a:\n    outs:\n    - path: runs/a/train\n"
                         "  evaluate@a:\n    outs:\n    - path: runs/a/eval/metrics.json\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    assert git_dirty(tmp_path) == "false"
    for name in ("runs/a/train/history.csv", "runs/a/eval/metrics.json", "dvc.lock"):
        (tmp_path / name).write_text((tmp_path / name).read_text() + "# rewritten by a run\n")
    assert git_dirty(tmp_path) == "false"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) == "true"
    assert git_dirty(Path("/")) == "unknown"


def test_data_version_is_dvcs_hash_whatever_the_path(tmp_path, monkeypatch):
    """One definition: DVC's md5 of <data.root>/<category>, the same for a relative root (as in
    dvc.lock) and an absolute one (as under Prefect), equal to what `dvc add` records."""
    import yaml

    from pipelines.tracking.runs import data_version

    (tmp_path / "data" / "carpet" / "train" / "good").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "data" / "carpet" / "train" / "good" / f"{i:03d}.png").write_bytes(bytes([i]) * 100)
    (tmp_path / "data" / "carpet" / "notes.txt").write_text("hello\r\nworld\n")  # no dos2unix in DVC 3
    monkeypatch.chdir(tmp_path)
    cfg = SIDNConfig()
    cfg.data.root = "data"
    relative = data_version(cfg, "carpet")
    cfg.data.root = str(tmp_path / "data")
    assert data_version(cfg, "carpet") == relative and len(relative) == 32
    assert data_version(cfg, "wood") == "unknown"

    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for args in (["init", "--no-scm", "-q"], ["add", "-q", "data/carpet"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, env=env, check=True,
                       capture_output=True)
    (out,) = yaml.safe_load((tmp_path / "data" / "carpet.dvc").read_text())["outs"]
    assert out["md5"] == relative + ".dir"

    (tmp_path / "data" / "carpet" / "train" / "good" / "003.png").write_bytes(b"new")
    assert data_version(cfg, "carpet") != relative


def test_pyfunc_rejects_malformed_input(bundle_file):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

    from pipelines.tracking.pyfunc_model import SIDNPyfunc

    class Ctx:
        artifacts = {"bundle": str(bundle_file)}
        model_config = {"max_megapixels": 0.02, "max_images": 3}

    model = SIDNPyfunc()
    model.load_context(Ctx())
    good = _b64(_images()[0])
    out = model.predict(None, pd.DataFrame({"image": [good]}))
    assert list(out.columns)[:4] == ["anomaly_map", "mask", "score", "is_defective"]
    out2 = model.predict(None, {"image": [good, good]})  # dict of lists
    assert len(out2) == 2
    wrapped = "\n".join(good[i : i + 76] for i in range(0, len(good), 76))  # `base64` tool output
    out3 = model.predict(None, pd.DataFrame({"image": [wrapped, "data:image/png;base64," + good]}))
    assert out3["score"].tolist() == pytest.approx([out["score"][0]] * 2)
    big = _b64(np.zeros((200, 200), np.uint8))  # 0.04 MP > 0.02
    bad_inputs = {
        "no column": pd.DataFrame({"img": [good]}),
        "not a string": pd.DataFrame({"image": [12]}),
        "not base64": pd.DataFrame({"image": ["not base64 !!"]}),
        "not an image": pd.DataFrame({"image": [base64.b64encode(b"hello world, no image").decode()]}),
        "empty string": pd.DataFrame({"image": [""]}),
        "no rows": pd.DataFrame({"image": []}),
        "too many": pd.DataFrame({"image": [good] * 4}),
        "huge": pd.DataFrame({"image": [big]}),
        "truncated": pd.DataFrame({"image": [good[: len(good) // 2 // 4 * 4]]}),
        "wrong type": 3.5,
    }
    for what, bad in bad_inputs.items():
        with pytest.raises(MlflowException) as info:
            model.predict(None, bad)
        assert info.value.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE), what


# ---------------------------------------------------------------------------------------------
# against the server
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_category_run_lands_with_params_metrics_artifacts_tags(mlflow_env, bundle_file, tmp_path):
    from mlflow import MlflowClient

    from pipelines.tracking import runs as tracking

    cfg, paths = make_run(tmp_path, bundle_file, pixel_auroc=0.95, aupro=0.85, history_steps=7)
    cfg.train.lr = 123.0  # a stage-restricted caller config: params come from the bundle's config
    with tracking.start_parent_run(cfg, name="pipeline-test") as parent:
        run_id = tracking.log_category_run(cfg, CATEGORY, paths, parent_run_id=parent)
    client = MlflowClient(mlflow_env)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and client.get_run(parent).info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["train.lr"] == str(SIDNConfig().train.lr) and run.data.params["model.channels"] == "4"
    assert run.data.params["category"] == CATEGORY and run.data.params["dataset"] == "tiny-dataset"
    m = run.data.metrics
    assert m["pixel_auroc"] == pytest.approx(0.95) and m["aupro"] == pytest.approx(0.85)
    assert m["image_auroc"] == pytest.approx(0.9) and m["threshold"] == pytest.approx(0.51)
    assert m["image_far"] == pytest.approx(0.05) and m["cut/pixel_auroc"] == pytest.approx(0.94)
    # the figures at the calibrated threshold, per category and per defect type
    assert m["catch_rate"] == pytest.approx(57 / 60) and (m["caught"], m["n_defective"]) == (57, 60)
    assert m["false_alarm_rate"] == pytest.approx(2 / 40) and (m["false_alarms"], m["n_good_test"]) == (2, 40)
    assert 0 < m["false_alarm_ci95_low"] < 2 / 40 < m["false_alarm_ci95_high"] < 0.2
    assert (m["pixel_precision"], m["pixel_recall"], m["pixel_iou"]) == pytest.approx((0.6, 0.7, 0.45))
    assert m["cut/catch_rate"] == pytest.approx(19 / 20) and m["hole/catch_rate"] == pytest.approx(38 / 40)
    assert m["cut/pixel_iou"] == pytest.approx(0.5) and m["hole/false_alarm_ci95_high"] == m["false_alarm_ci95_high"]
    hist = client.get_metric_history(run_id, "train/l_s")
    assert sorted(h.step for h in hist) == list(range(1, 8))
    assert [h.step for h in client.get_metric_history(run_id, "val/loss")] == [7]
    for key in ("train/l_z", "train/l_kl", "train/l_td", "train/total"):
        assert len(client.get_metric_history(run_id, key)) == 7
    tags = run.data.tags
    assert tags["dataset"] == "tiny-dataset" and tags["category"] == CATEGORY
    assert tags["data_validation"] == "passed" and tags["git_commit"]
    assert tags["data_version"] == "unknown"  # this tmp dataset has no data folder
    assert tags["model_uri"].startswith("models:/")
    assert (tags["train.cpu_model"], tags["train.cpu_isa"], tags["train.threads"], tags["train.precision"]) == (
        "Test CPU 9000", "avx2", "2", "fp32")
    assert not any(k.startswith("env") or "SECRET" in k.upper() for k in list(tags) + list(run.data.params))

    def ls(path=None):
        return {a.path for a in client.list_artifacts(run_id, path)}

    assert {"plots", "overlays", "config", "data", "eval"} <= ls()
    assert {"plots/roc.png", "plots/pro.png", "plots/training.png"} <= ls("plots")
    assert ls("overlays") == {"overlays/00_cut_000.png"}
    assert {"data/manifest.csv", "data/validation.md"} <= ls("data")
    assert {"eval/metrics.json", "eval/calibration.json"} <= ls("eval") and ls("config") == {"config/config.yaml"}
    local = client.download_artifacts(run_id, "plots/roc.png", str(tmp_path / "dl"))
    assert cv2.imread(local) is not None


@pytest.mark.integration
def test_parent_run_without_children_is_deleted(mlflow_env):
    """A rerun where every category was cached leaves no empty parent run behind."""
    from mlflow import MlflowClient

    from pipelines.tracking import runs as tracking

    with tracking.start_parent_run(SIDNConfig(), name="pipeline-all-cached") as parent:
        pass
    assert MlflowClient(mlflow_env).get_run(parent).info.lifecycle_stage == "deleted"


@pytest.fixture(scope="module")
def registry_story(mlflow_env, mlflow_auth, bundle_file, tmp_path_factory):
    """Registration + promotion scenario shared by the registry tests (runs once, in order).

    The pipeline's account registers and asks for promotion; the release manager's approves.
    """
    from mlflow import MlflowClient

    from pipelines.tracking import registry

    client = MlflowClient(mlflow_env)
    log: dict = {}

    def new(data_version: str, **numbers):
        return log_and_register(tmp_path_factory.mktemp("run"), bundle_file, data_version, **numbers)

    def release():
        return as_user(mlflow_auth, RELEASE_MANAGER)

    # v1: first model -> challenger; pending without approval; first champion with approval
    _, v1, cfg = new("d1", pixel_auroc=0.95, aupro=0.85)
    log["v1"] = v1
    log["alias_after_v1"] = client.get_model_version_by_alias("sidn-x", "challenger").version
    log["pending_v1"] = registry.promote(CATEGORY, cfg=cfg)
    log["champion_after_pending"] = registry._alias_version(client, "sidn-x", "champion")
    with pytest.raises(registry.RegistryError, match="--by"):
        registry.promote(CATEGORY, approve=True, by=None, cfg=cfg)
    with release():
        log["promote_v1"] = registry.promote(CATEGORY, approve=True, by="alice", cfg=cfg)
    # v2: worse on pixel AUROC -> refused even with approval
    _, log["v2"], _ = new("d1", pixel_auroc=0.90, aupro=0.85)
    with release():
        log["refuse_v2"] = registry.promote(CATEGORY, approve=True, by="alice", cfg=cfg)
    # v3: better, but too many false alarms and data validation failed -> refused
    _, log["v3"], _ = new("d1", pixel_auroc=0.97, aupro=0.90, image_far=0.3, validation_passed=False)
    with release():
        log["refuse_v3"] = registry.promote(CATEGORY, approve=True, by="alice", cfg=cfg)
    # v4: better, evaluated on new data d2 -> champion must be re-evaluated on d2
    _, log["v4"], _ = new("d2", pixel_auroc=0.96, aupro=0.86, catch_rate=0.9)
    with release():
        log["no_reeval_v4"] = registry.promote(CATEGORY, approve=True, by="bob", cfg=cfg)
    calls = []

    def evaluate_fn(bundle_path: Path) -> dict:
        model, _, _ = load_bundle(bundle_path)  # a real bundle comes back from the registry
        calls.append(bundle_path)
        return {"pixel_auroc": 0.955, "aupro": 0.80, "image_auroc": 0.9, "operating_point": operating_point(0.8),
                "per_defect": {"cut": {"pixel_auroc": 0.95, "operating_point": operating_point(0.75, 20)}}}

    log["pending_v4"] = registry.promote(CATEGORY, cfg=cfg, evaluate_fn=evaluate_fn)
    with release():
        log["promote_v4"] = registry.promote(CATEGORY, approve=True, by="bob", cfg=cfg, evaluate_fn=evaluate_fn)
    log["eval_calls"] = calls
    log["cfg"] = cfg
    return client, log


@pytest.mark.integration
def test_registration_sets_challenger_and_first_champion_needs_approval(registry_story):
    client, log = registry_story
    assert log["v1"] == 1 and log["alias_after_v1"] == "1"
    pending = log["pending_v1"]
    assert pending.status == "pending" and pending.exit_code == 0
    assert pending.comparison.champion is None and pending.comparison.passed
    assert {"floor_pixel_auroc", "floor_catch_rate", "floor_false_alarm_rate"} <= {c.name for c in pending.comparison.checks}
    assert log["champion_after_pending"] is None  # a pending request moves nothing
    promoted = log["promote_v1"]
    assert promoted.status == "promoted" and promoted.version == 1
    mv1 = client.get_model_version("sidn-x", "1")
    assert mv1.tags["approved_by"] == "alice" and mv1.tags["promotion_request"] == "approved"
    assert mv1.tags["approved_at"] and json.loads(mv1.tags["comparison"])["passed"] is True
    assert mv1.tags["moved_by_account"] == RELEASE_MANAGER  # the server account that moved the alias
    assert mv1.tags["requested_at"]  # from the earlier pending request
    assert mv1.tags["run_id"] and mv1.tags["pixel_auroc"] == repr(0.95)
    # the figures at the threshold travel with the version, per defect type too
    assert float(mv1.tags["catch_rate"]) == pytest.approx(57 / 60) and mv1.tags["n_good_test"] == "40.0"
    per_defect = json.loads(mv1.tags["per_defect"])
    assert set(per_defect) == {"cut", "hole"} and per_defect["cut"]["caught"] == 19


@pytest.mark.integration
def test_gate_refuses_worse_challenger(registry_story):
    client, log = registry_story
    r2 = log["refuse_v2"]
    assert r2.status == "refused" and r2.exit_code == 1 and r2.version == 2
    assert [c.name for c in r2.comparison.failures] == ["pixel_auroc"]
    assert "NOT promoted" in r2.message and "pixel_auroc" in r2.message
    assert client.get_model_version("sidn-x", "2").tags["promotion_request"] == "refused"
    r3 = log["refuse_v3"]
    assert r3.status == "refused" and {c.name for c in r3.comparison.failures} == {"image_far", "data_validation"}
    r4 = log["no_reeval_v4"]  # different data and nobody to re-evaluate the champion
    assert r4.status == "refused" and [c.name for c in r4.comparison.failures] == ["same_evaluation_data"]


@pytest.mark.integration
def test_better_challenger_on_new_data_promoted_only_with_approval(registry_story):
    client, log = registry_story
    pending = log["pending_v4"]
    assert pending.status == "pending"
    champ = pending.comparison.champion
    assert champ.version == 1 and champ.metrics["aupro"] == pytest.approx(0.80)
    assert champ.metrics_source == "re-evaluated on data d2"
    assert champ.metrics["catch_rate"] == pytest.approx(48 / 60) and champ.per_defect["cut"]["caught"] == 15
    assert len(log["eval_calls"]) == 2 and all(p.suffix == ".pt" for p in log["eval_calls"])
    promoted = log["promote_v4"]
    assert promoted.status == "promoted" and promoted.version == 4
    mv4 = client.get_model_version("sidn-x", "4")
    assert mv4.tags["approved_by"] == "bob" and mv4.tags["previous_champion"] == "1"
    assert "champion" in mv4.aliases and "challenger" in mv4.aliases
    text = promoted.comparison.table()
    assert "champion v1" in text and "gate: PASSED" in text
    # side by side at the calibrated threshold: catch 54/60 vs 48/60, false alarms with their interval
    lines = {line.split("  ")[1].strip(): line for line in text.splitlines() if line.startswith("  ") and "  " in line[2:]}
    assert "0.900 (54/60)" in lines["catch rate"] and "0.800 (48/60)" in lines["catch rate"]
    assert "+0.100" in lines["catch rate"]
    assert "0.050 (2/40)" in lines["false-alarm rate"] and "[0.006, 0.169]" in text
    assert "pixel IoU" in text and "per defect type" in text
    cut = [line for line in text.splitlines() if "cut" in line or ("champion" in line and "(" in line)]
    assert any("0.900 (18/20)" in line for line in cut) and any("0.750 (15/20)" in line for line in cut)
    assert "[PASS] floor_catch_rate" in text


@pytest.mark.integration
def test_bad_first_model_stopped_by_absolute_floors(mlflow_env, mlflow_auth, bundle_file, tmp_path_factory):
    """A first model that catches 0 of 60 defective images must not become champion (sidn-y: no champion yet)."""
    from mlflow import MlflowClient

    from pipelines.tracking import registry

    client = MlflowClient(mlflow_env)

    def attempt(**numbers):
        _, version, cfg = log_and_register(tmp_path_factory.mktemp("floor"), bundle_file, "d1", category="y",
                                           pixel_auroc=numbers.pop("pixel_auroc", 0.95), aupro=0.85, **numbers)
        with as_user(mlflow_auth, RELEASE_MANAGER):
            return version, registry.promote("y", approve=True, by="alice", cfg=cfg)

    version, blind = attempt(catch_rate=0.0)
    assert blind.status == "refused" and blind.comparison.champion is None
    assert [c.name for c in blind.comparison.failures] == ["floor_catch_rate"]
    assert "catch rate 0.000 (0/60) >= min_catch_rate 0.5" in blind.message
    assert registry._alias_version(client, "sidn-y", "champion") is None
    _, weak = attempt(pixel_auroc=0.7)
    assert [c.name for c in weak.comparison.failures] == ["floor_pixel_auroc"]
    _, noisy = attempt(false_alarm_rate=0.3)
    assert [c.name for c in noisy.comparison.failures] == ["floor_false_alarm_rate"]
    assert "0.300 (12/40)" in noisy.message
    assert registry._alias_version(client, "sidn-y", "champion") is None
    good_version, good = attempt()
    assert good.status == "promoted"
    assert client.get_model_version_by_alias("sidn-y", "champion").version == str(good_version)
    # the blind version never was champion: no rollback to it
    with as_user(mlflow_auth, RELEASE_MANAGER), pytest.raises(registry.RegistryError, match="never the champion"):
        registry.promote("y", to_version=version, by="alice")


@pytest.mark.integration
def test_server_refuses_champion_moves_by_anyone_but_the_release_manager(registry_story, mlflow_auth, capsys):
    """The lock is on the server: HTTP 403 for the pipeline's account (EDIT) and a reader's (READ)."""
    import argparse
    import base64

    from mlflow.exceptions import MlflowException

    from pipelines.tracking import registry
    from pipelines.tracking.cli import register

    client, log = registry_story
    uri = os.environ["MLFLOW_TRACKING_URI"]
    champion = client.get_model_version_by_alias("sidn-x", "champion").version

    def set_alias(user: str | None, alias: str, version: str) -> int:
        headers = {"Content-Type": "application/json"}
        if user is not None:
            token = base64.b64encode(f"{user}:{mlflow_auth.password(user)}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        body = json.dumps({"name": "sidn-x", "alias": alias, "version": version}).encode()
        req = urllib.request.Request(f"{uri}/api/2.0/mlflow/registered-models/alias", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert set_alias(PIPELINE_USER, "champion", "2") == 403  # EDIT on the model, still refused
    assert set_alias(PIPELINE_USER, "Champion", "2") == 403
    assert set_alias(VIEWER, "champion", "2") == 403  # READ only
    assert set_alias("sidn-admin", "champion", "2") == 403  # the admin account is not a release manager
    assert set_alias(None, "champion", "2") == 401
    assert set_alias(VIEWER, "challenger", "2") == 403  # built-in permissions: READ cannot set aliases
    assert client.get_model_version_by_alias("sidn-x", "champion").version == champion
    with pytest.raises(MlflowException) as info:  # the MLflow client, as the pipeline
        client.set_registered_model_alias("sidn-x", "champion", "2")
    assert info.value.error_code == "PERMISSION_DENIED"
    with pytest.raises(MlflowException):
        client.delete_registered_model_alias("sidn-x", "champion")
    with pytest.raises(MlflowException):
        client.delete_model_version("sidn-x", champion)
    # `sidn promote --to` as the pipeline: the registry allows it (v1 was champion), the server does not
    parser = argparse.ArgumentParser(prog="sidn")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["promote", "--category", CATEGORY, "--to", "1", "--by", "mallory"])
    assert args.func(args) == 2
    assert "403" in capsys.readouterr().err
    assert client.get_model_version_by_alias("sidn-x", "champion").version == champion
    # the pipeline's own alias still works, and the release manager may move champion
    assert set_alias(PIPELINE_USER, "challenger", "4") == 200
    assert set_alias(RELEASE_MANAGER, "champion", champion) == 200
    assert registry.former_champions(client, "sidn-x") >= {1, 4}


@pytest.mark.integration
def test_rollback_and_listing(registry_story, mlflow_auth, capsys):
    import argparse

    from pipelines.tracking import registry
    from pipelines.tracking.cli import register

    client, log = registry_story
    parser = argparse.ArgumentParser(prog="sidn")
    register(parser.add_subparsers(dest="command"))

    with as_user(mlflow_auth, RELEASE_MANAGER):
        # --to needs a name, and only a former champion: v2 was refused by the gate
        args = parser.parse_args(["promote", "--category", CATEGORY, "--to", "1", "--no-reevaluate"])
        assert args.func(args) == 2 and "--by" in capsys.readouterr().err
        args = parser.parse_args(["promote", "--category", CATEGORY, "--to", "2", "--by", "carol"])
        assert args.func(args) == 2 and "never the champion" in capsys.readouterr().err
        assert client.get_model_version_by_alias("sidn-x", "champion").version == "4"
        with pytest.raises(registry.RegistryError, match="--by"):
            registry.promote(CATEGORY, to_version=1)
        # a former champion below a (raised) floor is refused too
        strict = SIDNConfig()
        strict.register.min_catch_rate = 0.99
        refused = registry.promote(CATEGORY, to_version=1, by="carol", cfg=strict)
        assert refused.status == "refused" and [c.name for c in refused.comparison.failures] == ["floor_catch_rate"]
        assert client.get_model_version_by_alias("sidn-x", "champion").version == "4"

        args = parser.parse_args(["promote", "--category", CATEGORY, "--to", "1", "--by", "carol", "--no-reevaluate"])
        assert args.func(args) == 0
        out = capsys.readouterr().out
        assert "rollback to v1 vs champion v4" in out and "catch rate" in out and "[PASS] former_champion" in out
        assert client.get_model_version_by_alias("sidn-x", "champion").version == "1"
        mv1 = client.get_model_version("sidn-x", "1")
        assert mv1.tags["rolled_back_by"] == "carol" and mv1.tags["rolled_back_from"] == "4"
        history = json.loads(client.get_registered_model("sidn-x").tags["champion_history"])
        assert [h["kind"] for h in history] == ["promotion", "promotion", "rollback"]
        assert registry.promote(CATEGORY, to_version=1, by="carol").status == "unchanged"
        with pytest.raises(registry.RegistryError, match="no version 99"):
            registry.promote(CATEGORY, to_version=99, by="carol")

        # CLI: the challenger (v4) vs the champion (v1, logged on d1) without re-evaluation -> refusal, exit 1
        args = parser.parse_args(["promote", "--category", CATEGORY, "--approve", "--by", "dave", "--no-reevaluate"])
        assert args.func(args) == 1
        err = capsys.readouterr()
        assert "REFUSED" in err.err and "same_evaluation_data" in err.out
        assert "false-alarm rate" in err.out and "per defect type" in err.out
        args = parser.parse_args(["promote", "--category", CATEGORY, "--approve"])
        assert args.func(args) == 2 and "--by" in capsys.readouterr().err

    df = registry.list_registry(category=CATEGORY)
    assert list(df["version"]) == [1, 2, 3, 4]
    assert df.set_index("version").loc[1, "aliases"] == "champion"
    assert df.set_index("version").loc[4, "aliases"] == "challenger"
    assert df.set_index("version").loc[2, "pixel_auroc"] == pytest.approx(0.90)
    assert df.set_index("version").loc[4, "catch_rate"] == pytest.approx(0.9)
    args = parser.parse_args(["registry"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "sidn-x" in out and "champion" in out and "0.9500" in out
    assert "0.950 (57/60)" in out and "0.050 (2/40) [0.006, 0.169]" in out  # catch, false alarms + interval
    assert "per defect type" in out and "sidn-x v1 (champion)" in out and "0.950 (19/20)" in out
    args = parser.parse_args(["registry", "--category", CATEGORY, "--json"])
    assert args.func(args) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["per_defect"]["hole"]["caught"] == 38 and records[0]["false_alarm_ci95_high"] > 0.05
    # leave v4 as champion for the serving tests
    with as_user(mlflow_auth, RELEASE_MANAGER):
        registry.promote(CATEGORY, to_version=4, by="carol")


@pytest.mark.integration
def test_report_puts_champion_and_this_run_side_by_side(registry_story, bundle_file, tmp_path):
    """The report finds the champion on the server (MLFLOW_TRACKING_URI) and shows its figures next
    to this run's; this run is below the catch-rate floor, and its status says so."""
    from pipelines.report import build_report

    make_run(tmp_path, bundle_file, pixel_auroc=0.97, aupro=0.9, catch_rate=0.4)
    report = build_report(tmp_path / "runs", [CATEGORY], tmp_path / "reports")
    md = report.markdown.read_text()
    assert "champion v4" in md and "0.900 (54/60)" in md and "0.400 (24/60)" in md
    assert "below floor" in md and "catch rate" in md


@pytest.mark.integration
def test_load_champion_and_predict(registry_story, bundle_file):
    import mlflow

    from pipelines.tracking.pyfunc_model import decode_anomaly_map, decode_png

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model(f"models:/sidn-x@champion")
    images = _images()
    out = model.predict(pd.DataFrame({"image": [_b64(images[0]), _b64(images[1], ".jpg")]}))
    _check_against_local(out.to_dict(orient="records"), images, bundle_file, jpeg_second=True)
    assert decode_anomaly_map(out["anomaly_map"][0]).shape == (100, 120)
    assert set(np.unique(decode_png(out["mask"][0]))) <= {0, 255}


@pytest.mark.integration
def test_champion_loads_without_the_repo(registry_story, tmp_path):
    """A fresh interpreter, outside the repo, runs the model with the ``sidn`` copy logged in ``code/``."""
    from pipelines.layout import REPO_ROOT

    script = (
        "import mlflow, pandas as pd, sys\n"
        "m = mlflow.pyfunc.load_model('models:/sidn-x@champion', dst_path=sys.argv[1])\n"
        "out = m.predict(pd.DataFrame({'image': [sys.argv[2]]}))\n"
        "print('SIDN_FROM', sys.modules['sidn'].__file__, 'SCORE', float(out['score'][0]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    (tmp_path / "m").mkdir()
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m"), _b64(_images()[0])], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [l for l in res.stdout.splitlines() if l.startswith("SIDN_FROM")][0]
    sidn_file = Path(line.split()[1])
    assert (tmp_path / "m") in sidn_file.parents and REPO_ROOT not in sidn_file.parents
    assert (tmp_path / "m" / "artifacts" / "model.pt").is_file() or any((tmp_path / "m").rglob("model.pt"))


def _check_against_local(rows: list[dict], images: list[np.ndarray], bundle: Path, jpeg_second: bool = False) -> None:
    """Served / loaded outputs equal a local Predictor's on the same decoded images."""
    from pipelines.tracking.pyfunc_model import decode_anomaly_map, decode_png
    from sidn.data.decode import decode_bytes, raw_to_gray

    model, cfg, _ = load_bundle(bundle)
    exts = [".png", ".jpg" if jpeg_second else ".png"]
    grays = [raw_to_gray(decode_bytes(base64.b64decode(_b64(im, e)), "t")) for im, e in zip(images, exts)]
    local = Predictor(model, cfg.infer, cfg.data.image_size).predict(grays)
    assert len(rows) == len(local)
    for row, ref, gray in zip(rows, local, grays):
        assert (row["height"], row["width"]) == gray.shape
        mask = decode_png(row["mask"])
        assert mask.shape == gray.shape and mask.dtype == np.uint8
        assert np.mean((mask > 0) != (ref.mask > 0)) < 0.002  # equal up to float noise at the threshold
        assert row["score"] == pytest.approx(ref.score, abs=1e-5)
        assert row["is_defective"] == bool(ref.regions)
        amap = decode_anomaly_map(row["anomaly_map"])
        assert np.abs(amap - ref.anomaly_map).max() <= 1.0 / 65535 + 1e-6
        assert row["threshold"] == pytest.approx(float(model.threshold))
    assert any((decode_png(r["mask"]) > 0).any() for r in rows)  # the threshold cuts something


# ---------------------------------------------------------------------------------------------
# serving
# ---------------------------------------------------------------------------------------------


def _post(url: str, body: bytes | str | dict, content_type: str = "application/json") -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if isinstance(body, dict) else (body.encode() if isinstance(body, str) else body)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        return err.code, text


@pytest.fixture(scope="module")
def served(registry_story, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # `mlflow models serve` execs `uvicorn` from PATH: put this interpreter's bin dir first
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "OMP_NUM_THREADS": "1",
           "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [mlflow_executable(), "models", "serve", "-m", "models:/sidn-x@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=tmp_path_factory.mktemp("serve-cwd"))
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, timeout=180, log=log)
        yield f"http://127.0.0.1:{port}/invocations", proc
    finally:
        stop_group(proc)


@pytest.mark.integration
def test_serving_answers_real_images(served, bundle_file):
    url, _ = served
    images = _images()
    split = {"dataframe_split": {"columns": ["image"], "data": [[_b64(images[0])], [_b64(images[1], ".jpg")]]}}
    status, body = _post(url, split)
    assert status == 200, body
    _check_against_local(body["predictions"], images, bundle_file, jpeg_second=True)
    records = {"dataframe_records": [{"image": _b64(images[0])}], "params": {"include_map": False}}
    status, body = _post(url, records)
    assert status == 200, body
    (row,) = body["predictions"]
    assert row["anomaly_map"] == "" and row["mask"] and isinstance(row["is_defective"], bool)


@pytest.mark.integration
def test_serving_refuses_malformed_payloads_and_keeps_serving(served):
    url, proc = served
    good = {"dataframe_records": [{"image": _b64(_images()[0])}]}
    huge = np.zeros((7000, 6000), np.uint8)  # 42 MP (> 40 MP default), ~60 kB as PNG
    bad = {
        "not json": "this is not json",
        "wrong type": {"dataframe_records": [{"image": 123}]},
        "wrong column": {"dataframe_records": [{"img": _b64(_images()[0])}]},
        "wrong shape": {"dataframe_split": {"columns": ["image"], "data": [["a", "b"]]}},
        "nested list": {"dataframe_split": {"columns": ["image"], "data": [[[1, 2, 3]]]}},
        "empty": {"dataframe_records": []},
        "empty image": {"dataframe_records": [{"image": ""}]},
        "not base64": {"dataframe_records": [{"image": "%%% not base64 %%%"}]},
        "not an image": {"dataframe_records": [{"image": base64.b64encode(b"GIF? no." * 20).decode()}]},
        "huge": {"dataframe_records": [{"image": _b64(huge)}]},
    }
    for what, body in bad.items():
        status, answer = _post(url, body)
        assert 400 <= status < 500, f"{what}: {status} {answer}"
        assert proc.poll() is None, f"server died after '{what}'"
    status, answer = _post(url, b"image=abc", content_type="text/plain")
    assert 400 <= status < 500
    status, answer = _post(url, good)
    assert status == 200 and len(answer["predictions"]) == 1


@pytest.mark.integration
def test_serving_latency_per_256px_image(served, capsys):
    """Measured, reported, not asserted (shared 2-core machine)."""
    url, _ = served
    rng = np.random.default_rng(3)
    img = _b64(texture(rng, 256))
    single = {"dataframe_records": [{"image": img}]}
    batch = {"dataframe_records": [{"image": img}] * 8}
    _post(url, single)  # warm-up
    times = []
    for _ in range(8):
        t = time.perf_counter()
        status, _ = _post(url, single)
        times.append(time.perf_counter() - t)
        assert status == 200
    t = time.perf_counter()
    status, _ = _post(url, batch)
    per_image_batched = (time.perf_counter() - t) / 8
    assert status == 200
    with capsys.disabled():
        print(f"\nserved latency, 256x256, tiny test model (C=4): median {statistics.median(times) * 1000:.1f} ms "
              f"per single-image request; {per_image_batched * 1000:.1f} ms per image in batches of 8")
