"""Model bundle: one ``.pt`` file holding everything needed to run a trained SIDN.

Layout (primitives and tensors only, so it loads with ``torch.load(weights_only=True)``)::

    {"format": "sidn-bundle/1",
     "state_dict": {name: Tensor},        # includes the threshold buffers (NaN = uncalibrated)
     "config": SIDNConfig.to_dict(),      # resolved config the model was trained with
     "extra": {...}}                      # str/int/float/bool/None, lists and str-keyed dicts

Bundles are written atomically (temporary file + rename), so a crash never leaves a
half-written ``model.pt``. Loading validates the format tag, the keys, the config and the
state-dict (every weight finite; only the calibration buffers may be NaN = uncalibrated) and
raises :class:`BundleError` whose message starts with the file path. A file that would need
arbitrary Python objects to load is refused without suggesting an unsafe way to load it.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sidn.config import SIDNConfig
from sidn.io import atomic_write
from sidn.weights_hash import CALIBRATION_BUFFERS, weights_sha256

if TYPE_CHECKING:  # pragma: no cover
    from sidn.int8.record import Int8Calibration
    from sidn.model.sidn import SIDN

BUNDLE_FORMAT = "sidn-bundle/1"
_KEYS = ("format", "state_dict", "config", "extra")
# sentences of torch.load's error that tell the user how to load the file unsafely: never repeated
_UNSAFE_HINTS = re.compile(
    r"weights.only|safe_globals|trust|file an issue|documentation of torch\.load|two options|PyTorch 2\.6",
    re.IGNORECASE,
)


class BundleError(ValueError):
    """A bundle file is missing, corrupt, of the wrong format or does not match the model."""


def _check_primitive(value: Any, where: str) -> None:
    if value is None or type(value) in (bool, int, float, str):  # exact types: subclasses need globals
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_primitive(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"bundle extra: key {k!r} at {where} is not a string")
            _check_primitive(v, f"{where}.{k}")
        return
    raise TypeError(f"bundle extra: value at {where} has type {type(value).__name__}; only primitives are allowed")


def _to_primitive(value: Any) -> Any:
    """Convert numpy scalars / tuples to plain Python types (then validated by _check_primitive)."""
    if isinstance(value, tuple):
        return [_to_primitive(v) for v in value]
    if isinstance(value, list):
        return [_to_primitive(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_primitive(v) for k, v in value.items()}
    for t in (bool, int, float, str):  # str/int subclasses (e.g. torch.__version__) -> plain types
        if isinstance(value, t):
            return t(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return value.item()
    return value


def bundle_payload(model: "SIDN", cfg: SIDNConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict that :func:`save_bundle` writes (CPU tensors, primitives)."""
    extra = _to_primitive(dict(extra or {}))
    _check_primitive(extra, "extra")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    return {"format": BUNDLE_FORMAT, "state_dict": state, "config": cfg.to_dict(), "extra": extra}


