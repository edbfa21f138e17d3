"""SIDN network (paper Sec. III-A, Fig. 1): FEM -> FSEM -> GSRM -> SM, fused by eq. (26).

A pure ``nn.Module`` (no optimiser, no data generation): training lives in ``sidn.train``,
defect generation (eq. 1) in ``sidn.data.dgm``, losses in :mod:`sidn.losses`.

Shapes for an input ``x [B, 1, H, W]`` (H, W multiples of 16), C = ``ModelConfig.channels``::

    Z      = FEM(x)                 [B, 2C,  H/2,  W/2]    eq. (2)
    Z_t,Z_d = FSEM(Z)               [B, 16C, H/16, W/16]   eq. (6)-(7)
    Z'_t   = GSRM_t(Z_t, C^t)       [B, 16C, H/16, W/16]   eq. (21), (23)-(24)
    Z'_d   = GSRM_d(Z_d, C^d)       [B, 16C, H/16, W/16]   eq. (22)
    I_s^t  = sigmoid(SM_t(Z'_t))    [B, 1, H, W]           eq. (3)
    I_s^d  = sigmoid(SM_d(Z'_d))    [B, 1, H, W]           eq. (4)
    I_s    = (1-lf)(1-I_s^t) + lf I_s^d                    eq. (26)

The calibrated pixel threshold and image-score threshold travel with the weights as buffers
``threshold`` and ``score_threshold``; they start as NaN (uncalibrated), in the style of
anomalib's ``one_class.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sidn.config import ModelConfig
from sidn.model.fem import FEM
from sidn.model.fsem import FSEM
from sidn.model.gsrm import GSRM
from sidn.model.sm import SM

SIZE_MULTIPLE = 16  # four stride-2 stages (FEM: 1, FSEM: 3) -> H/16


@dataclass
class SIDNOutput:
    """Typed result of :meth:`SIDN.forward`.

    texture:  ``I_s^t`` [B,1,H,W] float32 in (0,1); 1 = defect-free texture (eq. 3)
    defect:   ``I_s^d`` [B,1,H,W] float32 in (0,1); 1 = defect (eq. 4)
    fused:    ``I_s``  [B,1,H,W] float32, eq. (26) with ``ModelConfig.lambda_f``; the anomaly map
    z_t, z_d: FSEM outputs before the GSRM [B,16C,H/16,W/16] (eq. 6-7; used by L_z, L_kl)
    texture_logits, defect_logits: the pre-sigmoid values of ``texture`` / ``defect``
        [B,1,H,W] float32. :func:`sidn.losses.segmentation_loss` uses them to evaluate
        ``log(I)`` and ``log(1-I)`` of eq. (5) as log-sigmoid, which is stable where the
        sigmoid saturates. ``None`` is allowed (the loss then falls back to clamped logs).
    """

    texture: Tensor
    defect: Tensor
    fused: Tensor
    z_t: Tensor
    z_d: Tensor
    texture_logits: Tensor | None = None
    defect_logits: Tensor | None = None


def _nearest_multiple(n: int, m: int = SIZE_MULTIPLE) -> int:
    return max(m, int(math.floor(n / m + 0.5)) * m)


def check_input_shape(x: Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` naming a size that would work (segmentation_models_pytorch style)."""
    if x.ndim != 4:
        raise ValueError(f"SIDN expects a 4-D batch [B, {in_channels}, H, W], got shape {list(x.shape)}")
    if x.shape[1] != in_channels:
        want = "grayscale" if in_channels == 1 else f"{in_channels} channels"
        raise ValueError(
            f"SIDN expects {in_channels} input channel(s) (ModelConfig.in_channels), got {x.shape[1]} "
            f"in shape {list(x.shape)}; convert the images to {want}"
        )
    h, w = int(x.shape[2]), int(x.shape[3])
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        nh, nw = _nearest_multiple(h), _nearest_multiple(w)
        raise ValueError(
            f"SIDN expects height and width divisible by {SIZE_MULTIPLE}, got {h}x{w}; "
            f"the nearest size that works is {nh}x{nw} (resize or pad the input to {nh}x{nw})"
        )


