"""dlcli's `unet` preset against a plain PyTorch loop training the same network on the same pictures.

    python benchmarks/segmentation.py [--n 600] [--size 32] [--epochs 8] [--width 8] [--depth 2] [--seeds 0 1]
                                      [--threads 1]

Writes examples/make_scenes.py's shapes scenes (images/<split>/ beside masks/<split>/, train/val/test) once under
--out, then per seed, each in its own process, timed from start to exit:
  dlcli  `dlcli train` of configs/segmentation.yaml's recipe with --set overrides: data decoded and cached by dlcli
         (a first run fills the cache; it is run once before timing), the run's defaults otherwise (precision auto);
  plain  what a PyTorch user writes: a Dataset reading each PNG pair with PIL (resized like dlcli: bilinear
         pictures, nearest masks) through a DataLoader (2 workers), the same U-Net (dlcli.models.segnets.UNet + a
         1x1 convolution, same initialisation seed), Adam at the same rate, cross-entropy with ignore_index, float32,
         a validation pass per epoch, the last epoch's weights.
Both score the test split with one confusion matrix (scored pixels, ignore_index left out): mIoU over the classes
present. Prints a JSON line per run and a summary: the mIoU of each and dlcli's wall time over the plain loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN = r'''
import json, sys, time
started = time.perf_counter()
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from dlcli.models.segnets import UNet

root, size, epochs, width, depth, lr, batch, seed = sys.argv[1:9]
root, size, epochs, width, depth, lr, batch, seed = Path(root), int(size), int(epochs), int(width), int(depth), \
    float(lr), int(batch), int(seed)
torch.manual_seed(seed)
classes = [l for l in (root / "classes.txt").read_text().splitlines() if l.strip()]
MEAN, STD = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1), torch.tensor([0.25, 0.25, 0.25]).view(3, 1, 1)

class Pairs(Dataset):
    def __init__(self, split):
        self.files = sorted((root / "images" / split).glob("*.png"))
    def __len__(self):
        return len(self.files)
    def __getitem__(self, i):
        f = self.files[i]
        img = Image.open(f).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        mask = Image.open(root / "masks" / f.parent.name / f.name).resize((size, size), Image.Resampling.NEAREST)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
        return (x - MEAN) / STD, torch.from_numpy(np.asarray(mask).astype(np.int64))

model = nn.Sequential(UNet(3, width, depth), nn.Conv2d(width, len(classes), 1))
opt = torch.optim.Adam(model.parameters(), lr=lr)
loss_fn = nn.CrossEntropyLoss(ignore_index=255)
train = DataLoader(Pairs("train"), batch_size=batch, shuffle=True, num_workers=2, persistent_workers=True)
val = DataLoader(Pairs("val"), batch_size=64, num_workers=2, persistent_workers=True)
test = DataLoader(Pairs("test"), batch_size=64, num_workers=2)

def confusion(loader):
    k = len(classes)
    cm = torch.zeros(k * k, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            pred = model(x).argmax(1)
            ok = y != 255
            cm += torch.bincount(y[ok] * k + pred[ok], minlength=k * k)
    model.train()
    return cm.view(k, k).double()

def miou(cm):
    tp = cm.diag(); union = cm.sum(0) + cm.sum(1) - tp
    return (tp[union > 0] / union[union > 0]).mean().item()

for epoch in range(epochs):
    for x, y in train:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    val_miou = miou(confusion(val))
print(json.dumps({"who": "plain", "seed": seed, "test_miou": miou(confusion(test)), "val_miou": val_miou,
                  "wall_seconds": round(time.perf_counter() - started, 2)}))
'''


def timed(cmd, env=None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, cmd[:4]))} failed:\n{result.stderr[-2000:]}")
    return result, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/dlcli-bench-seg")
    parser.add_argument("--n", type=int, default=600, help="scenes written (80%% train, 10%% val, 10%% test)")
    parser.add_argument("--size", type=int, default=32, help="the model's input size (scenes are 96 px)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side (OMP_NUM_THREADS): on a "
                        "busy machine two threads that wait for each other run 10-30x slower than one")
    args = parser.parse_args()

    out = Path(args.out)
    data = out / "shapes"
    if not (data / "classes.txt").is_file():
        sys.path.insert(0, str(ROOT / "examples"))
        from make_scenes import write_scenes

        write_scenes(data, args.n, layouts=("masks",))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    dlcli = [sys.executable, "-m", "dlcli", "train", str(ROOT / "configs" / "segmentation.yaml"), "-q",
             "--runs-dir", str(out / "runs"), "--set", f"data.root={data}", "--set", f"data.image_size={args.size}",
             "--set", f"model.width={args.width}", "--set", f"model.depth={args.depth}",
             "--set", f"optimizer.lr={args.lr}", "--set", f"train.batch_size={args.batch_size}",
             "--set", "scheduler=none", "--set", "data.augment=[]"]
    timed([*dlcli, "--set", "train.epochs=1"], env)  # fills dlcli's decoded cache once, as any earlier run would
    rows = {"dlcli": [], "plain": []}
    for seed in args.seeds:
        result, wall = timed([*dlcli, "--set", f"train.epochs={args.epochs}", "--set", f"seed={seed}"], env)
        run = out / "runs" / result.stdout.strip().splitlines()[-1]
        summary = json.loads((run / "summary.json").read_text())
        row = {"who": "dlcli", "seed": seed, "test_miou": summary["test"]["miou"],
               "precision": summary.get("precision"), "wall_seconds": round(wall, 2)}
        print(json.dumps(row), flush=True)
        rows["dlcli"].append(row)
        result, wall = timed([sys.executable, "-c", PLAIN, str(data), str(args.size), str(args.epochs),
                              str(args.width), str(args.depth), str(args.lr), str(args.batch_size), str(seed)], env)
        row = {**json.loads(result.stdout.strip().splitlines()[-1]), "wall_seconds": round(wall, 2)}
        print(json.dumps(row), flush=True)
        rows["plain"].append(row)
    mean = lambda who, key: sum(r[key] for r in rows[who]) / len(rows[who])  # noqa: E731
    print(json.dumps({"summary": True, "epochs": args.epochs, "size": args.size, "width": args.width,
                      "threads": args.threads,
                      "depth": args.depth, "seeds": args.seeds, "dlcli_miou": round(mean("dlcli", "test_miou"), 4),
                      "plain_miou": round(mean("plain", "test_miou"), 4),
                      "wall_ratio_dlcli_over_plain": round(mean("dlcli", "wall_seconds") /
                                                           mean("plain", "wall_seconds"), 3)}))


if __name__ == "__main__":
    main()
