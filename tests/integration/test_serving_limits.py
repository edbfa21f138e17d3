"""Serving memory bound (issue 12, part C): the pyfunc model checks a request's image sizes from
the file headers before decoding anything, refuses one over ``max_images`` /
``max_megapixels`` / ``max_request_megapixels`` with HTTP 413, and decodes the rest in chunks.

Peak-memory figures for the default limits (16 all-zero 36 MP PNGs, refused; 2 images of 40 MP,
at the limit, predicted)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/integration/test_serving_limits.py
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("mlflow")

from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode  # noqa: E402

from pipelines.tracking.pyfunc_model import (  # noqa: E402
    DEFAULT_MODEL_CONFIG,
    RequestTooLarge,
    SIDNPyfunc,
    chunks,
    image_header_size,
)
from sidn.bundle import save_bundle  # noqa: E402
from sidn.config import SIDNConfig  # noqa: E402
from sidn.model.sidn import SIDN  # noqa: E402

SIZE = 64
REPO = Path(__file__).resolve().parents[2]


def make_bundle(path: Path) -> Path:
    """Tiny random-init SIDN (C=4, K=3, 64 px) with a threshold."""
    cfg = SIDNConfig()
    cfg.model.channels, cfg.model.clusters, cfg.data.image_size = 4, 3, SIZE
    torch.manual_seed(0)
    model = SIDN(cfg.model).eval()
    model.threshold.fill_(0.5)
    save_bundle(model, cfg, path)
    return path


def zero_png_b64(height: int, width: int) -> str:
    """An all-zero 8-bit PNG (a few tens of kB even for tens of megapixels), base64."""
    ok, buf = cv2.imencode(".png", np.zeros((height, width), np.uint8))
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def _b64(image: np.ndarray, ext: str = ".png") -> str:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


class _Ctx:
    def __init__(self, bundle: Path, **config) -> None:
        self.artifacts = {"bundle": str(bundle)}
        self.model_config = config


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serving") / "model.pt")


@pytest.fixture(scope="module")
def zeros36() -> str:
    return zero_png_b64(6000, 6000)  # 36 MP, ~44 kB as PNG


# ---------------------------------------------------------------------------------------------
# header sizes


def _big_endian_tiff(width: int, height: int) -> bytes:
    """A minimal big-endian ('MM') TIFF header: width as SHORT, height as LONG."""
    entries = struct.pack(">HHIHH", 256, 3, 1, width, 0) + struct.pack(">HHII", 257, 4, 1, height)
    return b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 2) + entries + b"\0\0\0\0"


def test_header_size_of_every_supported_format():
    rng = np.random.default_rng(0)
    arrays = {"gray8": (rng.random((37, 53)) * 255).astype(np.uint8),
              "bgr8": (rng.random((37, 53, 3)) * 255).astype(np.uint8),
              "bgra8": (rng.random((37, 53, 4)) * 255).astype(np.uint8),
              "gray16": (rng.random((37, 53)) * 65535).astype(np.uint16)}
    for name, arr in arrays.items():
        for ext in (".png", ".tif", ".bmp", ".jpg"):
            if (arr.dtype == np.uint16 and ext in (".bmp", ".jpg")) or (ext == ".jpg" and name == "bgra8"):
                continue
            data = base64.b64decode(_b64(arr, ext))
            assert image_header_size(data) == (53, 37), (name, ext)
    assert image_header_size(_big_endian_tiff(60000, 123456)) == (60000, 123456)
    pil = pytest.importorskip("PIL.Image")
    import io

    for kw in (dict(format="JPEG", progressive=True), dict(format="TIFF", big_tiff=True)):
        buf = io.BytesIO()
        pil.fromarray(arrays["gray8"]).save(buf, **kw)
        assert image_header_size(buf.getvalue()) == (53, 37), kw
    for junk in (b"", b"hello world", b"\x89PNG\r\n\x1a\n\0\0", b"\xff\xd8\xff\xd9", b"GIF89a" + b"\0" * 20):
        assert image_header_size(junk) is None


def test_chunks_respect_count_and_pixels():
    sizes = [(100, 100)] * 5 + [(1000, 1000)] + [(10, 10)] * 3
    got = [list(r) for r in chunks(sizes, max_count=2, max_megapixels=0.025)]
    assert got == [[0, 1], [2, 3], [4], [5], [6, 7], [8]]  # the 1 MP image alone, over the budget


# ---------------------------------------------------------------------------------------------
# refused before decoding


def _forbid_decoding(monkeypatch):
    import sidn.data.decode as decode

    def boom(*_a, **_k):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(decode, "decode_bytes", boom)
    monkeypatch.setattr(cv2, "imdecode", boom)


def _refused(model, payload) -> RequestTooLarge:
    t0 = time.perf_counter()
    with pytest.raises(RequestTooLarge) as info:
        model.predict(None, payload)
    assert time.perf_counter() - t0 < 2.0
    assert info.value.get_http_status_code() == 413
    assert info.value.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)
    return info.value


def test_over_limit_requests_refused_without_decoding(bundle, zeros36, monkeypatch):
    model = SIDNPyfunc()
    model.load_context(_Ctx(bundle))  # default limits
    _forbid_decoding(monkeypatch)
    err = _refused(model, pd.DataFrame({"image": [zeros36] * 16}))  # the request: 576 MP
    assert "max_request_megapixels" in err.message and "rows 0-2 of 16" in err.message
    err = _refused(model, {"image": [zeros36] * (DEFAULT_MODEL_CONFIG["max_images"] + 1)})
    assert "max_images" in err.message
    err = _refused(model, pd.DataFrame({"image": [zero_png_b64(7000, 6000)]}))  # 42 MP > 40 MP per image
    assert "row 0" in err.message and "max_megapixels" in err.message
    with pytest.raises(MlflowException, match="row 1: not a PNG/JPEG/BMP/TIFF") as info:
        model.predict(None, pd.DataFrame({"image": [zeros36, base64.b64encode(b"GIF89a" * 10).decode()]}))
    assert info.value.get_http_status_code() == 400


def test_at_limit_request_is_predicted_in_bounded_chunks(bundle, monkeypatch):
    model = SIDNPyfunc()
    model.load_context(_Ctx(bundle, max_megapixels=0.05, max_request_megapixels=0.1))
    rng = np.random.default_rng(1)
    images = [(rng.random((150, 150)) * 255).astype(np.uint8) for _ in range(4)]  # 0.0225 MP each, 0.09 in all
    seen: list[int] = []
    predict = model.predictor.predict

    def spy(batch):
        seen.append(sum(im.size for im in batch))
        return predict(batch)

    monkeypatch.setattr(model.predictor, "predict", spy)
    out = model.predict(None, pd.DataFrame({"image": [_b64(im) for im in images]}))
    assert len(out) == 4 and seen == [45000, 45000]  # two chunks within the 0.05 MP budget
    ref = predict([im.astype(np.float32) / 255 for im in images])
    assert out["score"].tolist() == pytest.approx([p.score for p in ref])
    err = _refused(model, pd.DataFrame({"image": [_b64(im) for im in images + images[:1]]}))  # 0.1125 MP
    assert "max_request_megapixels" in err.message


# ---------------------------------------------------------------------------------------------
# memory, measured in a fresh process


CHILD = r"""
import json, resource, sys, time
import pandas as pd
from pipelines.tracking.pyfunc_model import SIDNPyfunc, example_input
from mlflow.exceptions import MlflowException

