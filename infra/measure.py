"""Measure the local stack: start-up time of each service, and DVC push/pull of a realistic folder.

    .venv/bin/python -m infra.measure [--mb 50] [--keep]      (from the repository root)

Starts the services one group at a time (so each start-up time is measured alone, not competing
for the CPUs with the others) in a fresh state folder under /tmp (ports from the usual SIDN_*_PORT
variables), writes ~50 MB of 512x512 grayscale PNG textures into a throw-away git+DVC repository,
then times `dvc push` to the local S3 store, wipes the DVC cache and the data, times `dvc pull`
and checks every byte. The same folder also goes through pipelines/tracking/storage.py (boto3) for
comparison. Prints a table and writes measurements.json into the state folder; stops everything
unless --keep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra import REPO
from infra.dvc_remote import configure_dvc_remote
from infra.environment import TELEMETRY_OFF, main_venv_bin
from infra.stack import Stack, StackConfig
from infra.swift import DATA_BUCKET


def make_pngs(folder: Path, megabytes: float, seed: int = 0) -> int:
    """Textured 512x512 8-bit grayscale PNGs (smooth pattern + sensor noise), about 0.26 MB each."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total, i = 0, 0
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    while total < megabytes * 1e6:
        f1, f2 = rng.uniform(0.02, 0.2, 2)
        base = 128 + 50 * np.sin(f1 * xx + rng.uniform(0, 6)) * np.cos(f2 * yy)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        sub = "train/good" if i % 5 else "test/good"
        path = folder / sub / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
        total += path.stat().st_size
        i += 1
    return i


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of the PNG folder (MB)")
    ap.add_argument("--keep", action="store_true", help="leave the services running")
    args = ap.parse_args()

    state = Path(tempfile.mkdtemp(prefix="sidn-measure-"))
    os.environ["SIDN_INFRA_DIR"] = str(state)
    os.environ.setdefault("SIDN_SWIFT_VENV", str(REPO / ".infra" / "venv-swift"))
    for k, v in TELEMETRY_OFF.items():
        os.environ[k] = v
    cfg = StackConfig.from_env()
    s = Stack(cfg)
    results: dict = {"services": {}, "machine": {"cpus": os.cpu_count()}}
    try:
        t_all = time.monotonic()
        for group in ("s3", "mlflow", "prefect"):
            t0 = time.monotonic()
            s.up([group], configure_dvc=False, echo=lambda line: print(line, flush=True))
            results["services"][f"group {group} (incl. checks)"] = round(time.monotonic() - t0, 2)
        results["total_up_seconds"] = round(time.monotonic() - t_all, 2)
        results["services"].update(json.loads((state / "startup.json").read_text()))

        work = state / "measure"
        repo = work / "repo"
        repo.mkdir(parents=True)
        env = {**os.environ, **TELEMETRY_OFF,
               "GIT_AUTHOR_NAME": "m", "GIT_AUTHOR_EMAIL": "m@example.invalid",
               "GIT_COMMITTER_NAME": "m", "GIT_COMMITTER_EMAIL": "m@example.invalid"}
        dvc = main_venv_bin("dvc")

        def run(*cmd: str) -> float:
            t0 = time.monotonic()
            subprocess.run(list(cmd), cwd=repo, env=env, check=True, capture_output=True, text=True)
            return time.monotonic() - t0

        run("git", "init", "-q")
        run(dvc, "init", "-q")
        data = repo / "data" / "pngs"
        n = make_pngs(data, args.mb)
        size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        digest = tree_digest(data)
        t_add = run(dvc, "add", "-q", "data/pngs")
        configure_dvc_remote(repo, s.s3_endpoint, s.creds, url=f"s3://{DATA_BUCKET}/measure-dvc")
        t_push = run(dvc, "push")
        shutil.rmtree(repo / ".dvc" / "cache")
        shutil.rmtree(data)
        t_pull = run(dvc, "pull")
        assert tree_digest(data) == digest, "dvc pull returned different bytes"
        results["dvc"] = {"files": n, "megabytes": round(size / 1e6, 1), "add_s": round(t_add, 2),
                          "push_s": round(t_push, 2), "pull_s": round(t_pull, 2),
                          "round_trip_s": round(t_push + t_pull, 2), "bytes_match": True}

        # the same folder through pipelines/tracking/storage.py (boto3, sha256 verified both ways)
        for k, v in s.client_env().items():
            os.environ[k] = v
        from pipelines.tracking import storage

        client = storage.make_client()
        t0 = time.monotonic()
        storage.upload_prefix(data, DATA_BUCKET, "measure-boto3/pngs", client=client)
        t_up = time.monotonic() - t0
        out = work / "boto3-out"
        t0 = time.monotonic()
        storage.download_prefix(DATA_BUCKET, "measure-boto3/pngs", out, client=client)
        t_down = time.monotonic() - t0
        assert tree_digest(out) == digest
        results["boto3_storage"] = {"upload_s": round(t_up, 2), "download_s": round(t_down, 2)}
    finally:
        if not args.keep:
            s.down(echo=lambda line: None)
    (state / "measurements.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    print(f"written to {state / 'measurements.json'}")
    if not args.keep:
        shutil.rmtree(state / "measure", ignore_errors=True)
        shutil.rmtree(state / "swift" / "srv", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