class SIDN(nn.Module):
    """Semantic information decomposition network (Fig. 1).

    ``channels_last=True`` (default) stores the weights in NHWC and converts the input to it;
    outputs are ordinary tensors (any memory format works for the caller).

    Ablations (Table II): ``ModelConfig.use_gsrm=False`` gives ``Z' = Z`` (method C);
    ``use_clustering`` only affects the losses (:class:`sidn.losses.SIDNLoss`).
    """

    def __init__(self, cfg: ModelConfig | None = None, channels_last: bool = True) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        if not 0.0 <= cfg.lambda_f <= 1.0:
            raise ValueError(f"ModelConfig.lambda_f must be in [0, 1] (eq. 26), got {cfg.lambda_f}")
        if cfg.alpha <= 0:
            raise ValueError(f"ModelConfig.alpha must be > 0 (eq. 11-12), got {cfg.alpha}")
        self.cfg = cfg
        dim = 16 * cfg.channels
        self.fem = FEM(cfg.in_channels, cfg.channels)
        self.fsem = FSEM(cfg.channels, cfg.clusters, cfg.center_init)
        # Table II ablation C (use_gsrm=False) builds no GSRM at all, so no parameter is left
        # without a gradient and the parameter / FLOP counts are those of the ablated network.
        self.gsrm_t: GSRM | None = GSRM(dim, cfg.gsrm_scale) if cfg.use_gsrm else None
        self.gsrm_d: GSRM | None = GSRM(dim, cfg.gsrm_scale) if cfg.use_gsrm else None
        self.sm_t = SM(cfg.channels)
        self.sm_d = SM(cfg.channels)
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.register_buffer("score_threshold", torch.tensor(float("nan")))
        self.channels_last = channels_last
        if channels_last:
            # NHWC is ~1.3-2x faster on CPU (oneDNN, also for ConvTranspose2d) and is what
            # tensor cores want on GPU; Module.to(device) and load_state_dict keep the layout.
            self.to(memory_format=torch.channels_last)

    # -- centres (owned by the FSEM) -------------------------------------------------------
    @property
    def centres_t(self) -> nn.Parameter:
        """Texture cluster centres ``C^t`` [K, 16C]."""
        return self.fsem.centres_t

    @property
    def centres_d(self) -> nn.Parameter:
        """Defect cluster centres ``C^d`` [K, 16C]."""
        return self.fsem.centres_d

    @property
    def needs_centre_init(self) -> bool:
        """True when ``center_init="kmeans"`` and :meth:`init_centres_from` has not run yet."""
        return not bool(self.fsem.centres_initialised)

    def init_centres_from(self, z_t: Tensor, z_d: Tensor) -> None:
        """k-means initialisation of the centres from FSEM features (see :mod:`sidn.model.fsem`)."""
        self.fsem.init_centres_from(z_t, z_d)

    # -- calibration ------------------------------------------------------------------------
    @property
    def is_calibrated(self) -> bool:
        """True once a finite pixel ``threshold`` has been stored."""
        return bool(torch.isfinite(self.threshold))

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> SIDNOutput:
        check_input_shape(x, self.cfg.in_channels)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.fem(x)  # [B, 2C, H/2, W/2]
        z_t, z_d = self.fsem(z)  # [B, 16C, H/16, W/16] each
        if self.gsrm_t is not None and self.gsrm_d is not None:
            zt_p = self.gsrm_t(z_t, self.fsem.centres_t)
            zd_p = self.gsrm_d(z_d, self.fsem.centres_d)
        else:  # Table II ablation C
            zt_p, zd_p = z_t, z_d
        logit_t = self.sm_t(zt_p).float()  # [B, 1, H, W]
        logit_d = self.sm_d(zd_p).float()
        texture = torch.sigmoid(logit_t)
        defect = torch.sigmoid(logit_d)
        lf = self.cfg.lambda_f
        fused = (1.0 - lf) * (1.0 - texture) + lf * defect  # eq. (26)
        return SIDNOutput(texture, defect, fused, z_t, z_d, logit_t, logit_d)


__all__ = ["SIDN", "SIDNOutput", "check_input_shape", "SIZE_MULTIPLE"]
