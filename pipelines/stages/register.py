"""DVC stage ``register``: log each category to MLflow and register it as the ``challenger``.

    python -m pipelines.stages.register RUNS_DIR OUT_JSON       # runs -> reports/registered.json

A thin call into :mod:`pipelines.tracking.runs` (owned by the MLflow side): per category, one MLflow
run with params, metrics and artifacts, and a new version of ``sidn-<category>`` with the alias
``challenger``. Promotion to ``champion`` is not done here (``sidn promote``).

Tracking store: ``MLFLOW_TRACKING_URI`` if set, else the local sqlite store in the repo that
:mod:`pipelines.tracking.runs` defaults to -- so the stage works without any server. If a configured
server cannot be reached, the stage fails (exit 1) after the categories' other outputs are
complete; ``dvc repro`` later re-runs only this stage. OUT_JSON records what was registered
(category -> model name, version, run id), or why a category was skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pipelines.layout import CategoryPaths
from pipelines.params import load_stage_config
from pipelines.stages import base_parser, run_main
from sidn.config import SIDNConfig

PARAMS = ["data.categories", "data.root", "register"]


def register_category(cfg: SIDNConfig, category: str, runs_root: Path,
                      parent_run_id: str | None = None) -> dict[str, Any]:
    """Log + register one category whose calibrated model and metrics exist under ``runs_root``."""
    paths = CategoryPaths(Path(runs_root), category)
    missing = [str(p) for p in (paths.model, paths.calibration, paths.metrics) if not p.exists()]
    if missing:
        return {"category": category, "status": "skipped", "reason": "missing " + ", ".join(missing)}
    try:
        from pipelines.tracking import registry, runs
    except ImportError as exc:
        return {"category": category, "status": "skipped", "reason": f"MLflow tracking unavailable: {exc}"}
    run_id = runs.log_category_run(cfg, category, paths, parent_run_id=parent_run_id)
    version = registry.register_challenger(run_id, category, cfg)
    return {"category": category, "status": "registered", "run_id": run_id,
            "model": registry.model_name(category, cfg), "version": version, "alias": "challenger"}


def run(cfg: SIDNConfig, runs_root: Path, out_json: Path) -> dict[str, Any]:
    """Register every category under one MLflow parent run; write the record to ``out_json``."""
    from pipelines.tracking import runs
    from sidn.io import atomic_write_json

    with runs.start_parent_run(cfg, tags={"orchestrator": "dvc"}) as parent_run_id:
        results = {c: register_category(cfg, c, runs_root, parent_run_id) for c in cfg.data.categories}
    payload = {"dataset": Path(cfg.data.root).name, "tracking_uri": runs.tracking_uri(),
               "parent_run_id": parent_run_id, "categories": results}
    atomic_write_json(Path(out_json), payload)
    return payload


def _body(argv: Sequence[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("out_json", type=Path)
    a = parser.parse_args(argv)
    cfg = load_stage_config(PARAMS, a.params)
    payload = run(cfg, a.runs_dir, a.out_json)
    for category, r in payload["categories"].items():
        detail = f"{r['model']} v{r['version']} @challenger" if r["status"] == "registered" else r.get("reason", "")
        print(f"register: {category}: {r['status']} {detail}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("register", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
