"""Helpers shared by the pipeline tests (tiny params, a tiny copy of the repository to run DVC in).

Fixtures are in fixtures_prefect.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from pipelines.telemetry import TELEMETRY_OFF

REPO = Path(__file__).resolve().parents[2]


# Tiny settings: 64 px images, a handful of steps, a small DGM set.
TINY: dict[str, dict[str, Any]] = {
    "data": {"image_size": 64, "min_train_images": 4, "holdout_fraction": 0.25},
    "dgm": {"val_images": 4},
    "train": {"steps": 4, "batch_size": 4, "val_every": 2, "checkpoint_every": 2, "num_threads": 1},
    "infer": {"batch_size": 8},
}

#: Tiny settings of the embedded dataset generator (the `synth` vars of dvc.yaml).
TINY_SYNTH: dict[str, int] = {"size": 64, "n_train": 12, "n_test_good": 3, "n_test_defect": 4}

_GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def write_tiny_params(path: Path, data_root: str | Path, categories: Iterable[str],
                      extra: dict[str, dict[str, Any]] | None = None) -> Path:
    """params.yaml (the repo's, with every section) + TINY + ``extra`` -> ``path``."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in {**TINY, "data": {**TINY["data"], "root": str(data_root),
                                             "categories": list(categories)}}.items():
        raw[section].update(values)
    for section, values in (extra or {}).items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def copy_repo(dst: Path) -> Path:
    """Copy the repository's tracked and untracked-but-not-ignored files to ``dst``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def pipeline_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a pipeline subprocess: the venv first on PATH, telemetry off, no MLflow
    tracking server or Prefect API inherited from the caller, one OpenMP thread; plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API"))}
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                **TELEMETRY_OFF, "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


def run_python(repo: Path, *args: str, check: bool = True, timeout: float = 600,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` (this interpreter) in ``repo`` with ``env`` (default :func:`pipeline_env`);
    with ``check`` a non-zero exit fails with the end of its output."""
    proc = subprocess.run([sys.executable, *args], cwd=repo, env=dict(env) if env is not None else pipeline_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def set_tiny_params(repo: Path, categories: list[str], **data: object) -> None:
    """Shrink ``repo``'s params.yaml to TINY, with ``categories`` and extra ``data`` keys."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    raw["data"].update({"categories": categories, **data})
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``git ARGS`` in ``repo`` with a throw-away identity; fails on a non-zero exit."""
    return subprocess.run([*_GIT, *args], cwd=repo, check=True, capture_output=True, text=True)


def make_tiny_repo(dst: Path, categories: list[str] | None = None) -> Path:
    """A copy of the repository at ``dst``, a git repo of its own with one commit, where `dvc repro`
    runs the real dvc.yaml on TINY params and a TINY synthetic dataset (default category: carpet)."""
    repo = copy_repo(dst)
    git(repo, "init", "-q")
    if not (repo / ".dvc" / "config").exists():
        run_python(repo, "-m", "dvc", "init", "-q")
    dvc_yaml = (repo / "dvc.yaml").read_text()
    for key, value in TINY_SYNTH.items():
        line = next(l for l in dvc_yaml.splitlines() if l.strip().startswith(f"{key}:"))
        dvc_yaml = dvc_yaml.replace(line, f"{line.split(':')[0]}: {value}", 1)
    (repo / "dvc.yaml").write_text(dvc_yaml)
    set_tiny_params(repo, categories or ["carpet"], min_train_images=4)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny")
    return repo
