"""Which int8 scheme this CPU computes exactly, and the names of the int8 modes (see :mod:`sidn.int8`)."""

from __future__ import annotations

import functools

import torch

from sidn.device import bf16_autocast_supported

SCHEMES = ("u8s8", "u7s8")  # activation levels 255 / 127, int8 weights
_LEVELS = {"u8s8": 255, "u7s8": 127}
TAILS = ("block", "head", "none")
FSEMS = ("int8", "float")  # the FSEM branches in int8, or in float (bf16 where native, else fp32)
DEFAULT_TAIL = "head"
W_QMAX = 127  # int8 weights, symmetric per output channel


def _onednn_int8_ops() -> bool:
    ops = torch.ops.onednn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, n) for n in ("qconv_prepack", "qconv2d_pointwise"))


@functools.lru_cache(maxsize=None)
def _exact_at(levels: int) -> bool:
    """True if a oneDNN int8 conv of ``levels`` x 127 products sums exactly here (no saturation)."""
    try:
        ci = 8
        x = torch.full((1, ci, 2, 2), levels, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        w = torch.full((4, ci, 1, 1), W_QMAX, dtype=torch.int8).contiguous(memory_format=torch.channels_last)
        ws, wzp = torch.ones(4), torch.zeros(4, dtype=torch.int32)
        packed = torch.ops.onednn.qconv_prepack(w, ws, 1.0, 0, [1, 1], [0, 0], [1, 1], 1, [1, ci, 2, 2])
        y = torch.ops.onednn.qconv2d_pointwise(x, 1.0, 0, packed, ws, wzp, None, [1, 1], [0, 0], [1, 1], 1, 1.0, 0,
                                               torch.float32, "none", [], "")
        return bool((y == float(ci * levels * W_QMAX)).all())
    except Exception:  # no oneDNN int8 kernels for this CPU / build
        return False


def int8_scheme(device: torch.device | str = "cpu") -> str | None:
    """The int8 scheme ``device`` runs exactly: ``"u8s8"`` (VNNI/AMX), ``"u7s8"`` (other x86), None (no int8).

    Only the CPU with oneDNN int8 kernels qualifies. Found with a probe convolution (cached), so
    ``ONEDNN_MAX_CPU_ISA`` (e.g. ``AVX2`` to emulate an older CPU) is honoured.
    """
    if torch.device(device).type != "cpu" or not _onednn_int8_ops():
        return None
    if _exact_at(255):
        return "u8s8"
    return "u7s8" if _exact_at(127) else None


def checkable_schemes(device: torch.device | str = "cpu") -> list[str]:
    """Schemes whose int8 results this machine computes exactly (as any CPU would), best first."""
    s = int8_scheme(device)
    return [] if s is None else list(SCHEMES[SCHEMES.index(s):])


def _float_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """bf16 where the CPU computes it natively, else float32: the precision of a float FSEM."""
    return torch.bfloat16 if bf16_autocast_supported(device, require_native=True) else torch.float32


def int8_mode_name(scheme: str, tail: str = DEFAULT_TAIL, fsem: str = "int8") -> str:
    """Mode string of an :class:`Int8SIDN` (steps joined by ``+``, as :func:`sidn.fast_model.fast_mode`)."""
    parts = ["foldbn", "int8"]
    if scheme == "u7s8":
        parts.append("u7")
    if fsem == "float":
        parts.append("bf16fsem" if _float_dtype() == torch.bfloat16 else "fp32fsem")
    parts += {"block": ["fp32tail"], "head": ["fp32head"], "none": []}[tail]
    return "+".join(parts + ["channels_last", "onednn"])


def variant_name(scheme: str, fsem: str = "int8") -> str:
    """Key of a scheme + FSEM precision in :attr:`Int8Calibration.parity`: ``u8s8``, ``u8s8+floatfsem``, ..."""
    return scheme if fsem == "int8" else f"{scheme}+floatfsem"


def variants(device: torch.device | str = "cpu") -> list[tuple[str, str]]:
    """``(scheme, fsem)`` pairs this machine computes exactly, fastest first (int8 FSEM before float FSEM)."""
    schemes = checkable_schemes(device)
    return [(s, "int8") for s in schemes] + [(s, "float") for s in schemes]

