"""A nearest-neighbour memory of defect-free features as a second anomaly score, on trained dev models.

The idea (ours, not the paper's; PatchCore's, without pretrained weights): keep the FEM features
(eq. 2, ``Z`` [2C, H/2, W/2], 3x3-average-pooled to H/4, and with ``--stride 8`` 2x2-pooled again
to H/8, as ``sidn.feature_memory`` does) of 60 defect-free training images as a memory bank
(``--rows`` random positions, standardised per channel), and score each test position by its
distance to the nearest bank row (``--sampling coreset`` picks the rows by greedy k-centre selection,
``sidn.feature_memory.greedy_coreset``, instead of at random). Three variants are scored against the SIDN map (median 5
then ``infer.map_sigma`` 4, as the pipeline does), each as pixel AUROC / AUPRO / image AUROC (max):

* ``knn``: the distance map alone;
* ``fusedmap``: both maps standardised by their mean and spread on 20 other defect-free training
  images, then added;
* ``img_fused``: image AUROC of the sum of both image scores (max), each standardised by its mean
  and spread on those 20 images (the SIDN pixel map is kept).

Paired: every variant is scored on the same model, dev test splits only
(``experiments/dev.py`` trained the models into experiments/runs/)::

    python experiments/feature_memory.py experiments/runs/tile-base200-s0 data/raw/sidn-dev tile \
        --rows 16000 --stride 4 >> experiments/feature_memory.jsonl

Maps at the network's 256 px (masks resized nearest), so figures differ slightly from the pipeline's.
"""
import argparse
import json
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dev_split import load_dev_split
from sidn.data.mvtec import build_manifest, load_images
from sidn.feature_memory import greedy_coreset
from sidn.heap import reuse_heap
from sidn.inference import anomaly_maps, median_filter
from sidn.metrics import aupro, image_auroc, pixel_auroc

BANK_IMAGES, NORM_IMAGES = 60, 20

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("run")
ap.add_argument("data")
ap.add_argument("category")
ap.add_argument("--rows", type=int, default=8000, help="bank rows (the pipeline's infer.memory_rows)")
ap.add_argument("--stride", type=int, choices=(4, 8), default=8, help="feature stride (the pipeline: 8)")
ap.add_argument("--sampling", choices=("random", "coreset"), default="random", help="how bank rows are chosen")
ap.add_argument("--input", type=int, default=256, help="size the FEM sees (the pipeline: 256, the network's input)")
args = ap.parse_args()
run, data, category, BANK_ROWS = args.run, args.data, args.category, args.rows
torch.set_num_threads(1)
model, images, masks, labels = load_dev_split(run, data, category)
model.eval().float()
manifest = build_manifest(data, category)
paths = manifest[manifest["split"] == "train"]["path"].tolist()
bank_images = load_images(paths[:BANK_IMAGES], 256)
norm_images = load_images(paths[BANK_IMAGES:BANK_IMAGES + NORM_IMAGES], 256)
captured = {}
model.fem.register_forward_hook(lambda m, i, o: captured.__setitem__("z", o))


def fem_features(x: np.ndarray) -> torch.Tensor:
    out = []
    if args.input != 256:
        x = np.stack([cv2.resize(a, (args.input, args.input), interpolation=cv2.INTER_AREA) for a in x])
    with torch.inference_mode():
        for i in range(0, len(x), 16):
            model(torch.from_numpy(np.ascontiguousarray(x[i:i + 16])).float()[:, None])
            f = F.avg_pool2d(captured["z"].float(), 3, 2, 1)
            out.append(F.avg_pool2d(f, 2) if args.stride == 8 else f)
    return torch.cat(out)


def sidn_maps(x: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(median_filter(a, 5), (0, 0), 4) for a in anomaly_maps(model, x, batch_size=16)])


row = {"run": run, "category": category, "bank_images": BANK_IMAGES, "bank_rows": BANK_ROWS, "stride": args.stride, "input": args.input,
       "sampling": args.sampling}
with reuse_heap():
    t0 = time.time()
    feats = fem_features(bank_images)
    dim = feats.shape[1]
    bank = feats.permute(0, 2, 3, 1).reshape(-1, dim)
    mu, sd = bank.mean(0), bank.std(0) + 1e-6
    bank = (bank - mu) / sd
    if args.sampling == "coreset":
        bank = bank[greedy_coreset(bank, BANK_ROWS)]
    else:
        bank = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[:BANK_ROWS]]
    bank_sq = (bank * bank).sum(1)

    def knn_maps(x: np.ndarray) -> np.ndarray:
        maps = []
        for f in fem_features(x):
            q = (f.permute(1, 2, 0).reshape(-1, dim) - mu) / sd
            d2 = torch.cat([((c * c).sum(1, keepdim=True) - 2 * c @ bank.T + bank_sq).min(1).values for c in q.split(512)])
            d = d2.clamp_min(0).sqrt().reshape(f.shape[1:]).numpy()
            maps.append(cv2.GaussianBlur(cv2.resize(d, (256, 256)), (0, 0), 4))
        return np.stack(maps)

    def score(name: str, maps: np.ndarray) -> None:
        row[name] = [round(pixel_auroc(list(maps), masks), 4), round(aupro(list(maps), masks), 4),
                     round(image_auroc([float(a.max()) for a in maps], labels), 4)]

    sidn_test, sidn_norm = sidn_maps(images), sidn_maps(norm_images)
    knn_test, knn_norm = knn_maps(images), knn_maps(norm_images)
    score("sidn", sidn_test)
    score("knn", knn_test)
    score("fusedmap", (sidn_test - sidn_norm.mean()) / sidn_norm.std() + (knn_test - knn_norm.mean()) / knn_norm.std())
    peak = lambda maps: np.array([a.max() for a in maps])
    z = lambda v, ref: (v - ref.mean()) / (ref.std() + 1e-9)
    fused = z(peak(sidn_test), peak(sidn_norm)) + z(peak(knn_test), peak(knn_norm))
    row["img_fused"] = round(image_auroc(list(fused), labels), 4)
    row["seconds"] = round(time.time() - t0, 1)
print(json.dumps(row))
