"""SIDN losses, paper Sec. III-B-3 and III-C/E: eq. (5), (8), (11)-(17), (18), (19), (25).

    L    = L_s + L_fd                                    (25)
    L_fd = lambda2 L_z + lambda3 L_kl + lambda4 L_td     (19)

Every function works on float32 (inputs are cast; :class:`SIDNLoss` also switches autocast
off), so training under ``torch.autocast(..., dtype=torch.bfloat16)`` keeps the losses exact.

Choices the paper leaves open (all **our choice**, documented at each function):

* ``E[||.||_1]`` of eq. (5) is a per-pixel mean, so L_s does not depend on the image size;
  the sign is taken so that L_s is a positive negative log-likelihood.
* L_z (eq. 8) is the raw dot product, averaged over all positions of the batch. It is
  bounded below by 0 because the FSEM features are non-negative (they leave a ReLU); a
  cosine form is available with ``SIDNLoss(..., l_z_mode="cosine")``.
* Q, P, KL (eq. 11-17) are computed over the set of all ``B*h*w`` positions of the batch;
  P is recomputed from the current Q for every batch and detached
  (``LossConfig.target_refresh="batch"``); KL is averaged over positions.
* The radii r_k (eq. 13-14) use the population standard deviation; an empty cluster has
  radius NaN. They are reported (detached), not used in the loss.

Tiny worked example (2 positions, 2 centres, 2 dims; see each function)::

    z = [[0, 0], [1, 1]],  C = [[0, 0], [2, 0]],  alpha = 1
    squared distances  [[0, 4], [2, 2]]
    Q = [[1/1.2, 0.2/1.2], [1/3, 1/3] / (2/3)] = [[0.8333, 0.1667], [0.5, 0.5]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sidn.config import LossConfig, ModelConfig
from sidn.model.sidn import SIDNOutput

TARGET_REFRESH = ("batch",)
L_Z_MODES = ("raw", "cosine")
_EPS = 1e-12


def _flat(z: Tensor) -> Tensor:
    """``[B, D, h, w] -> [B*h*w, D]`` float32; a 2-D ``[N, D]`` input is returned as float32."""
    if z.ndim == 4:
        z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    if z.ndim != 2:
        raise ValueError(f"expected features [B, D, h, w] or [N, D], got shape {list(z.shape)}")
    return z.float()


# --------------------------------------------------------------------------------- eq. (5)
def segmentation_loss(
    texture: Tensor,
    defect: Tensor,
    mask: Tensor,
    lambda1: float = 0.1,
    texture_logits: Tensor | None = None,
    defect_logits: Tensor | None = None,
) -> Tensor:
    """Pixel-level weighted cross-entropy L_s, eq. (5).

    ``L_s = mean_px[ -(lambda1 (1-I_m) log I_s^t + I_m log(1-I_s^t)) ]
          + mean_px[ -(lambda1 (1-I_m) log(1-I_s^d) + I_m log I_s^d) ]``

    The texture map should be 1 on defect-free pixels and 0 on defects; the defect map the
    opposite. lambda1 down-weights the (large) background term. The paper's
    ``E[||.||_1]`` is taken as a mean over all pixels of the batch (size independent), and as
    the bracket is <= 0 its L1 norm is minus its sum: L_s is a negative log-likelihood >= 0.

    With logits given, ``log(sigmoid(a)) = logsigmoid(a)`` and
    ``log(1 - sigmoid(a)) = logsigmoid(-a)`` are used (stable); otherwise the probabilities
    are clamped to ``[1e-7, 1 - 1e-7]`` before the log.

    Shapes: all ``[B, 1, H, W]``; ``mask`` in {0, 1} (soft values also work).

    Example: one background pixel (m=0) and one defect pixel (m=1), every probability 0.5::

        >>> import torch
        >>> p = torch.full((1, 1, 1, 2), 0.5); m = torch.tensor([[[[0.0, 1.0]]]])
        >>> round(segmentation_loss(p, p, m, lambda1=0.1).item(), 4)  # 2 * (0.1+1)/2 * ln 2
        0.7625
    """
    mask = mask.float()
    if texture_logits is not None and defect_logits is not None:
        a_t, a_d = texture_logits.float(), defect_logits.float()
        log_t, log_1mt = F.logsigmoid(a_t), F.logsigmoid(-a_t)
        log_d, log_1md = F.logsigmoid(a_d), F.logsigmoid(-a_d)
    else:
        t = texture.float().clamp(1e-7, 1 - 1e-7)
        d = defect.float().clamp(1e-7, 1 - 1e-7)
        log_t, log_1mt = t.log(), (1 - t).log()
        log_d, log_1md = d.log(), (1 - d).log()
    bg = 1.0 - mask
    l_t = -(lambda1 * bg * log_t + mask * log_1mt).mean()
    l_d = -(lambda1 * bg * log_1md + mask * log_d).mean()
    return l_t + l_d


# --------------------------------------------------------------------------------- eq. (8)
def feature_separation_loss(z_t: Tensor, z_d: Tensor, mode: str = "raw") -> Tensor:
    """Feature separation loss L_z, eq. (8): ``(1/N) sum_i z_i^t . z_i^d``.

    ``z_t``, ``z_d``: ``[B, 16C, h, w]`` (or ``[N, D]``); N counts every position of the batch.

    ``mode="raw"`` (default) is the paper's form. A raw dot product is unbounded below in
    general, but the SIDN's FSEM features leave a ReLU and are >= 0, so here L_z >= 0 and its
    minimum 0 means "texture and defect features use disjoint channels at every position".
    ``mode="cosine"`` divides each dot product by ``||z_i^t|| ||z_i^d||`` (bounded in [-1, 1],
    insensitive to feature scale), an alternative if the raw form ever destabilises training.

    Example::

        >>> import torch
        >>> zt = torch.tensor([[1.0, 0.0], [1.0, 1.0]]); zd = torch.tensor([[0.0, 2.0], [3.0, 1.0]])
        >>> feature_separation_loss(zt, zd).item()  # (0 + 4) / 2
        2.0
        >>> round(feature_separation_loss(zt, zd, mode="cosine").item(), 4)  # (0 + 4/(sqrt2 sqrt10))/2
        0.4472
    """
    if mode not in L_Z_MODES:
        raise ValueError(f"feature_separation_loss: unknown mode {mode!r}; expected one of {', '.join(L_Z_MODES)}")
    a, b = _flat(z_t), _flat(z_d)
    if a.shape != b.shape:
        raise ValueError(f"feature_separation_loss: z_t {list(a.shape)} and z_d {list(b.shape)} differ")
    if mode == "cosine":
        return F.cosine_similarity(a, b, dim=1, eps=1e-8).mean()
    return (a * b).sum(1).mean()


# ---------------------------------------------------------------------------- eq. (9)-(12)
def squared_distances(z: Tensor, centres: Tensor) -> Tensor:
    """``||e_ik||^2 = ||z_i - c_k||^2`` (eq. 9-10) as ``[N, K]``, float32, clamped at 0."""
    z, c = _flat(z), centres.float()
    d2 = (z * z).sum(1, keepdim=True) - 2.0 * (z @ c.t()) + (c * c).sum(1)
    return d2.clamp_min(0.0)


def student_t_log_assignment(z: Tensor, centres: Tensor, alpha: float = 1.0) -> Tensor:
    """``log Q`` of eq. (11)-(12), ``[N, K]``, by a log-softmax (stable for large distances)."""
    d2 = squared_distances(z, centres)
    log_kernel = -(alpha + 1.0) / 2.0 * torch.log1p(d2 / alpha)
    return torch.log_softmax(log_kernel, dim=1)


def student_t_assignment(z: Tensor, centres: Tensor, alpha: float = 1.0) -> Tensor:
    """Soft assignment Q, eq. (11)-(12) (Student-t kernel, DEC [19]).

    ``Q_ik = (1 + ||z_i - c_k||^2/alpha)^(-(alpha+1)/2) / sum_k' (...)``; rows sum to 1.
    ``z``: ``[B, D, h, w]`` or ``[N, D]``; ``centres``: ``[K, D]``; returns ``[N, K]``.

    Example (the module example; alpha = 1 makes the kernel ``1/(1+d^2)``)::

        >>> import torch
        >>> z = torch.tensor([[0.0, 0.0], [1.0, 1.0]]); c = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> student_t_assignment(z, c).double().numpy().round(4).tolist()
        [[0.8333, 0.1667], [0.5, 0.5]]
    """
    return student_t_log_assignment(z, centres, alpha).exp()


# --------------------------------------------------------------------------- eq. (15)-(16)
def target_distribution(q: Tensor) -> Tensor:
    """Auxiliary target P, eq. (15)-(16): ``P_ik = (Q_ik^2 / f_k) / sum_k' (Q_ik'^2 / f_k')``.

    ``f_k = sum_i Q_ik`` is the soft cluster frequency over the N positions given (the whole
    batch). The result is detached: P is a fixed target for the current batch
    (``LossConfig.target_refresh = "batch"``).

    Example (Q of :func:`student_t_assignment`; f = [4/3, 2/3])::

        >>> import torch
        >>> q = torch.tensor([[5 / 6, 1 / 6], [0.5, 0.5]])
        >>> target_distribution(q).double().numpy().round(4).tolist()  # [[25/27, 2/27], [1/3, 2/3]]
        [[0.9259, 0.0741], [0.3333, 0.6667]]
    """
    q = q.detach().float()
    f = q.sum(0).clamp_min(_EPS)  # [K]
    w = q * q / f
    return w / w.sum(1, keepdim=True).clamp_min(_EPS)


# --------------------------------------------------------------------------------- eq. (17)
def kl_loss(p: Tensor, q: Tensor | None = None, log_q: Tensor | None = None) -> Tensor:
    """``KL(P || Q) = sum_i sum_k P_ik log(P_ik / Q_ik)``, eq. (17), averaged over the N rows.

    Eq. (17) sums over positions; we divide by N (our choice) so the weight lambda3 does not
    depend on batch or image size. Give ``log_q`` (from :func:`student_t_log_assignment`) for
    stability, or ``q``. ``0 log 0 = 0``.

    Example (P, Q of the examples above)::

        >>> import torch
        >>> q = torch.tensor([[5 / 6, 1 / 6], [0.5, 0.5]]); p = target_distribution(q)
        >>> round(kl_loss(p, q).item(), 4)  # (0.0375 + 0.0566) / 2, rows: P log(P/Q) summed over k
        0.0471
    """
    if log_q is None:
        if q is None:
            raise ValueError("kl_loss: give q or log_q")
        log_q = q.float().clamp_min(_EPS).log()
    p = p.float()
    return (torch.xlogy(p, p) - p * log_q.float()).sum(1).mean()


# --------------------------------------------------------------------------------- eq. (18)
def centre_cosine_loss(centres_t: Tensor, centres_d: Tensor) -> Tensor:
    """Central constraint L_td, eq. (18): mean cosine similarity over all K x K pairs (c_j^t, c_k^d).

    Example::

        >>> import torch
        >>> ct = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); cd = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
        >>> round(centre_cosine_loss(ct, cd).item(), 4)  # (1/sqrt2 - 1 + 1/sqrt2 + 0) / 4
        0.1036
    """
    a = F.normalize(centres_t.float(), dim=1, eps=1e-8)
    b = F.normalize(centres_d.float(), dim=1, eps=1e-8)
    return (a @ b.t()).mean()


# --------------------------------------------------------------------------- eq. (13)-(14)
@torch.no_grad()
def hypersphere_radii(z: Tensor, centres: Tensor) -> Tensor:
    """Hypersphere radii r_k, eq. (13)-(14), ``[K]``, detached.

    Each position goes to its nearest centre, ``d_i = min_k ||z_i - c_k||`` (eq. 13);
    ``r_k = mean(d_i of members of k) + 3 std(d_i of members of k)`` (eq. 14), with the
    population standard deviation (a single member gives std 0). A centre with no member gets
    NaN (our choice: there is no sphere to measure, and NaN cannot be mistaken for one).

    Example (3 positions; centre 0 gets distances 0 and 1, centre 1 gets 1)::

        >>> import torch
        >>> z = torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 1.0]]); c = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> hypersphere_radii(z, c).tolist()  # [0.5 + 3*0.5, 1 + 0]
        [2.0, 1.0]
    """
    d = squared_distances(z, centres).sqrt()  # [N, K]
    dmin, assign = d.min(1)
    k = centres.shape[0]
    counts = torch.bincount(assign, minlength=k).to(d.dtype)
    s1 = torch.zeros(k, dtype=d.dtype, device=d.device).index_add_(0, assign, dmin)
    s2 = torch.zeros(k, dtype=d.dtype, device=d.device).index_add_(0, assign, dmin * dmin)
    mean = s1 / counts  # NaN where empty
    var = (s2 / counts - mean * mean).clamp_min(0.0)
    return mean + 3.0 * var.sqrt()


# --------------------------------------------------------------------------- eq. (19), (25)
@dataclass
class LossTerms:
    """Result of :class:`SIDNLoss`. ``total`` carries the gradient; radii are detached ``[K]``."""

    total: Tensor
    l_s: Tensor
    l_z: Tensor
    l_kl: Tensor
    l_td: Tensor
    radii_t: Tensor
    radii_d: Tensor

    def scalars(self) -> dict[str, float]:
        """Loss values as Python floats (for logging / history tables)."""
        return {k: float(getattr(self, k).detach()) for k in ("total", "l_s", "l_z", "l_kl", "l_td")}


class SIDNLoss(nn.Module):
    """Joint loss ``L = L_s + lambda2 L_z + lambda3 L_kl + lambda4 L_td`` (eq. 19, 25).

    Ablations (Table II, each also without GSRM, see the ``ablation-*`` profiles in params.yaml):
    ``ModelConfig.use_clustering=False`` (A) sets L_kl and L_td to 0; ``LossConfig.lambda4 = 0``
    (B) keeps L_td in the report but out of the total.
    ``l_z_mode``: ``"raw"`` (paper, default) or ``"cosine"``, see :func:`feature_separation_loss`.
    """

    def __init__(
        self, cfg: LossConfig | None = None, model_cfg: ModelConfig | None = None, l_z_mode: str = "raw"
    ) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else LossConfig()
        self.model_cfg = model_cfg if model_cfg is not None else ModelConfig()
        if self.cfg.target_refresh not in TARGET_REFRESH:
            raise ValueError(
                f"LossConfig.target_refresh: unknown value {self.cfg.target_refresh!r}; "
                f"expected one of {', '.join(TARGET_REFRESH)}"
            )
        if l_z_mode not in L_Z_MODES:
            raise ValueError(f"SIDNLoss: unknown l_z_mode {l_z_mode!r}; expected one of {', '.join(L_Z_MODES)}")
        for name in ("lambda1", "lambda2", "lambda3", "lambda4"):
            if getattr(self.cfg, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self.cfg, name)}")
        self.l_z_mode = l_z_mode

    def forward(self, out: SIDNOutput, mask: Tensor, model: nn.Module) -> LossTerms:
        """``mask`` ``[B,1,H,W]`` (1 = defect); ``model``: the SIDN (supplies ``centres_t/_d``)."""
        if mask.shape != out.texture.shape:
            raise ValueError(
                f"SIDNLoss: mask shape {list(mask.shape)} differs from output shape {list(out.texture.shape)}"
            )
        c = self.cfg
        with torch.autocast(device_type=out.texture.device.type, enabled=False):
            l_s = segmentation_loss(
                out.texture, out.defect, mask, c.lambda1, out.texture_logits, out.defect_logits
            )
            l_z = feature_separation_loss(out.z_t, out.z_d, self.l_z_mode)
            ct, cd = model.centres_t, model.centres_d
            if self.model_cfg.use_clustering:
                alpha = self.model_cfg.alpha
                log_q_t = student_t_log_assignment(out.z_t, ct, alpha)
                log_q_d = student_t_log_assignment(out.z_d, cd, alpha)
                p_t = target_distribution(log_q_t.exp())
                p_d = target_distribution(log_q_d.exp())
                l_kl = kl_loss(p_t, log_q=log_q_t) + kl_loss(p_d, log_q=log_q_d)
                l_td = centre_cosine_loss(ct, cd)
            else:  # Table II ablation A: FSEM without clustering
                l_kl = l_s.new_zeros(())
                l_td = l_s.new_zeros(())
            total = l_s + c.lambda2 * l_z + c.lambda3 * l_kl + c.lambda4 * l_td
            radii_t = hypersphere_radii(out.z_t.detach(), ct.detach())
            radii_d = hypersphere_radii(out.z_d.detach(), cd.detach())
        return LossTerms(total, l_s, l_z, l_kl, l_td, radii_t, radii_d)


__all__ = [
    "LossTerms",
    "SIDNLoss",
    "segmentation_loss",
    "feature_separation_loss",
    "squared_distances",
    "student_t_assignment",
    "student_t_log_assignment",
    "target_distribution",
    "kl_loss",
    "centre_cosine_loss",
    "hypersphere_radii",
]
