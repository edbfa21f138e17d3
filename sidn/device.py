"""Device selection and bf16 autocast support checks.

``select_device("auto")`` picks CUDA when present, else the CPU. ``amp_enabled`` decides
whether bf16 autocast is used for a device: ``"off"`` never, ``"auto"`` only where a
small conv + matmul under ``torch.autocast(..., dtype=torch.bfloat16)`` runs, gives finite
results close to fp32, and the hardware computes bf16 natively (CUDA ``is_bf16_supported``;
on the CPU oneDNN's bf16 path, i.e. AVX512-BF16 / AMX, without which bf16 is emulated and
slower than fp32). ``"on"`` forces autocast where it merely works.
"""

from __future__ import annotations

import contextlib
import functools
from typing import ContextManager

import torch

AMP_MODES = ("auto", "off", "on")


def select_device(preference: str = "auto") -> torch.device:
    """Resolve ``preference`` ("auto", "cpu", "cuda", "cuda:1", ...) to a usable device.

    Raises ValueError naming the preference if it cannot be used on this machine.
    """
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(pref)
    except RuntimeError as exc:
        raise ValueError(f"train.device={preference!r}: not a torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={preference!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"train.device={preference!r}: only cpu and cuda are supported")
    return dev


def _native_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older/odd builds: no oneDNN bf16 query
        return False


@functools.lru_cache(maxsize=None)
def _bf16_autocast_works(device_type: str) -> bool:
    """Run a tiny conv + matmul under bf16 autocast and compare against fp32."""
    try:
        dev = torch.device(device_type)
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.rand(2, 1, 32, 32, generator=gen).to(dev)
        w = (torch.rand(4, 1, 3, 3, generator=gen) - 0.5).to(dev)
        m = (torch.rand(4 * 32 * 32, 8, generator=gen) - 0.5).to(dev)
        with torch.no_grad():
            ref = torch.nn.functional.conv2d(x, w, padding=1).flatten(1) @ m
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                out = torch.nn.functional.conv2d(x, w, padding=1).flatten(1) @ m
        if out.dtype != torch.bfloat16:  # autocast silently not applied
            return False
        out = out.float()
        if not torch.isfinite(out).all():
            return False
        scale = ref.abs().max().clamp_min(1e-6)
        return bool(((out - ref).abs().max() / scale) < 0.05)
    except Exception:
        return False


def bf16_autocast_supported(device: torch.device | str, require_native: bool = True) -> bool:
    """True if bf16 autocast works on ``device`` (and, if ``require_native``, is hardware-accelerated)."""
    device_type = torch.device(device).type
    if require_native and not _native_bf16(device_type):
        return False
    return _bf16_autocast_works(device_type)


def amp_enabled(amp: str, device: torch.device | str) -> bool:
    """Resolve the ``train.amp`` setting ("auto" | "off" | "on") for ``device``."""
    mode = (amp or "auto").strip().lower()
    if mode not in AMP_MODES:
        raise ValueError(f"train.amp={amp!r}: expected one of {', '.join(AMP_MODES)}")
    if mode == "off":
        return False
    if mode == "on":
        if not bf16_autocast_supported(device, require_native=False):
            raise ValueError(f"train.amp='on': bf16 autocast does not work on {torch.device(device)}")
        return True
    return bf16_autocast_supported(device, require_native=True)


def autocast(device: torch.device | str, enabled: bool) -> ContextManager:
    """bf16 autocast context for ``device`` if ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def describe(device: torch.device | str) -> dict[str, object]:
    """Primitive description of the compute device (for bundle extras and bench output)."""
    dev = torch.device(device)
    info: dict[str, object] = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        info["cuda_name"] = torch.cuda.get_device_name(dev)
    else:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["bf16_native"] = _native_bf16(dev.type)
    return info
