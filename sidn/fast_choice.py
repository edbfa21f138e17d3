"""Which fast form a model is served in: int8 where calibrated and at parity, else the float fast form.

This choice sits above both forms (:mod:`sidn.fast_model`, the float form; :mod:`sidn.int8`, the
int8 form and its calibration), so neither imports the other's chooser; :mod:`sidn.inference`
(``Predictor(fast=True)``, :func:`sidn.inference.anomaly_maps`) calls :func:`make_fast`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from sidn.fast_model import FastForm, float_fast_mode, make_float_fast
from sidn.int8.scheme import int8_mode_name, int8_scheme
from sidn.int8.serve import select_int8
from sidn.model.sidn import SIDN

log = logging.getLogger(__name__)


def best_mode(device: torch.device | str) -> str:
    """Name of the best mode ``device`` supports: int8 (:mod:`sidn.int8`) where oneDNN runs int8, else the float one.

    int8 is served for a model only with an int8 calibration that reached parity
    (:func:`make_fast`); without one the model gets :func:`float_fast_mode`.
    """
    scheme = int8_scheme(device)
    return int8_mode_name(scheme) if scheme is not None else float_fast_mode(device)


def make_fast(model: nn.Module, device: torch.device | str | None = None, int8: Any = None) -> nn.Module:
    """The fast inference form of ``model``, the best this device supports; ``model`` is not modified.

    int8 (:class:`sidn.int8.model.Int8SIDN`) where the CPU runs oneDNN int8 and ``int8`` (an
    :class:`sidn.int8.record.Int8Calibration`; default: the one :func:`sidn.int8.record.attach` hung on the
    model) passed parity for this CPU's scheme; otherwise the float fast form
    (:func:`make_float_fast`) whose ``note`` says why int8 was not used (logged as a warning
    when a calibration was there but could not be served). ``device`` defaults to the model's.
    A prepared form or any model that is not a SIDN is returned as is (:func:`mode_of` tells which).
    """
    if isinstance(model, FastForm) or not isinstance(model, SIDN):
        return model
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    note = ""
    if int8_scheme(dev) is not None:
        calib = int8 if int8 is not None else getattr(model, "int8_calibration", None)
        net, why = select_int8(model, calib, dev)
        if net is not None:
            return net
        note = f"int8 not used: {why}; serving {float_fast_mode(dev)}"
        if calib is not None:
            log.warning("%s", note)
    return make_float_fast(model, dev, note)
