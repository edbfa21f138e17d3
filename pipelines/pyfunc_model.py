"""The SIDN model as an MLflow ``pyfunc`` model (logged "from code"; loads without the repo).

Logged by :func:`log_pyfunc_model` with this file as the model code, the ``sidn`` package as
``code_paths`` and the calibrated bundle (``model.pt``) as the artifact ``bundle``. The
calibrated threshold, the input size and the post-processing settings travel inside the
bundle, so ``mlflow.pyfunc.load_model("models:/sidn-carpet@champion")`` is a complete
predictor. This file imports only mlflow, numpy, pandas, OpenCV and ``sidn`` (never
``pipelines``), because it is executed from the model directory when the model is loaded.

Input (one row per image): a DataFrame -- or a dict of lists ``{"image": [...]}`` -- with one
string column ``image`` holding the base64-encoded bytes of a PNG / JPEG / BMP / TIFF file
(8 or 16 bit, gray, RGB or RGBA, any size; a ``data:image/...;base64,`` prefix is accepted).
Over HTTP (``mlflow models serve``)::

    POST /invocations   Content-Type: application/json
    {"dataframe_split": {"columns": ["image"], "data": [["iVBORw0KGgo..."], ...]}}
    {"dataframe_records": [{"image": "iVBORw0KGgo..."}, ...]}
    {"inputs": {"image": ["iVBORw0KGgo...", ...]}}
    optional: "params": {"include_map": false}   # skip the anomaly map (smaller answer)

Output (one row per image, in input order; over HTTP ``{"predictions": [{...}, ...]}``):

    anomaly_map   base64 PNG, 16-bit gray, at the image's original size: map = pixel / 65535
                  (eq. 26 after the median filter, upsampled; "" when include_map is false)
    mask          base64 PNG, 8-bit gray, 0 / 255: the defect mask at the calibrated threshold
                  after opening, closing and the min_region_area filter (null if uncalibrated)
    score         float: image anomaly score, max of the anomaly map
    is_defective  bool: any defect region in ``mask`` (null if uncalibrated)
    threshold     float: the threshold used for ``mask`` (null if uncalibrated)
    height, width int: the image size (= the size of anomaly_map and mask)
    regions       JSON list of {x, y, w, h, area, max_score}, highest max_score first

Malformed input -- no ``image`` column, a value that is not a string, not base64, not an
image, empty, larger than ``max_megapixels`` (default 40 MP; the ``model_config`` key of the
same name), or more than ``max_images`` (default 64) images in one call -- raises
``MlflowException(INVALID_PARAMETER_VALUE)`` naming the row, so the scoring server answers
HTTP 400 and keeps serving.

Settings (``model_config``, fixed when logged, overridable when loading in Python with
``mlflow.pyfunc.load_model(uri, model_config={...})``): ``max_megapixels``, ``max_images``,
``num_threads`` (torch threads, 0 = default), ``fast`` (:func:`sidn.fast_model.make_fast`, default false).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

IMAGE_COLUMN = "image"
BUNDLE_ARTIFACT = "bundle"
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "max_megapixels": 40.0,  # larger images are refused (decompression-bomb guard), per image
    "max_images": 64,  # images per call
    "num_threads": 0,  # torch intra-op threads; 0 = torch default
    "fast": False,  # sidn.fast_model.make_fast: BN folded, bf16 + fp32 tail, oneDNN-fused (map within 1e-2)
}
OUTPUT_COLUMNS = ["anomaly_map", "mask", "score", "is_defective", "threshold", "height", "width", "regions"]


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


# --------------------------------------------------------------------------------------
# encoding helpers (also used by clients and tests)


def encode_image(image: np.ndarray, ext: str = ".png") -> str:
    """Base64 string of ``image`` encoded as ``ext`` (uint8/uint16 arrays; float [0,1] -> 8 bit)."""
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(ext, arr)
    if not ok:
        raise ValueError(f"cannot encode image of shape {arr.shape} as {ext}")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_png(b64: str) -> np.ndarray:
    """Inverse of the output encoding: base64 PNG -> array as stored (uint8 mask / uint16 map)."""
    raw = cv2.imdecode(np.frombuffer(base64.b64decode(b64), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError("not a PNG")
    return raw


def decode_anomaly_map(b64: str) -> np.ndarray:
    """The ``anomaly_map`` output as float32 [H, W] in [0, 1]."""
    return decode_png(b64).astype(np.float32) / 65535.0


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the pixels (None if unknown)."""
    try:
        from PIL import Image

        with Image.open(__import__("io").BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:
        return None


# --------------------------------------------------------------------------------------
# input parsing


def _column(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise _invalid(
                f"input has columns {list(map(str, model_input.columns))}; expected one column "
                f"'{IMAGE_COLUMN}' of base64-encoded image files"
            )
        values = model_input[IMAGE_COLUMN].tolist()
        if values and all(isinstance(v, (list, tuple, np.ndarray)) and all(isinstance(i, (str, bytes)) for i in v)
                          for v in values):
            # pyfunc's schema enforcement turns a dict of lists into one row holding the list
            values = [item for v in values for item in v]
        return values
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise _invalid(f"input has keys {sorted(map(str, model_input))}; expected '{IMAGE_COLUMN}'")
        values = model_input[IMAGE_COLUMN]
        return list(values) if isinstance(values, (list, tuple, np.ndarray, pd.Series)) else [values]
    if isinstance(model_input, (list, tuple)):
        return [v.get(IMAGE_COLUMN) if isinstance(v, dict) else v for v in model_input]
    raise _invalid(
        f"input of type {type(model_input).__name__} is not supported; send a DataFrame (or dict of "
        f"lists) with a column '{IMAGE_COLUMN}' of base64 strings"
    )


def decode_input_image(value: Any, index: int, max_megapixels: float) -> np.ndarray:
    """One base64 value -> float32 gray [H, W] in [0, 1]; MlflowException(INVALID_PARAMETER_VALUE) if bad."""
    from sidn.data.mvtec import DataError, decode_bytes, raw_to_gray

    where = f"row {index}"
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value)
    elif isinstance(value, str):
        text = value.strip().encode("ascii", errors="replace")
    else:
        raise _invalid(f"{where}: '{IMAGE_COLUMN}' must be a base64 string, got {type(value).__name__}")
    if text.startswith(b"data:"):
        text = text.partition(b",")[2]
    text = b"".join(text.split())  # line-wrapped base64 (the `base64` tool wraps at 76 columns)
    if not text:
        raise _invalid(f"{where}: '{IMAGE_COLUMN}' is empty")
    # base64 is 4/3 of the file; a compressed file is never larger than ~4 bytes per pixel x channels
    max_chars = int(max_megapixels * 1e6 * 8 * 4 / 3) + 1024
    if len(text) > max_chars:
        raise _invalid(f"{where}: {len(text)} base64 characters is larger than any {max_megapixels:g}-megapixel image")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"{where}: '{IMAGE_COLUMN}' is not valid base64 ({exc})") from None
    if not data:
        raise _invalid(f"{where}: '{IMAGE_COLUMN}' decodes to 0 bytes")
    size = _header_size(data)
    if size is not None and size[0] * size[1] > max_megapixels * 1e6:
        raise _invalid(
            f"{where}: image is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} megapixels); this model "
            f"accepts at most {max_megapixels:g} megapixels per image (model_config 'max_megapixels')"
        )
    try:
        raw = decode_bytes(data, where)
    except DataError as exc:
        raise _invalid(f"{exc} (expected a PNG/JPEG/BMP/TIFF file, base64-encoded)") from None
    h, w = raw.shape[:2]
    if h * w > max_megapixels * 1e6:
        raise _invalid(f"{where}: image is {w}x{h}, more than {max_megapixels:g} megapixels")
    if min(h, w) < 1:
        raise _invalid(f"{where}: image has no pixels ({w}x{h})")
    return raw_to_gray(raw, where)


