"""Export a model bundle to ONNX or TorchScript, and run an ONNX file in place of the torch model.

The exported graph is the anomaly map of eq. (26),
``I_s = (1 - lambda_f)(1 - I_s^t) + lambda_f I_s^d`` (``SIDNOutput.fused``):

    input  ``image``        float32 [B, 1, S, S] in [0, 1]   (B dynamic, S = the export size)
    output ``anomaly_map``  float32 [B, 1, S, S]

Pre-processing (gray conversion, ``INTER_AREA`` resize to S) and post-processing (median
filter, upsampling, threshold, morphology; :mod:`sidn.inference`) are not in the graph: they
run in numpy/OpenCV around it, exactly as for the torch model. The ONNX file carries the
bundle's calibration in its metadata (``sidn.threshold``; ``sidn.score_threshold``, null when the
bundle's image score uses its feature memory, which is not in the graph; ``sidn.image_size``,
``sidn.lambda_f``, ``sidn.format``), so :class:`OnnxModel` knows its
threshold and its input size without the bundle, and ``sidn.weights_sha256``
(:func:`sidn.weights_hash.weights_sha256` of the bundle's weights), which ties the file to its bundle:
:func:`check_onnx_matches_bundle` refuses to run an ONNX file with another bundle's threshold
(``sidn predict --onnx``, :func:`OnnxPredictor` with a bundle).

ONNX: opset 17 by default, exported with torch's TorchScript-based exporter (about 1 s for
SIDN; ``dynamo=True`` uses the ``torch.export`` exporter instead, about 20x slower here, and
it converts its opset-18 graph down to the requested opset). TorchScript: ``torch.jit.trace``
(cheap; the batch axis stays dynamic, the spatial size is fixed at S by the trace).

This module imports torch only (``onnx`` / ``onnxruntime`` lazily); no MLflow.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sidn.io import atomic_write
from sidn.weights_hash import weights_sha256

ONNX_FORMAT = "sidn-onnx/1"
INPUT_NAME = "image"
OUTPUT_NAME = "anomaly_map"
DEFAULT_OPSET = 17
WEIGHTS_HASH_KEY = "sidn.weights_sha256"


class FusedMap(nn.Module):
    """``x [B,1,S,S] -> SIDN(x).fused [B,1,S,S]`` (eq. 26): the part of SIDN that is exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).fused


def _load(bundle_path: str | Path, image_size: int | None) -> tuple[nn.Module, Any, int]:
    from sidn.bundle import load_bundle

    model, cfg, _ = load_bundle(bundle_path)
    size = int(image_size or cfg.data.image_size)
    if size < 16 or size % 16:
        raise ValueError(f"{bundle_path}: export size must be a positive multiple of 16, got {size}")
    return model.eval(), cfg, size


def _finite(value: Tensor | float | None) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _score_threshold(model: nn.Module) -> float | None:
    """The bundle's image-score threshold, or None where that score uses the feature memory
    (:mod:`sidn.feature_memory`), which the graph does not carry: an exported map is scored by its maximum."""
    return None if hasattr(model, "feature_memory") else _finite(getattr(model, "score_threshold", None))


def _metadata(model: nn.Module, cfg: Any, size: int) -> dict[str, str]:
    return {
        "sidn.format": ONNX_FORMAT,
        WEIGHTS_HASH_KEY: weights_sha256(model.state_dict()),
        "sidn.image_size": str(size),
        "sidn.lambda_f": str(cfg.model.lambda_f),
        "sidn.threshold": json.dumps(_finite(getattr(model, "threshold", None))),
        "sidn.score_threshold": json.dumps(_score_threshold(model)),
        "sidn.config": json.dumps(cfg.to_dict(), sort_keys=True),
    }


