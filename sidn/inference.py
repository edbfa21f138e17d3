"""Inference and post-processing (paper Sec. III-E, eq. 26 and the sentence after it).

Pipeline for every image (gray float32 ``[H0, W0]`` in [0, 1], any size):

1. **Anomaly map, eq. 26.** ``I_s = (1 - lambda_f)(1 - I_s^t) + lambda_f I_s^d`` is the
   model's ``SIDNOutput.fused``. By default the image is resized to ``image_size`` x
   ``image_size`` with ``cv2.INTER_AREA`` (as the training data, ``sidn.data.mvtec.resize_image``).
   With ``InferConfig.tile`` an image larger than ``image_size`` is instead processed at
   full resolution in overlapping ``image_size`` tiles (overlap ``tile_overlap``), the tile
   maps averaged with a positive tent-shaped weight window.
2. **Median filter** (paper: "a median filter") on the continuous map at the resolution it
   was computed at, kernel ``InferConfig.median_kernel`` (odd; 0/1 disables), then a
   **Gaussian blur** of ``InferConfig.map_sigma`` pixels (our choice, not in the paper; 0
   disables), :func:`smooth_map`. Chosen on the dev sets: on the same seven trained models
   (five categories of the synthetic dev set, two seeds on the real commutator photographs)
   sigma 4 raised pixel AUROC on every one (+0.009 to +0.028; commutator +0.018 / +0.021)
   and AUPRO on five of seven, and left image AUROC unchanged on average (README).
3. **Upsampling** of the continuous map to the ORIGINAL image size with ``cv2.INTER_LINEAR``,
   before any threshold. This is ``Prediction.anomaly_map``; ``score`` is the maximum of the
   map smoothed by a Gaussian of ``InferConfig.score_sigma`` (our choice; 0 = the plain
   maximum), see :func:`image_score`.
4. **Threshold segmentation** ``map > threshold`` (paper: "a threshold segmentation").
5. **Morphology** (paper: "a morphological operation"): opening then closing with an
   elliptical ``morph_kernel`` structuring element, then 8-connected regions smaller than
   ``min_region_area`` pixels (at original resolution) are dropped.

The threshold comes from ``model.threshold`` (set by ``sidn calibrate``) unless one is
given. An uncalibrated model still yields maps and scores; masks are then ``None`` and
:meth:`Predictor.require_threshold` / :meth:`Predictor.predict_masks` raise
:class:`UncalibratedModelError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from sidn.config import InferConfig
from sidn.fast_choice import make_fast
from sidn.feature_memory import FeatureMemory
from sidn.fast_model import mode_of


class UncalibratedModelError(RuntimeError):
    """The model has no decision threshold (``model.threshold`` is NaN) and none was given."""


@dataclass
class Prediction:
    """Result for one image; all arrays at the image's ORIGINAL size ``[H0, W0]``."""

    anomaly_map: np.ndarray  # float32, eq. 26 after median filter and upsampling
    mask: np.ndarray | None  # uint8 {0,1} after threshold + morphology; None if uncalibrated
    score: float  # image-level anomaly score, :meth:`Predictor.scores`
    regions: list[dict[str, Any]] = field(default_factory=list)  # x, y, w, h, area, max_score
    threshold: float | None = None  # threshold used for ``mask``

    @property
    def defective(self) -> bool | None:
        """True if any region survived post-processing; None when uncalibrated."""
        return None if self.mask is None else bool(self.regions)