def parse_images(model_input: Any, max_megapixels: float, max_images: int) -> list[np.ndarray]:
    """Validate and decode every row; the first bad row raises INVALID_PARAMETER_VALUE."""
    values = _column(model_input)
    if not values:
        raise _invalid("input holds no images (0 rows)")
    if len(values) > max_images:
        raise _invalid(f"{len(values)} images in one call; at most {max_images} (model_config 'max_images')")
    return [decode_input_image(v, i, max_megapixels) for i, v in enumerate(values)]


# --------------------------------------------------------------------------------------
# the model


class SIDNPyfunc(PythonModel):
    """pyfunc wrapper: base64 images in, anomaly map + mask + score per image out (see module doc)."""

    def load_context(self, context: Any) -> None:
        import torch

        from sidn.bundle import load_bundle
        from sidn.inference import Predictor

        config = {**DEFAULT_MODEL_CONFIG, **(getattr(context, "model_config", None) or {})}
        if int(config["num_threads"]) > 0:
            torch.set_num_threads(int(config["num_threads"]))
        bundle = Path(context.artifacts[BUNDLE_ARTIFACT])
        model, cfg, extra = load_bundle(bundle)
        self.cfg = cfg
        self.extra = extra
        self.max_megapixels = float(config["max_megapixels"])
        self.max_images = int(config["max_images"])
        self.predictor = Predictor(model, cfg.infer, cfg.data.image_size, fast=bool(config["fast"]))

    # ``model_input`` is hinted as a DataFrame (what the scoring server passes), a hint from
    # which MLflow derives no signature: the signature is given explicitly (:func:`signature`);
    # a dict of lists or a list of records work too in-process.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        include_map = params.get("include_map", True)
        if isinstance(include_map, str):
            include_map = include_map.strip().lower() not in ("false", "0", "no")
        images = parse_images(model_input, self.max_megapixels, self.max_images)
        rows = []
        for start in range(0, len(images), self.cfg.infer.batch_size):
            chunk = images[start : start + self.cfg.infer.batch_size]
            for image, pred in zip(chunk, self.predictor.predict(chunk)):
                amap16 = (np.clip(pred.anomaly_map, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
                calibrated = pred.mask is not None
                rows.append({
                    "anomaly_map": encode_image(amap16) if include_map else "",
                    "mask": encode_image(pred.mask.astype(np.uint8) * 255) if calibrated else None,
                    "score": float(pred.score),
                    "is_defective": bool(pred.regions) if calibrated else None,
                    "threshold": float(pred.threshold) if calibrated and pred.threshold is not None else None,
                    "height": int(image.shape[0]),
                    "width": int(image.shape[1]),
                    "regions": json.dumps(pred.regions),
                })
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


# --------------------------------------------------------------------------------------
# logging (called from pipelines.tracking inside an active run)


def signature() -> Any:
    """Input: one string column ``image``; params: ``include_map`` (bool, default true)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", IMAGE_COLUMN)])
    outputs = Schema([
        ColSpec("string", "anomaly_map"), ColSpec("string", "mask", required=False), ColSpec("double", "score"),
        ColSpec("boolean", "is_defective", required=False), ColSpec("double", "threshold", required=False),
        ColSpec("long", "height"), ColSpec("long", "width"), ColSpec("string", "regions"),
    ])
    params = ParamSchema([ParamSpec("include_map", "boolean", True)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def example_input(size: int = 64, seed: int = 0) -> pd.DataFrame:
    """A one-row input example: a gray ``size`` x ``size`` noise texture as base64 PNG."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size), dtype=np.float32), (0, 0), 1.5)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
    return pd.DataFrame({IMAGE_COLUMN: [encode_image(img)]})


def sidn_package_dir() -> Path:
    import sidn

    return Path(sidn.__file__).resolve().parent


def log_pyfunc_model(bundle_path: str | Path, name: str = "model", model_config: dict[str, Any] | None = None,
                     input_example: pd.DataFrame | None = None) -> Any:
    """``mlflow.pyfunc.log_model`` of the bundle into the active run; returns the ``ModelInfo``.

    The model is "from code" (this file), ``code_paths`` holds the ``sidn`` package, the bundle
    is the artifact ``bundle``. ``model_config`` overrides :data:`DEFAULT_MODEL_CONFIG`.
    """
    bundle_path = Path(bundle_path)
    if not bundle_path.is_file():
        raise FileNotFoundError(f"{bundle_path}: model bundle not found")
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).resolve()),
        artifacts={BUNDLE_ARTIFACT: str(bundle_path)},
        code_paths=[str(sidn_package_dir())],
        signature=signature(),
        input_example=input_example if input_example is not None else example_input(),
        model_config={**DEFAULT_MODEL_CONFIG, **(model_config or {})},
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    """What the model needs at load time (pinned to this environment's versions where found)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "opencv-python-headless", "pyyaml", "pillow"):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


# Models from code: MLflow executes this file when the model is loaded and takes the object
# given to set_model. (Harmless when the module is imported normally.)
mlflow.models.set_model(SIDNPyfunc())
