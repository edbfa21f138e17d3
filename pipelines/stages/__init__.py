"""DVC stage entry points: one small module per stage, each with a ``main(argv)``.

Every module follows the same shape (iterative *example-get-started* style):

* ``PARAMS``: the exact ``params.yaml`` keys the stage reads -- the same list as the stage's
  ``params:`` in ``dvc.yaml`` (a test keeps them equal). ``main()`` builds its config from
  those keys only (:func:`pipelines.params.load_stage_config`), so DVC knows every parameter
  the stage depends on.
* ``run(cfg, category, ...)``: the work, as a plain function. ``main()`` calls it for DVC; the
  Prefect tasks in :mod:`pipelines.orchestration.tasks` call the very same function.
* Outputs are written into a scratch folder ``runs/<category>/.work/<stage>/`` and moved into
  place (``os.replace``) only once the stage has succeeded. DVC itself deletes a stage's
  declared outputs before running it, so after a failed stage none of its outputs exist --
  neither stale ones nor half-written ones. ``.work/`` is in ``.dvcignore``; it keeps the
  training checkpoint (so a killed ``train`` resumes) and the report of a failed validation.

Exit codes of ``main``: 0 success, 2 a deterministic, explained failure (bad data, failed
validation, bad parameters: the message names the file and the problem), 1 anything else
(with a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from pipelines.telemetry import switch_off
from sidn.data.errors import DataError


class StageError(RuntimeError):
    """A deterministic stage failure with a readable message (exit code 2, never retried)."""


def publish(src: Path, dst: Path) -> None:
    """Move ``src`` (file or folder) onto ``dst`` atomically, replacing what was there."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise StageError(f"{src}: expected output was not produced")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (anything there before is removed)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def cleanup_work(work: Path) -> None:
    """Remove a stage's scratch folder and the ``.work`` parent if it became empty."""
    remove(work)
    try:
        work.parent.rmdir()
    except OSError:
        pass


@contextlib.contextmanager
def scratch(work: Path, fresh: bool = True, keep_on_failure: bool = False) -> Iterator[Path]:
    """A stage's scratch folder: emptied first (``fresh``), removed after success, and after a
    failure too unless ``keep_on_failure`` (training checkpoint, failed validation report)."""
    work = Path(work)
    if fresh:
        fresh_dir(work)
    else:
        work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except BaseException:
        if not keep_on_failure:
            cleanup_work(work)
        raise
    cleanup_work(work)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def run_main(name: str, body: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None) -> int:
    """Run a stage body; explained failures print one readable block and exit 2."""
    # third-party libraries (great-expectations above all) log chatty INFO lines: keep WARNING for them
    logging.basicConfig(level=logging.WARNING, format=f"{name}: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for ours in ("sidn", "pipelines"):
        logging.getLogger(ours).setLevel(logging.INFO)
    switch_off()
    try:
        body(argv)
    except (DataError, StageError) as exc:
        print(f"\n{name} FAILED\n{exc}\n", file=sys.stderr)
        return 2
    return 0
