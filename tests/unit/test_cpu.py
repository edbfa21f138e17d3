"""What the CPU records say (sidn/cpu.py)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_lowered_capability_is_reported_as_lowered():
    """With torch's kernels held to AVX2 (how the AVX2 CPU kind is emulated) the record says AVX2,
    even on a CPU whose flags list AVX512-BF16 or AMX."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", "from sidn.cpu import cpu_isa; print(cpu_isa())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"
