"""Whether a model's int8 calibration may be served on this CPU (:func:`select_int8`)."""

from __future__ import annotations

import torch

from sidn.int8.model import Int8SIDN, make_int8
from sidn.int8.record import Int8Calibration, weights_hash
from sidn.int8.scheme import int8_scheme, variant_name, variants
from sidn.model.sidn import SIDN


def select_int8(model: SIDN, calibration: Int8Calibration | None, device: torch.device | str) -> tuple[
        Int8SIDN | None, str]:
    """``(int8 model, "")`` if ``calibration`` may be served on ``device``, else ``(None, why not)``.

    Served: the fastest variant (:func:`variants`: int8 FSEM before float FSEM) this CPU runs
    exactly that passed parity (a ``u8s8`` CPU also serves ``u7s8``, which computes the same
    everywhere).
    """
    scheme = int8_scheme(device)
    if scheme is None:
        return None, f"int8 needs a CPU with oneDNN int8 kernels (device {torch.device(device)})"
    if calibration is None:
        return None, "no int8 calibration for this model (sidn.int8.calibrate.calibrate_int8, then sidn.int8.record.attach)"
    actual = weights_hash(model)
    if calibration.weights_sha256 != actual:
        return None, "the int8 calibration was made for other weights; calibrate again"
    pairs = variants(device)
    for s, f in pairs:
        if calibration.passed(variant_name(s, f)):
            return make_int8(model, calibration, s, fsem=f), ""
    return None, "; ".join(calibration.reason(variant_name(s, f)) for s, f in pairs
                           if variant_name(s, f) in calibration.parity) or calibration.reason(variant_name(scheme))

