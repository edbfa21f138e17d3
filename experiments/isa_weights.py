"""Do fp32 weights depend on the CPU's instruction set? Train 3 tiny steps and save the bundle:

    python experiments/isa_weights.py /tmp/native
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python experiments/isa_weights.py /tmp/avx2
    python experiments/isa_weights.py --compare /tmp/native /tmp/avx2

(README "What reproduces": the max difference was 3.8e-3 on an AMD EPYC Zen 4.)
"""

import sys

import torch

from sidn.bundle import load_bundle

if sys.argv[1] == "--compare":
    a, _, _ = load_bundle(f"{sys.argv[2]}/model.pt")
    b, _, _ = load_bundle(f"{sys.argv[3]}/model.pt")
    diff = max(float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values())
               if x.is_floating_point() and bool(torch.isfinite(x).all()))
    print(f"max |weight difference|: {diff:.3g}")
else:
    from sidn.train import train
    from tests.test_train import TRAIN, VAL, _cfg

    train(_cfg(steps=3), TRAIN, VAL, sys.argv[1], progress=False)
    print(torch.backends.cpu.get_cpu_capability())
