"""Defect-free feature memory: a nearest-neighbour term in the image score (ours, not the paper's).

The paper scores pixels only; the image score is ours to choose (``sidn.inference.image_score``:
the maximum of the smoothed eq. 26 map). The map's maximum is decided by what the DGM's
synthetic defects taught the network; on real defects it ranks images poorly (dev figures in the
README). This module adds a second opinion that needs no defect at all, PatchCore's idea
without pretrained weights: the FEM features of eq. 2 (``Z`` [2C, H/2, W/2], average-pooled to
H/8) of the training images' defect-free positions are kept as a memory bank, and an image
position scores its distance to the nearest bank row. The image score becomes

    score = (map_max - mean_map) / std_map + (knn_max - mean_knn) / std_knn

with both terms standardised on the held-out good images that calibration uses, so neither
dominates by its units. The bank keeps ``infer.memory_rows`` of the candidate positions, chosen by
``infer.memory_sampling``: ``coreset`` (PatchCore's greedy k-centre selection, so rare normal
structure keeps a row) or ``random``. Chosen on the dev sets (README, ``experiments/feature_memory.py``,
``experiments/memory_score.py``).
The anomaly map, and so every pixel metric and mask, is unchanged.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BUNDLE_KEY = "feature_memory"
SMOOTH_SIGMA = 4.0  # px at the network's input size: blur of the distance map before its maximum
_QUERY_CHUNK = 256  # queries per distance matrix (256 x 4000 float32 = 4 MB)
SAMPLINGS = ("coreset", "random")


def memory_features(model: nn.Module, images_resized: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """FEM features (eq. 2) of ``[N, S, S]`` images, pooled to ``[N, 2C, S/8, S/8]`` float32 on the CPU."""
    fem = model.fem
    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(images_resized), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images_resized[i : i + batch_size], dtype=np.float32))
                z = fem(x[:, None].to(device).contiguous(memory_format=torch.channels_last)).float()
                out.append(F.avg_pool2d(F.avg_pool2d(z, 3, 2, 1), 2).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _rows(features: torch.Tensor) -> torch.Tensor:
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def greedy_coreset(rows: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``k`` of ``rows`` [N, D] by greedy k-centre selection (PatchCore, Roth et al. 2022):
    each pick is the row farthest from every row picked so far, so the picks cover the whole set,
    its rare parts included. The first pick is drawn with ``seed``. (PatchCore measures distances
    after a random projection of its 1536-dimensional features; the FEM's 2C = 32 need none.)"""
    if k >= len(rows):
        return torch.arange(len(rows))
    sq = (rows * rows).sum(1)
    picks = torch.empty(k, dtype=torch.long)
    picks[0] = int(torch.randint(len(rows), (1,), generator=torch.Generator().manual_seed(seed)))
    nearest = torch.full((len(rows),), float("inf"))
    with torch.inference_mode():
        for i in range(1, k):
            c = rows[picks[i - 1]]
            torch.minimum(nearest, torch.addmv(sq, rows, c, alpha=-2) + c.dot(c), out=nearest)
            picks[i] = nearest.argmax()
    return picks


