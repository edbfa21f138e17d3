"""Worker processes of the embedded-dataset generator (``sidn.data.synth``).

How many processes, which start method, and how each worker process is set up. No equation
of the SIDN paper applies.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys

import cv2


def cpu_count() -> int:
    """CPUs this process may use (all CPUs where affinity is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def mp_context() -> mp.context.BaseContext:
    """'spawn' (safe when the caller runs threads, e.g. torch); 'fork' where spawn cannot
    re-import the caller's ``__main__`` (a script read from stdin)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not os.path.exists(main_file) and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("spawn")


def init_worker() -> None:
    """Pool initializer: one OpenCV thread per worker process, malloc tuned for image buffers."""
    cv2.setNumThreads(1)
    _tune_malloc()


def _tune_malloc() -> None:
    """Worker processes only: let glibc keep freed image-sized buffers on the heap instead of
    returning them to the OS after every operation (mmap/munmap + page faults cost ~20 %
    of the run time). No-op where glibc's mallopt is unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