# --------------------------------------------------------------------------------------
# model forward (eq. 26)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def anomaly_maps(
    model: nn.Module,
    images_resized: np.ndarray,
    batch_size: int = 16,
    fast: bool = False,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Fused anomaly maps (eq. 26, ``SIDNOutput.fused``) for ``[N, S, S]`` images -> ``[N, S, S]``.

    Runs in eval mode under ``torch.inference_mode`` in batches of ``batch_size`` (the
    model's train/eval mode is restored afterwards). Inputs are passed in channels_last
    memory format; the model's own weight layout is left alone (``SIDN`` stores its weights
    channels_last by default). ``fast=True`` runs :func:`sidn.fast_choice.make_fast` of the
    model (the mode ``sidn bench`` reports; a SIDN is prepared anew at each call, so pass an
    already prepared model, as :class:`Predictor` does, when calling repeatedly).
    Output is float32 on the CPU. ``S`` must suit the model (multiples of 16 for SIDN).
    """
    x_all = np.asarray(images_resized, dtype=np.float32)
    if x_all.ndim != 3:
        raise ValueError(f"anomaly_maps expects images [N, H, W], got shape {x_all.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else _model_device(model)
    if fast:
        model = make_fast(model, dev)
    out = np.empty_like(x_all)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x_all), batch_size):
            xb = torch.from_numpy(x_all[i : i + batch_size]).unsqueeze(1).to(dev)
            out[i : i + batch_size] = _forward_fused(model, xb)
    finally:
        model.train(was_training)
    return out


def _forward_fused(model: nn.Module, xb: torch.Tensor) -> np.ndarray:
    xb = xb.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fused = model(xb).fused
    if fused.shape != xb.shape:
        raise ValueError(f"model returned fused map of shape {tuple(fused.shape)} for input {tuple(xb.shape)}")
    return fused.float().squeeze(1).contiguous().cpu().numpy()


# --------------------------------------------------------------------------------------
# post-processing


def image_score(amap: np.ndarray, sigma: float, image_size: int) -> float:
    """Image-level anomaly score: max of ``amap`` after a Gaussian blur (our choice; the paper scores pixels only).

    ``sigma`` is in pixels of the network's ``image_size`` input and scaled to the map's size,
    so the score does not depend on the image's resolution. A plain max (``sigma`` 0) lets one
    speckle decide; the smoothed max needs a defect-sized region of high values.
    """
    if sigma <= 0:
        return float(amap.max())
    s = sigma * min(amap.shape) / image_size
    return float(cv2.GaussianBlur(np.ascontiguousarray(amap, dtype=np.float32), (0, 0), s).max())


def smooth_map(amap: np.ndarray, infer: InferConfig) -> np.ndarray:
    """Step 2 on a map at the resolution it was computed at: median filter, then the Gaussian blur of ``map_sigma``."""
    out = median_filter(amap, infer.median_kernel)
    if infer.map_sigma < 0:
        raise ValueError(f"infer.map_sigma must be >= 0 (0 = no blur), got {infer.map_sigma}")
    return cv2.GaussianBlur(out, (0, 0), infer.map_sigma) if infer.map_sigma > 0 else out


def median_filter(amap: np.ndarray, kernel: int) -> np.ndarray:
    """Median filter of a float32 map with an odd ``kernel`` (0 or 1: unchanged copy).

    ``cv2.medianBlur`` supports float32 only for kernels 3 and 5 (larger apertures only for
    uint8, which would quantise the map to 256 levels and create ties that distort AUROC).
    Kernels >= 7 therefore use an exact NumPy sliding-window median (``np.partition``) in row
    chunks of bounded memory, with the same replicated border as ``cv2.medianBlur``.
    """
    a = np.ascontiguousarray(amap, dtype=np.float32)
    if kernel in (0, 1):
        return a.copy()
    if kernel < 0 or kernel % 2 == 0:
        raise ValueError(f"median_kernel must be odd (or 0/1 to disable), got {kernel}")
    if kernel <= 5:
        return cv2.medianBlur(a, kernel)
    return _median_numpy(a, kernel)


def _median_numpy(a: np.ndarray, k: int) -> np.ndarray:
    r = k // 2
    h, w = a.shape
    padded = np.pad(a, r, mode="edge")
    out = np.empty_like(a)
    rows = max(1, (1 << 22) // (k * k * w))  # ~16 MB of float32 window copies per chunk
    mid = (k * k) // 2
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        win = sliding_window_view(padded[y0 : y1 + 2 * r], (k, k)).reshape(y1 - y0, w, k * k)
        out[y0:y1] = np.partition(win, mid, axis=-1)[..., mid]
    return out


def resize_map(amap: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a continuous map to ``(H0, W0)`` with ``cv2.INTER_LINEAR`` (no-op if equal)."""
    h0, w0 = int(size_hw[0]), int(size_hw[1])
    if amap.shape == (h0, w0):
        return amap
    return cv2.resize(amap, (w0, h0), interpolation=cv2.INTER_LINEAR)


def _components(amap: np.ndarray, threshold: float, morph_kernel: int, min_region_area: int):
    binary = (amap > threshold).astype(np.uint8)
    if morph_kernel > 1:
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (morph_kernel, morph_kernel))
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, ker)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, ker)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(1, min_region_area)
    keep[0] = False
    return labels, stats, keep


