"""What CPU a figure was measured on: model name, ISA level, threads, and the precision training uses.

Every timing and every trained model records this (``sidn bench``, ``history``/bundle extras),
because results differ between CPU kinds: bf16 autocast runs only where the CPU computes bf16
natively (AVX512-BF16 / AMX), and fp32 and bf16 training give different weights.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_isa() -> str:
    """The best instruction set torch's kernels use here: ``AMX``, ``AVX512_BF16``, ``AVX512``, ``AVX2``, ...

    From torch's own CPU capability report, upgraded to ``AMX`` / ``AVX512_BF16`` when it is
    AVX-512 and /proc/cpuinfo lists those flags (oneDNN then runs bf16 natively). A capability
    lowered on purpose (``ATEN_CPU_CAPABILITY=avx2``, as when the AVX2 kind is emulated) is
    reported as lowered, not as the hardware's.
    """
    base = str(torch.backends.cpu.get_cpu_capability()).upper()
    if not base.startswith("AVX512"):
        return base
    try:
        flags = next(
            (line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("flags")), []
        )
    except OSError:
        flags = []
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512_BF16"
    return base


def cpu_info() -> dict[str, object]:
    """``cpu_model``, ``cpu_isa``, ``threads`` (torch intra-op threads) for records and reports."""
    return {"cpu_model": cpu_model(), "cpu_isa": cpu_isa(), "threads": torch.get_num_threads()}
