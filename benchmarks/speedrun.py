"""The Fashion-MNIST speed-run: `dlcli train configs/fashion_mnist_speedrun.yaml` per seed, whole-process wall time
(interpreter start to exit: imports, data, training, test scoring, run files) and test accuracy.

    python benchmarks/speedrun.py                 # seeds 0, 1, 2
    python benchmarks/speedrun.py --seeds 0 --set train.epochs=8

The parsed-data cache is warmed by one untimed run of 1,000 images first: a user's second run reads it too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fashion_mnist_speedrun.yaml"


def train(runs_dir: Path, sets: list[str]) -> tuple[float, Path]:
    """(wall seconds, run directory) of one `dlcli train` of the speed-run config with `--set` overrides."""
    cmd = [sys.executable, "-m", "dlcli", "train", str(CONFIG), "-q", "--runs-dir", str(runs_dir)]
    for s in sets:
        cmd += ["--set", s]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if out.returncode:
        sys.exit(out.stderr[-2000:])
    return wall, runs_dir / out.stdout.strip().splitlines()[-1]


def run(runs_dir: Path, sets: list[str]) -> tuple[float, dict]:
    wall, found = train(runs_dir, sets)
    return wall, json.loads((found / "summary.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], help="extra --set overrides")
    args = parser.parse_args()
    runs_dir = Path(tempfile.mkdtemp(prefix="dlcli-speedrun-"))
    run(runs_dir, ["data.max_train_samples=1000", "train.epochs=1"])
    print(f"{'seed':>4} | {'wall s':>7} | {'train s':>7} | {'images/s':>8} | {'precision':>9} | test accuracy")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        wall, summary = run(runs_dir, [f"seed={seed}", *args.set])
        rows.append((wall, summary["test"]["accuracy"]))
        print(f"{seed:>4} | {wall:7.1f} | {summary['train_seconds']:7.1f} | {summary['samples_per_second']:8,.0f} | "
              f"{summary['precision']:>9} | {summary['test']['accuracy']:.4f}", flush=True)
    walls, accs = zip(*rows)
    print(f"mean | {statistics.mean(walls):7.1f} | {'':7} | {'':8} | {'':9} | {statistics.mean(accs):.4f}"
          f" (min {min(accs):.4f})")


if __name__ == "__main__":
    main()