@dataclass
class FeatureMemory:
    """Standardised bank rows ``[N, D]`` with their channel ``mean`` / ``std`` ``[D]``, and the mean and
    spread of both image-score terms on held-out good images (``map_ref``, ``knn_ref``)."""

    bank: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    map_ref: tuple[float, float] = (0.0, 1.0)
    knn_ref: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def from_images(cls, model: nn.Module, good_images: np.ndarray, rows: int, seed: int = 0,
                    sampling: str = "coreset") -> "FeatureMemory":
        """A bank of ``rows`` positions of the features of defect-free ``[N, S, S]`` images, chosen by
        ``sampling``: ``coreset`` (:func:`greedy_coreset`) or ``random``."""
        if rows < 1:
            raise ValueError(f"infer.memory_rows must be >= 1 to build a feature memory, got {rows}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"infer.memory_sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        candidates = _rows(memory_features(model, good_images))
        mean, std = candidates.mean(0), candidates.std(0).clamp_min(1e-6)
        candidates = (candidates - mean) / std
        if sampling == "coreset":
            pick = greedy_coreset(candidates, rows, seed)
        else:
            pick = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))[:rows]
        return cls(bank=candidates[pick].contiguous(), mean=mean, std=std)

    def knn_scores(self, model: nn.Module, images_resized: np.ndarray) -> np.ndarray:
        """Per image: the maximum over positions of the distance to the nearest bank row, after a
        :data:`SMOOTH_SIGMA` blur of the distance map at the input's size."""
        size = images_resized.shape[-1]
        bank_t, bank_sq = self.bank.T.contiguous(), (self.bank * self.bank).sum(1)
        scores = []
        for f in memory_features(model, images_resized):
            q = (_rows(f[None]) - self.mean) / self.std
            with torch.inference_mode():  # |q - b|^2 = |b|^2 - 2 q.b + |q|^2, minimised over b before adding |q|^2
                d2 = torch.cat([torch.addmm(bank_sq, c, bank_t, alpha=-2).amin(1) for c in q.split(_QUERY_CHUNK)])
                d2 += (q * q).sum(1)
            dist = d2.clamp_min(0).sqrt().reshape(f.shape[1:]).numpy()
            smooth = cv2.GaussianBlur(cv2.resize(dist, (size, size), interpolation=cv2.INTER_LINEAR), (0, 0), SMOOTH_SIGMA)
            scores.append(float(smooth.max()))
        return np.asarray(scores, dtype=np.float64)

    def set_references(self, map_scores: Sequence[float], knn_scores: Sequence[float]) -> None:
        """Mean and spread of each term on held-out good images (the standardisation of the fused score)."""
        self.map_ref = _mean_std(map_scores)
        self.knn_ref = _mean_std(knn_scores)

    def fuse(self, map_scores: Sequence[float], knn_scores: Sequence[float]) -> np.ndarray:
        """The image score: the sum of both terms, each standardised by its reference."""
        m, k = np.asarray(map_scores, np.float64), np.asarray(knn_scores, np.float64)
        return (m - self.map_ref[0]) / self.map_ref[1] + (k - self.knn_ref[0]) / self.knn_ref[1]

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (a bundle's ``extra``): the bank as base64 float32 bytes."""
        return {
            "rows": int(self.bank.shape[0]), "dim": int(self.bank.shape[1]),
            "bank_f32_b64": base64.b64encode(self.bank.numpy().astype("<f4").tobytes()).decode("ascii"),
            "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
            "map_ref": list(self.map_ref), "knn_ref": list(self.knn_ref),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureMemory":
        """Inverse of :meth:`to_dict`; ValueError naming the field that does not fit."""
        try:
            rows, dim = int(d["rows"]), int(d["dim"])
            raw = base64.b64decode(d["bank_f32_b64"], validate=True)
            mean, std = torch.tensor(d["mean"], dtype=torch.float32), torch.tensor(d["std"], dtype=torch.float32)
            map_ref, knn_ref = tuple(float(v) for v in d["map_ref"]), tuple(float(v) for v in d["knn_ref"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"feature memory: missing or malformed field ({exc})") from exc
        if len(raw) != rows * dim * 4:
            raise ValueError(f"feature memory: bank holds {len(raw)} bytes, expected {rows} x {dim} float32")
        if mean.shape != (dim,) or std.shape != (dim,) or len(map_ref) != 2 or len(knn_ref) != 2:
            raise ValueError(f"feature memory: mean/std must have {dim} values and map_ref/knn_ref 2 each")
        bank = torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(rows, dim).copy())
        if not (torch.isfinite(bank).all() and torch.isfinite(mean).all() and bool((std > 0).all())):
            raise ValueError("feature memory: bank, mean and std must be finite, std > 0")
        if not (map_ref[1] > 0 and knn_ref[1] > 0):
            raise ValueError(f"feature memory: reference spreads must be > 0, got {map_ref[1]} and {knn_ref[1]}")
        return cls(bank=bank, mean=mean, std=std, map_ref=map_ref, knn_ref=knn_ref)  # type: ignore[arg-type]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    if v.size < 2:
        raise ValueError(f"the feature memory's references need at least 2 held-out good images, got {v.size}")
    return float(v.mean()), max(float(v.std()), 1e-6)


__all__ = ["BUNDLE_KEY", "FeatureMemory", "SAMPLINGS", "SMOOTH_SIGMA", "greedy_coreset", "memory_features"]