def export_onnx(
    bundle_path: str | Path,
    out_path: str | Path,
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
) -> Path:
    """Write the eq. 26 map of the bundle at ``bundle_path`` as an ONNX file (dynamic batch axis).

    ``image_size`` defaults to the bundle's ``data.image_size`` (the size the Predictor resizes
    to). The write is atomic. Returns ``out_path``.
    """
    import onnx

    model, cfg, size = _load(bundle_path, image_size)
    net = FusedMap(model).eval()
    example = torch.rand(2, 1, size, size)
    out_path = Path(out_path)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings on the (static) shape checks
            if dynamo:
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.onnx.export(
                    net, (example,), None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), optimize=True, verify=False,
                )
                program.save(str(tmp))
            else:
                torch.onnx.export(
                    net, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
        proto = onnx.load(str(tmp))
        for key, value in _metadata(model, cfg, size).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = "SIDN fused anomaly map (eq. 26): image [B,1,S,S] float32 in [0,1] -> anomaly_map [B,1,S,S]"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

    atomic_write(out_path, write)
    return out_path


def export_torchscript(bundle_path: str | Path, out_path: str | Path, image_size: int | None = None) -> Path:
    """Write the eq. 26 map as a traced TorchScript module (``torch.jit.load`` -> ``fn(x) -> map``).

    The calibration travels as ``_extra_files['sidn.json']`` (threshold, score_threshold,
    image_size, config). Atomic write; returns ``out_path``.
    """
    model, cfg, size = _load(bundle_path, image_size)
    net = FusedMap(model).eval()
    example = torch.rand(2, 1, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example, check_trace=False)
    meta = {
        "format": ONNX_FORMAT.replace("onnx", "torchscript"), "image_size": size,
        "threshold": _finite(model.threshold), "score_threshold": _score_threshold(model),
        "config": cfg.to_dict(),
    }
    extra = {"sidn.json": json.dumps(meta)}
    out_path = Path(out_path)
    atomic_write(out_path, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
    return out_path


def check_onnx_matches_bundle(onnx_path: str | Path, metadata: dict[str, str], bundle_path: str | Path,
                              model: nn.Module) -> None:
    """ValueError naming both files unless the ONNX file was exported from ``model``'s weights.

    ``metadata`` is the ONNX file's custom metadata, ``model`` the bundle's loaded model. A file
    without ``sidn.weights_sha256`` (exported by an older sidn) is refused too: it cannot be checked.
    """
    again = f"export it again: sidn export --model {bundle_path} --format onnx --out {onnx_path}"
    stored = metadata.get(WEIGHTS_HASH_KEY)
    if not stored:
        raise ValueError(
            f"{onnx_path}: has no '{WEIGHTS_HASH_KEY}' metadata (exported by an older sidn), so it cannot be "
            f"checked against the bundle {bundle_path}; {again}"
        )
    actual = weights_sha256(model.state_dict())
    if stored != actual:
        raise ValueError(
            f"{onnx_path}: was exported from other weights than the bundle {bundle_path} "
            f"(weights sha256 {stored[:12]}... in the ONNX file, {actual[:12]}... in the bundle); running it with "
            f"this bundle's threshold would be wrong; {again}"
        )


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``sidn.*`` metadata of an exported ONNX file (empty dict for a foreign file)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


class _Output:
    """What :class:`OnnxModel` returns: only ``fused`` (the Predictor needs nothing else)."""

    def __init__(self, fused: Tensor) -> None:
        self.fused = fused


class OnnxModel(nn.Module):
    """onnxruntime session that stands in for :class:`sidn.model.sidn.SIDN` in :class:`sidn.inference.Predictor`.

    ``model(x)`` with ``x`` float32 ``[B, 1, S, S]`` returns an object whose ``.fused`` is the
    eq. 26 map as a CPU tensor. ``threshold`` / ``score_threshold`` are buffers (NaN =
    uncalibrated) taken from ``threshold=`` if given, else from the file's metadata.
    ``image_size`` is the export size S (from the metadata); other input sizes raise a
    ValueError naming the file and the size that works.
    """

    def __init__(
        self,
        path: str | Path,
        threshold: float | None = None,
        score_threshold: float | None = None,
        providers: list[str] | None = None,
        num_threads: int = 0,
    ) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX file not found")
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX model: {exc}") from exc
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input [B,1,S,S], the graph has {len(inputs)}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        size_meta = meta.get("sidn.image_size")
        self.image_size: int | None = int(size_meta) if size_meta else (
            shape[-1] if isinstance(shape[-1], int) else None)

        def pick(given: float | None, key: str) -> float:
            if given is not None:
                return float(given)
            raw = meta.get(key)
            value = json.loads(raw) if raw else None
            return float("nan") if value is None else float(value)

        self.register_buffer("threshold", torch.tensor(pick(threshold, "sidn.threshold")))
        self.register_buffer("score_threshold", torch.tensor(pick(score_threshold, "sidn.score_threshold")))

    @property
    def is_calibrated(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    def forward(self, x: Tensor) -> _Output:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"{self.path}: expects a batch [B, 1, S, S], got shape {list(x.shape)}")
        if self.image_size is not None and (x.shape[2] != self.image_size or x.shape[3] != self.image_size):
            raise ValueError(
                f"{self.path}: was exported for {self.image_size}x{self.image_size} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}; export again with --size {x.shape[2]} or resize to {self.image_size}"
            )
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (out,) = self.session.run(None, {self.input_name: arr})
        return _Output(torch.from_numpy(np.asarray(out, dtype=np.float32)))


def OnnxPredictor(  # noqa: N802 - factory named like the class it builds
    onnx_path: str | Path, bundle_path: str | Path | None = None, threshold: float | None = None,
    infer: Any = None, image_size: int | None = None,
) -> Any:
    """A :class:`sidn.inference.Predictor` whose eq. 26 maps come from onnxruntime.

    ``infer`` (post-processing) and ``image_size`` come from the bundle if given, else from the
    config stored in the ONNX metadata. ``threshold`` overrides the calibrated one. With a
    bundle, the ONNX file must have been exported from it (:func:`check_onnx_matches_bundle`).
    """
    from sidn.config import SIDNConfig
    from sidn.inference import Predictor

    model = OnnxModel(onnx_path)
    if bundle_path is not None:
        from sidn.bundle import load_bundle

        torch_model, cfg, _ = load_bundle(bundle_path)
        check_onnx_matches_bundle(onnx_path, model.metadata, bundle_path, torch_model)
        if threshold is None and _finite(torch_model.threshold) is not None:
            model.threshold.fill_(float(torch_model.threshold))
    elif "sidn.config" in model.metadata:
        cfg = SIDNConfig.from_dict(json.loads(model.metadata["sidn.config"]), source=f"{onnx_path} (metadata)")
    else:
        cfg = SIDNConfig()
    size = int(image_size or model.image_size or cfg.data.image_size)
    return Predictor(model, infer or cfg.infer, size, threshold=threshold)


__all__ = [
    "FusedMap", "OnnxModel", "OnnxPredictor", "check_onnx_matches_bundle", "export_onnx", "export_torchscript",
    "read_onnx_metadata", "ONNX_FORMAT", "INPUT_NAME", "OUTPUT_NAME", "WEIGHTS_HASH_KEY",
]
