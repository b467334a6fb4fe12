"""Fine-tuning throughput: `dlcli train` against a plain PyTorch loop doing the same, in images/s.

    python benchmarks/finetune.py                      # resnet18, mobilenet_v3_small x 64, 128 px x frozen or not
    python benchmarks/finetune.py --archs resnet18 --sizes 64 --images 256 --repeats 3 --threads 2
    python benchmarks/finetune.py --device cuda --images 4096 --batch-size 128
    python benchmarks/finetune.py --json
    python benchmarks/finetune.py --layouts --sizes 32 64 96 128   # NCHW against channels_last, per training step

Both sides train torchvision's network with a new 10-class linear layer on uint8 RGB images already at the size (no
resize), normalised per batch with ImageNet's mean and std, Adam at lr 1e-3, float32, batch 32. The weights come from
a file saved from torchvision (its random initial values: the speed is the same, and nothing is downloaded).
"frozen": the backbone gets no gradient and its BatchNorm layers run in eval mode; only the new layer trains.

- dlcli: `model: {type: backbone, arch, weights: FILE}` (+ `train.freeze: backbone`) on an image folder of random
  PNGs (train/ and a small test/, no validation split), as a whole `dlcli train` process, with `train.precise_bn:
  false` unless `--precise-bn` says otherwise (recomputing BatchNorm statistics is work the plain loop does not do).
- plain: this file with `--plain`: the network built and loaded the same way, `fc` / the classifier's last layer
  replaced, random uint8 tensors in memory, a seeded permutation per epoch, batches cut by indexing, no `.item()` per
  step: the loop a competent user writes (NCHW, torch's default Adam; dlcli uses the fused Adam, and channels_last
  where train.channels_last: auto picks it).

`--layouts` measures what `train.channels_last: auto` (dlcli.engine.use_channels_last) decides by: one process, one
thread, a training step (forward, backward, fused Adam) at batch 32 of each network in NCHW and in channels_last,
alternating, frozen (only the new layer trains) or trained, with seed 000's CNN on 28x28 digits besides; the figure
is channels_last's images/s over NCHW's (median of the steps), with what the rule chooses.

Images/s is the training loop alone: each side trains `--epochs` epochs of `--images` images and the first (warm-up:
allocation, oneDNN's kernel choice) is dropped; the figure is the median over the other epochs and the repeats (the
two sides alternate). Processes use `--threads` CPU threads (default 1: the benchmark machine's cores are shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


# ---------------------------------------------------------------- the plain loop


def new_head(model, arch: str, classes: int):
    """torchvision's fine-tuning recipe: the last Linear replaced by one for the new classes."""
    from torch import nn

    if arch.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, classes)
        return model.fc
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, classes)
    return model.classifier[-1]


def plain(args) -> dict:
    import torch
    import torchvision.models as tvm
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = tvm.get_model(args.arch)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    head = new_head(model, args.arch, 10)
    model.to(device)
    x = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (args.images,), device=device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    if args.frozen:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(args.epochs):
        model.train()
        if args.frozen:  # the backbone's BatchNorm layers keep their statistics
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        started = time.perf_counter()
        order = torch.randperm(args.images, device=device)
        for i in range(0, args.images, args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = loss_fn(model((x[idx].float() - mean) / std), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds}


# ---------------------------------------------------------------- NCHW against channels_last


def seed000():
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))


