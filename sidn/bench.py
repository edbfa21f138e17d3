"""Speed / memory / FLOP-rate benchmark of SIDN on the current machine, all in one run.

``run_bench()`` measures, for ``image_size x image_size`` gray images:

* inference ms per image at batch 1 and 16 in fp32 (eager, the model as trained) and in the
  fast mode that :class:`sidn.inference.Predictor` serves with ``fast=True``
  (:func:`sidn.fast_model.make_fast`; ``fast_mode`` names it, e.g.
  ``foldbn+bf16+fp32tail+channels_last+onednn``), with the max abs difference of its fused
  map (eq. 26) from fp32, which should stay within ``MAX_FAST_DIFF`` = 1e-2
  (``fast_within_tolerance``);
* training ms per image (batch 16, forward + :class:`sidn.losses.SIDNLoss` + backward + Adam
  step, with the autocast setting ``train.amp=auto`` would use on this machine);
* peak resident memory (``resource.getrusage`` max RSS, read right after the inference part);
* FLOPs per image (:func:`sidn.model.flops.count_flops`) and, measured in the same run,
  ``torch.mm`` GFLOP/s on 2048 x 2048 matrices in fp32 and bf16, so the achieved fraction of
  the machine's matmul rate can be reported for the fast mode.

fp32 and fast runs alternate (so both see the same background load; compare their ratio on a
busy machine). The fast model is called at batch 1 first (its oneDNN weights are laid out for
the first input shape it sees, as in a Predictor serving single images). The alternatives that lost to
it (autocast, TorchScript, ``torch.compile``, onnxruntime) are listed with their measured
ratios in :mod:`sidn.fast_model`.

The model is randomly initialised (speed does not depend on the weights); a few train-mode
forward passes set realistic BatchNorm statistics first. Pass ``bundle=`` to time a trained
``model.pt`` instead.
"""

from __future__ import annotations

import copy
import json as _json
import os
import resource
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from sidn.config import SIDNConfig
from sidn.cpu import cpu_info
from sidn.device import amp_enabled, autocast, bf16_autocast_supported, describe
from sidn.fast_model import MAX_FAST_DIFF, make_fast, mode_of

REQUIRED_KEYS = (
    "infer_ms_fp32_bs1",
    "infer_ms_fp32_bs16",
    "infer_ms_fast_bs1",
    "infer_ms_fast_bs16",
    "fast_mode",
    "max_abs_diff_fast",
    "train_ms_per_image",
    "peak_rss_mb",
    "gflop_per_image",
    "matmul_gflops_fp32",
    "matmul_gflops_fast",
    "peak_fraction_fast",
)


def _timeit(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
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


def _timeit_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, float]:
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
    sec = _timeit(lambda: torch.mm(a, b), repeats, warmup=1)
    return 2.0 * n**3 / sec / 1e9


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------------------ runners


