"""The committed dvc.lock was produced by the committed code and params.yaml (not a stale lock).

Every code file a stage depends on must have the md5 dvc.lock recorded, and every parameter a
stage recorded must equal params.yaml's value; otherwise the committed metrics came from other
code or settings. After changing code or params, run `make run` (dvc repro) and commit dvc.lock.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _param(dotted: str):
    node = PARAMS
    for part in dotted.split("."):
        node = node[part]
    return node


def _code_deps():
    for stage, body in LOCK.items():
        for dep in body.get("deps", []):
            path = ROOT / dep["path"]
            if dep["path"].startswith(("sidn/", "pipelines/")) and path.is_file():
                yield stage, dep


@pytest.mark.parametrize("stage,dep", list(_code_deps()), ids=lambda v: v if isinstance(v, str) else v["path"])
def test_code_dependency_matches_the_lock(stage, dep):
    md5 = hashlib.md5((ROOT / dep["path"]).read_bytes()).hexdigest()
    assert md5 == dep["md5"], f"dvc.lock is stale: {dep['path']} changed since {stage} ran; run `make run` and commit dvc.lock"


@pytest.mark.parametrize("stage", sorted(LOCK))
def test_recorded_params_match_params_yaml(stage):
    recorded = LOCK[stage].get("params", {}).get("params.yaml", {})
    stale = {k: (v, _param(k)) for k, v in recorded.items() if _param(k) != v}
    assert not stale, f"dvc.lock is stale for {stage}: (locked, params.yaml) = {stale}; run `make run` and commit dvc.lock"
