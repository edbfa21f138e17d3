"""The int8 calibration record (:class:`Int8Calibration`): ranges + parity per variant, tied to the weights."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from sidn.int8.scheme import DEFAULT_TAIL
from sidn.model.sidn import SIDN
from sidn.weights_hash import weights_sha256

INT8_FORMAT = "sidn-int8/1"
BUNDLE_KEY = "int8"  # key of the calibration in a bundle's extra


@dataclass
class Int8Calibration:
    """Activation ranges of a model's int8 form and its parity with float32, per scheme.

    ``parity[variant]`` (:func:`variant_name`: the scheme, ``+floatfsem`` for a float FSEM) is a
    :func:`parity_report` (``passed`` says whether the variant may be served); a variant missing
    from it was not checked (the calibrating machine could not compute it exactly, or an
    earlier, faster variant had passed).
    Primitives only (``to_dict``/``from_dict``), so it can be stored in a bundle's ``extra``.
    """

    ranges: dict[str, list[float]]
    weights_sha256: str
    image_size: int
    tail: str = DEFAULT_TAIL
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_calibration_images: int = 0
    format: str = INT8_FORMAT
    notes: list[str] = field(default_factory=list)

    def passed(self, variant: str | None) -> bool:
        return variant is not None and bool(self.parity.get(variant, {}).get("passed", False))

    def reason(self, variant: str | None) -> str:
        """Why ``variant`` may not be served ('' if it may)."""
        if variant is None:
            return "this CPU has no oneDNN int8 kernels"
        rep = self.parity.get(variant)
        if rep is None:
            return f"int8 ({variant}) was not checked for parity"
        if not rep.get("passed", False):
            return f"int8 ({variant}) missed parity with fp32: " + "; ".join(rep.get("failures", []))
        return ""

    def to_dict(self) -> dict[str, Any]:
        return _clean(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Int8Calibration":
        if d.get("format") != INT8_FORMAT:
            raise ValueError(f"not an int8 calibration of format {INT8_FORMAT!r}: format {d.get('format')!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def int8_summary(calibration: Int8Calibration) -> dict[str, Any]:
    """The figures of ``calibration`` a user reviews (calibration.json): per checked variant, whether it
    may be served, the AUROC deltas against float32 and the max |diff| of the fused map."""
    keys = ("passed", "pixel_auroc_delta", "image_auroc_delta", "max_abs_diff", "alarms", "alarms_fp32", "failures")
    return _clean({"n_calibration_images": calibration.n_calibration_images, "notes": calibration.notes,
                   "variants": {v: {k: rep.get(k) for k in keys} for v, rep in calibration.parity.items()}})


def _clean(x: Any) -> Any:
    """JSON/bundle-safe primitives: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.generic,)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def weights_hash(model: nn.Module) -> str:
    return weights_sha256(model.state_dict())


def attach(model: SIDN, calibration: Int8Calibration) -> SIDN:
    """Hang ``calibration`` on ``model`` (attribute ``int8_calibration``, not part of the state dict).

    :func:`sidn.fast_choice.make_fast` (``Predictor(fast=True)``) then serves int8 where it passed.
    ValueError if it was made for other weights. Returns ``model``.
    """
    actual = weights_hash(model)
    if calibration.weights_sha256 != actual:
        raise ValueError(
            f"int8 calibration was made for other weights (sha256 {calibration.weights_sha256[:12]}..., model "
            f"{actual[:12]}...); run sidn.int8.calibrate.calibrate_int8 on this model")
    model.int8_calibration = calibration
    return model


def from_bundle_extra(extra: dict[str, Any]) -> Int8Calibration | None:
    """The calibration stored in a bundle's ``extra`` (:func:`sidn.bundle.store_int8_calibration`), or None."""
    d = extra.get(BUNDLE_KEY)
    return None if d is None else Int8Calibration.from_dict(d)

