"""The run layout: where every stage of every category reads and writes, and the fingerprints of files.

The one source of every path: the DVC stages (``pipelines/stages/*``), the Prefect tasks
(:mod:`pipelines.orchestration.tasks`), MLflow tracking and the report take their paths from
:class:`CategoryPaths`, so a category trained by ``dvc repro`` and one trained by a Prefect flow
land in the same files. ``dvc.yaml`` spells the same paths out; tests/integration/test_pipeline_dvc.py keeps
them equal.

Fingerprints: :func:`file_md5` and :func:`tree_fingerprint` (outputs and data, for the Prefect
cache keys and the training checkpoint), :func:`code_fingerprint` (the code those outputs come from).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = Path("runs")
REPORTS_DIR = Path("reports")
WORK = ".work"  # per-category scratch: temp outputs, resume checkpoints, failed reports (.dvcignore'd)


@dataclass(frozen=True)
class CategoryPaths:
    """Where every stage of one category reads and writes, under ``root`` (default ``runs``)."""

    root: Path
    category: str

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.category

    @property
    def prepare(self) -> Path:  # prepare: manifest.csv, validation.json, validation.md
        return self.dir / "prepare"

    @property
    def defects(self) -> Path:  # defects: DGM validation set
        return self.dir / "defects.npz"

    @property
    def train_dir(self) -> Path:  # train: model.pt (uncalibrated best), config.yaml, history.csv
        return self.dir / "train"

    @property
    def trained_model(self) -> Path:
        return self.train_dir / "model.pt"

    @property
    def train_config(self) -> Path:
        return self.train_dir / "config.yaml"

    @property
    def history(self) -> Path:
        return self.train_dir / "history.csv"

    @property
    def model(self) -> Path:  # calibrate: the calibrated bundle (threshold inside)
        return self.dir / "model.pt"

    @property
    def calibration(self) -> Path:
        return self.dir / "calibration.json"

    @property
    def evaluate_dir(self) -> Path:  # evaluate: metrics.json headline.json roc.csv pro.csv scores.csv overlays/
        return self.dir / "evaluate"

    @property
    def metrics(self) -> Path:
        return self.evaluate_dir / "metrics.json"

    @property
    def headline(self) -> Path:
        return self.evaluate_dir / "headline.json"

    @property
    def roc(self) -> Path:
        return self.evaluate_dir / "roc.csv"

    @property
    def pro(self) -> Path:
        return self.evaluate_dir / "pro.csv"

    @property
    def scores(self) -> Path:
        return self.evaluate_dir / "scores.csv"

    @property
    def overlays(self) -> Path:
        return self.evaluate_dir / "overlays"

    def work(self, stage: str) -> Path:
        return self.dir / WORK / stage

    def outputs(self, stage: str) -> list[Path]:
        """The files a stage must leave behind (used for Prefect cache validity)."""
        return {
            "prepare": [self.prepare / "manifest.csv"],
            "defects": [self.defects],
            "train": [self.trained_model, self.train_config, self.history],
            "calibrate": [self.model, self.calibration],
            "evaluate": [self.metrics, self.headline, self.roc, self.pro, self.scores, self.overlays],
        }.get(stage, [])


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    """MD5 of the file's bytes (what ``dvc.lock`` records for a file)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tree_fingerprint(path: str | Path) -> str:
    """Cheap fingerprint of a file tree (relative names, sizes, mtimes); '' if it does not exist."""
    root = Path(path)
    if not root.exists():
        return ""
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        st = file.stat()
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def code_fingerprint() -> str:
    """Hash of the library, stage, params and layout sources (part of every Prefect cache key)."""
    digest = hashlib.sha256()
    for pattern in ("sidn/**/*.py", "pipelines/stages/*.py", "pipelines/params.py", "pipelines/layout.py"):
        for file in sorted(REPO_ROOT.glob(pattern)):
            digest.update(file.relative_to(REPO_ROOT).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
