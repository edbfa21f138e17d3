"""Learning curve: detection quality against CPU minutes of training, on the dev sets.

Trains each category once for the largest step budget and keeps, at every smaller budget, the
model a run of that many steps would have shipped (the best-so-far bundle: with a constant
learning rate a shorter run is exactly a prefix of the longer one, as resuming proves bit for bit;
budgets must be multiples of ``train.val_every``; a ``cosine`` schedule depends on the budget and
is refused). Each kept model is scored with the dev protocol of ``experiments/dev.py`` (calibrate
on held-out good images, evaluate on the dev test split) and the rows go to ``--results``, with
the training minutes spent up to that budget. ``--plot`` draws pixel AUROC, AUPRO
and image AUROC against training minutes from those rows (one line per category):

    python experiments/learning_curve.py run train.num_threads=1 --budgets 50 150 300 450 \\
        --set data/raw/sidn-dev:carpet,grid,leather,tile,wood --set ../shared/realdev/kolektorsdd:commutator
    python experiments/learning_curve.py plot --out docs/learning_curve.png --table docs/learning_curve.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

METRICS = ("pixel_auroc", "aupro", "image_auroc")


def run(budgets: list[int], sets: list[str], overrides: list[str], results: Path, out: Path, seed: int) -> None:
    import shutil

    from dev import score  # experiments/dev.py, the dev protocol

    from sidn.config import load_config
    from sidn.cpu import cpu_info
    from sidn.jobs import train_category

    budgets = sorted(budgets)
    for spec in sets:
        data, _, cats = spec.partition(":")
        for category in cats.split(","):
            cfg = load_config("params.yaml", [*overrides, f"data.root={data}", f"train.seed={seed}",
                                              f"train.steps={budgets[-1]}"])
            if cfg.train.schedule != "constant" or any(b % cfg.train.val_every for b in budgets):
                raise SystemExit("learning curve: needs train.schedule=constant and budgets that are multiples of val_every")
            base = out / f"curve-{category}-s{seed}"
            minutes: dict[int, float] = {}

            def keep(step: int, row: dict) -> None:
                if step in budgets:
                    (base / f"{step}").mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(base / "train" / "model.pt", base / f"{step}" / "trained.pt")
                    minutes[step] = row["elapsed_s"] / 60.0

            train_category(cfg, category, base / "train", progress=False, callback=keep)
            for steps in budgets:
                row = {"category": category, "data": data, "curve_steps": steps, "seed": seed,
                       "overrides": overrides, "train_min": round(minutes[steps], 2),
                       **score(base / f"{steps}" / "trained.pt", base / f"{steps}", category, cfg),
                       "cpu": cpu_info()["cpu_model"], "threads": cfg.train.num_threads or "default"}
                print(json.dumps(row), flush=True)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")


def load_curve(results: Path) -> pd.DataFrame:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    df = pd.DataFrame([r for r in rows if "curve_steps" in r])
    return df.sort_values(["category", "curve_steps"])


def plot(results: Path, out: Path, table: Path | None, step_seconds: dict[str, float]) -> None:
    """Draw the curve against training minutes ``steps * seconds per step`` of the first entry of
    ``step_seconds`` (a quiet measurement of one training step; the ``train_min`` the rows record
    is wall time under whatever else ran) and tabulate minutes for every entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = load_curve(results)
    for label, sec in step_seconds.items():
        df[f"min ({label})"] = df["curve_steps"] * sec / 60.0
    x = f"min ({next(iter(step_seconds))})"
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), sharex=True)
    for ax, metric in zip(axes, METRICS):
        for category, g in df.groupby("category"):
            ax.plot(g[x], g[metric], marker="o", label=category)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel(f"training minutes, {next(iter(step_seconds))}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dev-set figure")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    if table is not None:
        cols = ["category", "curve_steps", *[f"min ({k})" for k in step_seconds], *METRICS, "catch_rate", "false_alarm_rate"]
        table.write_text(df[cols].to_markdown(index=False, floatfmt=".3f") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--budgets", type=int, nargs="+", required=True, help="train.steps values")
    r.add_argument("--set", dest="sets", action="append", required=True, help="DATA_ROOT:cat1,cat2 (dev sets only)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("overrides", nargs="*", help="section.key=value overrides (e.g. a profile's keys)")
    r.add_argument("--out", type=Path, default=Path("experiments/runs"))
    r.add_argument("--results", type=Path, default=Path("experiments/learning_curve.jsonl"))
    p = sub.add_parser("plot")
    p.add_argument("--results", type=Path, default=Path("experiments/learning_curve.jsonl"))
    p.add_argument("--out", type=Path, default=Path("docs/learning_curve.png"))
    p.add_argument("--table", type=Path, default=None)
    p.add_argument("--step-seconds", nargs="+", default=["this CPU=0.31"], metavar="LABEL=SECONDS",
                   help="seconds per training step (batch 16 of 128 px windows), measured on a quiet machine")
    args = ap.parse_args()
    if args.cmd == "run":
        if any(s.split(":")[0].rstrip("/").endswith("sidn-default") for s in args.sets):
            ap.error("learning curves are drawn on dev sets, not the default set")
        run(args.budgets, args.sets, args.overrides, args.results, args.out, args.seed)
    else:
        seconds = {k: float(v) for k, _, v in (item.rpartition("=") for item in args.step_seconds)}
        plot(args.results, args.out, args.table, seconds)


if __name__ == "__main__":
    main()