bundle, b64_file, n, config = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])

class Ctx:
    artifacts = {"bundle": bundle}
    model_config = config

def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

model = SIDNPyfunc()
model.load_context(Ctx())
model.predict(None, example_input(256))  # warm-up
payload = pd.DataFrame({"image": [open(b64_file).read()] * n})
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
base = status_mb("VmRSS")
t0 = time.perf_counter()
status, message = 200, ""
try:
    model.predict(None, payload)
except MlflowException as exc:
    status, message = exc.get_http_status_code(), exc.message
seconds = time.perf_counter() - t0
peak = status_mb("VmHWM")
print(json.dumps({"status": status, "seconds": seconds, "base_mb": base, "peak_mb": peak, "delta_mb": peak - base,
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "message": message}))
"""


def measure(bundle: Path, b64: str, n: int, config: dict | None = None) -> dict:
    """RSS of a fresh serving process (model loaded, warmed up) before one request of ``n`` copies of
    ``b64`` and its peak RSS during the request (VmHWM, reset before the request; Linux)."""
    with tempfile.TemporaryDirectory() as tmp:
        b64_file = Path(tmp) / "image.b64"
        b64_file.write_text(b64)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(bundle), str(b64_file), str(n), json.dumps(config or {})],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},  # telemetry is off in os.environ (conftest.py)
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_over_limit_request_memory_stays_small(bundle, zeros36, capsys):
    got = measure(bundle, zeros36, 16)
    with capsys.disabled():
        print(f"\nover-limit request (16 x 36 MP zero PNGs, default limits): HTTP {got['status']} in "
              f"{got['seconds'] * 1000:.0f} ms, peak RSS {got['base_mb']:.0f} -> {got['peak_mb']:.0f} MB "
              f"(+{got['delta_mb']:.1f} MB)")
    assert got["status"] == 413 and "max_request_megapixels" in got["message"]
    assert got["seconds"] < 2.0
    assert got["delta_mb"] < 30  # decoding even one of the images would take 36 MB (uint8), 144 MB as float


# ---------------------------------------------------------------------------------------------
# through MLflow's scoring server


def test_scoring_server_answers_413(bundle, zeros36, tmp_path):
    pytest.importorskip("httpx")
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    from pipelines.tracking import pyfunc_model

    path = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(
        path, python_model=str(Path(pyfunc_model.__file__).resolve()), artifacts={"bundle": str(bundle)},
        code_paths=[str(pyfunc_model.sidn_package_dir())], signature=pyfunc_model.signature(),
        model_config=dict(DEFAULT_MODEL_CONFIG), pip_requirements=pyfunc_model._requirements(),
    )
    client = TestClient(scoring_server.init(mlflow.pyfunc.load_model(str(path))))
    answer = client.post("/invocations", json={"dataframe_records": [{"image": zeros36}] * 16})
    assert answer.status_code == 413, answer.text
    assert "max_request_megapixels" in answer.json()["message"]
    good = client.post("/invocations", json={"dataframe_records": [{"image": _b64(np.full((80, 90), 99, np.uint8))}]})
    assert good.status_code == 200 and good.json()["predictions"][0]["width"] == 90


if __name__ == "__main__":  # the figures quoted in the module doc
    with tempfile.TemporaryDirectory() as tmp:
        model_pt = make_bundle(Path(tmp) / "model.pt")
        for label, b64, n in (("over the limit: 16 x 36 MP (576 MP)", zero_png_b64(6000, 6000), 16),
                              ("at the limit:    2 x 40 MP (80 MP)", zero_png_b64(6666, 6000), 2)):
            got = measure(model_pt, b64, n)
            print(f"{label}: HTTP {got['status']}, {got['seconds']:.2f} s, peak RSS {got['base_mb']:.0f} -> "
                  f"{got['peak_mb']:.0f} MB (+{got['delta_mb']:.0f} MB) {got['message'][:100]}")
