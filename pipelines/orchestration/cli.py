"""``sidn pipeline ...`` and ``sidn report``: the Prefect side of the CLI (entry point
``sidn.commands: pipeline = pipelines.orchestration.cli:register``).

    sidn pipeline run [--categories carpet wood] [--max-parallel N] [--dask ADDRESS | --dask-local N] [--gpus]
    sidn pipeline retrain [--push] [--max-parallel N]    # the scheduled flow, once, now
    sidn pipeline serve [--cron "0 3 * * 0"] [--push]      # serve the retraining deployment
    sidn report [--runs runs] [--out reports]              # rebuild the HTML + markdown report

Flows talk to the Prefect server in ``PREFECT_API_URL``; without one, Prefect starts a
temporary local server for the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipelines.orchestration import RETRAIN_CRON

DESCRIPTION = "run the pipeline with Prefect (fan-out over categories, retraining schedule)"


def _telemetry_off() -> None:
    from pipelines.telemetry import switch_off

    switch_off()


def cmd_run(args: argparse.Namespace) -> int:
    _telemetry_off()
    from pipelines.orchestration.flows import all_categories

    state = all_categories(
        categories=args.categories, max_parallel=args.max_parallel, params_path=args.params,
        profile=args.profile, overrides=args.overrides, runs_root=args.runs, dask_address=args.dask,
        dask_workers=args.dask_local or 0, gpus=args.gpus, register_models=not args.no_register,
        commit=args.commit, return_state=True,
    )
    summary: Any = state.result(raise_on_failure=False)
    if isinstance(summary, dict):
        for category, info in summary.items():
            if info.get("status") == "completed":
                metrics = info["results"].get("evaluate", {})
                print(f"{category:10s} ok      pixel AUROC {metrics.get('pixel_auroc', float('nan')):.4f}  "
                      f"AUPRO {metrics.get('aupro', float('nan')):.4f}  image AUROC {metrics.get('image_auroc', float('nan')):.4f}")
            else:
                print(f"{category:10s} FAILED  in {info.get('stage')}: {info.get('message')}")
    else:
        print(f"pipeline run ended {state.name}: {state.message}", file=sys.stderr)
    return 0 if state.is_completed() else 1


def cmd_retrain(args: argparse.Namespace) -> int:
    _telemetry_off()
    from pipelines.orchestration.flows import retrain

    state = retrain(repo=args.repo, push=args.push, max_parallel=args.max_parallel, pull=not args.no_pull,
                    return_state=True)
    result = state.result(raise_on_failure=False)
    print(json.dumps(result, indent=2, default=str) if isinstance(result, dict) else result)
    return 0 if state.is_completed() else 1


def cmd_serve(args: argparse.Namespace) -> int:
    _telemetry_off()
    from pipelines.orchestration.deployment import serve

    print(f"serving deployment sidn-retrain/sidn-retrain on cron '{args.cron}' (Ctrl-C to stop); trigger a run with\n"
          "  prefect deployment run 'sidn-retrain/sidn-retrain'")
    serve(cron=args.cron, repo=args.repo, push=args.push, max_parallel=args.max_parallel)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.params import load_params
    from pipelines.report import build_report

    categories = args.categories or load_params(args.params).data.categories
    report = build_report(args.runs, categories, args.out)
    print(report.markdown.read_text())
    print(f"report: {report.html}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pipeline`` (run | retrain | serve) and ``report`` to the ``sidn`` command."""
    pipeline = subparsers.add_parser("pipeline", help=DESCRIPTION, description=DESCRIPTION)
    sub = pipeline.add_subparsers(dest="pipeline_command", required=True)

    p = sub.add_parser("run", help="all categories (or --categories) in parallel as Prefect tasks",
                       description="Validate, generate defects, train, calibrate, evaluate and register every "
                                   "category; a failing category does not stop the others.")
    p.add_argument("--categories", nargs="+", help="default: data.categories from the params file")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profile", help="a profile from params.yaml, e.g. paper")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--runs", default="runs", help="output root (default: runs, the DVC layout)")
    p.add_argument("--max-parallel", type=int, help="categories at a time (default: one per GPU, or cpus//8)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dask", metavar="ADDRESS", help="run the tasks on this Dask scheduler (tcp://host:8786)")
    where.add_argument("--dask-local", type=int, metavar="N", help="start a local Dask cluster of N worker processes")
    p.add_argument("--gpus", action="store_true", help="Dask workers offer a GPU resource; each training asks for one")
    p.add_argument("--no-register", action="store_true", help="skip the MLflow registration task")
    p.add_argument("--commit", action="store_true", help="record the outputs in dvc.lock (dvc commit) afterwards")
    p.set_defaults(func=cmd_run)

    for name, helptext in (("retrain", "run the retraining flow once: dvc pull, per-category tasks, dvc commit, dvc push"),
                           ("serve", "serve the retraining deployment on a cron schedule")):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--repo", default=".", help="repository to retrain in (default: .)")
        p.add_argument("--push", action="store_true", help="dvc push afterwards (if a remote is configured)")
        p.add_argument("--max-parallel", type=int, help="categories at a time (default: one per GPU, or cpus//8)")
        if name == "serve":
            p.add_argument("--cron", default=RETRAIN_CRON, help=f"schedule (default '{RETRAIN_CRON}', UTC)")
            p.set_defaults(func=cmd_serve)
        else:
            p.add_argument("--no-pull", action="store_true", help="do not dvc pull first")
            p.set_defaults(func=cmd_retrain)

    p = subparsers.add_parser("report", help="build the HTML + markdown report from runs/",
                              description="Build reports/index.html (self-contained) and reports/summary.md.")
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="reports")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--categories", nargs="+")
    p.set_defaults(func=cmd_report)
