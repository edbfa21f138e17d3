"""``infer.map_sigma`` on dev models: pixel AUROC, AUPRO, image AUROC of the median-filtered map blurred by sigma.

Paired over sigma in (0, 3, 4, 6, 8, 12) on the same model's maps (dev test splits only, maps at
the network's 256 px, masks resized nearest); how sigma 4 was chosen (README "Detection quality"):

    python experiments/map_sigma.py experiments/runs/commutator-default-s0 ../shared/realdev/kolektorsdd commutator \
        >> experiments/map_sigma.jsonl
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
med = [median_filter(a, 5) for a in anomaly_maps(model, imgs, batch_size=16)]
rows = {}
for s in [0, 3, 4, 6, 8, 12]:
    P = med if s == 0 else [cv2.GaussianBlur(np.ascontiguousarray(a), (0, 0), s) for a in med]
    rows[s] = {"pixel_auroc": round(pixel_auroc(P, masks), 4), "aupro": round(aupro(P, masks), 4),
               "image_auroc": round(image_auroc([float(a.max()) for a in P], labels), 4)}
print(json.dumps({"run": run_dir.name, "rows": rows}))
