"""Feature separation extraction module (FSEM), paper Sec. III-C, eq. (6)-(7).

Two branches decompose the shared FEM map ``Z [B, 2C, H/2, W/2]`` into texture semantic
features ``Z_t = f_fsem^t(Z)`` (eq. 6) and defect semantic features ``Z_d = f_fsem^d(Z)``
(eq. 7), both ``[B, 16C, H/16, W/16]`` (the shape the paper gives for ``Z'_t, Z'_d`` in
eq. 3-4 and for ``z_i in R^{16C}``).

The paper does not describe the branch internals. **Our choice:** each branch is three
stride-2 residual blocks (:class:`~sidn.model.fem.ResidualBlock`) ``2C -> 4C -> 8C -> 16C``,
which is the smallest stack of the FEM's own block that reaches ``H/16`` and ``16C``.
Because every residual block ends with a ReLU, ``Z_t`` and ``Z_d`` are non-negative; the
feature separation loss L_z (eq. 8) is therefore bounded below by 0 (see
:func:`sidn.losses.feature_separation_loss`).

The module also owns the hypersphere / cluster centres ``C^t = {c_k^t}`` and
``C^d = {c_k^d}`` (``[K, 16C]`` each, eq. 9-18) which the GSRM re-uses as its small "query"
matrix (eq. 23-24).

Centre initialisation (``ModelConfig.center_init``, **our choice**):

* ``"normal"``: ``N(0, std = 1/sqrt(16C))`` so each centre has norm about 1;
* ``"kmeans"``: the same normal initialisation at construction, and the training loop calls
  :meth:`FSEM.init_centres_from` (or :meth:`sidn.model.SIDN.init_centres_from`) once with the
  features of the first batch; a few Lloyd iterations of k-means then set the centres. The
  persistent buffer ``centres_initialised`` records that it happened, so a resumed run does not
  repeat it.

With ``ModelConfig.use_clustering=False`` the clustering losses are off (Table II ablation A,
together with ``use_gsrm=False``: profile ``ablation-a``)
but the centres are kept: the GSRM still needs a ``C`` (eq. 23-24), so they are then ordinary
learned parameters trained only through the GSRM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sidn.model.fem import ResidualBlock

CENTRE_INITS = ("normal", "kmeans")


def _branch(channels: int) -> nn.Sequential:
    c = channels
    return nn.Sequential(
        ResidualBlock(2 * c, 4 * c, stride=2),  # [B, 4C, H/4, W/4]
        ResidualBlock(4 * c, 8 * c, stride=2),  # [B, 8C, H/8, W/8]
        ResidualBlock(8 * c, 16 * c, stride=2),  # [B, 16C, H/16, W/16]
    )


def flatten_positions(z: Tensor) -> Tensor:
    """``[B, D, h, w] -> [B*h*w, D]``: the set of local features ``{z_i}`` of Sec. III-C."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int = 10, seed: int = 0) -> Tensor:
    """Plain Lloyd k-means on rows of ``x [N, D]``; returns centres ``[k, D]`` (float32).

    Starts from ``k`` distinct random rows (with repetition when ``N < k``, plus tiny noise so
    the centres differ). A centre that loses all its members keeps its previous position.
    Deterministic for a given ``seed``.
    """
    x = x.detach().float()
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    if n >= k:
        idx = torch.randperm(n, generator=g)[:k]
        c = x[idx.to(x.device)].clone()
    else:
        idx = torch.randint(n, (k,), generator=g)
        c = x[idx.to(x.device)].clone()
        c += 1e-3 * torch.randn(k, d, generator=g).to(x.device)
    for _ in range(iters):
        d2 = (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)  # [N, k]
        assign = d2.argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        full = counts > 0
        c[full] = sums[full] / counts[full].unsqueeze(1).to(c.dtype)
    return c


class FSEM(nn.Module):
    """Feature separation extraction module, eq. (6)-(7).

    ``forward(Z [B, 2C, H/2, W/2]) -> (Z_t, Z_d)``, each ``[B, 16C, H/16, W/16]``.
    Parameters ``centres_t``, ``centres_d``: ``[K, 16C]`` (eq. 9-10, 18, 23).
    """

    def __init__(self, channels: int = 16, clusters: int = 12, center_init: str = "normal") -> None:
        super().__init__()
        if center_init not in CENTRE_INITS:
            raise ValueError(
                f"ModelConfig.center_init: unknown value {center_init!r}; expected one of {', '.join(CENTRE_INITS)}"
            )
        if clusters < 1:
            raise ValueError(f"ModelConfig.clusters must be >= 1, got {clusters}")
        self.dim = 16 * channels
        self.center_init = center_init
        self.texture = _branch(channels)
        self.defect = _branch(channels)
        std = self.dim**-0.5
        self.centres_t = nn.Parameter(torch.randn(clusters, self.dim) * std)
        self.centres_d = nn.Parameter(torch.randn(clusters, self.dim) * std)
        self.register_buffer("centres_initialised", torch.tensor(center_init == "normal"))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.texture(z), self.defect(z)

    @torch.no_grad()
    def init_centres_from(self, z_t: Tensor, z_d: Tensor, iters: int = 10, seed: int = 0) -> None:
        """Set ``C^t``/``C^d`` by k-means on features ``[B, 16C, h, w]`` (``center_init="kmeans"``)."""
        for feats, centres in ((z_t, self.centres_t), (z_d, self.centres_d)):
            if feats.ndim != 4 or feats.shape[1] != self.dim:
                raise ValueError(
                    f"init_centres_from: expected features [B, {self.dim}, h, w], got {list(feats.shape)}"
                )
            c = kmeans(flatten_positions(feats), centres.shape[0], iters=iters, seed=seed)
            centres.copy_(c.to(centres.dtype))
        self.centres_initialised.fill_(True)


__all__ = ["FSEM", "CENTRE_INITS", "flatten_positions", "kmeans"]
