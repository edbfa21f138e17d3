"""Defect generation module, DGM (paper Sec. III-B, eq. 1).

    I_n(x, y) = (1 - I_m(x, y)) * I_p(x, y) + I_m(x, y) * I_g(x, y)            (eq. 1)

``I_p`` is a defect-free image, ``I_m`` a random mask (:mod:`sidn.data.masks`) and ``I_g`` the
defect content, drawn from one of the sources of :mod:`sidn.data.dgm_sources` (the paper's
Gaussian noise is the ``paper`` source); the shares in ``DGMConfig.sources`` are normalised.
With soft edges the blend uses the blurred ``alpha`` as ``I_m`` in eq. 1, while the returned
label mask is binary (``alpha > 0.5``).

A share ``clean_fraction`` of samples is left unchanged with an all-zero mask. A defect whose
labelled region would barely change (mean absolute change below ``DGMConfig.min_visible_change``,
e.g. blurring a flat area) is re-drawn with another source (up to 3 times), then forced
visible with an intensity shift, so every label marks a visible change.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sidn.config import DGMConfig
from sidn.data.dgm_sources import SOURCES
from sidn.data.masks import MaskSample, MaskSampler, normalise_shares

if TYPE_CHECKING:
    import torch

_MAX_SOURCE_TRIES = 3


def _force_visible(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Last resort: shift the region's intensity towards the middle by 0.2-0.35."""
    mean = float(image[label > 0].mean()) if label.any() else float(image.mean())
    offset = rng.uniform(0.2, 0.35) * (1.0 if mean < 0.5 else -1.0)
    return np.clip(image + np.float32(offset), 0.0, 1.0)


