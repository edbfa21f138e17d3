"""The image score with and without the feature memory (``infer.memory_*``), through the pipeline's own jobs.

Paired: the same trained dev model (``experiments/dev.py`` wrote it into experiments/runs/) is
calibrated and evaluated once per variant, on a dev set's test split only. Without ``--variant``
the variants are ``infer.memory_rows`` 0 (the map's maximum) and ``--rows``::

    python experiments/memory_score.py experiments/runs/tile-base200-s0 data/raw/sidn-dev tile \
        >> experiments/memory_score.jsonl
    python experiments/memory_score.py experiments/runs/tile-base200-s0 data/raw/sidn-dev tile \
        --variant random8000="infer.memory_sampling=random" \
        --variant coreset4000="infer.memory_sampling=coreset infer.memory_rows=4000" >> experiments/memory_score.jsonl
"""
import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

from sidn.cpu import cpu_info
from sidn.config import load_config
from sidn.jobs import calibrate_category, evaluate_category

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("run", type=Path)
ap.add_argument("data")
ap.add_argument("category")
ap.add_argument("--rows", type=int, default=8000)
ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                help="a named set of space-separated section.key=value overrides; repeatable")
args = ap.parse_args()
variants = dict(v.split("=", 1) for v in args.variant) or {
    "rows0": "infer.memory_rows=0", f"rows{args.rows}": f"infer.memory_rows={args.rows}"}
if args.data.rstrip("/").endswith("sidn-default"):
    ap.error("choose on dev data only")
row = {"run": args.run.name, "category": args.category, "data": args.data, "cpu": cpu_info()["cpu_model"]}
for name, overrides in variants.items():
    cfg = load_config("params.yaml", [f"data.root={args.data}", "calibrate.int8=false", *shlex.split(overrides)])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        calibrate_category(args.run / "train" / "model.pt", args.category, Path(tmp), cfg=cfg)
        m = evaluate_category(Path(tmp) / "model.pt", args.category, Path(tmp) / "eval", overlays=0)
        op = m["operating_point"]
        row[name] = {"overrides": overrides, "pixel_auroc": round(m["pixel_auroc"], 4), "aupro": round(m["aupro"], 4),
                     "image_auroc": round(m["image_auroc"], 4), "catch_rate": round(op["catch_rate"], 3),
                     "false_alarm_rate": round(op["false_alarm_rate"], 3),
                     "minutes": round((time.monotonic() - t0) / 60, 2)}
print(json.dumps(row))
