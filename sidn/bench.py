"""Speed / memory / FLOP-rate benchmark of SIDN on the current machine, all in one run.

``run_bench()`` measures, for ``image_size x image_size`` gray images:

* inference ms per image at batch 1 and 16 in fp32 (eager, the model as trained) and in the
  fast mode that :class:`sidn.inference.Predictor` serves with ``fast=True``
  (:func:`sidn.fast_choice.make_fast`): the best mode this CPU supports, ``fast_mode`` names
  it. That is int8 (:mod:`sidn.int8`, e.g. ``foldbn+int8+fp32head+channels_last+onednn``,
  ``+u7`` on CPUs without VNNI) where oneDNN runs int8 and the int8 form reached parity with
  fp32 on the parity model below, else the float fast mode
  (:func:`sidn.fast_model.float_fast_mode`, e.g. ``foldbn+bf16+fp32tail+channels_last+onednn``)
  and ``fast_note`` says why. Both candidates are timed (``infer_ms_int8_*``,
  ``infer_ms_float_fast_*``), with the max abs difference of their fused map (eq. 26) from
  fp32 (``max_abs_diff_*``; ``fast_within_tolerance``: the served one within ``MAX_FAST_DIFF``
  = 1e-2);
* parity of the fast mode on what users see (trained and judged with one thread: 64 px
  tensors gain little from two, and lose a lot on a loaded machine), on a *parity model*: the ``bundle`` if given,
  else a tiny SIDN (64 px, C=16) trained for :data:`PARITY_STEPS` steps on generated
  textures (:func:`sidn.data.synth.render_sample`; bench has no dataset). Its DGM validation
  set (:func:`sidn.data.dgm.make_validation_set`) and held-out good images are generated too;
  int8 is calibrated on them (:func:`sidn.int8.calibrate.calibrate_int8`) and judged by pixel and image
  AUROC (within 0.005 of fp32) and the false alarms at the threshold (``fast_pixel_auroc_delta``,
  ``fast_image_auroc_delta``, ``fast_alarms`` vs ``fp32_alarms``, ``fast_parity_passed``). The
  threshold is the bundle's, else the one ``sidn calibrate`` (image FAR) picks from the fp32
  maps of other good images than those the alarms are counted on (on its own calibration
  images a threshold sits exactly at the worst image's critical value, where any rounding
  flips the alarm);
* training ms per image (batch 16, forward + :class:`sidn.losses.SIDNLoss` + backward + Adam
  step, with the autocast setting ``train.amp=auto`` would use on this machine), in the steady
  state a training run reaches (the heap of :mod:`sidn.heap`, after warm-up steps);
* peak resident memory (``resource.getrusage`` max RSS, read right after the inference part);
* FLOPs per image (:func:`sidn.model.flops.count_flops`) and, measured in the same run,
  ``torch.mm`` GFLOP/s on 2048 x 2048 matrices in fp32 and bf16 (and ``torch._int_mm`` GOP/s
  in int8), so the achieved fraction of the machine's matmul rate can be reported for the
  fast mode.

fp32 and fast runs alternate (so both see the same background load; compare their ratio on a
busy machine). Progress and figures go to stderr as they are measured (``verbose``). The fast
model is called at batch 1 first (its oneDNN weights are laid out for the first input shape it
sees, as in a Predictor serving single images). The alternatives that lost to
it (autocast, TorchScript, ``torch.compile``, onnxruntime) are listed with their measured
ratios in :mod:`sidn.fast_model`.

Timers and the training/DGM timings are :mod:`sidn.bench_timing`, the parity model
:mod:`sidn.bench_parity`. Over 400 lines: one concept, the one run that measures and
names every figure (:func:`run_bench`) and prints them (:func:`format_bench`).

The model is randomly initialised (speed does not depend on the weights); a few train-mode
forward passes set realistic BatchNorm statistics first. Pass ``bundle=`` to time a trained
``model.pt`` instead.
"""

from __future__ import annotations

import json as _json
import math
import os
import sys
import time
from typing import Any

import torch
from torch import nn

from sidn.config import SIDNConfig
from sidn.cpu import cpu_info
from sidn.bench_parity import PARITY_CATEGORY, PARITY_SIZE, PARITY_STEPS, fast_parity, parity_model, threads
from sidn.bench_timing import (dgm_ms_per_image, fp32_runner, matmul_gflops, matmul_gops_int8, memory_score_ms,
                               peak_rss_mb, runner, timeit_interleaved, train_ms_per_image)
from sidn.device import bf16_autocast_supported, describe
from sidn.fast_model import float_fast_mode, make_float_fast, MAX_FAST_DIFF, mode_of

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
    "fast_pixel_auroc_delta",
)

