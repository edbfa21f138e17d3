"""Seconds per training step of the default recipe (batch 16 of 128 px windows), for the learning curve's x axis.

    python experiments/step_time.py auto                                          # native, bf16 where supported
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python experiments/step_time.py off   # AVX2-only, fp32

Prints the median of 6 timed steps after 2 warm-up steps (2 threads) and the fp32 matmul rate.
"""

import sys
import time

import torch

from sidn.config import load_config
from sidn.device import amp_enabled, autocast
from sidn.losses import SIDNLoss
from sidn.model.sidn import SIDN
from sidn.train_validation import to_fp32

cfg = load_config("params.yaml", [f"train.amp={sys.argv[1] if len(sys.argv) > 1 else 'auto'}"])
torch.set_num_threads(2)
model, loss_fn = SIDN(cfg.model), SIDNLoss(cfg.loss, cfg.model)
opt = torch.optim.Adam(model.parameters(), cfg.train.lr)
x = torch.rand(16, 1, 128, 128)
mask = torch.zeros_like(x)
mask[:, :, 40:60, 40:60] = 1
use_amp = amp_enabled(cfg.train.amp, torch.device("cpu"))
first = model(x)
model.init_centres_from(first.z_t.detach(), first.z_d.detach())


def step() -> None:
    with autocast(torch.device("cpu"), use_amp):
        out = model(x)
    terms = loss_fn(to_fp32(out), mask, model)
    opt.zero_grad()
    terms.total.backward()
    opt.step()


step(), step()
times = []
for _ in range(6):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
a = torch.randn(2048, 2048)
t0 = time.perf_counter()
for _ in range(5):
    a @ a
gflops = 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
print(f"isa={torch.backends.cpu.get_cpu_capability()} bf16={use_amp} "
      f"step {sorted(times)[3] * 1000:.0f} ms, fp32 matmul {gflops:.0f} GFLOP/s")
