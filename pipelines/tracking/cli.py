"""``sidn promote`` and ``sidn registry``: the MLflow side of the CLI (entry point
``sidn.commands: mlflow = pipelines.tracking.cli:register``).

    sidn promote --category carpet                        # compare + gate; records a pending request
    sidn promote --category carpet --approve --by alice   # compare + gate; moves `champion` if it passes
    sidn promote --category carpet --to 3 --by alice      # rollback: `champion` -> former champion v3
    sidn registry [--category carpet] [--json]            # models, versions, aliases, key metrics
    sidn registry publish models:/sidn-carpet@champion    # the bundle -> s3://sidn-data/bundles/models/...

Both print, per category and per defect type, the figures people approve on, at the threshold
the model ships with: catch rate (caught/defective), false-alarm rate on good test images
(alarms/good) with its 95 % interval, pixel precision / recall / IoU.

Exit codes of ``sidn promote``: 0 promoted / pending / rolled back / unchanged, 1 the gate (or,
for ``--to``, an absolute floor) refused, 2 an error (no challenger, unknown version, ``--to`` a
version that was never champion, --approve or --to without --by, no server, or the server
refused: only a release manager may move ``champion``, HTTP 403).
``sidn registry publish`` copies a registered version's bundle into the S3 store for line
machines that reach object storage only (pipelines/tracking/distribution.py); it exits 2 on any error.
The store is ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db``. MLflow is
imported inside the handlers only, so ``sidn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def _quick_failure() -> None:
    """A CLI user waits seconds, not minutes, for an unreachable server (MLflow retries 7x by default)."""
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from pipelines.telemetry import switch_off

    switch_off()


def _config(args: argparse.Namespace):  # -> SIDNConfig
    from sidn.config import SIDNConfig

    path = Path(args.params) if args.params else Path("params.yaml")
    if args.params or path.is_file():
        from pipelines.params import load_params

        return load_params(path, getattr(args, "profile", None))
    return SIDNConfig()


def cmd_promote(args: argparse.Namespace) -> int:
    from pipelines.tracking.registry import RegistryError, promote
    from pipelines.tracking.runs import data_version, tracking_uri

    _quick_failure()
    cfg = _config(args)
    evaluate_fn = None
    current = None
    if args.to is None and not args.no_reevaluate:
        data_root = args.data or cfg.data.root

        def evaluate_fn(bundle: Path) -> dict[str, Any]:
            from sidn.jobs import evaluate_category

            print(f"re-evaluating the champion on {data_root}/{args.category} ...", file=sys.stderr)
            with tempfile.TemporaryDirectory(prefix="sidn-champion-eval-") as tmp:
                return evaluate_category(bundle, args.category, Path(tmp), data_root=data_root, overlays=0)

        current = data_version(cfg, args.category, data_root)  # the data the champion is re-evaluated on
    try:
        result = promote(args.category, approve=args.approve, by=args.by, to_version=args.to, cfg=cfg,
                         evaluate_fn=evaluate_fn, current_data_version=current)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # server unreachable, bad store, refused by the server ...
        if getattr(exc, "error_code", "") == "PERMISSION_DENIED":
            import os

            who = os.environ.get("MLFLOW_TRACKING_USERNAME") or "anonymous"
            print(f"error: the MLflow server refused this as '{who}' (HTTP 403): only a release manager's "
                  f"account may move the champion alias ({exc})", file=sys.stderr)
            return 2
        print(f"error: {type(exc).__name__}: {exc} (tracking store: {tracking_uri()})", file=sys.stderr)
        return 2
    if result.comparison is not None:
        print(result.comparison.table())
    stream = sys.stderr if result.status == "refused" else sys.stdout
    print(("REFUSED: " if result.status == "refused" else "") + result.message, file=stream)
    return result.exit_code


def cmd_registry(args: argparse.Namespace) -> int:
    from pipelines.tracking.registry import format_defects, format_registry, list_registry, to_records
    from pipelines.tracking.runs import tracking_uri

    _quick_failure()
    cfg = _config(args)
    try:
        df = list_registry(cfg, category=args.category)
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc} (tracking store: {tracking_uri()})", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_records(df), indent=2, default=str))
        return 0
    print(format_registry(df))
    defects = format_defects(df, only_aliased=not args.all_defects)
    if defects:
        print("\nper defect type, at the calibrated threshold (good test images count as false alarms for "
              "every type)" + ("" if args.all_defects else "; versions with an alias, --all-defects for all") + ":")
        print(defects)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from pipelines.tracking.distribution import publish
    from pipelines.tracking.model_uri import ModelURIError

    _quick_failure()
    try:
        done = publish(args.model_uri, args.bucket)
    except ModelURIError as exc:  # DistributionError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "published" if done.uploaded else "already published"
    print(f"{done.version_uri}  version {done.version} ({state})")
    if done.alias_uri is not None:
        moved = ("unchanged" if done.previous_version == done.version else
                 "set" if done.previous_version is None else f"moved from version {done.previous_version}")
        print(f"{done.alias_uri}  -> version {done.version} ({moved})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``promote`` and ``registry`` to the ``sidn`` command line."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "promote", help="gate + approval to move the MLflow alias 'champion' (or roll back with --to)",
        description=(
            "Compare the 'challenger' version of sidn-<category> with the 'champion' on the same evaluation "
            "data and apply the gate of params.yaml (register:, absolute floors included). Without --approve a "
            "passing gate records a pending request; with --approve --by NAME the champion alias moves. "
            "--to VERSION --by NAME rolls back to a former champion that still passes the floors. On the "
            "project's MLflow server only a release manager's account may move the champion alias."
        ),
        epilog="examples:\n  sidn promote --category carpet\n  sidn promote --category carpet --approve --by alice\n"
               "  sidn promote --category carpet --to 3 --by alice",
        formatter_class=fmt,
    )
    p.add_argument("--category", required=True)
    p.add_argument("--approve", action="store_true", help="approve the promotion (needs --by)")
    p.add_argument("--by", help="who approves or rolls back (required with --approve and --to; recorded)")
    p.add_argument("--to", type=int, metavar="VERSION",
                   help="roll back: make VERSION, a former champion, the champion again (floors checked; needs --by)")
    p.add_argument("--params", help="params.yaml with the register: gate (default ./params.yaml if present)")
    p.add_argument("--profile", help="params profile")
    p.add_argument("--data", help="data root for re-evaluating the champion (default: data.root)")
    p.add_argument("--no-reevaluate", action="store_true",
                   help="never re-evaluate the champion (the gate fails if the data versions differ)")
    p.set_defaults(func=cmd_promote)

    p = subparsers.add_parser(
        "registry", help="list registered sidn models, versions, aliases and key metrics",
        description="List every version of the sidn-* models in the MLflow registry with aliases, metrics and "
                    "the figures at the calibrated threshold (catch rate, false-alarm rate with its 95%% "
                    "interval, pixel precision/recall/IoU), also per defect type.",
        epilog="example:\n  sidn registry --category carpet", formatter_class=fmt,
    )
    p.add_argument("--category", help="only sidn-<category>")
    p.add_argument("--params", help="params.yaml (for register.model_name_prefix)")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    p.add_argument("--all-defects", action="store_true", help="per-defect figures of every version, not only aliased")
    p.set_defaults(func=cmd_registry)
    sub = p.add_subparsers(dest="registry_command", metavar="{publish}")
    q = sub.add_parser(
        "publish", help="publish a registered version's bundle to the S3 store (for --model s3://...)",
        description="Copy the bundle (model.pt) of a registered version into the S3 store as an immutable, "
                    "checksummed version s3://BUCKET/bundles/models/NAME/VERSION (no-op if already there); "
                    "for NAME@ALIAS also point s3://BUCKET/bundles/models/NAME@ALIAS at it. Prints the "
                    "s3:// URIs that `sidn predict --model` takes on a machine that only reaches the store.",
        epilog="example:\n  sidn registry publish models:/sidn-carpet@champion\n"
               "  sidn predict --model s3://sidn-data/bundles/models/sidn-carpet@champion photos/ --out predictions/",
        formatter_class=fmt,
    )
    q.add_argument("model_uri", metavar="MODEL_URI", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    q.add_argument("--bucket", default="sidn-data", help="destination bucket (default: sidn-data)")
    q.set_defaults(func=cmd_publish)
