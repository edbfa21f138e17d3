"""DVC stage ``train@<category>``: train SIDN on one category's defect-free images.

    python -m pipelines.stages.train CATEGORY OUT_DIR          # OUT_DIR = runs/<category>/train

:func:`sidn.jobs.train_category` trains in ``runs/<category>/.work/train/`` and the stage moves
``model.pt`` (best weights, uncalibrated), ``config.yaml`` (resolved config) and
``history.csv`` (loss curves) into OUT_DIR when training has finished.

Resume: the scratch folder keeps ``checkpoint.pt`` while training runs. If the process is
killed, the next run (``dvc repro`` or the Prefect task) continues from that checkpoint --
provided the parameters and the data are unchanged (a ``FINGERPRINT`` file records them;
otherwise the scratch folder is discarded and training starts afresh). The checkpoint is
deleted after a successful run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from pipelines.layout import tree_fingerprint
from pipelines.params import load_stage_config, params_hash
from pipelines.stages import base_parser, publish, run_main, scratch
from sidn.config import SIDNConfig

PARAMS = [
    "data.root", "data.image_size", "data.holdout_fraction", "data.holdout_seed",
    "dgm", "model", "loss",
    "train.lr", "train.batch_size", "train.crop_size", "train.steps",
    "train.schedule", "train.warmup_steps", "train.augment", "train.max_minutes", "train.val_every",
    "train.seed", "train.device", "train.amp",
]
# read, but not dependencies: they change how training runs, not what it produces
RUNTIME_PARAMS = ["train.checkpoint_every", "train.num_threads"]

OUTPUTS = ("model.pt", "config.yaml", "history.csv")


def fingerprint(cfg: SIDNConfig, category: str) -> str:
    return f"{params_hash(cfg, PARAMS)}-{tree_fingerprint(Path(cfg.data.root) / category)}"


def progress_lines(category: str, total: int, every: int) -> Callable[[int, dict[str, float]], None]:
    """A training callback printing ``train <category>: step s/total, loss, elapsed, ETA`` every ``every`` steps.

    Used where a progress bar cannot draw (``dvc repro`` and Prefect logs are not terminals).
    """

    def report(step: int, row: dict[str, float]) -> None:
        if step % every and step != total:
            return
        elapsed = row["elapsed_s"]
        eta = elapsed / step * (total - step) if step else float("nan")
        val = row.get("val_pixel_auroc")
        val_txt = f", DGM-val pixel AUROC {val:.3f}" if val == val and val is not None else ""
        print(f"train {category}: step {step}/{total}, loss {row['total']:.4f}{val_txt}, "
              f"{elapsed:.0f} s, ETA {eta:.0f} s", flush=True)

    return report


def run(cfg: SIDNConfig, category: str, out_dir: Path, work: Path, progress: bool = True) -> dict[str, Any]:
    from sidn.jobs import train_category

    stamp = fingerprint(cfg, category)
    stamp_file = work / "FINGERPRINT"
    resume = (work / "checkpoint.pt").is_file() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp
    with scratch(work, fresh=not resume, keep_on_failure=True):
        if not resume:
            stamp_file.write_text(stamp + "\n")
        lines = None if progress else progress_lines(category, cfg.train.steps, max(1, cfg.train.steps // 10))
        result = train_category(cfg, category, work, resume=resume, progress=progress, callback=lines)
        for name in OUTPUTS:
            publish(work / name, Path(out_dir) / name)

    def num(x: Any) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    return {
        "category": category, "model": str(Path(out_dir) / "model.pt"), "resumed": resume,
        "best_step": int(result.best_step), "steps_done": int(result.steps_done),
        "best_val_loss": num(result.best_val_loss), "best_val_auroc": num(getattr(result, "best_val_auroc", None)),
    }


def _body(argv: Sequence[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("category")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quiet", action="store_true", help="progress as a line every tenth of the steps, no bar")
    a = parser.parse_args(argv)
    cfg = load_stage_config(PARAMS + RUNTIME_PARAMS, a.params)
    r = run(cfg, a.category, a.out_dir, a.out_dir.parent / ".work" / "train", progress=not a.quiet)
    print(f"train: {a.category}: {r['steps_done']} steps{' (resumed)' if r['resumed'] else ''}, "
          f"best step {r['best_step']} val loss {r['best_val_loss']} -> {a.out_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("train", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
