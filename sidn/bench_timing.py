"""Timing primitives of ``sidn bench``: best-of timers, matmul peak rates, peak memory, the
training-step and DGM timings."""

from __future__ import annotations

import copy
import resource
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from sidn.config import SIDNConfig
from sidn.device import amp_enabled, autocast
from sidn.heap import reuse_heap

TRAIN_WARMUP = 3  # training steps before timing: the heap (sidn.heap) holds every buffer after three


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Best (minimum) wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    The minimum, not the median, is reported: on a shared machine the slower runs measure
    other people's load, the fastest one what this machine can do.
    """
    for _ in range(max(warmup, 0)):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def timeit_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Best wall seconds of each ``fns[name]()``, the functions run in turn (round robin).

    Interleaving exposes every function to the same background load, so the ratios between
    them stay meaningful on a shared machine even when the absolute times do not.
    """
    for _ in range(max(warmup, 0)):
        for fn in fns.values():
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of ``torch.mm`` on ``n x n`` matrices of ``dtype`` (2 n^3 FLOPs per product)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    sec = timeit(lambda: torch.mm(a, b), repeats, warmup=1)
    return 2.0 * n**3 / sec / 1e9


def matmul_gops_int8(n: int = 2048, repeats: int = 3) -> float:
    """GOP/s of ``torch._int_mm`` (int8 x int8 -> int32) on ``n x n`` matrices; NaN where it does not run."""
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randint(-128, 128, (n, n), generator=g, dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), generator=g, dtype=torch.int8)
        sec = timeit(lambda: torch._int_mm(a, b), repeats, warmup=1)
    except (RuntimeError, AttributeError):
        return float("nan")
    return 2.0 * n**3 / sec / 1e9


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB on Linux


def fp32_runner(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """``run(x) -> fused [B,1,H,W]`` of the model itself, in fp32 (the reference)."""
    model = model.eval()

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return model(x).fused

    return run


def runner(net: nn.Module) -> Callable[[Tensor], Tensor]:
    """``run(x) -> fused`` of a fast form (:class:`~sidn.fast_model.FastSIDN`, :class:`~sidn.int8.model.Int8SIDN`)."""
    return lambda x: net(x).fused


def train_ms_per_image(cfg: SIDNConfig, model: nn.Module, image_size: int, batch: int, repeats: int,
                        device: torch.device) -> tuple[float, bool]:
    """``(ms per image, bf16 autocast used)`` of a training step at batch ``batch``: best of ``repeats`` steady-state steps."""
    from sidn.losses import SIDNLoss

    model = copy.deepcopy(model).train()
    loss_fn = SIDNLoss(cfg.loss, cfg.model).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    use_amp = amp_enabled(cfg.train.amp, device)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(batch, 1, image_size, image_size, generator=g).to(device)
    mask = torch.zeros(batch, 1, image_size, image_size)
    s = image_size // 4
    mask[:, :, s : 2 * s, s : 2 * s] = 1.0
    mask = mask.to(device)

    def step() -> None:
        with autocast(device, use_amp):
            out = model(x)
        terms = loss_fn(out, mask, model)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with reuse_heap():  # as in training (sidn.heap); its steady state comes after TRAIN_WARMUP steps
        sec = timeit(step, repeats, warmup=TRAIN_WARMUP)
    return sec * 1000.0 / batch, use_amp


def dgm_ms_per_image(cfg: SIDNConfig, image_size: int, batch: int, repeats: int) -> float:
    """Milliseconds the DGM (eq. 1) and batch sampling take per training image, on one core."""
    from sidn.data.dgm import DefectGenerator
    from sidn.batches import sample_batch

    rng = np.random.default_rng(0)
    images = np.random.default_rng(1).random((32, image_size, image_size), dtype=np.float32)
    dgm = DefectGenerator(cfg.dgm)

    def make() -> None:
        clean, donors = sample_batch(images, batch, rng, cfg.train.augment, cfg.train.crop_size)
        dgm(clean, rng, donors=donors)

    return timeit(make, repeats, warmup=1) * 1000.0 / batch


def memory_score_ms(model: nn.Module, images: Tensor, rows: int, repeats: int) -> float:
    """ms for the feature-memory term of one image's score (:mod:`sidn.feature_memory`: the FEM pass, the
    nearest-neighbour search against ``rows`` bank rows, the blur), the memory built from ``images`` [B,1,S,S]."""
    from sidn.feature_memory import FeatureMemory

    pixels = images[:, 0].float().cpu().numpy()
    memory = FeatureMemory.from_images(model, pixels, rows)
    return 1000.0 * timeit(lambda: memory.knn_scores(model, pixels[:1]), repeats)
