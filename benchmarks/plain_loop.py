"""The baseline: seed 000's CNN trained on Fashion-MNIST by the loop a competent user writes by hand.

Data read from the IDX files into tensors once, normalised with the training mean and std, shuffled with a seeded
permutation each epoch and batched by indexing; Adam 1e-3; no per-step .item(). Prints one JSON line at the end.
"""

import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default=FASHION)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32", help="bf16: autocast, as dlcli does")
    args = parser.parse_args()
    torch.manual_seed(42)
    device = torch.device(args.device)

    x = torch.from_numpy(read_idx(f"{args.data}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).copy())
    y = torch.from_numpy(read_idx(f"{args.data}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    tx = torch.from_numpy(read_idx(f"{args.data}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).copy())
    ty = torch.from_numpy(read_idx(f"{args.data}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    if args.max_train_samples:
        x, y = x[: args.max_train_samples], y[: args.max_train_samples]
    x = x.float().div(255)
    mean, std = x.mean(), x.std()
    x = ((x - mean) / std).to(device)
    tx = ((tx.float().div(255) - mean) / std).to(device)
    y, ty = y.to(device), ty.to(device)

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(y), device=device)
        for i in range(0, len(y), args.batch_size):
            idx = order[i : i + args.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(x[idx])
            loss = loss_fn(logits.float(), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - started

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(ty), 1024):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                correct += (model(tx[i : i + 1024]).argmax(1) == ty[i : i + 1024]).sum().item()
    print(json.dumps({"train_seconds": train_seconds, "images_per_second": len(y) * args.epochs / train_seconds,
                      "test_accuracy": correct / len(ty)}))


if __name__ == "__main__":
    main()
