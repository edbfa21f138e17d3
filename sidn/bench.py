"""Speed / memory / FLOP-rate benchmark of SIDN on the current machine, all in one run.

``run_bench()`` measures, for ``image_size x image_size`` gray images:

* inference ms per image at batch 1 and 16 in fp32 (eager, contiguous layout) and in the
  fastest "fast mode" found among the candidates below; a candidate only qualifies if its
  fused map (eq. 26) differs from fp32 by at most ``MAX_FAST_DIFF`` = 1e-2;
* training ms per image (batch 16, forward + :class:`sidn.losses.SIDNLoss` + backward + Adam
  step, with the autocast setting ``train.amp=auto`` would use on this machine);
* peak resident memory (``resource.getrusage`` max RSS, read right after the inference part);
* FLOPs per image (:func:`sidn.model.flops.count_flops`) and, measured in the same run,
  ``torch.mm`` GFLOP/s on 2048 x 2048 matrices in fp32 and bf16, so the achieved fraction of
  the machine's matmul rate can be reported for the fast mode.

Fast-mode candidates (``fast_mode`` names them, parts joined by ``+``): ``bf16`` (bf16
autocast), ``channels_last`` (memory format), ``foldbn`` (eval-mode BatchNorm folded into the
preceding (transposed) convolution, on a copy of the model). ``fp32tail``: the last
full-resolution SM block and head stay in fp32 inside bf16 autocast (:func:`fp32_tail`).
Tried by default: ``foldbn``, ``foldbn+channels_last`` and, where bf16 autocast works,
``bf16+channels_last`` (what ``sidn.inference.anomaly_maps(fast=True)`` does),
``foldbn+bf16``, ``foldbn+bf16+fp32tail`` and ``foldbn+bf16+fp32tail+channels_last``. A
candidate whose fused map is off by more than 1e-2 is rejected without timing it (listed in
``candidates`` with its ``max_abs_diff``). Opt-in: ``jit`` (``torch.jit.trace`` + ``freeze``, fp32; never
won here) and ``compile`` (``torch.compile``, slow to build). The qualifying mode with the
lowest ``ms(bs1) + ms(bs16)`` wins.

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
import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn

from sidn.config import SIDNConfig
from sidn.device import amp_enabled, autocast, bf16_autocast_supported, describe

MAX_FAST_DIFF = 1e-2
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


# ------------------------------------------------------------------------------ fast modes


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Copy of an eval-mode model with every BatchNorm2d folded into the conv right before it.

    Handles ``nn.Sequential`` (conv, bn, ...) and modules with ``convN`` / ``bnN`` attribute
    pairs (the FEM/FSEM residual block). Non-matching BNs are left alone.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, convs) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    module._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                    module._modules[b] = nn.Identity()
        else:
            for name, child in list(module._modules.items()):
                if name.startswith("conv") and isinstance(child, convs):
                    bn_name = "bn" + name[len("conv") :]
                    bn = module._modules.get(bn_name)
                    if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                        module._modules[name] = fuse_conv_bn_eval(
                            child, bn, transpose=isinstance(child, nn.ConvTranspose2d)
                        )
                        module._modules[bn_name] = nn.Identity()
    return model


class _FP32(nn.Module):
    """Runs the wrapped module in fp32 even inside a bf16 autocast region."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.module(x.float())


def fp32_tail(model: nn.Module) -> nn.Module:
    """Copy of SIDN whose last SM deconvolution block and head (in both branches) run in fp32.

    These full-resolution layers decide the logits that the sigmoid of eq. (3)-(4) amplifies
    most; keeping them in fp32 costs about 4 % of the FLOPs and keeps the bf16 fused map within
    ``MAX_FAST_DIFF`` of fp32 (plain bf16 autocast exceeds it on a network with a realistic logit
    spread). Models without ``sm_t/sm_d.blocks/head`` are returned unchanged (as a copy).
    """
    model = copy.deepcopy(model)
    for name in ("sm_t", "sm_d"):
        sm = getattr(model, name, None)
        blocks, head = getattr(sm, "blocks", None), getattr(sm, "head", None)
        if isinstance(blocks, nn.Sequential) and len(blocks) and isinstance(head, nn.Module):
            blocks[len(blocks) - 1] = _FP32(blocks[len(blocks) - 1])
            sm.head = _FP32(head)
    return model


