"""Validation during training: L_s (eq. 5) and pixel AUROC of the fused map (eq. 26) on the fixed DGM set."""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any

import numpy as np
import torch

from sidn.device import autocast


def pixel_auroc_of(maps: np.ndarray, masks: np.ndarray) -> float:
    """Pixel AUROC (:func:`sidn.metrics.pixel_auroc`) of maps [N,H,W] vs masks [N,H,W]; NaN if one class."""
    from sidn.metrics import pixel_auroc

    labels = masks > 0.5
    if labels.all() or not labels.any():
        return float("nan")
    return float(pixel_auroc(list(maps), list(labels.astype(np.uint8))))


def to_fp32(out: Any) -> Any:
    """Cast every floating tensor field of a SIDNOutput to float32 (loss is computed in fp32)."""
    if not is_dataclass(out):
        return out
    changes = {}
    for f in fields(out):
        v = getattr(out, f.name)
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float32:
            changes[f.name] = v.float()
    return replace(out, **changes) if changes else out


@torch.no_grad()
def evaluate_validation(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int,
    device: torch.device,
    use_amp: bool,
) -> tuple[float, float]:
    """``(val L_s, pixel AUROC)`` on a fixed validation set ``images/masks [M,1,H,W]`` (CPU tensors).

    Runs in eval mode; the torch RNG state is restored afterwards so validation never changes
    the training trajectory.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    maps = []
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for i in range(0, images.shape[0], batch_size):
                x = images[i : i + batch_size].to(device)
                m = masks[i : i + batch_size].to(device)
                with autocast(device, use_amp):
                    out = model(x)
                out = to_fp32(out)
                terms = loss_fn(out, m, model)
                total += float(terms.l_s) * x.shape[0]
                count += x.shape[0]
                maps.append(out.fused.detach().float().cpu().numpy()[:, 0])
    finally:
        model.train(was_training)
    val_loss = total / max(count, 1)
    auroc = pixel_auroc_of(np.concatenate(maps), masks.numpy()[:, 0])
    return val_loss, auroc
