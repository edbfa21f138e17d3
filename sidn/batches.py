"""Training batches: which defect-free images a step sees, augmented and cropped (before the DGM, eq. 1).

**Augmentation is our choice (``train.augment``; the paper has none):** ``dihedral`` gives each
image one of the 8 dihedral transforms (90-degree rotation ``k in {0..3}`` times an optional
horizontal flip; only flips for non-square images), ``flips`` only horizontal / vertical flips,
``none`` nothing. Rotations teach oriented textures (wood grain, grids) that rotated structure
is normal, which is wrong where orientation matters.

Every function draws a fixed number of values from the ``numpy.random.Generator`` it is given,
so a run is reproducible from ``train.seed`` and resumes bit-exactly (:mod:`sidn.train`).
"""

from __future__ import annotations

import numpy as np

AUGMENTS = ("none", "flips", "dihedral")


def _flip(img: np.ndarray, op: int) -> np.ndarray:
    """Bit 0 of ``op``: horizontal flip; bit 1: vertical flip."""
    if op & 1:
        img = img[:, ::-1]
    if op & 2:
        img = img[::-1, :]
    return img


def augment_flips(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal and/or vertical flip per image (one integer drawn per image)."""
    ops = rng.integers(0, 4, size=images.shape[0])
    return np.stack([_flip(img, int(op)) for img, op in zip(images, ops)]).astype(images.dtype, copy=False)


def augment_dihedral(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply one random dihedral transform per image (rot90 k in 0..3 x optional h-flip).

    Non-square images only get flips (horizontal and/or vertical) so the shape is kept.
    Always draws exactly one integer per image from ``rng`` (reproducible).
    """
    _, h, w = images.shape
    ops = rng.integers(0, 8, size=images.shape[0])

    def dihedral(img: np.ndarray, op: int) -> np.ndarray:
        img = np.rot90(img, op % 4)
        return img[:, ::-1] if op >= 4 else img

    transform = dihedral if h == w else _flip
    return np.stack([transform(img, int(op)) for img, op in zip(images, ops)]).astype(images.dtype, copy=False)


def random_crops(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One random ``size x size`` window per image of ``images [N,H,W]``; ``size`` 0 or >= H,W keeps them whole."""
    n, h, w = images.shape
    if size <= 0 or (size >= h and size >= w):
        return images
    ch, cw = min(size, h), min(size, w)
    tops = rng.integers(0, h - ch + 1, size=n)
    lefts = rng.integers(0, w - cw + 1, size=n)
    return np.stack([images[i, t : t + ch, l : l + cw] for i, (t, l) in enumerate(zip(tops, lefts))])


def sample_batch(
    images: np.ndarray, batch_size: int, rng: np.random.Generator, augment: str = "dihedral", crop_size: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(I_p [B,h,w], donors [M,h,w])`` from the training images.

    Images are drawn uniformly with replacement across steps (without replacement inside a
    batch when possible). With ``crop_size`` > 0 every image (and donor) is a random
    ``crop_size`` window (``train.crop_size``; at 128 of 256 a step costs about 0.4 of a
    whole-image step). The DGM then treats the window as its image: defect areas
    (``dgm.*_area_fraction``) and the widths of blur/contrast sources are relative to the
    window, i.e. smaller than on whole images. Donors (for the DGM's ``foreign_patch`` source)
    are a second independent draw of up to ``batch_size`` distinct training images, not augmented.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"train.augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    n = images.shape[0]
    idx = rng.choice(n, size=batch_size, replace=n < batch_size)
    batch = images[idx]
    if augment == "dihedral":
        batch = augment_dihedral(batch, rng)
    elif augment == "flips":
        batch = augment_flips(batch, rng)
    donor_idx = rng.choice(n, size=min(n, batch_size), replace=False)
    batch = random_crops(batch, crop_size, rng)
    donors = random_crops(images[donor_idx], crop_size, rng)
    return np.ascontiguousarray(batch, dtype=np.float32), donors


__all__ = ["AUGMENTS", "augment_flips", "augment_dihedral", "random_crops", "sample_batch"]
