"""The command line of ``python -m infra`` (and of the wrappers ``infra/up``, ``infra/down``,
``infra/status``): ``up [GROUP ...] [--no-dvc]``, ``down``, ``status [--json]``, ``env``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import infra
from infra import InfraError
from infra.stack import GROUPS, Stack, StackConfig
from infra.swift import ensure_installed


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (``up``, ``down``, ``status``, ``env``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="infra", description=infra.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the services (all by default)")
    p_up.add_argument("groups", nargs="*", metavar="{s3,mlflow,prefect}", help="services to start")
    p_up.add_argument("--no-dvc", action="store_true", help="do not write the DVC remote into .dvc/config.local")
    sub.add_parser("down", help="stop what `up` started")
    p_st = sub.add_parser("status", help="report each service")
    p_st.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print the path of env.sh (source it to use the services)")
    args = parser.parse_args(argv)

    try:
        cfg = StackConfig.from_env()
        if args.cmd == "up":
            groups = args.groups or list(GROUPS)
            bad = [g for g in groups if g not in GROUPS]
            if bad:
                parser.error(f"unknown service {bad[0]!r}: choose from {', '.join(GROUPS)}")
            if "mlflow" in groups and "s3" not in groups:
                groups = ["s3", *groups]  # MLflow keeps its artifacts in the object store
            ensure_installed(cfg.swift_venv)
            print(f"infra up: state in {cfg.state}")
            t0 = time.monotonic()
            stack = Stack(cfg)
            stack.up(groups, configure_dvc=not args.no_dvc)
            print(f"infra up: ready in {time.monotonic() - t0:.1f}s.  Use them with:  . {cfg.state / 'env.sh'}")
            return 0
        stack = Stack(cfg)
        if args.cmd == "down":
            print("infra down:")
            stack.down()
            return 0
        if args.cmd == "status":
            rows = stack.status()
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                print(f"{'service':<16}{'state':<16}{'pid':<8}{'port':<7}{'health':<9}start-up")
                for r in rows:
                    print(
                        f"{r['name']:<16}{r['state']:<16}{str(r['pid'] or '-'):<8}{str(r['port'] or '-'):<7}"
                        f"{('ok' if r['healthy'] else '-'):<9}"
                        f"{(str(r['startup_seconds']) + 's') if r['startup_seconds'] else '-'}"
                    )
            return 0 if all(r["healthy"] for r in rows if r["state"] == "running") else 1
        if args.cmd == "env":
            print(cfg.state / "env.sh")
            return 0
    except InfraError as exc:
        print(f"infra {args.cmd}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"infra {args.cmd}: interrupted", file=sys.stderr)
        return 130
    return 2