def postprocess_mask(amap: np.ndarray, threshold: float, morph_kernel: int, min_region_area: int) -> np.ndarray:
    """Binary mask (uint8 {0,1}) of ``amap > threshold`` after opening, closing and area filter."""
    labels, _, keep = _components(amap, threshold, morph_kernel, min_region_area)
    return keep[labels].astype(np.uint8)


def has_alarm(amap: np.ndarray, threshold: float, morph_kernel: int, min_region_area: int) -> bool:
    """True if any region survives :func:`postprocess_mask` (an image-level defect decision)."""
    _, _, keep = _components(amap, threshold, morph_kernel, min_region_area)
    return bool(keep.any())


def postprocess(amap: np.ndarray, threshold: float, infer: InferConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Threshold + morphology + area filter of a smoothed map -> ``(mask, regions)``.

    ``regions`` holds one dict per surviving 8-connected region from
    ``cv2.connectedComponentsWithStats``: bounding box ``x, y, w, h``, ``area`` (pixels) and
    ``max_score`` (max of ``amap`` inside the region), sorted by descending ``max_score``.
    """
    labels, stats, keep = _components(amap, threshold, infer.morph_kernel, infer.min_region_area)
    mask = keep[labels].astype(np.uint8)
    regions: list[dict[str, Any]] = []
    ids = np.flatnonzero(keep)
    if ids.size:
        maxes = np.full(len(keep), -np.inf, dtype=np.float64)
        np.maximum.at(maxes, labels.ravel(), amap.ravel().astype(np.float64))
        for i in ids:
            x, y, w, h, area = (int(v) for v in stats[i, :5])
            regions.append({"x": x, "y": y, "w": w, "h": h, "area": area, "max_score": float(maxes[i])})
        regions.sort(key=lambda r: -r["max_score"])
    return mask, regions


# --------------------------------------------------------------------------------------
# tiling


def tile_positions(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` (>= tile); last one flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    pos = list(range(0, length - tile, stride))
    pos.append(length - tile)
    return pos


def tile_weight(tile: int, overlap: int) -> np.ndarray:
    """Strictly positive 2-D tent window ``[tile, tile]``: ramps over ``overlap`` pixels at each side."""
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        ramp = np.arange(1, overlap + 1, dtype=np.float64) / (overlap + 1)
        w[:overlap] = ramp
        w[tile - overlap :] = np.minimum(w[tile - overlap :], ramp[::-1])
    return np.outer(w, w)


def tiled_anomaly_map(model: nn.Module, image: np.ndarray, tile: int, overlap: int, batch_size: int = 16,
                      fast: bool = False, device: str | torch.device | None = None) -> np.ndarray:
    """Eq. 26 map of one image at full resolution from overlapping ``tile`` x ``tile`` tiles.

    An image smaller than ``tile`` along an axis is padded (replicated border) to ``tile`` and
    the result cropped back. Overlapping tile maps are averaged with :func:`tile_weight`.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, {tile}), got {overlap}")
    h0, w0 = image.shape
    ph, pw = max(0, tile - h0), max(0, tile - w0)
    img = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REPLICATE) if (ph or pw) else image
    h, w = img.shape
    ys, xs = tile_positions(h, tile, overlap), tile_positions(w, tile, overlap)
    coords = [(y, x) for y in ys for x in xs]
    tiles = np.stack([img[y : y + tile, x : x + tile] for y, x in coords])
    maps = anomaly_maps(model, tiles, batch_size=batch_size, fast=fast, device=device)
    win = tile_weight(tile, overlap)
    acc = np.zeros((h, w), dtype=np.float64)
    wsum = np.zeros((h, w), dtype=np.float64)
    for (y, x), m in zip(coords, maps):
        acc[y : y + tile, x : x + tile] += win * m
        wsum[y : y + tile, x : x + tile] += win
    return (acc / wsum)[:h0, :w0].astype(np.float32)


# --------------------------------------------------------------------------------------
# predictor


def _as_gray(img: np.ndarray, i: int) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"image {i}: expected a gray image [H, W], got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"image {i}: contains NaN or infinite values")
    return a


