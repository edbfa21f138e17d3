"""The report stage: table + mean, the figures at the calibrated threshold (per defect type too),
a status that names the floor a category misses, the champion side by side, curves, overlay
gallery, and that the HTML renders offline.

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
from sidn.config import RegisterConfig
from sidn.operating_point import clopper_pearson

CATEGORIES = ["carpet", "wood"]
METRICS = {"carpet": (0.95, 0.80, 0.90), "wood": (0.85, 0.60, 0.70)}
THRESHOLDS = {"carpet": 0.4, "wood": 0.6}
#: (caught, defective, false alarms, good) at the calibrated threshold: wood catches nothing
COUNTS = {"carpet": (57, 60, 2, 40), "wood": (0, 60, 0, 40)}
N_OVERLAYS = 3
FLOORS = RegisterConfig(min_pixel_auroc=0.8, min_catch_rate=0.5, max_false_alarm_rate=0.1)


def op(caught: int, n_def: int, alarms: int, n_good: int, iou: float = 0.45) -> dict:
    """An ``operating_point`` entry as ``sidn.jobs.evaluate_category`` writes it."""
    return {"threshold": 0.5, "catch_rate": caught / n_def, "caught": caught, "n_defective": n_def,
            "false_alarm_rate": alarms / n_good, "false_alarm_ci95": list(clopper_pearson(alarms, n_good)),
            "false_alarms": alarms, "n_good": n_good, "pixel_precision": 0.6, "pixel_recall": 0.7, "pixel_iou": iou}


def _fake_runs(root: Path, categories=CATEGORIES) -> Path:
    rng = np.random.default_rng(0)
    for category in categories:
        base = root / category
        (base / "evaluate" / "overlays").mkdir(parents=True)
        (base / "train").mkdir(parents=True)
        px, pro, img = METRICS[category]
        caught, n_def, alarms, n_good = COUNTS[category]
        (base / "evaluate" / "metrics.json").write_text(json.dumps(
            {"category": category, "pixel_auroc": px, "aupro": pro, "image_auroc": img, "n_images": 100,
             "operating_point": op(caught, n_def, alarms, n_good),
             "per_defect": {"cut": {"pixel_auroc": px - 0.01, "operating_point": op(caught // 3, 20, alarms, n_good, 0.5)},
                            "hole": {"pixel_auroc": px, "operating_point": op(caught - caught // 3, 40, alarms, n_good)}}}))
        (base / "calibration.json").write_text(json.dumps(
            {"threshold": THRESHOLDS[category], "method": "image_far", "image_far": 0.05, "pixel_far": 0.001}))
        fpr = np.linspace(0, 1, 20)
        pd.DataFrame({"fpr": fpr, "tpr": fpr ** 0.3}).to_csv(base / "evaluate" / "roc.csv", index=False)
        pd.DataFrame({"fpr": fpr * 0.3, "pro": fpr ** 0.5}).to_csv(base / "evaluate" / "pro.csv", index=False)
        steps = np.arange(1, 11)
        pd.DataFrame({"step": steps, "total": 1.0 / steps,
                      "val_loss": [0.5 / s if s % 5 == 0 else np.nan for s in steps]}).to_csv(
            base / "train" / "history.csv", index=False)
        for rank in range(N_OVERLAYS):
            panel = (rng.random((64, 256, 3)) * 255).astype(np.uint8)
            assert cv2.imwrite(str(base / "evaluate" / "overlays" / f"{rank:02d}_cut_{rank:03d}.png"), panel)
    return root


@pytest.fixture
def report(tmp_path):
    runs = _fake_runs(tmp_path / "runs")
    return build_report(runs, CATEGORIES + ["tile"], tmp_path / "reports", champions={})


def test_table_has_every_category_and_the_mean(report):
    md = report.markdown.read_text()
    assert "| carpet | 0.9500 | 0.8000 | 0.9000 | 0.4000 |" in md
    assert "| wood | 0.8500 | 0.6000 | 0.7000 | 0.6000 |" in md
    # mean over the complete categories only; the missing one is listed, not averaged
    assert "| **mean** | **0.9000** | **0.7000** | **0.8000** | 0.5000 |" in md
    assert "2/3" in md and "tile" in md and "missing" in md
    assert "[index.html](index.html)" in md
    assert report.mean["pixel_auroc"] == pytest.approx(0.9)


def test_status_names_the_floor_a_category_misses(tmp_path):
    """A category that catches 0 of 60 defective images is not 'ok', whatever its AUROC."""
    runs = _fake_runs(tmp_path / "runs")
    report = build_report(runs, CATEGORIES, tmp_path / "reports", floors=FLOORS, champions={})
    md = report.markdown.read_text()
    carpet = next(line for line in md.splitlines() if line.startswith("| carpet |"))
    wood = next(line for line in md.splitlines() if line.startswith("| wood |"))
    assert carpet.endswith("| ok |")
    assert "0.950 (57/60)" in carpet and "0.050 (2/40) [0.006, 0.169]" in carpet and "0.450" in carpet
    assert "below floor: catch rate 0.000 (0/60) < 0.5" in wood and "| ok |" not in wood
    assert "1/2 pass the floors" in md and "catch rate >= 0.5" in md
    page = report.html.read_text()
    assert "below floor: catch rate 0.000 (0/60) &lt; 0.5" in page and "class='below'" in page
    # a raised pixel-AUROC floor names that floor too
    strict = build_report(runs, ["carpet"], tmp_path / "strict", floors=RegisterConfig(min_pixel_auroc=0.99),
                          champions={})
    assert "below floor: pixel AUROC 0.9500 < 0.99" in strict.markdown.read_text()


def test_per_defect_table_at_the_threshold(report):
    md = report.markdown.read_text()
    assert "## Per defect type at the calibrated threshold" in md
    assert "| carpet | cut | this run | 0.9400 | 0.950 (19/20) | 0.050 (2/40) [0.006, 0.169] | 0.600 | 0.700 | 0.500 |" in md
    assert "| carpet | hole | this run | 0.9500 | 0.950 (38/40) |" in md
    assert "| wood | cut | this run | 0.8400 | 0.000 (0/20) |" in md
    assert "Per defect type at the calibrated threshold" in report.html.read_text()


def test_champion_side_by_side(tmp_path):
    """Where a champion exists, its figures sit in the row under this run's, in both tables."""
    runs = _fake_runs(tmp_path / "runs")
    champion = {"version": 3, "data_version": "abc123", "pixel_auroc": 0.97, "aupro": 0.9, "image_auroc": 0.95,
                "operating_point": op(48, 60, 1, 40),
                "per_defect": {"cut": {"pixel_auroc": 0.96, "operating_point": op(14, 20, 1, 40)},
                               "crack": {"pixel_auroc": 0.9, "operating_point": op(5, 10, 1, 40)}}}
    report = build_report(runs, CATEGORIES, tmp_path / "reports", floors=FLOORS, champions={"carpet": champion})
    lines = report.markdown.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("| carpet |"))
    assert lines[i + 1].startswith("| carpet: champion v3 | 0.9700 | 0.9000 | 0.9500 |")
    assert "0.800 (48/60)" in lines[i + 1] and "serving (data abc123)" in lines[i + 1]
    assert not any(line.startswith("| wood: champion") for line in lines)  # wood has none
    cut = [line for line in lines if line.startswith("| carpet | cut |")]
    assert [line.split(" | ")[2] for line in cut] == ["this run", "champion v3"]
    assert "0.700 (14/20)" in cut[1]
    assert any(line.startswith("| carpet | crack | this run | (no such defect type)") for line in lines)
    page = report.html.read_text()
    assert "carpet: champion v3" in page and "class='champion'" in page


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
