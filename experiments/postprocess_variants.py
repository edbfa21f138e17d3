"""Post-processing, image-score and test-time-flip variants, scored on already trained dev models.

Paired comparison: every variant is scored on the same model's maps, so seed spread does not
enter. Dev test splits only (``experiments/dev.py`` trained the models into experiments/runs/):

    python experiments/postprocess_variants.py experiments/runs/tile-default-s0 data/raw/sidn-dev tile \
        >> experiments/postprocess_variants.jsonl

Maps at the network's 256 px (masks resized nearest), so figures differ slightly from the
pipeline's, which scores at the masks' original size. Rows: ``<maps>/<post>`` with maps ``raw``
(one pass), ``tta_h`` (mean with the horizontal flip), ``tta_hv`` (four flips); post ``med5`` (the
default median), ``med3``, ``med9``, ``g2`` (Gaussian only), ``med5_g2`` / ``med5_g4`` (median then
Gaussian sigma 2 / 4); image scores ``max``, ``g4max`` / ``g8max`` (max of a blurred map),
``topK`` (mean of the K highest pixels).
"""
import json, sys
from pathlib import Path
import cv2, numpy as np, torch
from dev_split import load_dev_split
from sidn.inference import anomaly_maps, median_filter
from sidn.metrics import pixel_auroc, aupro, image_auroc

torch.set_num_threads(1)
run_dir, data_root, category = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
model, imgs, masks, labels = load_dev_split(run_dir, data_root, category)
raw = anomaly_maps(model, imgs, batch_size=16)
def tta(flips):
    acc = raw.copy()
    for f in flips:
        acc += f(anomaly_maps(model, np.ascontiguousarray(f(imgs)), batch_size=16))
    return acc / (1 + len(flips))
hf = lambda a: a[:, :, ::-1]; vf = lambda a: a[:, ::-1, :]; hvf = lambda a: a[:, ::-1, ::-1]
maps_sets = {"raw": raw, "tta_h": tta([hf]), "tta_hv": tta([hf, vf, hvf])}
rows = {}
for mname, mm in maps_sets.items():
    for post in ["med5", "med3", "med5_g2", "med5_g4", "g2", "med9"]:
        if mname != "raw" and post not in ("med5", "med5_g2"):
            continue
        def pp(a):
            if post.startswith("med"):
                k = int(post[3]); a = median_filter(a, k)
            if "g" in post.split("_")[-1]:
                s = float(post.split("g")[-1]); a = cv2.GaussianBlur(np.ascontiguousarray(a), (0, 0), s)
            return a
        P = [pp(a) for a in mm]
        r = {"pixel_auroc": round(pixel_auroc(P, masks), 4), "aupro": round(aupro(P, masks), 4)}
        for sc in ["max", "g4max", "g8max", "top10", "top100", "top500", "top2000"]:
            if sc == "max": s = [float(a.max()) for a in P]
            elif sc.startswith("g"): s = [float(cv2.GaussianBlur(a, (0, 0), float(sc[1:-3])).max()) for a in P]
            else:
                k = int(sc[3:]); s = [float(np.partition(a.ravel(), -k)[-k:].mean()) for a in P]
            r[f"img_{sc}"] = round(image_auroc(s, labels), 4)
        rows[f"{mname}/{post}"] = r
print(json.dumps({"run": run_dir.name, "category": category, "rows": rows}))