def _fp32_runner(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """``run(x) -> fused [B,1,H,W]`` of the model itself, in fp32 (the reference)."""
    model = model.eval()

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return model(x).fused

    return run


def _fast_runner(model: nn.Module, device: torch.device) -> tuple[Callable[[Tensor], Tensor], str]:
    """``(run, mode)``: the fused map of the served fast mode (:func:`sidn.fast_model.make_fast`)."""
    fast = make_fast(model, device)
    return (lambda x: fast(x).fused), mode_of(fast)


# ------------------------------------------------------------------------------ main


def _build_model(cfg: SIDNConfig, image_size: int, bundle: str | None, device: torch.device) -> nn.Module:
    from sidn.model.sidn import SIDN

    if bundle is not None:
        from sidn.bundle import load_bundle

        model, _, _ = load_bundle(bundle, device=device)
        return model.eval()
    torch.manual_seed(0)
    model = SIDN(cfg.model).to(device)
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # realistic BN running statistics
        for _ in range(3):
            model(torch.rand(2, 1, image_size, image_size, generator=g).to(device))
    model.eval()
    # A random network's logits hardly vary (fused map ~ constant), which would make the
    # fast-vs-fp32 difference check meaningless. Scale the SM heads so the logits spread like
    # a trained model's (std ~ 3 around their mean), i.e. the fused map spans (0, 1).
    with torch.no_grad():
        out = model(torch.rand(1, 1, image_size, image_size, generator=g).to(device))
        for name, logits in (("sm_t", out.texture_logits), ("sm_d", out.defect_logits)):
            head = getattr(getattr(model, name, None), "head", None)
            if logits is None or not isinstance(head, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            k = 3.0 / float(logits.std().clamp_min(1e-6))
            head.weight.mul_(k)
            if head.bias is not None:  # keep the mean logit where it was
                head.bias.copy_(head.bias * k - (k - 1.0) * float(logits.mean()))
    return model


def _train_ms_per_image(cfg: SIDNConfig, model: nn.Module, image_size: int, batch: int, repeats: int,
                        device: torch.device) -> tuple[float, bool]:
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

    sec = _timeit(step, repeats, warmup=1)
    return sec * 1000.0 / batch, use_amp


def dgm_ms_per_image(cfg: SIDNConfig, image_size: int, batch: int, repeats: int) -> float:
    """Milliseconds the DGM (eq. 1) and batch sampling take per training image, on one core."""
    from sidn.data.dgm import DefectGenerator
    from sidn.train import sample_batch

    rng = np.random.default_rng(0)
    images = np.random.default_rng(1).random((32, image_size, image_size), dtype=np.float32)
    dgm = DefectGenerator(cfg.dgm)

    def make() -> None:
        clean, donors = sample_batch(images, batch, rng, cfg.train.augment, cfg.train.crop_size)
        dgm(clean, rng, donors=donors)

    return _timeit(make, repeats, warmup=1) * 1000.0 / batch


def run_bench(
    image_size: int = 256,
    repeats: int = 3,
    json: bool = False,
    *,
    batch: int = 16,
    device: str = "auto",
    bundle: str | None = None,
    matmul_size: int = 2048,
    train_repeats: int | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; returns a flat dict with at least the keys in ``REQUIRED_KEYS``.

    ``repeats``: timed runs per measurement (best reported, two warm-up runs before).
    ``json=True`` also prints the dict as one JSON line on stdout. ``verbose`` prints progress
    to stderr. ``batch`` is the large batch size (the ``_bs16`` keys keep their name).
    """
    from sidn.device import select_device
    from sidn.model.flops import count_flops, count_parameters

    dev = select_device(device)
    cfg = SIDNConfig()
    cfg.data.image_size = image_size

    def say(msg: str) -> None:
        if verbose:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    model = _build_model(cfg, image_size, bundle, dev)
    if bundle is not None:
        cfg.model = model.cfg
    g = torch.Generator().manual_seed(0)
    x16 = torch.rand(batch, 1, image_size, image_size, generator=g).to(dev)
    x1 = x16[:1].clone()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # fp32 reference and the served fast mode, timed in turn
    say("inference: fp32 and fast")
    ref_run = _fp32_runner(model)
    ref16 = ref_run(x16)
    fast_run, fast_mode = _fast_runner(model, dev)
    fast_run(x1)  # first call at batch 1: lays out the oneDNN weights for single images
    fast_diff = float((fast_run(x16) - ref16).abs().max())
    sec = _timeit_interleaved({
        "fp32_bs1": lambda: (ref_run(x1), sync()), "fast_bs1": lambda: (fast_run(x1), sync()),
    }, repeats)
    sec.update(_timeit_interleaved({
        "fp32_bs16": lambda: (ref_run(x16), sync()), "fast_bs16": lambda: (fast_run(x16), sync()),
    }, repeats))
    ms_fp32_bs1, ms_fast_bs1 = sec["fp32_bs1"] * 1000.0, sec["fast_bs1"] * 1000.0
    ms_fp32_bs16, ms_fast_bs16 = sec["fp32_bs16"] * 1000.0 / batch, sec["fast_bs16"] * 1000.0 / batch
    peak_rss = _peak_rss_mb()

    # FLOPs and matmul peak
    say("flops + matmul")
    flops = count_flops(model, image_size)
    gflop = flops / 1e9
    mm_fp32 = matmul_gflops(torch.float32, matmul_size, repeats)
    mm_bf16 = matmul_gflops(torch.bfloat16, matmul_size, repeats) if bf16_autocast_supported(dev, False) else float("nan")
    mm_fast = mm_bf16 if "bf16" in fast_mode.split("+") else mm_fp32
    best_fast_ms = min(ms_fast_bs1, ms_fast_bs16)
    achieved = gflop / (best_fast_ms / 1000.0)

    # training
    say("training step")
    train_ms, train_amp = _train_ms_per_image(cfg, model, image_size, batch, train_repeats or max(1, repeats), dev)
    train_peak = mm_bf16 if train_amp else mm_fp32
    train_gflops = 3.0 * gflop / (train_ms / 1000.0)  # forward + backward ~ 3x the forward FLOPs
    say("DGM")
    dgm_cfg = SIDNConfig()
    dgm_cfg.train.crop_size = 0
    dgm_ms = dgm_ms_per_image(dgm_cfg, image_size, batch, max(1, repeats))

    out: dict[str, Any] = {
        "infer_ms_fp32_bs1": round(ms_fp32_bs1, 3),
        "infer_ms_fp32_bs16": round(ms_fp32_bs16, 3),
        "infer_ms_fast_bs1": round(ms_fast_bs1, 3),
        "infer_ms_fast_bs16": round(ms_fast_bs16, 3),
        "fast_mode": fast_mode,
        "max_abs_diff_fast": float(f"{fast_diff:.3g}"),
        "train_ms_per_image": round(train_ms, 3),
        "train_peak_fraction": round(train_gflops / train_peak, 4),
        "dgm_ms_per_image": round(dgm_ms, 3),
        "dgm_share_of_step": round(dgm_ms / (dgm_ms + train_ms), 4),
        **cpu_info(),
        "peak_rss_mb": round(peak_rss, 1),
        "gflop_per_image": round(gflop, 4),
        "matmul_gflops_fp32": round(mm_fp32, 1),
        "matmul_gflops_fast": round(mm_fast, 1),
        "peak_fraction_fast": round(achieved / mm_fast, 4),
        # extras
        "achieved_gflops_fast": round(achieved, 2),
        "fast_speedup_bs1": round(ms_fp32_bs1 / ms_fast_bs1, 3),
        "fast_speedup_bs16": round(ms_fp32_bs16 / ms_fast_bs16, 3),
        "fast_within_tolerance": bool(fast_diff <= MAX_FAST_DIFF),
        "matmul_gflops_bf16": round(mm_bf16, 1) if mm_bf16 == mm_bf16 else None,
        "train_amp_bf16": bool(train_amp),
        "image_size": int(image_size),
        "batch": int(batch),
        "repeats": int(repeats),
        "param_count": int(count_parameters(model)),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        **{k: v for k, v in describe(dev).items()},
    }
    if json:
        print(_json.dumps(out))
    return out


def format_bench(d: dict[str, Any]) -> str:
    """Human-readable table of a :func:`run_bench` result."""
    size = d.get("image_size", 256)
    rows = [
        ("inference fp32, batch 1", f"{d['infer_ms_fp32_bs1']:.1f} ms/image"),
        (f"inference fp32, batch {d.get('batch', 16)}", f"{d['infer_ms_fp32_bs16']:.1f} ms/image"),
        (f"inference fast ({d['fast_mode']}), batch 1", f"{d['infer_ms_fast_bs1']:.1f} ms/image"),
        (f"inference fast ({d['fast_mode']}), batch {d.get('batch', 16)}", f"{d['infer_ms_fast_bs16']:.1f} ms/image"),
        ("fast / fp32 speed-up, batch 1 and " + str(d.get("batch", 16)),
         f"{d.get('fast_speedup_bs1', float('nan')):.2f}x, {d.get('fast_speedup_bs16', float('nan')):.2f}x"),
        ("max |fast - fp32| of fused map", f"{d['max_abs_diff_fast']:.2e}"),
        (f"training (batch {d.get('batch', 16)}, fwd+bwd+Adam" + (", bf16)" if d.get("train_amp_bf16") else ", fp32)"),
         f"{d['train_ms_per_image']:.1f} ms/image = {100 * d.get('train_peak_fraction', float('nan')):.1f}% of matmul peak"),
        ("DGM + batch sampling (one core)", f"{d.get('dgm_ms_per_image', float('nan')):.1f} ms/image"
         f" = {100 * d.get('dgm_share_of_step', float('nan')):.0f}% of a training step"),
        ("peak RSS (after inference)", f"{d['peak_rss_mb']:.0f} MB"),
        ("model FLOPs", f"{d['gflop_per_image']:.3f} GFLOP/image"),
        ("matmul fp32 (2048^2 torch.mm)", f"{d['matmul_gflops_fp32']:.1f} GFLOP/s"),
        ("matmul for fast mode", f"{d['matmul_gflops_fast']:.1f} GFLOP/s"),
        ("achieved (fast mode)", f"{d.get('achieved_gflops_fast', float('nan')):.1f} GFLOP/s"
         f" = {100 * d['peak_fraction_fast']:.1f}% of matmul"),
    ]
    if d.get("param_count") is not None:
        rows.append(("parameters", f"{d['param_count']:,}"))
    rows.append(("CPU", f"{d.get('cpu_model', '?')} ({d.get('cpu_isa', '?')})"))
    rows.append(("machine", f"{d.get('device', '?')}, {d.get('threads', '?')} threads, torch {d.get('torch', '?')}"))
    load, ncpu = d.get("load_avg_1min"), d.get("cpu_count")
    if load is not None:
        rows.append(("load average (1 min) at the end", f"{load:.2f} on {ncpu} CPUs"))
    width = max(len(r[0]) for r in rows)
    lines = [f"SIDN benchmark at {size}x{size}", "-" * (width + 24)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    if not d.get("fast_within_tolerance", True):
        lines.append(f"warning: the fast mode's map is {d['max_abs_diff_fast']:.2e} off fp32 (> {MAX_FAST_DIFF:g})")
    if load is not None and ncpu and load > 0.5 * ncpu + 0.5:
        lines.append(f"warning: the machine was busy (load {load:.1f} on {ncpu} CPUs); timings are pessimistic")
    return "\n".join(lines)


__all__ = ["run_bench", "format_bench", "matmul_gflops", "REQUIRED_KEYS", "MAX_FAST_DIFF"]
