"""``infer.map_sigma`` on dev models: pixel AUROC, AUPRO, image AUROC of the median-filtered map blurred by sigma.

Paired over sigma in (0, 3, 4, 6, 8, 12) on the same model's maps (dev test splits only, maps at
the network's 256 px, masks resized nearest); how sigma 4 was chosen (README "Detection quality"):

    python experiments/map_sigma.py experiments/runs/commutator-default-s0 ../shared/realdev/kolektorsdd commutator \
        >> experiments/map_sigma.jsonl
"""
import json, sys
from pathlib import Path
import cv2, numpy as np, torch
from sidn.bundle import load_bundle
from sidn.data.mvtec import build_manifest, load_images
from sidn.data.decode import read_mask
from sidn.inference import anomaly_maps, median_filter
from sidn.metrics import pixel_auroc, aupro, image_auroc
torch.set_num_threads(1)
run_dir, data_root, category = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
model, cfg, _ = load_bundle(run_dir / "model.pt")
S = cfg.data.image_size
m = build_manifest(data_root, category); t = m[m["split"] == "test"].reset_index(drop=True)
imgs = load_images(t["path"].tolist(), S)
masks = [cv2.resize(read_mask(p), (S, S), interpolation=cv2.INTER_NEAREST) if p else np.zeros((S, S), np.uint8) for p in t["mask_path"]]
labels = t["label"].astype(int).tolist()
med = [median_filter(a, 5) for a in anomaly_maps(model, imgs, batch_size=16)]
rows = {}
for s in [0, 3, 4, 6, 8, 12]:
    P = med if s == 0 else [cv2.GaussianBlur(np.ascontiguousarray(a), (0, 0), s) for a in med]
    rows[s] = {"pixel_auroc": round(pixel_auroc(P, masks), 4), "aupro": round(aupro(P, masks), 4),
               "image_auroc": round(image_auroc([float(a.max()) for a in P], labels), 4)}
print(json.dumps({"run": run_dir.name, "rows": rows}))