def save_bundle(model: "SIDN", cfg: SIDNConfig, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` + ``cfg`` + ``extra`` to one ``.pt`` file at ``path`` atomically."""
    payload = bundle_payload(model, cfg, extra)
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def _without_unsafe_hints(message: str) -> str:
    """``torch.load``'s error text without its advice to load with ``weights_only=False`` or to
    allow-list globals (both would run code from the file): the remaining sentences, joined."""
    parts = re.split(r"(?<=[.:])\s+|\n+", message)
    kept = [p.strip() for p in parts if p.strip() and not _UNSAFE_HINTS.search(p)]
    return " ".join(kept)


def read_bundle_raw(path: str | Path) -> dict[str, Any]:
    """Load and validate the raw bundle dict (no model is built). Raises BundleError.

    The file is read with ``torch.load(weights_only=True)``: a file that needs other Python
    objects (code) is refused, and the message never suggests loading it unsafely.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: bundle file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            reason = _without_unsafe_hints(str(exc)) or "it holds objects other than tensors and primitives"
            raise BundleError(
                f"{path}: refused: not a sidn bundle, loading it needs Python objects other than tensors and "
                f"primitives ({reason}); sidn never loads such files, re-create the bundle with `sidn train`"
            ) from None
        raise BundleError(f"{path}: not a readable sidn bundle (corrupt or not a torch file): "
                          f"{_without_unsafe_hints(str(exc))}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise BundleError(f"{path}: not a readable sidn bundle (corrupt or not a torch file): "
                          f"{_without_unsafe_hints(str(exc))}") from exc
    except Exception as exc:  # anything else torch.load may throw on garbage input
        raise BundleError(f"{path}: not a readable sidn bundle: {type(exc).__name__}: "
                          f"{_without_unsafe_hints(str(exc))}") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: not a sidn bundle (top level is {type(raw).__name__}, expected dict)")
    fmt = raw.get("format")
    if fmt != BUNDLE_FORMAT:
        if "format" not in raw and "model" in raw and "optimizer" in raw:
            hint = " (this looks like a training checkpoint; use model.pt, not checkpoint.pt)"
        else:
            hint = ""
        raise BundleError(f"{path}: wrong bundle format {fmt!r}, expected {BUNDLE_FORMAT!r}{hint}")
    missing = [k for k in _KEYS if k not in raw]
    if missing:
        raise BundleError(f"{path}: bundle is missing key(s): {', '.join(missing)}")
    if not isinstance(raw["state_dict"], dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw["state_dict"].items()
    ):
        raise BundleError(f"{path}: bundle state_dict is not a mapping of names to tensors")
    if not isinstance(raw["config"], dict):
        raise BundleError(f"{path}: bundle config is not a dict")
    if not isinstance(raw["extra"], dict):
        raise BundleError(f"{path}: bundle extra is not a dict")
    return raw


def write_bundle_raw(path: str | Path, raw: dict[str, Any]) -> None:
    """Atomically write a (validated) raw bundle dict, e.g. after editing ``extra``."""
    if raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: refusing to write a dict without format {BUNDLE_FORMAT!r}")
    _check_primitive(raw.get("extra", {}), "extra")
    atomic_write(Path(path), lambda tmp: torch.save(raw, tmp))


def check_finite_weights(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """BundleError naming ``path`` and the first tensor holding NaN or inf.

    The calibration buffers (:data:`CALIBRATION_BUFFERS`) may be NaN (uncalibrated) but not inf.
    """
    for name, tensor in state_dict.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        if name in CALIBRATION_BUFFERS:
            if bool(torch.isinf(tensor).any()):
                raise BundleError(f"{path}: calibration buffer '{name}' is infinite; recalibrate with `sidn calibrate`")
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            n_bad = int((~finite).sum())
            raise BundleError(
                f"{path}: weights are not finite: tensor '{name}' holds {n_bad} NaN/inf value(s) of "
                f"{tensor.numel()} (first bad tensor); the model diverged or the file was damaged, retrain it"
            )


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> tuple["SIDN", SIDNConfig, dict[str, Any]]:
    """Load a bundle: returns ``(model in eval mode on device, config, extra)``. Raises BundleError,
    also for weights holding NaN or inf (the message names the file and the first bad tensor)."""
    from sidn.model.sidn import SIDN

    path = Path(path)
    raw = read_bundle_raw(path)
    check_finite_weights(raw["state_dict"], path)
    try:
        cfg = SIDNConfig.from_dict(raw["config"], source=f"{path} (bundle config)")
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path}: bundle config is invalid: {exc}") from exc
    try:
        model = SIDN(cfg.model)
    except Exception as exc:
        raise BundleError(f"{path}: cannot build SIDN from the bundle's model config: {exc}") from exc
    try:
        model.load_state_dict(raw["state_dict"], strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{path}: state_dict does not match the SIDN model built from its config: {exc}") from exc
    model.to(device)
    model.eval()
    extra = dict(raw["extra"])
    _attach_int8(model, extra, path)
    _attach_feature_memory(model, extra, path)
    return model, cfg, extra


def _attach_feature_memory(model: "SIDN", extra: dict[str, Any], path: Path) -> None:
    """Hang the bundle's feature memory (:mod:`sidn.feature_memory`, made by calibration) on the model."""
    from sidn.feature_memory import BUNDLE_KEY, FeatureMemory

    if BUNDLE_KEY not in extra:
        return
    try:
        model.feature_memory = FeatureMemory.from_dict(extra[BUNDLE_KEY])
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from exc


def _attach_int8(model: "SIDN", extra: dict[str, Any], path: Path) -> None:
    """Hang the bundle's int8 calibration (``sidn calibrate``) on the model for the fast mode.

    One made for other weights is still attached: :func:`sidn.int8.serve.select_int8` then serves the
    float fast mode and says why. A calibration that cannot be read is refused, naming the file.
    """
    from sidn.int8.record import from_bundle_extra

    try:
        calibration = from_bundle_extra(extra)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: int8 calibration is invalid: {exc}") from exc
    if calibration is not None:
        model.int8_calibration = calibration


def set_bundle_thresholds(
    path: str | Path,
    threshold: float | None = None,
    score_threshold: float | None = None,
    extra_update: dict[str, Any] | None = None,
) -> None:
    """Update the ``threshold`` / ``score_threshold`` buffers (and merge ``extra_update`` into extra)
    of an existing bundle in place, atomically. ``None`` leaves a value unchanged; NaN un-calibrates."""
    raw = read_bundle_raw(path)
    sd = raw["state_dict"]
    for name, value in (("threshold", threshold), ("score_threshold", score_threshold)):
        if value is None:
            continue
        if name not in sd:
            raise BundleError(f"{path}: bundle state_dict has no '{name}' buffer")
        value = float(value)
        if math.isinf(value):
            raise BundleError(f"{path}: {name} must be finite or NaN, got {value}")
        sd[name] = torch.full_like(sd[name], value)
    if extra_update:
        extra = dict(raw["extra"])
        extra.update(_to_primitive(dict(extra_update)))
        raw["extra"] = extra
    write_bundle_raw(path, raw)


def store_int8_calibration(path: str | Path, calibration: "Int8Calibration") -> None:
    """Store an int8 calibration (:mod:`sidn.int8`) in the bundle at ``path`` (``extra["int8"]``), atomically;
    :func:`load_bundle` attaches it to the model again."""
    from sidn.int8.record import BUNDLE_KEY

    set_bundle_thresholds(path, extra_update={BUNDLE_KEY: calibration.to_dict()})
