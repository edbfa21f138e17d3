"""Stains for the synthetic defects: a multiplicative colour change the texture stays visible under.

Used by the colour, liquid and oil defects of the material modules. No equation of the
SIDN paper applies (data generation only).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sidn.data.synth_fields import F32, lerp, scale_channels
from sidn.data.synth_mask import VISIBLE_DELTA

_STAIN_TINTS = {
    "red": (1.45, 0.75, 0.70),
    "dark": (0.55, 0.55, 0.58),
    "bleach": (1.35, 1.30, 1.25),
    "blue": (0.72, 0.85, 1.35),
    "yellow": (1.30, 1.20, 0.65),
    "green": (0.78, 1.20, 0.80),
    "grey": (0.80, 0.86, 0.95),
    "reddish": (1.15, 0.85, 0.80),
}


def random_tint(rng: np.random.Generator, names: Sequence[str] | None = None) -> tuple[float, ...]:
    """RGB factors of one stain colour, drawn from ``names`` (all colours when None)."""
    names = list(_STAIN_TINTS) if names is None else names
    return _STAIN_TINTS[names[int(rng.integers(len(names)))]]


def stain(clean: np.ndarray, alpha: np.ndarray, hue: Sequence[float], rng: np.random.Generator,
          low: bool) -> np.ndarray:
    """Multiplicative stain (the texture stays visible under it). Its strength is set from
    the texture under it: a low-contrast stain changes the core by ~1.5-2.2x the visibility
    threshold on average, a normal one by at least ~4x (and up to the full ``hue``)."""
    hue = np.asarray(hue, dtype=F32)
    core = alpha > 0.5
    if core.any():
        per_unit = float(np.mean(np.max(np.abs(clean[core] * (hue - 1.0)), axis=-1)))
    else:
        per_unit = 0.1
    per_unit = max(per_unit, 1e-3)
    if low:
        strength = rng.uniform(1.5, 2.2) * VISIBLE_DELTA / per_unit
    else:
        strength = max(rng.uniform(0.7, 1.0), 4.0 * VISIBLE_DELTA / per_unit)
    t = 1.0 + min(strength, 1.6) * (hue - 1.0)
    stained = np.clip(scale_channels(clean, t), 0.0, 1.0)
    return lerp(clean, stained, alpha)
