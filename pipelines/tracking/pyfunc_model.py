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
    score         float: image anomaly score (sidn.inference.Predictor.scores: the map's maximum, plus the
                  feature-memory term where the bundle has one)
    is_defective  bool: any defect region in ``mask`` (null if uncalibrated)
    threshold     float: the threshold used for ``mask`` (null if uncalibrated)
    height, width int: the image size (= the size of anomaly_map and mask)
    regions       JSON list of {x, y, w, h, area, max_score}, highest max_score first

Malformed input -- no ``image`` column, a value that is not a string, not base64, not a
PNG/JPEG/BMP/TIFF file, empty -- raises ``MlflowException(INVALID_PARAMETER_VALUE)`` naming
the row, so the scoring server answers HTTP 400 and keeps serving. A request over the size
limits (:class:`SIDNPyfunc` lists the settings) raises :class:`RequestTooLarge`, which the
scoring server answers with HTTP 413, before any image is decoded.

Over 400 lines: one concept, the served model; the request checks (sizes read from the file
headers before any pixel is decoded) travel with it, as this file is the logged model code.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
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
    "max_request_megapixels": 80.0,  # decoded pixels per call, all images together (checked from the headers)
    "num_threads": 0,  # torch intra-op threads; 0 = torch default
    "fast": False,  # sidn.fast_choice.make_fast: int8 where the bundle's int8 calibration passed parity, else bf16/fp32 folded
}
OUTPUT_COLUMNS = ["anomaly_map", "mask", "score", "is_defective", "threshold", "height", "width", "regions"]


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class RequestTooLarge(MlflowException):
    """A request over the size limits (an image over ``max_megapixels``, more than ``max_images``
    images, more than ``max_request_megapixels`` in all): HTTP 413 from the scoring server.

    MLflow's scoring server answers an ``MlflowException`` raised by the model with
    ``exc.get_http_status_code()``, which maps the error code through a fixed table that has no
    413; this subclass returns 413 itself. The error code stays ``INVALID_PARAMETER_VALUE``, so
    anything that maps the code instead of asking the exception answers 400.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    def get_http_status_code(self) -> int:
        return 413


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


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # JPEG frame headers (not DHT/JPG/DAC)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first JPEG frame header (SOFn); segments before it are skipped."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        i += 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i : i + 2])
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return width, height
        i += length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first IFD of a classic or Big TIFF (tags 256, 257)."""
    e = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\0", b"\0+")
    if big:
        (offset,) = struct.unpack(e + "Q", data[8:16])
        (count,) = struct.unpack(e + "Q", data[offset : offset + 8])
        first, entry, value_at = offset + 8, 20, 12
    else:
        (offset,) = struct.unpack(e + "I", data[4:8])
        (count,) = struct.unpack(e + "H", data[offset : offset + 2])
        first, entry, value_at = offset + 2, 12, 8
    formats = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    dims: dict[int, int] = {}
    for k in range(min(count, 4096)):
        p = first + k * entry
        tag, typ = struct.unpack(e + "HH", data[p : p + 4])
        if tag in (256, 257):
            if typ not in formats:
                return None
            fmt = e + formats[typ]
            (dims[tag],) = struct.unpack(fmt, data[p + value_at : p + value_at + struct.calcsize(fmt)])
    return (dims[256], dims[257]) if len(dims) == 2 else None


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG / JPEG / BMP / TIFF file read from its header, without decoding
    any pixel (a few struct reads, no allocation proportional to the image); None for any
    other file or a header that cannot be read."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None
        if data[:2] == b"BM":
            (header,) = struct.unpack("<I", data[14:18])
            if header == 12:  # BITMAPCOREHEADER: 16-bit sizes
                width, height = struct.unpack("<HH", data[18:22])
            else:
                width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # a negative height means top-down rows
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg_size(data)
        if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return _tiff_size(data)
    except struct.error:  # header cut short
        return None
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


