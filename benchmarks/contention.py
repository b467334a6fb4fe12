"""Training beside other busy processes: images/s of `dlcli train` alone and next to N busy-loop processes, with the
thread count dlcli picks (train.threads unset) against torch's default team (every core) and one thread.

    python benchmarks/contention.py                      # seed 000's CNN, 1 epoch of 20,000 images, 0 and 1 busy
    python benchmarks/contention.py --busy 0,1,2 --samples 60000 --repeats 3

A busy process is `while True: pass` in its own Python interpreter (what a second training, a sweep's other trial or
a browser tab does to a core). Fair sharing of C cores among 1 + B busy processes would give the training
C / (1 + B) of its alone speed (for 2 cores and 1 busy process: its single-thread speed, roughly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fashion_mnist_cnn.yaml"


def train(runs_dir: Path, samples: int, threads: str, precision: str) -> tuple[float, int]:
    sets = ["train.epochs=1", "data.val_split=0", f"data.max_train_samples={samples}",
            f"train.precision={precision}"]
    if threads != "auto":
        sets.append(f"train.threads={threads}")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "dlcli", "train", str(CONFIG), "-q", "--runs-dir", str(runs_dir)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        sys.exit(out.stderr[-2000:])
    summary = json.loads((runs_dir / out.stdout.strip().splitlines()[-1] / "summary.json").read_text())
    return summary["samples_per_second"], summary.get("threads")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", default="0,1", help="comma-separated numbers of busy processes beside it")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="32")
    args = parser.parse_args()
    runs_dir = Path(tempfile.mkdtemp(prefix="dlcli-contention-"))
    cores = len(os.sched_getaffinity(0))
    train(runs_dir, 1000, "auto", args.precision)  # fills the parsed-data cache
    print(f"{cores} cores; seed 000's CNN, 1 epoch of {args.samples:,} images, batch 32, precision {args.precision}")
    print(f"{'busy':>4} | {'threads':>12} | {'images/s (median)':>17} | runs")
    for busy in [int(b) for b in args.busy.split(",")]:
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            for threads in ("auto", str(cores), "1"):
                got = [train(runs_dir, args.samples, threads, args.precision) for _ in range(args.repeats)]
                speed = statistics.median(s for s, _ in got)
                used = sorted({t for _, t in got})
                label = f"auto ({','.join(map(str, used))})" if threads == "auto" else threads
                print(f"{busy:>4} | {label:>12} | {speed:>17,.0f} | {', '.join(f'{s:,.0f}' for s, _ in got)}",
                      flush=True)
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()


if __name__ == "__main__":
    main()