class _FusedOnly(nn.Module):
    """Wraps SIDN so the forward returns only the fused map (eq. 26) – traceable."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).fused


def _make_runner(model: nn.Module, mode: str, example: Tensor) -> Callable[[Tensor], Tensor]:
    """Return ``run(x) -> fused float32 [B,1,H,W]`` for a fast-mode name."""
    parts = set(mode.split("+"))
    bf16 = "bf16" in parts
    cl = "channels_last" in parts
    m: nn.Module = fold_batchnorm(model) if "foldbn" in parts else model
    if "fp32tail" in parts:
        m = fp32_tail(m)
    fmt = torch.channels_last if cl else torch.contiguous_format
    if cl:
        m = copy.deepcopy(m).to(memory_format=torch.channels_last)
    dev = example.device
    if "jit" in parts:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_FusedOnly(m).eval(), example.contiguous(memory_format=fmt), check_trace=False)
            traced = torch.jit.freeze(traced)
            try:
                traced = torch.jit.optimize_for_inference(traced)
            except Exception:  # pragma: no cover - optional pass
                pass
        fn: Callable[[Tensor], Tensor] = traced
    elif "compile" in parts:
        fn = torch.compile(_FusedOnly(m).eval(), dynamic=False)
    else:
        fused = _FusedOnly(m).eval()
        fn = fused

    def run(x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=fmt)
        with torch.inference_mode(), autocast(dev, bf16):
            return fn(x).float()

    return run


def candidate_modes(device: torch.device, try_compile: bool = False, try_jit: bool = False) -> list[str]:
    """Fast-mode names to try on ``device`` (bf16 ones only where bf16 autocast works)."""
    modes = ["foldbn", "foldbn+channels_last"]
    if bf16_autocast_supported(device, require_native=False):
        modes += [
            "bf16+channels_last",
            "foldbn+bf16",
            "foldbn+bf16+fp32tail",
            "foldbn+bf16+fp32tail+channels_last",
        ]
    if try_jit:
        modes += ["jit"]
    if try_compile:
        modes += ["compile"] + (["compile+bf16"] if "bf16" in modes else [])
    return modes


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


def run_bench(
    image_size: int = 256,
    repeats: int = 3,
    json: bool = False,
    *,
    batch: int = 16,
    device: str = "auto",
    bundle: str | None = None,
    try_compile: bool = False,
    try_jit: bool = False,
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

    # fp32 reference
    say("fp32 inference")
    ref_run = _make_runner(model, "fp32", x1)
    ref16 = ref_run(x16)  # also warms up oneDNN primitive caches
    ms_fp32_bs1 = _timeit(lambda: (ref_run(x1), sync()), repeats) * 1000.0
    ms_fp32_bs16 = _timeit(lambda: (ref_run(x16), sync()), repeats) * 1000.0 / batch

    # fast-mode candidates
    results: dict[str, dict[str, float]] = {}
    for mode in candidate_modes(dev, try_compile=try_compile, try_jit=try_jit):
        say(f"candidate {mode}")
        try:
            run = _make_runner(model, mode, x1 if "jit" not in mode else x16)
            diff = float((run(x16) - ref16).abs().max())
            if not diff <= MAX_FAST_DIFF:
                results[mode] = {"max_abs_diff": diff, "rejected": 1.0}
                continue
            if "jit" in mode:  # traced for a fixed batch shape: re-trace for batch 1
                run1 = _make_runner(model, mode, x1)
            else:
                run1 = run
            b1 = _timeit(lambda: (run1(x1), sync()), repeats) * 1000.0
            b16 = _timeit(lambda: (run(x16), sync()), repeats) * 1000.0 / batch
            results[mode] = {"bs1": b1, "bs16": b16, "max_abs_diff": diff}
        except Exception as exc:  # a mode that does not work here is simply skipped
            say(f"candidate {mode} failed: {type(exc).__name__}: {exc}")
            results[mode] = {"failed": 1.0}
    ok = {m: r for m, r in results.items() if "bs1" in r}
    ok["fp32"] = {"bs1": ms_fp32_bs1, "bs16": ms_fp32_bs16, "max_abs_diff": 0.0}
    fast_mode = min(ok, key=lambda m: ok[m]["bs1"] + ok[m]["bs16"])
    fast = ok[fast_mode]
    peak_rss = _peak_rss_mb()

    # FLOPs and matmul peak
    say("flops + matmul")
    flops = count_flops(model, image_size)
    gflop = flops / 1e9
    mm_fp32 = matmul_gflops(torch.float32, matmul_size, repeats)
    mm_bf16 = matmul_gflops(torch.bfloat16, matmul_size, repeats) if bf16_autocast_supported(dev, False) else float("nan")
    mm_fast = mm_bf16 if "bf16" in fast_mode else mm_fp32
    best_fast_ms = min(fast["bs1"], fast["bs16"])
    achieved = gflop / (best_fast_ms / 1000.0)

    # training
    say("training step")
    train_ms, train_amp = _train_ms_per_image(cfg, model, image_size, batch, train_repeats or max(1, repeats), dev)

    out: dict[str, Any] = {
        "infer_ms_fp32_bs1": round(ms_fp32_bs1, 3),
        "infer_ms_fp32_bs16": round(ms_fp32_bs16, 3),
        "infer_ms_fast_bs1": round(fast["bs1"], 3),
        "infer_ms_fast_bs16": round(fast["bs16"], 3),
        "fast_mode": fast_mode,
        "max_abs_diff_fast": float(f"{fast['max_abs_diff']:.3g}"),
        "train_ms_per_image": round(train_ms, 3),
        "peak_rss_mb": round(peak_rss, 1),
        "gflop_per_image": round(gflop, 4),
        "matmul_gflops_fp32": round(mm_fp32, 1),
        "matmul_gflops_fast": round(mm_fast, 1),
        "peak_fraction_fast": round(achieved / mm_fast, 4),
        # extras
        "achieved_gflops_fast": round(achieved, 2),
        "matmul_gflops_bf16": round(mm_bf16, 1) if mm_bf16 == mm_bf16 else None,
        "train_amp_bf16": bool(train_amp),
        "image_size": int(image_size),
        "batch": int(batch),
        "repeats": int(repeats),
        "param_count": int(count_parameters(model)),
        "candidates": {m: {k: round(v, 4) for k, v in r.items()} for m, r in results.items()},
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
        ("max |fast - fp32| of fused map", f"{d['max_abs_diff_fast']:.2e}"),
        (f"training (batch {d.get('batch', 16)}, fwd+bwd+Adam" + (", bf16)" if d.get("train_amp_bf16") else ", fp32)"),
         f"{d['train_ms_per_image']:.1f} ms/image"),
        ("peak RSS (after inference)", f"{d['peak_rss_mb']:.0f} MB"),
        ("model FLOPs", f"{d['gflop_per_image']:.3f} GFLOP/image"),
        ("matmul fp32 (2048^2 torch.mm)", f"{d['matmul_gflops_fp32']:.1f} GFLOP/s"),
        ("matmul for fast mode", f"{d['matmul_gflops_fast']:.1f} GFLOP/s"),
        ("achieved (fast mode)", f"{d.get('achieved_gflops_fast', float('nan')):.1f} GFLOP/s"
         f" = {100 * d['peak_fraction_fast']:.1f}% of matmul"),
    ]
    if d.get("param_count") is not None:
        rows.append(("parameters", f"{d['param_count']:,}"))
    rows.append(("machine", f"{d.get('device', '?')}, {d.get('threads', '?')} threads, torch {d.get('torch', '?')}"))
    load, ncpu = d.get("load_avg_1min"), d.get("cpu_count")
    if load is not None:
        rows.append(("load average (1 min) at the end", f"{load:.2f} on {ncpu} CPUs"))
    width = max(len(r[0]) for r in rows)
    lines = [f"SIDN benchmark at {size}x{size}", "-" * (width + 24)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    if load is not None and ncpu and load > 0.5 * ncpu + 0.5:
        lines.append(f"warning: the machine was busy (load {load:.1f} on {ncpu} CPUs); timings are pessimistic")
    return "\n".join(lines)


__all__ = ["run_bench", "format_bench", "matmul_gflops", "fold_batchnorm", "fp32_tail", "REQUIRED_KEYS", "MAX_FAST_DIFF"]
