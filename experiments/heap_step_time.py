"""Training step with and without sidn.heap.reuse_heap, at a given window size (batch 16, default model, fp32).

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=2 python experiments/heap_step_time.py 128 plain
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=2 python experiments/heap_step_time.py 128 heap

Prints the median of the last 8 of 12 steps and the cost per 256 px-equivalent image (README, Speed).
"""
import sys, time, torch
from sidn.config import SIDNConfig
from sidn.model.sidn import SIDN
from sidn.losses import SIDNLoss
from sidn.heap import reuse_heap
import contextlib
S, B = int(sys.argv[1]), 16
torch.manual_seed(0)
cfg = SIDNConfig(); mdl = SIDN(cfg.model); loss_fn = SIDNLoss(cfg.loss, cfg.model)
x = torch.rand(B,1,S,S); m = (torch.rand(B,1,S,S)>0.95).float()
opt = torch.optim.Adam(mdl.parameters(), 1e-3)
ctx = reuse_heap() if sys.argv[2] == "heap" else contextlib.nullcontext()
ts = []
with ctx:
    for i in range(12):
        t = time.perf_counter(); o = mdl(x); l = loss_fn(o, m, mdl); opt.zero_grad(); l.total.backward(); opt.step(); ts.append(time.perf_counter() - t)
print(sys.argv[2], S, "s/step steady (median of last 8):", round(sorted(ts[4:])[4], 3), "ms per 256-equiv image:", round(sorted(ts[4:])[4] / B * (256 / S) ** 2 * 1000, 1))
