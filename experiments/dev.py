"""Dev protocol: train one category with a setting and score it on a *dev* set, never the default test split.

Dev sets (README "Detection quality"):

* ``data/raw/sidn-dev`` -- a second generated set (``sidn data synth --seed 1 --out data/raw/sidn-dev``):
  same generator as the default set, other images and defects;
* ``../shared/realdev/kolektorsdd`` -- real photographs (category ``commutator``), read in place.

The run goes through the same jobs as ``dvc repro`` (train -> calibrate -> evaluate at the masks'
original resolution), so the figures are the ones a user would get. One JSON line is appended to
``--results`` with the command, seeds, steps, wall minutes, the CPU and the dev figures:

    python experiments/dev.py carpet default --data data/raw/sidn-dev
    python experiments/dev.py commutator default --data ../shared/realdev/kolektorsdd
    python experiments/dev.py tile cosine --data data/raw/sidn-dev train.schedule=cosine --seed 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from sidn.bundle import load_bundle
from sidn.config import load_config
from sidn.data.decode import read_image
from sidn.inference import Predictor, image_score
from sidn.metrics import image_auroc
from sidn.cpu import cpu_info
from sidn.jobs import calibrate_category, evaluate_category, train_category



SCORE_SIGMAS = (0.0, 2.0, 4.0, 8.0)


def image_auroc_by_sigma(bundle: Path, scores_csv: Path) -> dict[str, float]:
    """Dev image AUROC for each ``infer.score_sigma`` in :data:`SCORE_SIGMAS` (maps computed once)."""
    model, cfg, _ = load_bundle(bundle)
    predictor = Predictor(model, cfg.infer, cfg.data.image_size)
    table = pd.read_csv(scores_csv)
    maps = [predictor.maps([read_image(p)])[0] for p in table["path"]]
    labels = table["label"].astype(int).tolist()
    return {f"image_auroc_sigma{s:g}": round(image_auroc([image_score(m, s, cfg.data.image_size) for m in maps], labels), 4)
            for s in SCORE_SIGMAS}


def score(trained: Path, run_dir: Path, category: str, cfg) -> dict:
    """Calibrate a copy of the trained bundle in ``run_dir`` and evaluate it on the dev set's test split."""
    shipped = run_dir / "model.pt"
    calibrate_category(trained, category, run_dir, cfg=cfg)
    metrics = evaluate_category(shipped, category, run_dir / "eval", overlays=4)
    op = metrics["operating_point"]
    return {
        "pixel_auroc": round(metrics["pixel_auroc"], 4), "aupro": round(metrics["aupro"], 4),
        "image_auroc": round(metrics["image_auroc"], 4),
        "catch_rate": round(op["catch_rate"], 3), "false_alarm_rate": round(op["false_alarm_rate"], 3),
        **image_auroc_by_sigma(shipped, run_dir / "eval" / "scores.csv"),
    }


def run(category: str, name: str, overrides: list[str], data: str, params: str, out: Path, seed: int) -> dict:
    cfg = load_config(params, [*overrides, f"data.root={data}", f"train.seed={seed}"])
    run_dir = out / f"{category}-{name}-s{seed}"
    t0 = time.monotonic()
    result = train_category(cfg, category, run_dir / "train", progress=False)
    train_s = time.monotonic() - t0
    figures = score(run_dir / "train" / "model.pt", run_dir, category, cfg)
    return {
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "category": category, "name": name, "data": data, "overrides": overrides, "seed": seed,
        "steps": result.steps_done, "best_step": result.best_step,
        "train_min": round(train_s / 60, 2), "total_min": round((time.monotonic() - t0) / 60, 2),
        **figures, "cpu": cpu_info()["cpu_model"], "amp": result.amp,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("category")
    ap.add_argument("name", help="a label for this setting")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides of params.yaml")
    ap.add_argument("--data", default="data/raw/sidn-dev")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seed", type=int, default=0, help="train.seed (one run is one sample: use two)")
    ap.add_argument("--out", type=Path, default=Path("experiments/runs"))
    ap.add_argument("--results", type=Path, default=Path("experiments/dev_results.jsonl"))
    args = ap.parse_intermixed_args()
    if "/test" in args.data or args.data.rstrip("/").endswith("sidn-default"):
        ap.error("choose on dev data only: --data must be a dev set, not the default set")
    row = run(args.category, args.name, args.overrides, args.data, args.params, args.out, args.seed)
    print(json.dumps(row))
    with args.results.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
