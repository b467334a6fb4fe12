"""Per training step on the CPU: bf16 autocast against float32, the measurement behind `precision: auto`
(dlcli.engine.resolve_precision: bf16 for networks with convolutions or recurrent layers on CPUs with native bf16).

    python benchmarks/bf16_steps.py                     # 4 networks x batches 32, 128, 512, 5 rounds
    python benchmarks/bf16_steps.py --rounds 3 --batches 128 --json

Plain PyTorch, no dlcli code: each network is built here with torch.nn, trained on random inputs with fused Adam
(channels_last for the CNN, as dlcli trains conv networks), one torch thread. A step is forward, loss, backward and
optimizer step; bf16 is `torch.autocast("cpu", torch.bfloat16)` around forward and loss, weights stay float32.
Rounds alternate float32 and bf16; each times enough steps for about --seconds of CPU. The speed-up is float32's
time per step over bf16's, the median over rounds, from CPU time (process_time), which other processes on a shared
machine disturb far less than wall time; the wall-time median is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn


def cnn():  # seed 000: Conv32(3)-MaxPool2-Conv64(3)-MaxPool2-Flatten-Dense128-Dense10, 225,034 parameters
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
    return model.to(memory_format=torch.channels_last), lambda b: torch.randn(b, 1, 28, 28).contiguous(
        memory_format=torch.channels_last), 10


class LSTMClassifier(nn.Module):
    def __init__(self, vocab=10_000, embedding=64, units=128, classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, units, batch_first=True)
        self.head = nn.Linear(units, classes)

    def forward(self, x):
        out, _ = self.lstm(self.embed(x))
        return self.head(out[:, -1])


def lstm():  # over 40 tokens, embedding 64, 128 units
    return LSTMClassifier(), lambda b: torch.randint(0, 10_000, (b, 40)), 2


def mlp():  # seed 001 without its dropout: 784-128-10
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)), \
        lambda b: torch.randn(b, 1, 28, 28), 10


def table_mlp():  # a table's default MLP: 20 features, 64-64, 2 classes
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)), \
        lambda b: torch.randn(b, 20), 2


NETWORKS = {"seed 000's CNN": cnn, "LSTM over 40 tokens (embedding 64, 128 units)": lstm,
            "MLP 784-128-10 (seed 001)": mlp, "table MLP 20-64-64-2": table_mlp}


def stepper(build, batch: int, bf16: bool):
    torch.manual_seed(0)
    model, make_input, classes = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x, y = make_input(batch), torch.randint(0, classes, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def timed(step, steps: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    return (time.process_time() - cpu) / steps, (time.perf_counter() - wall) / steps


def measure(build, batch: int, rounds: int, seconds: float) -> dict:
    steps = {bf16: stepper(build, batch, bf16) for bf16 in (False, True)}
    counts = {}
    for bf16, step in steps.items():  # warm up (oneDNN picks its kernels) and size the rounds
        timed(step, 3)
        per_step, _ = timed(step, 3)
        counts[bf16] = max(3, round(seconds / max(per_step, 1e-6)))
    cpu_ratios, wall_ratios = [], []
    for _ in range(rounds):
        (c32, w32), (c16, w16) = timed(steps[False], counts[False]), timed(steps[True], counts[True])
        cpu_ratios.append(c32 / c16)
        wall_ratios.append(w32 / w16)
    return {"cpu_speedup": round(statistics.median(cpu_ratios), 2),
            "wall_speedup": round(statistics.median(wall_ratios), 2),
            "cpu_speedups": [round(r, 2) for r in cpu_ratios]}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            info = f.read()
        name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                    platform.processor())
        flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
        native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
        return f"{name} ({', '.join(native) or 'no native bf16'})"
    except OSError:
        return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="32,128,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.25, help="CPU seconds per timed round and precision")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    results = {"machine": cpu_name(), "torch": torch.__version__, "threads": 1, "rounds": args.rounds,
               "networks": {}}
    for name, build in NETWORKS.items():
        results["networks"][name] = {str(b): measure(build, b, args.rounds, args.seconds) for b in batches}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{results['machine']}, torch {results['torch']}, 1 thread; bf16 speed-up per training step "
          f"(float32 time / bf16 time), median of {args.rounds} rounds by CPU time (by wall time)")
    print("| network | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("| --- |" + " --- |" * len(batches))
    for name, row in results["networks"].items():
        cells = [f"{row[str(b)]['cpu_speedup']:.2f}x ({row[str(b)]['wall_speedup']:.2f}x)" for b in batches]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
