"""The int8 form of a SIDN (:class:`Int8SIDN`) and :func:`make_int8` (see :mod:`sidn.int8`)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sidn.fast_model import FastForm, fold_batchnorm, fuse_onednn, GemmHead
from sidn.int8.layers import FloatStem, QConv, QDeconv, QResidualBlock
from sidn.int8.quant import QP, Observer, dequantize, qparams, quantize
from sidn.int8.record import Int8Calibration
from sidn.int8.scheme import (DEFAULT_TAIL, FSEMS, SCHEMES, TAILS, _LEVELS, _float_dtype, int8_mode_name, int8_scheme,
                               variant_name)
from sidn.model.sidn import SIDN, SIDNOutput, check_input_shape

CHUNK = 4  # Int8SIDN runs larger batches in chunks of this many images


class Int8SIDN(FastForm):
    """Inference-only int8 stand-in for a SIDN (CPU), built by :func:`make_int8`.

    ``forward(x [B,1,H,W] in [0,1])`` returns a :class:`SIDNOutput` of float32 tensors, like the
    model's (``z_t``/``z_d`` dequantised). ``mode`` names it (:func:`int8_mode_name`),
    ``calibration`` is the :class:`Int8Calibration` it was built from. Any batch and size
    (multiple of 16) works; the weights are laid out for ``shape`` (default: batch 1 at the
    calibration's image size).
    """

    def __init__(self, model: SIDN, ranges: dict[str, list[float]] | None = None, scheme: str = "u8s8",
                 tail: str = DEFAULT_TAIL, fsem: str = "int8") -> None:
        super().__init__()
        if not isinstance(model, SIDN):
            raise TypeError(f"Int8SIDN needs a SIDN, got {type(model).__name__}")
        if scheme not in SCHEMES:
            raise ValueError(f"int8 scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        if tail not in TAILS:
            raise ValueError(f"int8 tail must be one of {', '.join(TAILS)}, got {tail!r}")
        if fsem not in FSEMS:
            raise ValueError(f"int8 fsem must be one of {', '.join(FSEMS)}, got {fsem!r}")
        net = fold_batchnorm(model).cpu().float()
        self.cfg = model.cfg
        self.scheme, self.tail, self.fsem = scheme, tail, fsem
        self.variant = variant_name(scheme, fsem)
        self.levels = _LEVELS[scheme]
        self.mode = int8_mode_name(scheme, tail, fsem)
        self.calibration: Int8Calibration | None = None
        fem = net.fem
        self.stem = FloatStem("fem.stem", fem.stem[0])
        self.fem_blocks = nn.ModuleList([QResidualBlock(f"fem.block{i}", getattr(fem, f"block{i}")) for i in (1, 2, 3)])
        branches = (("t", "texture"), ("d", "defect"))
        if fsem == "int8":
            self.branches = nn.ModuleDict({
                k: nn.ModuleList([QResidualBlock(f"fsem.{name}.{i}", b) for i, b in enumerate(getattr(net.fsem, name))])
                for k, name in branches})
        else:  # float FSEM: fp32 for observing, oneDNN-fused (bf16 where native) for inference
            self.fsem_dtype = _float_dtype()
            self.fsem_obs = nn.ModuleDict({k: getattr(net.fsem, name) for k, name in branches})
            self.fsem_run = nn.ModuleDict({
                k: fuse_onednn(copy.deepcopy(getattr(net.fsem, name)).to(self.fsem_dtype).to(
                    memory_format=torch.channels_last)) for k, name in branches})
        self.gsrm = nn.ModuleDict({k: g for k, g in (("t", net.gsrm_t), ("d", net.gsrm_d)) if g is not None})
        for g in self.gsrm.values():
            g.to(memory_format=torch.channels_last)
            fuse_onednn(g)
        self.centres = {"t": net.fsem.centres_t.detach().clone(), "d": net.fsem.centres_d.detach().clone()}
        n_int8 = 3 if tail == "block" else 4
        self.sm_q, self.sm_f = nn.ModuleDict(), nn.ModuleDict()
        self.head_q: dict[str, QConv] = {}
        for k in ("t", "d"):
            sm = getattr(net, f"sm_{k}")
            self.sm_q[k] = nn.ModuleList([QDeconv(f"sm_{k}.blocks.{i}", sm.blocks[i][0], relu=True)
                                          for i in range(n_int8)])
            rest = [sm.blocks[i] for i in range(n_int8, len(sm.blocks))]
            h = sm.head
            if tail == "none":  # ConvTranspose2d(k=3, s=1, p=1) == conv2d with the flipped kernel
                self.head_q[k] = QConv(f"sm_{k}.head", h.weight.detach().flip(2, 3).transpose(0, 1), h.bias, 1, False)
            f = fuse_onednn(nn.Sequential(*rest).to(memory_format=torch.channels_last))
            if tail != "none":
                f.append(GemmHead(h) if GemmHead.fits(h) else fuse_onednn(nn.Sequential(h)))
            self.sm_f[k] = f
        self.ranges: dict[str, list[float]] = {}
        if ranges is not None:
            self.prepare(ranges)

    # -- calibration -------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, x: Tensor, obs: Observer) -> None:
        """Float32 forward (BN folded) recording the range of every int8 tensor in ``obs``."""
        check_input_shape(x, self.cfg.in_channels)
        q = self.stem.observe(x.float().contiguous(memory_format=torch.channels_last), obs)
        for b in self.fem_blocks:
            q = b.observe(q, obs)
        for k in ("t", "d"):
            z = q
            if self.fsem == "int8":
                for b in self.branches[k]:
                    z = b.observe(z, obs)
            else:
                z = self.fsem_obs[k](z)
            y = obs(f"sm_{k}.in", self._gsrm(k, z))
            for d in self.sm_q[k]:
                y = d.observe(y, obs)

    def prepare(self, ranges: dict[str, list[float]], shape: Sequence[int] | None = None) -> None:
        """Quantise the weights and lay them out for input ``shape`` [B,1,H,W] (default [1,1,256,256])."""
        self.ranges = {k: [float(v[0]), float(v[1])] for k, v in ranges.items()}
        lv = self.levels
        b, _, h, w = shape if shape is not None else (1, 1, 256, 256)
        q = qparams(*ranges["fem.stem"], lv)  # ReLU output: zero point 0
        self.stem.prepare(q, [b, 1, h, w], lv)
        s = [b, self.stem.out_channels, h, w]
        for blk in self.fem_blocks:
            q, s = blk.prepare(q, ranges, s, lv)
        self.z_q: dict[str, QP] = {}
        self.sm_in_q: dict[str, QP] = {}
        self.last_q: dict[str, QP | None] = {}
        self.fem_q = q
        for k in ("t", "d"):
            qq, ss = q, s
            if self.fsem == "int8":
                for blk in self.branches[k]:
                    qq, ss = blk.prepare(qq, ranges, ss, lv)
            else:
                ss = [ss[0], 16 * self.cfg.channels, -(-ss[2] // 8), -(-ss[3] // 8)]
            self.z_q[k] = qq
            iq: QP | None = qparams(*ranges[f"sm_{k}.in"], lv)
            self.sm_in_q[k] = iq
            mods = self.sm_q[k]
            for i, d in enumerate(mods):
                fp32_out = i == len(mods) - 1 and self.tail == "head"
                oq = None if fp32_out else qparams(*ranges[d.name], lv)
                ss = d.prepare(iq, oq, ss)
                iq = oq
            self.last_q[k] = iq
            if self.tail == "none":
                self.head_q[k].prepare(iq, None, ss)

    # -- inference ---------------------------------------------------------------------------
    def _gsrm(self, k: str, z: Tensor) -> Tensor:
        return self.gsrm[k](z, self.centres[k]) if k in self.gsrm else z

    def forward(self, x: Tensor) -> SIDNOutput:
        if not self.ranges:
            raise RuntimeError("Int8SIDN: not calibrated; build it with sidn.int8.model.make_int8")
        check_input_shape(x, self.cfg.in_channels)
        if x.device.type != "cpu":
            raise ValueError(f"Int8SIDN runs on the CPU only, got an input on {x.device}")
        if x.shape[0] > CHUNK:  # in cache-sized chunks: batch 16 at 256 px is ~1.4x slower per image
            parts = [self._forward(x[i:i + CHUNK]) for i in range(0, x.shape[0], CHUNK)]
            return SIDNOutput(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                                 for f in dataclasses.fields(SIDNOutput)})
        return self._forward(x)

    def _forward(self, x: Tensor) -> SIDNOutput:
        lv = self.levels
        with torch.inference_mode():
            q = self.stem(x)
            for b in self.fem_blocks:
                q = b(q)
            logits: dict[str, Tensor] = {}
            zs: dict[str, Tensor] = {}
            zf = None if self.fsem == "int8" else dequantize(q, self.fem_q).to(self.fsem_dtype).contiguous(
                memory_format=torch.channels_last)
            for k in ("t", "d"):
                if self.fsem == "int8":
                    z = q
                    for b in self.branches[k]:
                        z = b(z)
                    zs[k] = dequantize(z, self.z_q[k])
                else:
                    zs[k] = self.fsem_run[k](zf).float()
                y = quantize(self._gsrm(k, zs[k]), self.sm_in_q[k], lv)
                for d in self.sm_q[k]:
                    y = d(y)
                if self.tail == "none":
                    logits[k] = self.head_q[k](y)
                    continue
                if self.tail == "block":
                    y = dequantize(y, self.last_q[k])
                logits[k] = self.sm_f[k](y.contiguous(memory_format=torch.channels_last)).float()
            texture = torch.sigmoid(logits["t"])
            defect = torch.sigmoid(logits["d"])
            lf = self.cfg.lambda_f
            fused = (1.0 - lf) * (1.0 - texture) + lf * defect  # eq. (26)
            return SIDNOutput(texture, defect, fused, zs["t"], zs["d"], logits["t"], logits["d"])



def make_int8(model: SIDN, calibration: Int8Calibration, scheme: str | None = None,
              shape: Sequence[int] | None = None, fsem: str = "int8") -> Int8SIDN:
    """The :class:`Int8SIDN` of ``model`` with ``calibration``'s ranges (no parity check: see :func:`select_int8`)."""
    scheme = scheme or int8_scheme("cpu")
    if scheme is None:
        raise RuntimeError("this CPU has no oneDNN int8 kernels")
    s = calibration.image_size
    net = Int8SIDN(model, None, scheme, calibration.tail, fsem)
    net.prepare(calibration.ranges, shape or [1, 1, s, s])
    net.calibration = calibration
    return net.eval()