def _finite_or_none(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


class Predictor:
    """Maps, scores, masks and regions for images of any size (Sec. III-E).

    ``threshold`` overrides ``model.threshold``; the model's buffer is read at every call, so
    a threshold written by calibration is picked up. ``fast=True`` serves the maps from
    :func:`sidn.fast_choice.make_fast` of the model, prepared here once (a snapshot of the
    weights; ``fast_mode`` names it): the best mode the device supports, i.e. int8 where the CPU
    runs it and an int8 calibration (``int8``, an :class:`sidn.int8.record.Int8Calibration`, else the one
    :func:`sidn.int8.record.attach` hung on the model) reached parity, otherwise the float fast mode,
    with ``fast_note`` saying why int8 was not used. ``fast=False`` serves the model itself (``"model"``).
    """

    def __init__(self, model: nn.Module, infer: InferConfig, image_size: int, device: str | torch.device = "cpu",
                 threshold: float | None = None, fast: bool = False, int8: Any = None) -> None:
        if image_size < 16 or image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {image_size}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.infer = infer
        self.image_size = int(image_size)
        self.fast = fast
        self.net = make_fast(self.model, self.device, int8=int8) if fast else self.model  # what computes the maps
        self._threshold = _finite_or_none(threshold)

    @property
    def fast_mode(self) -> str:
        """How the maps are computed: a :func:`sidn.fast_choice.make_fast` mode, or ``"model"``."""
        return mode_of(self.net)

    @property
    def fast_note(self) -> str:
        """Why the fast mode is not the best one the device supports ('' when it is, or when not fast)."""
        return getattr(self.net, "note", "") if self.fast else ""

    @property
    def threshold(self) -> float | None:
        """The given threshold, else ``model.threshold`` if finite, else None (uncalibrated)."""
        if self._threshold is not None:
            return self._threshold
        return _finite_or_none(getattr(self.model, "threshold", None))

    def require_threshold(self) -> float:
        """The decision threshold; :class:`UncalibratedModelError` if there is none."""
        t = self.threshold
        if t is None:
            raise UncalibratedModelError(
                "the model is not calibrated (its threshold is NaN) and no threshold was given: run "
                "`sidn calibrate` on held-out good images to set one, or pass threshold=... to Predictor"
            )
        return t

    def maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Smoothed eq. 26 maps (:func:`smooth_map`), each upsampled to its image's original size."""
        imgs = [_as_gray(im, i) for i, im in enumerate(images)]
        s, inf = self.image_size, self.infer
        raw: list[np.ndarray | None] = [None] * len(imgs)
        small_idx = []
        for i, im in enumerate(imgs):
            if inf.tile and (im.shape[0] > s or im.shape[1] > s):
                raw[i] = tiled_anomaly_map(self.net, im, s, inf.tile_overlap, inf.batch_size, device=self.device)
            else:
                small_idx.append(i)
        if small_idx:
            batch = np.stack([
                imgs[i] if imgs[i].shape == (s, s) else cv2.resize(imgs[i], (s, s), interpolation=cv2.INTER_AREA)
                for i in small_idx
            ])
            out = anomaly_maps(self.net, batch, batch_size=inf.batch_size, device=self.device)
            for i, m in zip(small_idx, out):
                raw[i] = m
        return [resize_map(smooth_map(m, inf), im.shape) for m, im in zip(raw, imgs)]

    @property
    def memory(self) -> FeatureMemory | None:
        """The feature memory the image score uses (calibration attaches it), or None (``infer.memory_rows`` 0)."""
        return getattr(self.model, "feature_memory", None) if self.infer.memory_rows > 0 else None

    def scores(self, images: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> list[float]:
        """Image scores: :func:`image_score` of each map, fused with the :attr:`memory` term where there is one."""
        map_scores = [image_score(m, self.infer.score_sigma, self.image_size) for m in maps]
        if self.memory is None:
            return map_scores
        s = self.image_size
        resized = np.stack([cv2.resize(_as_gray(im, i), (s, s), interpolation=cv2.INTER_AREA) for i, im in enumerate(images)])
        return [float(v) for v in self.memory.fuse(map_scores, self.memory.knn_scores(self.model, resized))]

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One :class:`Prediction` per image; ``mask`` is None when uncalibrated."""
        t = self.threshold
        preds = []
        maps = self.maps(images)
        for amap, score in zip(maps, self.scores(images, maps)):
            if t is None:
                preds.append(Prediction(anomaly_map=amap, mask=None, score=score))
            else:
                mask, regions = postprocess(amap, t, self.infer)
                preds.append(Prediction(anomaly_map=amap, mask=mask, score=score, regions=regions, threshold=t))
        return preds

    def predict_masks(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Binary masks only; raises :class:`UncalibratedModelError` before any work if uncalibrated."""
        self.require_threshold()
        return [p.mask for p in self.predict(images)]  # type: ignore[misc]