def input_bytes(value: Any, index: int, max_megapixels: float) -> bytes:
    """One base64 value -> the file's bytes; MlflowException(INVALID_PARAMETER_VALUE) naming the row if bad."""
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
        raise RequestTooLarge(
            f"{where}: {len(text)} base64 characters is larger than any {max_megapixels:g}-megapixel image")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"{where}: '{IMAGE_COLUMN}' is not valid base64 ({exc})") from None
    if not data:
        raise _invalid(f"{where}: '{IMAGE_COLUMN}' decodes to 0 bytes")
    return data


def checked_size(data: bytes, index: int, max_megapixels: float) -> tuple[int, int]:
    """(width, height) from the header of row ``index``'s file, within ``max_megapixels``; no decoding."""
    where = f"row {index}"
    size = image_header_size(data)
    if size is None:
        raise _invalid(f"{where}: not a PNG/JPEG/BMP/TIFF file (its header gives no image size)")
    width, height = size
    if width < 1 or height < 1:
        raise _invalid(f"{where}: image has no pixels ({width}x{height} in its header)")
    if width * height > max_megapixels * 1e6:
        raise RequestTooLarge(
            f"{where}: image is {width}x{height} ({width * height / 1e6:.1f} megapixels); this model "
            f"accepts at most {max_megapixels:g} megapixels per image (model_config 'max_megapixels')"
        )
    return width, height


def decode_checked(data: bytes, index: int, size: tuple[int, int]) -> np.ndarray:
    """Decode row ``index``'s file (header size ``size`` already checked) -> float32 gray [H, W] in [0, 1]."""
    from sidn.data.decode import decode_bytes, raw_to_gray
    from sidn.data.errors import DataError

    where = f"row {index}"
    try:
        raw = decode_bytes(data, where)
    except DataError as exc:
        raise _invalid(f"{exc} (expected a PNG/JPEG/BMP/TIFF file, base64-encoded)") from None
    h, w = raw.shape[:2]
    if h * w > size[0] * size[1]:
        raise _invalid(f"{where}: decoded image is {w}x{h}, larger than the {size[0]}x{size[1]} of its header")
    return raw_to_gray(raw, where)


def decode_input_image(value: Any, index: int, max_megapixels: float) -> np.ndarray:
    """One base64 value -> float32 gray [H, W] in [0, 1]; MlflowException(INVALID_PARAMETER_VALUE) if bad."""
    data = input_bytes(value, index, max_megapixels)
    return decode_checked(data, index, checked_size(data, index, max_megapixels))


def check_request(model_input: Any, max_megapixels: float, max_images: int,
                  max_request_megapixels: float) -> tuple[list[Any], list[tuple[int, int]]]:
    """The rows' values and their images' (width, height) from the file headers, the whole request
    within the limits; no pixel is decoded and no file bytes are kept.

    Bad rows raise INVALID_PARAMETER_VALUE (HTTP 400), requests over a limit :class:`RequestTooLarge`
    (HTTP 413) naming the limit and its ``model_config`` key.
    """
    values = _column(model_input)
    if not values:
        raise _invalid("input holds no images (0 rows)")
    if len(values) > max_images:
        raise RequestTooLarge(f"{len(values)} images in one call; at most {max_images} (model_config 'max_images')")
    sizes, total = [], 0
    for i, value in enumerate(values):
        size = checked_size(input_bytes(value, i, max_megapixels), i, max_megapixels)
        total += size[0] * size[1]
        if total > max_request_megapixels * 1e6:
            raise RequestTooLarge(
                f"rows 0-{i} of {len(values)} already hold {total / 1e6:.1f} megapixels; one call accepts at most "
                f"{max_request_megapixels:g} megapixels in all (model_config 'max_request_megapixels'): send fewer "
                f"or smaller images per call"
            )
        sizes.append(size)
    return values, sizes


def chunks(sizes: list[tuple[int, int]], max_count: int, max_megapixels: float) -> Iterator[range]:
    """Consecutive index ranges of at most ``max_count`` images and ``max_megapixels`` pixels in all
    (an image alone may use the whole budget)."""
    start, pixels = 0, 0
    for i, (w, h) in enumerate(sizes):
        if i > start and (i - start >= max_count or pixels + w * h > max_megapixels * 1e6):
            yield range(start, i)
            start, pixels = i, 0
        pixels += w * h
    if start < len(sizes):
        yield range(start, len(sizes))


