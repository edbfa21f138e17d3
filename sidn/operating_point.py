"""Figures at the shipped threshold: what a line sees once the model decides.

AUROC and AUPRO are threshold-free; at the calibrated threshold (Sec. III-E: median filter,
threshold, morphology) users approve on how many defective images are caught and how many good
images raise an alarm. Computed on the test split by :func:`sidn.jobs.evaluate_category`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import beta


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) interval of a rate seen ``k`` times in ``n`` trials."""
    if n == 0:
        return float("nan"), float("nan")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def operating_point(
    alarms: Sequence[bool], labels: Sequence[int], pred_masks: Sequence[np.ndarray], true_masks: Sequence[np.ndarray]
) -> dict[str, float | int | list[float]]:
    """Catch rate, false-alarm rate (95 % interval) and pixel precision / recall / IoU.

    ``alarms[i]``: image i has a predicted defect region; ``labels[i]``: 1 = defective.
    Pixel figures pool all images' pixels (predicted mask vs ground truth).
    """
    alarms_a = np.asarray(alarms, bool)
    labels_a = np.asarray(labels, int)
    n_def, n_good = int((labels_a == 1).sum()), int((labels_a == 0).sum())
    caught = int((alarms_a & (labels_a == 1)).sum())
    false_alarms = int((alarms_a & (labels_a == 0)).sum())
    tp = fp = fn = 0
    for p, t in zip(pred_masks, true_masks):
        p, t = p > 0, t > 0
        tp += int((p & t).sum())
        fp += int((p & ~t).sum())
        fn += int((~p & t).sum())
    nan = float("nan")
    return {
        "catch_rate": caught / n_def if n_def else nan,
        "caught": caught,
        "n_defective": n_def,
        "false_alarm_rate": false_alarms / n_good if n_good else nan,
        "false_alarm_ci95": list(clopper_pearson(false_alarms, n_good)),
        "false_alarms": false_alarms,
        "n_good": n_good,
        "pixel_precision": tp / (tp + fp) if tp + fp else nan,
        "pixel_recall": tp / (tp + fn) if tp + fn else nan,
        "pixel_iou": tp / (tp + fp + fn) if tp + fp + fn else nan,
    }