def layouts(arch: str, size: int, frozen: bool, args) -> dict:
    """Images/s of a training step in NCHW and in channels_last, alternating; and what dlcli's rule picks."""
    import torch
    import torchvision.models as tvm
    from torch import nn

    from dlcli.engine import use_channels_last

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = seed000() if arch == "seed000" else tvm.get_model(arch, num_classes=10)
    channels = 1 if arch == "seed000" else 3
    head = model[-1] if arch == "seed000" else new_head(model, arch, 10)
    for p in model.parameters():
        p.requires_grad_(not frozen)
    for p in head.parameters():
        p.requires_grad_(True)
    chosen = use_channels_last("auto", model, (channels, size, size))
    x = torch.randn(args.batch_size, channels, size, size)
    y = torch.randint(0, 10, (args.batch_size,))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    seconds = {False: [], True: []}
    for rep in range(args.steps + 1):  # the first round warms both layouts up
        for nhwc in (False, True):
            fmt = torch.channels_last if nhwc else torch.contiguous_format
            model.to(memory_format=fmt).train()
            if frozen:
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            xb = x.contiguous(memory_format=fmt)
            started = time.perf_counter()
            loss = nn.functional.cross_entropy(model(xb), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if rep:
                seconds[nhwc].append(time.perf_counter() - started)
    nchw, nhwc = (args.batch_size / statistics.median(seconds[k]) for k in (False, True))
    return {"arch": arch, "size": size, "backbone": "frozen" if frozen else "trained",
            "nchw_images_per_s": round(nchw, 1), "channels_last_images_per_s": round(nhwc, 1),
            "ratio": round(nhwc / nchw, 3), "auto_chooses": "channels_last" if chosen else "NCHW"}


# ---------------------------------------------------------------- dlcli


def image_folder(root: Path, images: int, size: int) -> None:
    """`images` random RGB PNGs in 10 class folders under train/, and 2 per class under test/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("test", 20)):
        for i in range(count):
            folder = root / split / f"c{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def dlcli(args, folder: Path, weights: Path, frozen: bool, work: Path) -> dict:
    import yaml

    cfg = {"name": "finetune", "seed": 0,
           "data": {"dataset": "image_folder", "root": str(folder), "image_size": args.size, "channels": 3,
                    "val_split": 0.0, "cache": False},
           "model": {"type": "backbone", "arch": args.arch, "weights": str(weights)},
           "optimizer": {"name": "adam", "lr": 0.001},
           "train": {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device,
                     "precision": "32", "threads": args.threads, "channels_last": args.channels_last,
                     "precise_bn": args.precise_bn,
                     **({"freeze": "backbone"} if frozen else {})}}
    path = work / f"{args.arch}-{args.size}-{int(frozen)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = work / "runs"
    done = subprocess.run([sys.executable, "-m", "dlcli", "train", str(path), "--runs-dir", str(runs), "-q"],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"dlcli train failed: {done.stderr[-2000:]}")
    run = runs / done.stdout.strip().splitlines()[-1]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": [r["seconds"] for r in rows]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenet_v3_small"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--images", type=int, default=256, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="the first is a warm-up and not counted")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", nargs="+", choices=["auto", "true", "false"], default=["auto"],
                        help="dlcli's train.channels_last (auto: dlcli.engine.use_channels_last decides); several: "
                             "each runs in every repeat, against the same plain loop")
    parser.add_argument("--precise-bn", choices=["false", "auto", "true"], default="false",
                        help="dlcli's train.precise_bn (default false: the plain loop recomputes no statistics)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--layouts", action="store_true",
                        help="NCHW against channels_last per training step, in this process (seed 000's CNN too)")
    parser.add_argument("--steps", type=int, default=8, help="--layouts: timed steps per layout")
    # one plain run, as a child process of this script
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--frozen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.precise_bn = {"true": True, "false": False}.get(args.precise_bn, "auto")
    if args.plain:
        print(json.dumps(plain(args)))
        return
    if args.layouts:
        sys.path.insert(0, str(ROOT))
        rows = []
        for arch, size in [("seed000", 28)] + [(a, s) for a in args.archs for s in args.sizes]:
            for frozen in (True, False):
                rows.append(r := layouts(arch, size, frozen, args))
                if not args.json:
                    print(f"| {arch} | {size} | {r['backbone']} | {r['nchw_images_per_s']:,.1f} | "
                          f"{r['channels_last_images_per_s']:,.1f} | **{r['ratio']:.2f}** | {r['auto_chooses']} |",
                          flush=True)
        if args.json:
            print(json.dumps(rows, indent=2))
        return

    import torch
    import torchvision.models as tvm

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for arch in args.archs:
            weights = work / f"{arch}.pth"
            torch.manual_seed(0)
            torch.save(tvm.get_model(arch).state_dict(), weights)
            for size in args.sizes:
                folder = work / f"images-{size}"
                if not folder.exists():
                    image_folder(folder, args.images, size)
                for frozen in (True, False):
                    one = argparse.Namespace(**{**vars(args), "arch": arch, "size": size})
                    times = {"plain": [], **{layout: [] for layout in args.channels_last}}
                    for _ in range(args.repeats):
                        cmd = [sys.executable, __file__, "--plain", "--arch", arch, "--size", str(size),
                               "--weights", str(weights), "--images", str(args.images), "--epochs", str(args.epochs),
                               "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                               "--device", args.device, *(["--frozen"] if frozen else [])]
                        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                        if done.returncode:
                            sys.exit(f"plain loop failed: {done.stderr[-2000:]}")
                        times["plain"] += json.loads(done.stdout.strip().splitlines()[-1])["seconds"][1:]
                        for layout in args.channels_last:
                            one.channels_last = {"true": True, "false": False}.get(layout, "auto")
                            times[layout] += dlcli(one, folder, weights, frozen, work)["seconds"][1:]
                    rate = {side: args.images / statistics.median(s) for side, s in times.items()}
                    for layout in args.channels_last:
                        rows.append({"arch": arch, "size": size, "backbone": "frozen" if frozen else "trained",
                                     "channels_last": layout, "dlcli_images_per_s": round(rate[layout], 1),
                                     "plain_images_per_s": round(rate["plain"], 1),
                                     "ratio": round(rate[layout] / rate["plain"], 3)})
                        if not args.json:
                            r = rows[-1]
                            print(f"| {arch} | {size} | {r['backbone']} | {layout} | {r['dlcli_images_per_s']:,.1f} "
                                  f"| {r['plain_images_per_s']:,.1f} | **{r['ratio']:.2f}** |", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