def parse_images(model_input: Any, max_megapixels: float, max_images: int,
                 max_request_megapixels: float = float("inf")) -> list[np.ndarray]:
    """Validate and decode every row (all at once: for small inputs; :meth:`SIDNPyfunc.predict` decodes in chunks)."""
    values, sizes = check_request(model_input, max_megapixels, max_images, max_request_megapixels)
    return [decode_checked(input_bytes(value, i, max_megapixels), i, size)
            for i, (value, size) in enumerate(zip(values, sizes))]


# --------------------------------------------------------------------------------------
# the model


class SIDNPyfunc(PythonModel):
    """pyfunc wrapper: base64 images in, anomaly map + mask + score per image out (see module doc).

    Settings (``model_config``, fixed when logged, overridable when loading in Python with
    ``mlflow.pyfunc.load_model(uri, model_config={...})``; defaults :data:`DEFAULT_MODEL_CONFIG`)::

        max_megapixels          40.0   largest image (width x height / 1e6); also the chunk budget
        max_images              64     images per call
        max_request_megapixels  80.0   pixels of all the images of one call together (two maximal
                                       images; the 16 x 36 MP of issue 12 are refused)
        num_threads             0      torch intra-op threads; 0 = torch default
        fast                    false  :func:`sidn.fast_choice.make_fast` (int8 from ``sidn calibrate`` where it passed parity)

    Memory bound of one call: each image's width and height are read from its file header
    (:func:`image_header_size`, no pixel decoded) and the whole request is checked against
    ``max_images``, ``max_megapixels`` and ``max_request_megapixels`` before anything is
    decoded (:func:`check_request`; over a limit: :class:`RequestTooLarge`, HTTP 413). Then the
    images are decoded and predicted in chunks of at most ``infer.batch_size`` images and
    ``max_megapixels`` pixels (:func:`chunks`), so what is alive at once is bounded by one
    maximal image whatever the request holds (measured: about 0.8 GB peak above the idle
    server for a 40 MP image; a refused request adds nothing measurable).
    """

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
        self.max_request_megapixels = float(config["max_request_megapixels"])
        self.predictor = Predictor(model, cfg.infer, cfg.data.image_size, fast=bool(config["fast"]))

    # ``model_input`` is hinted as a DataFrame (what the scoring server passes), a hint from
    # which MLflow derives no signature: the signature is given explicitly (:func:`signature`);
    # a dict of lists or a list of records work too in-process.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One output row per input image (module doc). The whole request is checked against the
        limits from the file headers first (:func:`check_request`), then decoded and predicted in
        chunks of at most ``infer.batch_size`` images and ``max_megapixels`` pixels (:func:`chunks`)."""
        params = params or {}
        include_map = params.get("include_map", True)
        if isinstance(include_map, str):
            include_map = include_map.strip().lower() not in ("false", "0", "no")
        values, sizes = check_request(model_input, self.max_megapixels, self.max_images, self.max_request_megapixels)
        rows: list[dict[str, Any]] = []
        for chunk in chunks(sizes, self.cfg.infer.batch_size, self.max_megapixels):
            rows.extend(self._predict_chunk([(i, values[i], sizes[i]) for i in chunk], bool(include_map)))
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)

    def _predict_chunk(self, items: list[tuple[int, Any, tuple[int, int]]], include_map: bool) -> list[dict[str, Any]]:
        """Decode and predict one chunk of ``(row, base64 value, header size)``; its arrays die on return."""
        images = [decode_checked(input_bytes(value, i, self.max_megapixels), i, size) for i, value, size in items]
        rows = []
        for image, pred in zip(images, self.predictor.predict(images)):
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
        return rows


# --------------------------------------------------------------------------------------
# logging (called from pipelines.tracking.runs inside an active run)


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
