"""How a Prefect task runs: which failures are retried, what resumes from cache, where it runs.

Retries: only transient errors are retried (``OSError`` other than missing/permission errors,
``ConnectionError``, ``TimeoutError``), with exponential backoff; bad data, failed
validation and bad parameters fail at once (:func:`retry_on_transient`).

Resuming: task results are persisted under ``<runs_root>/.prefect/results`` with a cache key
made of the stage's declared params, the category's data fingerprint, the upstream task's
output hashes and the code fingerprint (:func:`stage_cache_key`). Re-running after a crash
returns cached results for every finished task and resumes at the first unfinished one; a
killed training continues from its checkpoint (:mod:`pipelines.stages.train`).

Where: a thread pool (one training at a time per GPU, :func:`gpu_slot`; ``max(1, cpus // 8)``
on a CPU machine) or a Dask cluster, local processes or a scheduler address
(:func:`make_task_runner`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from pipelines.layout import code_fingerprint
from pipelines.params import params_hash
from pipelines.stages import StageError
from sidn.config import SIDNConfig
from sidn.data.errors import DataError

# ---------------------------------------------------------------------------------------------
# Retry policy
# ---------------------------------------------------------------------------------------------

DETERMINISTIC_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
TRANSIENT_ERRORS = (OSError, ConnectionError, TimeoutError)  # requests' errors are OSErrors too
RETRY_DELAYS = exponential_backoff(backoff_factor=10)  # 10 s, 20 s, 40 s, ...


class DataProblem(DataError):
    """A :class:`~sidn.data.errors.DataError` in a form that survives pickling (Dask, result storage)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.path, self.problem))


class TransientError(RuntimeError):
    """Raise this (or an OSError) from a task for a failure worth retrying."""


def is_transient(exc: BaseException | None) -> bool:
    """True for failures a retry can fix (I/O hiccups, network, registry timeouts)."""
    if exc is None or isinstance(exc, (DataError, StageError, ValueError, TypeError, KeyError)):
        return False
    if isinstance(exc, DETERMINISTIC_OS_ERRORS):
        return False
    return isinstance(exc, TRANSIENT_ERRORS + (TransientError,))


def exception_of(state: State) -> BaseException | None:
    """The exception a failed state holds, or None."""
    data = state.data
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # the failure could not be read back: do not retry blindly
        return None
    return result if isinstance(result, BaseException) else None


def retry_on_transient(task: Any, task_run: Any, state: State) -> bool:
    """``retry_condition_fn``: retry transient errors only (see :func:`is_transient`)."""
    return is_transient(exception_of(state))


@contextlib.contextmanager
def portable_errors() -> Iterator[None]:
    """Re-raise DataError as the picklable DataProblem (same message, same class hierarchy)."""
    try:
        yield
    except DataProblem:
        raise
    except DataError as exc:
        raise DataProblem(exc.path, exc.problem) from None


# ---------------------------------------------------------------------------------------------
# Caching (resume after a crash)
# ---------------------------------------------------------------------------------------------


def task_config(raw: dict[str, Any]) -> SIDNConfig:
    """The ``cfg`` parameter of a task or flow (a plain dict, so Prefect can hash and persist it)."""
    return SIDNConfig.from_dict(raw, source="flow parameter cfg")


def stage_cache_key(keys: Sequence[str]) -> Callable[[Any, dict[str, Any]], str]:
    """The ``cache_key_fn`` of the task of a stage that reads the params ``keys``: stage,
    category, those params, data fingerprint, upstream outputs, code."""

    def cache_key(context: Any, parameters: dict[str, Any]) -> str:
        stage = context.task.name
        payload = {
            "stage": stage,
            "category": parameters["category"],
            "runs_root": str(Path(parameters["runs_root"]).resolve()),
            "params": params_hash(task_config(parameters["cfg"]), keys),
            "data": parameters.get("data_fp", ""),
            "upstream": (parameters.get("upstream") or {}).get("outputs_md5", {}),
            "code": code_fingerprint(),
        }
        return f"sidn-{stage}-{parameters['category']}-" + hashlib.sha256(
            json.dumps(payload, sort_keys=True, default=str).encode()
        ).hexdigest()[:24]

    return cache_key


# ---------------------------------------------------------------------------------------------
# Where tasks run: GPU slots for the thread-pool runner (Dask uses worker resources instead)
# ---------------------------------------------------------------------------------------------

_gpu_lock = threading.Lock()
_gpu_queue: "queue.Queue[int] | None" = None


@contextlib.contextmanager
def gpu_slot() -> Iterator[int | None]:
    """On a multi-GPU machine, hold one GPU for the duration of a training (thread-safe)."""
    global _gpu_queue
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n <= 1:
        yield None
        return
    with _gpu_lock:
        if _gpu_queue is None:
            _gpu_queue = queue.Queue()
            for i in range(n):
                _gpu_queue.put(i)
    index = _gpu_queue.get()
    try:
        with torch.cuda.device(index):
            yield index
    finally:
        _gpu_queue.put(index)


def make_task_runner(max_parallel: int | None = None, dask_address: str | None = None,
                     dask_workers: int = 0, gpus: bool = False) -> Any:
    """Thread pool by default; Dask with ``dask_address`` (a running cluster) or ``dask_workers``
    local worker processes (one thread each; with ``gpus`` each worker offers one ``GPU``)."""
    if dask_address or dask_workers:
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        kwargs: dict[str, Any] = {"n_workers": dask_workers, "threads_per_worker": 1, "processes": True,
                                  "dashboard_address": None}
        if gpus:
            kwargs["resources"] = {"GPU": 1}
        return DaskTaskRunner(cluster_kwargs=kwargs)
    return ThreadPoolTaskRunner(max_workers=max_parallel or default_parallelism())


def default_parallelism() -> int:
    """One training per GPU; on a CPU machine ``max(1, cpus // 8)`` (torch already uses all cores)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return max(1, (os.cpu_count() or 1) // 8)
