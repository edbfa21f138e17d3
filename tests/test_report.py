"""The report stage: table + mean, curves, overlay gallery, and that the HTML renders offline.

The rendering check loads the page in headless Chromium (Debian package ``chromium``) from a
``file://`` URL with networking useless (no server, everything is a data: URI) and asserts every
<img> decoded (naturalWidth > 0). It is skipped, with the reason, only when Chromium is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipelines.report import build_report

CATEGORIES = ["carpet", "wood"]
METRICS = {"carpet": (0.95, 0.80, 0.90), "wood": (0.85, 0.60, 0.70)}
THRESHOLDS = {"carpet": 0.4, "wood": 0.6}
N_OVERLAYS = 3


def _fake_runs(root: Path, categories=CATEGORIES) -> Path:
    rng = np.random.default_rng(0)
    for category in categories:
        base = root / category
        (base / "eval" / "overlays").mkdir(parents=True)
        (base / "train").mkdir(parents=True)
        px, pro, img = METRICS[category]
        (base / "eval" / "metrics.json").write_text(json.dumps(
            {"category": category, "pixel_auroc": px, "aupro": pro, "image_auroc": img, "n_images": 6,
             "per_defect": {}}))
        (base / "calibration.json").write_text(json.dumps(
            {"threshold": THRESHOLDS[category], "method": "image_far", "image_far": 0.05, "pixel_far": 0.001}))
        fpr = np.linspace(0, 1, 20)
        pd.DataFrame({"fpr": fpr, "tpr": fpr ** 0.3}).to_csv(base / "eval" / "roc.csv", index=False)
        pd.DataFrame({"fpr": fpr * 0.3, "pro": fpr ** 0.5}).to_csv(base / "eval" / "pro.csv", index=False)
        steps = np.arange(1, 11)
        pd.DataFrame({"step": steps, "total": 1.0 / steps,
                      "val_loss": [0.5 / s if s % 5 == 0 else np.nan for s in steps]}).to_csv(
            base / "train" / "history.csv", index=False)
        for rank in range(N_OVERLAYS):
            panel = (rng.random((64, 256, 3)) * 255).astype(np.uint8)
            assert cv2.imwrite(str(base / "eval" / "overlays" / f"{rank:02d}_cut_{rank:03d}.png"), panel)
    return root


@pytest.fixture
def report(tmp_path):
    runs = _fake_runs(tmp_path / "runs")
    return build_report(runs, CATEGORIES + ["tile"], tmp_path / "reports")


def test_table_has_every_category_and_the_mean(report):
    md = report.markdown.read_text()
    assert "| carpet | 0.9500 | 0.8000 | 0.9000 | 0.4000 |" in md
    assert "| wood | 0.8500 | 0.6000 | 0.7000 | 0.6000 |" in md
    # mean over the complete categories only; the missing one is listed, not averaged
    assert "| **mean** | **0.9000** | **0.7000** | **0.8000** | 0.5000 |" in md
    assert "2/3" in md and "tile" in md and "missing" in md
    assert "[index.html](index.html)" in md
    assert report.mean["pixel_auroc"] == pytest.approx(0.9)


def test_html_is_self_contained(report):
    page = report.html.read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", page)
    assert refs, "expected embedded images"
    assert all(r.startswith("data:image/") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert "<script" not in page and "@import" not in page and "url(" not in page
    # 3 plots (ROC, PRO, loss) + gallery, worst first per category
    assert page.count("<img") == 3 + N_OVERLAYS * len(CATEGORIES)
    assert page.index("00_cut_000.png") < page.index("01_cut_001.png")
    assert "image | ground truth | anomaly heatmap | predicted mask" in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_html_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    page = report.html.read_text()
    probe = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.title = 'imgs:' + ok + '/' + imgs.length;
});
</script></body>"""
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", probe))
    profile = tmp_path / "chromium-profile"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
        "--dump-dom", probed.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    match = re.search(r"<title>imgs:(\d+)/(\d+)</title>", proc.stdout)
    assert match, f"no probe result from Chromium (exit {proc.returncode}): {proc.stderr[-2000:]}"
    loaded, total = int(match.group(1)), int(match.group(2))
    assert total == 3 + N_OVERLAYS * len(CATEGORIES)
    assert loaded == total, f"only {loaded} of {total} images rendered"