BS1_REPEATS = 10  # minimum timed runs at batch 1
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
    verbose: bool = True,
    parity_steps: int = PARITY_STEPS,
) -> dict[str, Any]:
    """Run the benchmark; returns a flat dict with at least the keys in ``REQUIRED_KEYS``.

    ``repeats``: timed runs per measurement (best reported, two warm-up runs before).
    ``json=True`` also prints the dict as one JSON line on stdout. ``verbose`` prints progress
    and figures to stderr as they come. ``batch`` is the large batch size (the ``_bs16`` keys
    keep their name). ``bundle``: time and judge this trained ``model.pt`` instead of the
    random timing model and the tiny parity model. ``parity_steps``: training steps of the
    parity model.
    """
    from sidn.device import select_device
    from sidn.int8.calibrate import observe_ranges
    from sidn.int8.model import make_int8
    from sidn.int8.record import Int8Calibration, weights_hash
    from sidn.int8.scheme import DEFAULT_TAIL, int8_scheme
    from sidn.int8.serve import select_int8
    from sidn.model.flops import count_flops, count_parameters

    t_start = time.perf_counter()
    dev = select_device(device)
    cfg = SIDNConfig()
    cfg.data.image_size = image_size

    def say(msg: str) -> None:
        if verbose:
            print(f"[bench {time.perf_counter() - t_start:5.1f}s] {msg}", file=sys.stderr, flush=True)

    model = _build_model(cfg, image_size, bundle, dev)
    if bundle is not None:
        cfg.model = model.cfg
    g = torch.Generator().manual_seed(0)
    x16 = torch.rand(batch, 1, image_size, image_size, generator=g).to(dev)
    x1 = x16[:1].clone()
    scheme = int8_scheme(dev)
    say(f"model built ({image_size}x{image_size}); float fast mode {float_fast_mode(dev)}, int8 scheme {scheme}")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # parity: may int8 be served? (judged on a trained model: the bundle or a tiny one)
    parity: dict[str, Any] = {}
    int8_calib: Int8Calibration | None = None
    if bundle is not None:
        from sidn.bundle import load_bundle

        pmodel, pcfg, _ = load_bundle(bundle)
        parity_desc = f"bundle {bundle}"
    else:
        say(f"parity model: training a tiny SIDN {parity_steps} steps on generated {PARITY_CATEGORY} "
            f"{PARITY_SIZE} px textures")
        with threads(1):  # 64 px tensors: one thread is about as fast, and far faster on a loaded machine
            pmodel, pcfg = parity_model(parity_steps)
        parity_desc = (f"tiny SIDN (C=16) trained {parity_steps} steps on generated {PARITY_CATEGORY} "
                       f"textures, {PARITY_SIZE} px")
    with threads(1 if bundle is None else torch.get_num_threads()):
        parity = fast_parity(pmodel, pcfg, make_float_fast(pmodel.cpu(), "cpu") if dev.type == "cpu" else None, say)
    int8_calib = parity.get("int8")
    served_int8 = None
    note = ""
    if scheme is not None:
        # the timing model is random: its int8 ranges come from the timing inputs; whether int8 is
        # served follows the parity model's verdict (what select_int8 decides for it)
        pnet, why = select_int8(pmodel.cpu(), int8_calib, "cpu")
        served_scheme, served_fsem = (pnet.scheme, pnet.fsem) if pnet is not None else (scheme, "int8")
        t_calib = Int8Calibration(observe_ranges(model.cpu(), x16[: min(4, batch), 0].cpu().numpy(), DEFAULT_TAIL),
                                  weights_hash(model), image_size, DEFAULT_TAIL)
        int8_net = make_int8(model, t_calib, served_scheme, fsem=served_fsem)
        if pnet is not None:
            served_int8 = int8_net
        else:
            note = f"int8 not used: {why}; serving {float_fast_mode(dev)}"
    else:
        int8_net = None
        note = f"int8 not available on {dev} (no oneDNN int8 kernels)" if dev.type == "cpu" else ""
    if note:
        say(note)

    # fp32 reference and the fast modes, timed in turn
    say("inference: fp32, float fast" + (", int8" if int8_net is not None else ""))
    ref_run = fp32_runner(model)
    ref16 = ref_run(x16)
    float_fast = make_float_fast(model, dev)
    runs = {"fp32": ref_run, "float_fast": runner(float_fast)}
    if int8_net is not None:
        runs["int8"] = runner(int8_net)
    diffs = {}
    for name in ("float_fast", "int8"):
        if name in runs:
            runs[name](x1)  # first call at batch 1: lays out the oneDNN weights for single images
            diffs[name] = float((runs[name](x16) - ref16).abs().max())
    fast_name = "int8" if served_int8 is not None else "float_fast"
    fast_mode = mode_of(served_int8 if served_int8 is not None else float_fast)
    # batch 1 calls are cheap: take the best of at least BS1_REPEATS (a loaded machine stalls
    # multi-threaded small calls often; the minimum needs more draws to find an undisturbed one)
    sec = timeit_interleaved({f"{k}_bs1": (lambda r=r: (r(x1), sync())) for k, r in runs.items()},
                              max(repeats, BS1_REPEATS))
    ms1 = {k: sec[f"{k}_bs1"] * 1000.0 for k in runs}
    say("batch 1, ms/image: " + ", ".join(f"{k} {v:.1f}" for k, v in ms1.items()) + f" (served: {fast_mode})")
    # one warm-up: each already ran at this batch size for max_abs_diff
    sec = timeit_interleaved({f"{k}_bs16": (lambda r=r: (r(x16), sync())) for k, r in runs.items()}, repeats,
                              warmup=1)
    ms16 = {k: sec[f"{k}_bs16"] * 1000.0 / batch for k in runs}
    say(f"batch {batch}, ms/image: " + ", ".join(f"{k} {v:.1f}" for k, v in ms16.items()))
    ms_fp32_bs1, ms_fast_bs1 = ms1["fp32"], ms1[fast_name]
    ms_fp32_bs16, ms_fast_bs16 = ms16["fp32"], ms16[fast_name]
    fast_diff = diffs[fast_name]
    peak_rss = peak_rss_mb()

    # FLOPs and matmul peak
    say("flops + matmul")
    flops = count_flops(model, image_size)
    gflop = flops / 1e9
    mm_fp32 = matmul_gflops(torch.float32, matmul_size, repeats)
    # bf16 matmul only where it is native: emulated (AVX2) a 2048^2 bf16 product takes minutes
    native_bf16 = bf16_autocast_supported(dev, True)
    mm_bf16 = matmul_gflops(torch.bfloat16, matmul_size, repeats) if native_bf16 else float("nan")
    mm_int8 = matmul_gops_int8(matmul_size, repeats) if int8_net is not None else float("nan")
    if served_int8 is not None and math.isfinite(mm_int8):
        mm_fast = mm_int8
    else:
        mm_fast = mm_bf16 if "bf16" in fast_mode.split("+") else mm_fp32
    best_fast_ms = min(ms_fast_bs1, ms_fast_bs16)
    achieved = gflop / (best_fast_ms / 1000.0)
    say(f"{gflop:.2f} GFLOP/image; matmul fp32 {mm_fp32:.0f} GFLOP/s, bf16 {mm_bf16:.0f}, int8 {mm_int8:.0f} GOP/s")

    rows = cfg.infer.memory_rows
    memory_ms = memory_score_ms(model, x16, rows, max(BS1_REPEATS, repeats)) if rows > 0 else 0.0
    say(f"feature-memory image-score term {memory_ms:.1f} ms/image")

    # training
    say("training step")
    train_ms, train_amp = train_ms_per_image(cfg, model, image_size, batch, train_repeats or max(1, repeats), dev)
    train_peak = mm_bf16 if train_amp else mm_fp32
    train_gflops = 3.0 * gflop / (train_ms / 1000.0)  # forward + backward ~ 3x the forward FLOPs
    say(f"training {train_ms:.1f} ms/image; DGM")
    dgm_cfg = SIDNConfig()
    dgm_cfg.train.crop_size = 0
    dgm_ms = dgm_ms_per_image(dgm_cfg, image_size, batch, max(1, repeats))

    def rnd(v: Any, nd: int = 5) -> Any:
        return round(float(v), nd) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None

    prep = None
    if fast_name == "int8" and int8_calib is not None:
        prep = int8_calib.parity.get(served_int8.variant)
    elif "float_fast" in parity:
        prep = parity["float_fast"]
    out: dict[str, Any] = {
        "infer_ms_fp32_bs1": round(ms_fp32_bs1, 3),
        "infer_ms_fp32_bs16": round(ms_fp32_bs16, 3),
        "infer_ms_fast_bs1": round(ms_fast_bs1, 3),
        "infer_ms_fast_bs16": round(ms_fast_bs16, 3),
        "memory_score_ms_bs1": round(memory_ms, 3),
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
        # parity of the served fast mode on the parity model (pixel AUROC fast - fp32, ...)
        "fast_pixel_auroc_delta": rnd(prep["pixel_auroc_delta"]) if prep else None,
        "fast_image_auroc_delta": rnd(prep["image_auroc_delta"]) if prep else None,
        "fast_alarms": prep.get("alarms") if prep else None,
        "fp32_alarms": prep.get("alarms_fp32") if prep else None,
        "fast_parity_max_abs_diff": rnd(prep["max_abs_diff"]) if prep else None,
        "fast_parity_passed": bool(prep["passed"]) if prep else None,
        "fast_note": note,
        # both fast candidates
        "float_fast_mode": mode_of(float_fast),
        "infer_ms_float_fast_bs1": round(ms1["float_fast"], 3),
        "infer_ms_float_fast_bs16": round(ms16["float_fast"], 3),
        "max_abs_diff_float_fast": float(f"{diffs['float_fast']:.3g}"),
        "int8_scheme": scheme,
        "int8_mode": mode_of(int8_net) if int8_net is not None else None,
        "infer_ms_int8_bs1": round(ms1["int8"], 3) if "int8" in ms1 else None,
        "infer_ms_int8_bs16": round(ms16["int8"], 3) if "int8" in ms16 else None,
        "max_abs_diff_int8": float(f"{diffs['int8']:.3g}") if "int8" in diffs else None,
        "matmul_gops_int8": rnd(mm_int8, 1),
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
        "parity_model": parity_desc,
        "parity_pixel_auroc_fp32": rnd(prep["pixel_auroc_fp32"]) if prep else None,
        "parity_image_auroc_fp32": rnd(prep["image_auroc_fp32"]) if prep else None,
        "parity_threshold": rnd(parity.get("threshold")),
        "parity_threshold_source": parity.get("threshold_source"),
        "parity_n_good": parity.get("n_good"),
        "parity_n_val": parity.get("n_val"),
        "int8_parity": {k: {kk: (rnd(vv) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                        for k, v in (int8_calib.parity.items() if int8_calib is not None else [])},
        "float_fast_parity_pixel_auroc_delta": rnd(parity["float_fast"]["pixel_auroc_delta"])
        if "float_fast" in parity else None,
        "float_fast_parity_image_auroc_delta": rnd(parity["float_fast"]["image_auroc_delta"])
        if "float_fast" in parity else None,
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "bench_seconds": round(time.perf_counter() - t_start, 1),
        **{k: v for k, v in describe(dev).items()},
    }
    say(f"done in {out['bench_seconds']:.0f} s: fast mode {fast_mode}, {ms_fast_bs1:.1f} ms/image at batch 1 "
        f"({out['fast_speedup_bs1']:.2f}x fp32), pixel AUROC delta {out['fast_pixel_auroc_delta']}")
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
        ("image-score memory term (FEM + nearest neighbour), batch 1",
         f"{d.get('memory_score_ms_bs1', 0.0):.1f} ms/image: fp32 + memory "
         f"{d['infer_ms_fp32_bs1'] + d.get('memory_score_ms_bs1', 0.0):.1f}, fast + memory "
         f"{d['infer_ms_fast_bs1'] + d.get('memory_score_ms_bs1', 0.0):.1f} ms/image"),
    ]
    if d.get("infer_ms_int8_bs1") is not None:
        rows.append((f"inference int8 ({d.get('int8_mode')}), batch 1 / {d.get('batch', 16)}",
                     f"{d['infer_ms_int8_bs1']:.1f} / {d['infer_ms_int8_bs16']:.1f} ms/image, "
                     f"max diff {d['max_abs_diff_int8']:.2e}"))
    if d.get("infer_ms_float_fast_bs1") is not None:
        rows.append((f"inference float fast ({d.get('float_fast_mode')}), batch 1 / {d.get('batch', 16)}",
                     f"{d['infer_ms_float_fast_bs1']:.1f} / {d['infer_ms_float_fast_bs16']:.1f} ms/image"))
    if d.get("fast_pixel_auroc_delta") is not None:
        rows.append(("fast - fp32 on the parity model: pixel / image AUROC",
                     f"{d['fast_pixel_auroc_delta']:+.4f} / {d.get('fast_image_auroc_delta') or 0:+.4f}, alarms "
                     f"{d.get('fast_alarms')} vs {d.get('fp32_alarms')} of {d.get('parity_n_good')} good images"
                     f" ({'passed' if d.get('fast_parity_passed') else 'FAILED'})"))
    rows += [
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
    if d.get("fast_note"):
        lines.append(f"note: {d['fast_note']}")
    if not d.get("fast_within_tolerance", True):
        judged = " (int8 is served on parity of AUROC and alarms, not on this difference)" \
            if "int8" in str(d.get("fast_mode", "")).split("+") else ""
        lines.append(f"warning: the fast mode's map is {d['max_abs_diff_fast']:.2e} off fp32 (> {MAX_FAST_DIFF:g})"
                     + judged)
    if load is not None and ncpu and load > 0.5 * ncpu + 0.5:
        lines.append(f"warning: the machine was busy (load {load:.1f} on {ncpu} CPUs); timings are pessimistic")
    return "\n".join(lines)


__all__ = [
    "run_bench", "format_bench", "REQUIRED_KEYS",
]
