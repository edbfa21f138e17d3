"""DVC stage ``prepare@<category>``: manifest + great-expectations validation of one category.

    python -m pipelines.stages.prepare CATEGORY OUT_DIR        # OUT_DIR = runs/<category>/prepare

Runs :func:`sidn.data.validate.validate_dataset` on ``data.root``/CATEGORY. If it passes,
OUT_DIR gets ``manifest.csv`` (:func:`sidn.data.mvtec.build_manifest`), ``validation.json``
(full GX results), ``validation.html`` and ``validation.md`` (the readable summary). If it
fails, the stage exits 2 after printing the readable report (one line per offending file);
nothing is written to OUT_DIR, so every downstream stage of this category stops, and the
reports stay in ``runs/<category>/.work/prepare/`` for inspection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pipelines.layout import WORK
from pipelines.params import load_stage_config
from pipelines.stages import StageError, base_parser, publish, run_main, scratch
from sidn.config import SIDNConfig
from sidn.data.errors import DataError

PARAMS = ["data.root", "data.min_train_images"]


class DataValidationError(DataError):
    """The dataset failed validation (deterministic: never retried). Picklable (Dask)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.path, self.problem))


def run(cfg: SIDNConfig, category: str, out_dir: Path, work: Path) -> dict[str, Any]:
    """Validate ``cfg.data.root/category``; publish the manifest and reports to ``out_dir``."""
    from sidn.data.mvtec import build_manifest
    from sidn.data.validate import format_report, validate_dataset
    from sidn.io import atomic_write_text

    root = Path(cfg.data.root)
    with scratch(work, keep_on_failure=True):
        report = validate_dataset(root, [category], work, min_train_images=cfg.data.min_train_images)
        text = format_report(report)
        atomic_write_text(work / "validation.md", text + "\n")
        if not report.passed:
            raise DataValidationError(root / category, text)
        manifest = build_manifest(root, category, strict=True)
        manifest.to_csv(work / "manifest.csv", index=False)
        publish(work, out_dir)
    counts = manifest.groupby("split").size().to_dict()
    return {"category": category, "passed": True, "n_images": int(len(manifest)), "splits": counts,
            "validation": str(out_dir)}


def _body(argv: Sequence[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("category")
    parser.add_argument("out_dir", type=Path)
    a = parser.parse_args(argv)
    cfg = load_stage_config(PARAMS, a.params)
    try:
        result = run(cfg, a.category, a.out_dir, a.out_dir.parent / WORK / "prepare")
    except DataValidationError as exc:
        raise StageError(str(exc)) from None
    print(f"prepare: {a.category}: validation passed, {result['n_images']} images -> {a.out_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("prepare", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