def _check_images(images: np.ndarray, what: str, ndim: int) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != ndim:
        shape = "[B,H,W]" if ndim == 3 else "[H,W]"
        raise ValueError(f"{what}: expected a {ndim}-D array {shape}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: empty array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{what}: expected float images in [0, 1], got dtype {arr.dtype} (divide uint8 by 255)"
        )
    arr = arr.astype(np.float32, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    if not (lo >= -1e-3 and hi <= 1.0 + 1e-3):
        raise ValueError(f"{what}: values must be in [0, 1], got min {lo} max {hi}")
    return arr


def _as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise ValueError(
        f"DefectGenerator: rng must be a numpy Generator or an int seed, got {type(rng).__name__}"
    )


class DefectGenerator:
    """Eq. 1 for batches: ``(I_n, I_m) = gen(images [B,H,W] float32, rng, donors=None)``.

    ``I_n`` is float32 [B,H,W] in [0,1]; ``I_m`` float32 [B,H,W] in {0,1}. The same rng state
    gives the same output. ``donors`` ([M,H,W] good images) feed ``foreign_patch``; when None,
    the other images of the batch are the donors (a batch of one uses a far-away place of the
    image itself). :meth:`sample` does one image.
    """

    def __init__(self, cfg: DGMConfig) -> None:
        self.cfg = cfg
        self.source_names, self.source_p = normalise_shares(cfg.sources, SOURCES, "sources")
        if not (0.0 <= float(cfg.clean_fraction) < 1.0):
            raise ValueError(f"DGMConfig.clean_fraction must be in [0, 1), got {cfg.clean_fraction}")
        if int(cfg.val_images) < 1:
            raise ValueError(f"DGMConfig.val_images must be >= 1, got {cfg.val_images}")
        self.masks = MaskSampler(
            cfg.shapes, cfg.min_area_fraction, cfg.max_area_fraction, cfg.soft_edge_probability
        )
        self.clean_fraction = float(cfg.clean_fraction)
        self.min_visible_change = float(cfg.min_visible_change)

    def __call__(
        self, images: np.ndarray, rng: np.random.Generator | int, donors: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        batch = _check_images(images, "DefectGenerator(images)", 3)
        rng = _as_rng(rng)
        donors = None if donors is None else _check_donors(donors)
        out = np.empty_like(batch)
        masks = np.zeros(batch.shape, np.float32)
        for i in range(len(batch)):
            d = donors if donors is not None else _other(batch, i, rng)
            out[i], masks[i], _ = self._sample(batch[i], rng, d, clean=None)
        return out, masks

    def sample(
        self, image: np.ndarray, rng: np.random.Generator | int, donors: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One image [H,W] -> (I_n float32 [H,W], I_m float32 [H,W] in {0,1})."""
        out, mask, _ = self.sample_with_info(image, rng, donors)
        return out, mask

    def sample_with_info(
        self, image: np.ndarray, rng: np.random.Generator | int, donors: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Like :meth:`sample`, plus a dict: clean, shape, source, soft, area (labelled pixels)."""
        img = _check_images(image, "DefectGenerator.sample(image)", 2)
        donors = None if donors is None else _check_donors(donors)
        return self._sample(img, _as_rng(rng), donors, clean=None)

    def _sample(
        self, image: np.ndarray, rng: np.random.Generator, donors: np.ndarray | None, clean: bool | None
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        h, w = image.shape
        is_clean = bool(rng.random() < self.clean_fraction)
        if clean is not None:
            is_clean = clean
        if is_clean:
            info = {"clean": True, "shape": None, "source": None, "soft": False, "area": 0}
            return image.copy(), np.zeros((h, w), np.float32), info
        ms: MaskSample = self.masks(h, w, rng)
        alpha, label = ms.alpha, ms.label
        rows, cols = ms.bbox  # eq. 1 leaves everything outside alpha's support unchanged
        a, ip = alpha[rows, cols], image[rows, cols]
        on = label[rows, cols] > 0
        for _ in range(_MAX_SOURCE_TRIES):
            name = self.source_names[int(rng.choice(len(self.source_names), p=self.source_p))]
            i_g = SOURCES[name](image, alpha, rng, donors)
            region = ip + a * (i_g[rows, cols] - ip)  # eq. 1 with I_m = alpha
            if float(np.abs(region[on] - ip[on]).mean()) >= self.min_visible_change:
                break
        else:
            name = "forced_intensity"
            i_g = _force_visible(image, label, rng)
            region = ip + a * (i_g[rows, cols] - ip)
        out = image.copy()
        out[rows, cols] = np.clip(region, 0.0, 1.0)
        info = {"clean": False, "shape": ms.shape, "source": name, "soft": ms.soft, "area": int(on.sum())}
        return out, label.astype(np.float32), info


def _check_donors(donors: np.ndarray) -> np.ndarray:
    arr = np.asarray(donors)
    if arr.ndim == 2:
        arr = arr[None]
    return _check_images(arr, "DefectGenerator(donors)", 3)


def _other(batch: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray | None:
    """A view of one other image of the batch (donor for ``foreign_patch``), None if B == 1."""
    if len(batch) < 2:
        return None
    j = int(rng.integers(len(batch) - 1))
    j += j >= i
    return batch[j : j + 1]


def make_validation_set(images: np.ndarray, cfg: DGMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fixed DGM validation set (eq. 1): ``cfg.val_images`` samples from ``images`` [N,H,W]
    (cycled), seeded with ``cfg.seed`` so it is identical on every call.

    Returns (I_n float32 [V,H,W], I_m float32 [V,H,W] in {0,1}). Exactly
    ``floor(V * min(clean_fraction, 0.2))`` samples (at random places) are clean; all the
    others carry a defect, so at least 80 % of the set is defective.
    """
    gen = DefectGenerator(cfg)
    batch = _check_images(images, "make_validation_set(images)", 3)
    rng = np.random.default_rng(int(cfg.seed))
    n = int(cfg.val_images)
    n_clean = int(math.floor(n * min(gen.clean_fraction, 0.2)))
    clean = np.zeros(n, bool)
    if n_clean:
        clean[rng.choice(n, n_clean, replace=False)] = True
    out = np.empty((n,) + batch.shape[1:], np.float32)
    masks = np.zeros((n,) + batch.shape[1:], np.float32)
    for k in range(n):
        i = k % len(batch)
        out[k], masks[k], _ = gen._sample(batch[i], rng, _other(batch, i, rng), clean=bool(clean[k]))
    return out, masks


def to_tensor_batch(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """[B,H,W] numpy -> float32 torch tensors [B,1,H,W] (the contract's torch layout)."""
    import torch

    return (
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)[:, None]),
        torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)[:, None]),
    )
