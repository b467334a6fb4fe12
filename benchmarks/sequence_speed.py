"""Training speed on numeric sequences: an LSTM, a GRU and a 1-D CNN through dlcli against a plain PyTorch loop.

    python benchmarks/sequence_speed.py [--series 6000] [--steps 64] [--epochs 3] [--repeats 5] [--threads 1]

One seeded set of series (N, steps, 3 channels; four classes, each a noisy sine of its own period) is saved as a
.npz and trained on by both sides, with the same model, Adam at lr 1e-3, batch 64, float32, the same epochs, 10% of
the series held out for validation and scored after every epoch:

- dlcli: `dataset: sequences` on the .npz, `model: {type: lstm|gru, hidden_size: 64}` or
  `{type: fcn, filters: [32, 64, 32], kernel_sizes: [7, 5, 3]}`, through `dlcli.train` in this process; the figure
  is summary.json's train_seconds (the epochs, their validation and the checkpoint writes); `train.precise_bn` is
  off, as the plain loop does not recompute batchnorm statistics either.
- plain: the loop a competent user writes: the same arrays in memory, standardised per channel once, the network
  built from torch.nn (the series transposed once to (N, channels, steps) for the CNN), a seeded permutation per
  epoch, batches cut by indexing, no `.item()` per step; timed from the first epoch to the last validation.

Each model's two sides alternate in every repeat (the order flips between repeats), and the figure per model is the
median over the repeats of dlcli's seconds over plain's (goal: 1.0 or below). Both use `--threads` CPU threads (default
1: on a machine whose cores other processes keep busy, two OpenMP threads that wait for each other ran these small
models 20 to 50 times slower, which says nothing about either side).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHANNELS, CLASSES, BATCH, LR, HIDDEN = 3, 4, 64, 1e-3, 64
CNN = ([32, 64, 32], [7, 5, 3])
MODELS = {
    "lstm": {"type": "lstm", "hidden_size": HIDDEN},
    "gru": {"type": "gru", "hidden_size": HIDDEN},
    "conv1d": {"type": "fcn", "filters": CNN[0], "kernel_sizes": CNN[1]},
}


def make_series(n: int, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    t = np.arange(steps)[None, :, None]
    period = (4 + 3 * y)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, CHANNELS))
    x = np.sin(2 * np.pi * t / period + phase) + 0.8 * rng.normal(size=(n, steps, CHANNELS))
    return x.astype(np.float32), y


def plain_model(kind: str, steps: int):
    import torch
    from torch import nn

    class Recurrent(nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.rnn = cell(CHANNELS, HIDDEN, batch_first=True)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            _, h = self.rnn(x)
            return self.head((h[0] if isinstance(h, tuple) else h)[-1])

    if kind in ("lstm", "gru"):
        return Recurrent(nn.LSTM if kind == "lstm" else nn.GRU)
    layers, width = [], CHANNELS
    for filters, kernel in zip(*CNN):
        layers += [nn.Conv1d(width, filters, kernel, padding="same"), nn.BatchNorm1d(filters, eps=1e-3, momentum=0.01),
                   nn.ReLU()]
        width = filters
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, CLASSES))


def plain_run(kind: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> tuple[float, float]:
    """(seconds of the epochs and their validation, validation accuracy)."""
    import torch

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.randperm(len(ys), generator=g)
    n_val = len(ys) // 10
    val, train = order[:n_val], order[n_val:]
    mean, std = xs[train].mean((0, 1)), xs[train].std((0, 1))
    xs = (xs - mean) / std
    if kind == "conv1d":
        xs = xs.transpose(1, 2).contiguous()
    x_train, y_train, x_val, y_val = xs[train], ys[train], xs[val], ys[val]
    model = plain_model(kind, x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=g)
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        correct = torch.zeros((), dtype=torch.long)
        with torch.no_grad():
            for i in range(0, len(y_val), 1024):
                correct += (model(x_val[i:i + 1024]).argmax(1) == y_val[i:i + 1024]).sum()
    seconds = time.perf_counter() - started
    return seconds, correct.item() / len(y_val)


def dlcli_run(kind: str, npz: Path, runs: Path, epochs: int, seed: int, threads: int) -> tuple[float, float]:
    import dlcli

    cfg = {"name": kind, "seed": seed, "data": {"dataset": "sequences", "train_file": str(npz), "val_split": 0.1,
                                                "test_split": 0.01},
           "model": MODELS[kind], "optimizer": {"name": "adam", "lr": LR},
           # precise_bn off: the plain loop keeps batchnorm's running averages as they come, and so does this side
           "train": {"epochs": epochs, "batch_size": BATCH, "precision": "32", "threads": threads,
                     "precise_bn": False}}
    run = dlcli.train(cfg, runs_dir=runs, quiet=True)
    return run.summary["train_seconds"], run.summary["best_metric"]["value"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    x, y = make_series(args.series, args.steps)
    ratios: dict[str, list[float]] = {k: [] for k in args.models}
    seconds: dict[str, dict[str, list[float]]] = {k: {"dlcli": [], "plain": []} for k in args.models}
    accuracy: dict[str, dict[str, list[float]]] = {k: {"dlcli": [], "plain": []} for k in args.models}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "series.npz"
        np.savez(npz, x=x, y=y)
        for repeat in range(args.repeats):
            for kind in args.models:
                sides = ["dlcli", "plain"] if repeat % 2 == 0 else ["plain", "dlcli"]
                for side in sides:
                    if side == "dlcli":
                        s, acc = dlcli_run(kind, npz, Path(tmp) / "runs", args.epochs, repeat, args.threads)
                    else:
                        s, acc = plain_run(kind, x, y, args.epochs, repeat)
                    seconds[kind][side].append(s)
                    accuracy[kind][side].append(acc)
                    print(f"repeat {repeat + 1} {kind} {side}: {s:.2f}s", file=sys.stderr, flush=True)
                ratios[kind].append(seconds[kind]["dlcli"][-1] / seconds[kind]["plain"][-1])
    print(f"{args.series:,} series x {args.steps} steps x {CHANNELS} channels, {args.epochs} epochs, batch {BATCH}, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'model':<8}{'dlcli s':>9}{'plain s':>9}{'dlcli/plain':>13}{'val acc dlcli':>15}{'plain':>7}")
    for kind in args.models:
        med = {side: statistics.median(v) for side, v in seconds[kind].items()}
        acc = {side: statistics.median(v) for side, v in accuracy[kind].items()}
        print(f"{kind:<8}{med['dlcli']:>9.2f}{med['plain']:>9.2f}{statistics.median(ratios[kind]):>13.3f}"
              f"{acc['dlcli']:>15.3f}{acc['plain']:>7.3f}")


if __name__ == "__main__":
    main()
