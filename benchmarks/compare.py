"""dlcli against a hand-written PyTorch loop, each as a whole process, alternating, medians of wall time.

    python benchmarks/compare.py                       # 1 epoch, batch 32/128/512, 3 repeats, CPU
    python benchmarks/compare.py --epochs 5 --batch-sizes 512 --device cuda
    python benchmarks/compare.py --precisions 32,bf16  # float32 and bf16 autocast side by side (CPU: AVX512-BF16/AMX)

Both train seed 000's CNN on Fashion-MNIST (no validation split) with the same batch size and epochs and report
test accuracy. Wall time is the whole process: interpreter start, imports, data loading, training, test scoring.
Peak memory is each child's own maximum resident set size (os.wait4). dlcli's parsed-data cache is warmed by one
untimed run first (a cold run, which parses the IDX files, is timed once and shown separately).
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
CONFIG = ROOT / "configs" / "fashion_mnist_cnn.yaml"


def measured(cmd: list[str]) -> tuple[float, int, str]:
    """Run `cmd` under a tiny wrapper that reports the child's own peak RSS (os.wait4 on that one child)."""
    wrapper = (
        "import os, subprocess, sys, time, json\n"
        "t = time.perf_counter(); p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "out, err = b'', b''\n"
        "import threading\n"
        "def pump(src, acc):\n"
        "    acc.append(src.read())\n"
        "o, e = [], []\n"
        "ts = [threading.Thread(target=pump, args=(p.stdout, o)), threading.Thread(target=pump, args=(p.stderr, e))]\n"
        "[x.start() for x in ts]\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "[x.join() for x in ts]\n"
        "wall = time.perf_counter() - t\n"
        "code = os.waitstatus_to_exitcode(status)\n"
        "sys.stderr.write(e[0].decode())\n"
        "print(json.dumps({'wall': wall, 'rss_mib': usage.ru_maxrss / 1024, 'code': code, 'out': o[0].decode()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"wrapper failed: {proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        sys.exit(f"failed ({result['code']}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return result["wall"], result["rss_mib"], result["out"]


def plain_cmd(args, batch, precision="32"):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "plain_loop.py"), "--epochs", str(args.epochs),
           "--batch-size", str(batch), "--device", args.device, "--precision", precision]
    return cmd + (["--max-train-samples", str(args.max_train_samples)] if args.max_train_samples else [])


def dlcli_cmd(args, batch, runs_dir, data_root, precision="32"):
    sets = [f"train.epochs={args.epochs}", f"train.batch_size={batch}", "data.val_split=0",
            f"data.root={data_root}", f"train.device={args.device}", f"train.precision={precision}"]
    if args.max_train_samples:
        sets.append(f"data.max_train_samples={args.max_train_samples}")
    cmd = [sys.executable, "-m", "dlcli", "train", str(CONFIG), "--quiet", "--runs-dir", str(runs_dir)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def dlcli_summary(runs_dir: Path, out: str) -> dict:
    run_id = out.strip().splitlines()[-1]
    return json.loads((runs_dir / run_id / "summary.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-sizes", default="32,128,512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="32", help="comma-separated: 32, bf16")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dlcli-bench-"))
    data_root, runs_dir = work / "data", work / "runs"
    results = {"machine": machine(), "epochs": args.epochs, "device": args.device, "batches": []}

    cold_wall, _, _ = measured(dlcli_cmd(args, 512, runs_dir, data_root))  # parses the IDX files, fills the cache
    results["dlcli_cold_wall_seconds_batch512"] = round(cold_wall, 2)
    help_times = [measured([sys.executable, "-m", "dlcli", "--help"])[0] for _ in range(5)]
    results["dlcli_help_seconds"] = round(statistics.median(help_times), 3)

    cases = [(int(b), p) for b in args.batch_sizes.split(",") for p in args.precisions.split(",")]
    for batch, precision in cases:
        plain, ours = [], []
        for _ in range(args.repeats):  # alternate, so drift of the machine hits both alike
            wall, rss, out = measured(plain_cmd(args, batch, precision))
            plain.append((wall, rss, json.loads(out.strip().splitlines()[-1])))
            wall, rss, out = measured(dlcli_cmd(args, batch, runs_dir, data_root, precision))
            ours.append((wall, rss, dlcli_summary(runs_dir, out)))
        row = {
            "batch_size": batch,
            "precision": precision,
            "plain_wall_seconds": round(statistics.median(w for w, _, _ in plain), 2),
            "dlcli_wall_seconds": round(statistics.median(w for w, _, _ in ours), 2),
            "plain_images_per_second": round(statistics.median(r["images_per_second"] for _, _, r in plain)),
            "dlcli_images_per_second": round(statistics.median(s["samples_per_second"] for _, _, s in ours)),
            "plain_test_accuracy": round(statistics.median(r["test_accuracy"] for _, _, r in plain), 4),
            "dlcli_test_accuracy": round(statistics.median(s["test"]["accuracy"] for _, _, s in ours), 4),
            "plain_peak_rss_mib": round(max(m for _, m, _ in plain)),
            "dlcli_peak_rss_mib": round(max(m for _, m, _ in ours)),
        }
        row["wall_ratio_dlcli_over_plain"] = round(row["dlcli_wall_seconds"] / row["plain_wall_seconds"], 3)
        results["batches"].append(row)
        if not args.json:
            print_row(row)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"dlcli --help: {results['dlcli_help_seconds']:.3f} s (median of 5); dlcli cold run (parses the IDX "
              f"files, batch 512): {cold_wall:.1f} s; machine: {results['machine']}")


def print_row(r):
    print(f"batch {r['batch_size']:>4} {r['precision']:>4}: wall {r['dlcli_wall_seconds']:6.2f} s dlcli vs {r['plain_wall_seconds']:6.2f} s "
          f"plain = {r['wall_ratio_dlcli_over_plain']:.3f}x | images/s {r['dlcli_images_per_second']:>6} vs "
          f"{r['plain_images_per_second']:>6} | test acc {r['dlcli_test_accuracy']:.4f} vs {r['plain_test_accuracy']:.4f}"
          f" | peak RSS {r['dlcli_peak_rss_mib']} vs {r['plain_peak_rss_mib']} MiB", flush=True)


def machine() -> str:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
