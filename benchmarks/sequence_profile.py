"""Where a sequence run's time goes: configs/sequences_fcn.yaml on UCR/UEA problems, split into training steps,
BatchNorm recalibration (train.precise_bn), the recorder's per-epoch writes and what lies outside the fit.

    python benchmarks/sequence_profile.py --problems GunPoint ArrowHead --epochs 20
    python benchmarks/sequence_profile.py --problems ArrowHead --ops        # + the operators of one training step
    python benchmarks/sequence_profile.py --problems GunPoint ArrowHead --holdout 0 \
        --candidate 'model={type: resnet1d, filters: [32, 64, 64]}'           # full runs: recipe against a candidate

The data are the validation holdouts of benchmarks/sequence_classification.py (its --validation cut of the official
train splits, seeded by --holdout, 0 unless given; written by the benchmark environment, --bench-python): no test series is read. Each problem
trains twice, interleaved, with one thread: precise_bn auto (the recipe) and precise_bn false. From summary.json and
metrics.jsonl:
  steps       the epochs' seconds with precise_bn false (forward, backward, optimizer, augmentation)
  precise_bn  the epochs' seconds with it, less those without (one forward pass over the split per epoch)
  recorder    train_seconds less the epochs' seconds (metrics.jsonl, last.pt every epoch, best.pt when it improves;
              since precise_bn auto without a validation split recomputes only for the epochs a checkpoint keeps,
              that recomputation is counted here and the precise_bn column is about 0: the table in
              benchmarks/README.md was taken before; --candidate train.precise_bn=true times the two)
  outside     wall_seconds less train_seconds (start-up in-process, data, test scoring, curves.png)
  start-up    the whole `python -m dlcli train` less wall_seconds (the interpreter, imports, config)
  process     the whole `python -m dlcli train`
best.pt writes: the epochs whose training accuracy (ties: lower loss) beat every earlier one, the recorder's rule
with no validation split. --ops profiles training steps of the config's model at its batch size with torch.profiler
and prints the operators' share of the time.

--candidate (repeatable: one override each) trains the whole recipe and the recipe with those overrides instead,
alternating which goes first, and prints each one's holdout accuracy and seconds a process, and the ratio of the
mean seconds.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequence_classification import BASELINES, CONFIG, PROBLEMS, ROOT


def one_run(work: Path, name: str, overrides: list[str]) -> dict:
    runs = work / "runs"
    tag = f"{name}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "dlcli", "train", str(CONFIG), "--runs-dir", str(runs), "--quiet",
           "--set", f"name={tag}", "--set", f"data.train_file={work / f'{name}_train.npz'}",
           "--set", f"data.test_file={work / f'{name}_test.npz'}", "--set", "train.threads=1"]
    for s in overrides:
        cmd += ["--set", s]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    process = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"dlcli train failed on {name}: {done.stderr.strip()[-400:]}")
    run = next(runs.glob(f"{tag}-*"))
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best, kept = None, 0
    for m in metrics:
        key = (m["train_accuracy"], -m["train_loss"])
        if best is None or key > best:
            best, kept = key, kept + 1
    return {"epochs_s": sum(m["seconds"] for m in metrics), "train_s": summary["train_seconds"],
            "wall_s": summary["wall_seconds"], "process_s": process, "best_writes": kept,
            "accuracy": summary["test"]["accuracy"]}  # the holdout: test_file is the cut of the train split


def op_shares(name: str, work: Path, overrides: list[str]) -> list[tuple[str, float]]:
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from dlcli.config import load_config
    from dlcli.models import build_model

    torch.set_num_threads(1)
    cfg = load_config(CONFIG, overrides)
    x = np.load(work / f"{name}_train.npz")["x"]
    shape = tuple(x.shape[1:])
    model, _ = build_model(cfg.model, shape, 4)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    xb, yb = torch.randn(cfg.train.batch_size, *shape), torch.randint(0, 4, (cfg.train.batch_size,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in rows)
    return [(k, t / total) for k, t in sorted(rows, key=lambda r: -r[1])[:8]]


def compare(work: Path, args) -> None:
    """Full runs of the recipe and of the recipe with the --candidate overrides, alternating which goes first,
    scored on the holdout; seconds are the whole process."""
    print(f"holdout accuracy and seconds a run (median of {args.repeats}), recipe against "
          f"{' '.join(args.candidate)}")
    rows = []
    for name in args.problems:
        got = {"recipe": [], "candidate": []}
        for r in range(args.repeats):
            order = ("recipe", "candidate") if r % 2 == 0 else ("candidate", "recipe")
            for side in order:
                got[side].append(one_run(work, name, args.overrides + (args.candidate if side == "candidate" else [])))
        row = {side: (statistics.mean(g["accuracy"] for g in runs), statistics.median(g["process_s"] for g in runs))
               for side, runs in got.items()}
        rows.append(row)
        (ra, rs), (ca, cs) = row["recipe"], row["candidate"]
        print(f"{name:18s} recipe {ra:.3f} {rs:6.1f}s   candidate {ca:.3f} {cs:6.1f}s   time {cs / rs:.2f}",
              flush=True)
    mean = {side: [statistics.mean(r[side][i] for r in rows) for i in (0, 1)] for side in ("recipe", "candidate")}
    print(f"{'mean':18s} recipe {mean['recipe'][0]:.3f} {mean['recipe'][1]:6.1f}s   candidate "
          f"{mean['candidate'][0]:.3f} {mean['candidate'][1]:6.1f}s   mean time {mean['candidate'][1] / mean['recipe'][1]:.2f}, "
          f"accuracy {100 * (mean['candidate'][0] - mean['recipe'][0]):+.1f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["GunPoint", "ArrowHead"], choices=list(PROBLEMS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs per problem (medians)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override for dlcli")
    parser.add_argument("--ops", action="store_true", help="also the operators of a training step")
    parser.add_argument("--candidate", action="append", default=[],
                        help="an override of a candidate recipe: full runs of the recipe and the candidate instead")
    parser.add_argument("--bench-python", default=os.environ.get("DLCLI_BENCH_PYTHON", "/work/bench-venv/bin/python"))
    parser.add_argument("--holdout", type=int, default=0, help="seeds the holdout's cut and dlcli, as --seeds does "
                                                                  "in --validation of sequence_classification.py")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="dlcli-seqprof-"))
    work.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([args.bench_python, "-c", BASELINES, str(work), ",".join(args.problems), str(args.holdout), "0.3"],
                          capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(f"writing the data failed: {done.stderr.strip()[-800:]}")

    args.overrides = [f"seed={args.holdout}", *args.overrides]
    if args.candidate:
        compare(work, args)
        return
    print(f"{args.epochs} epochs, one thread{' with ' + ' '.join(args.overrides) if args.overrides else ''}; "
          "seconds (share of the process)")
    print(f"{'problem':18s} {'steps':>13s} {'precise_bn':>13s} {'recorder':>13s} {'outside':>13s} {'start-up':>13s} {'process':>8s} "
          f"{'best.pt writes':>14s}")
    for name in args.problems:
        pairs = []
        for r in range(args.repeats):
            order = ("auto", "false") if r % 2 == 0 else ("false", "auto")
            got = {pb: one_run(work, name, [f"train.epochs={args.epochs}", f"train.precise_bn={pb}",
                                             *args.overrides]) for pb in order}
            pairs.append(got)

        def med(f, pairs=pairs):
            return statistics.median(f(p) for p in pairs)

        steps = med(lambda p: p["false"]["epochs_s"])
        bn = med(lambda p: p["auto"]["epochs_s"] - p["false"]["epochs_s"])
        rec = med(lambda p: p["auto"]["train_s"] - p["auto"]["epochs_s"])
        out = med(lambda p: p["auto"]["wall_s"] - p["auto"]["train_s"])
        proc = med(lambda p: p["auto"]["process_s"])
        start = med(lambda p: p["auto"]["process_s"] - p["auto"]["wall_s"])

        def cell(s, proc=proc):
            return f"{s:6.1f} ({100 * s / proc:3.0f}%)"

        print(f"{name:18s} {cell(steps):>13s} {cell(bn):>13s} {cell(rec):>13s} {cell(out):>13s} {cell(start):>13s} {proc:8.1f} "
              f"{pairs[0]['auto']['best_writes']:>7d} of {args.epochs}", flush=True)
        if args.ops:
            for key, share in op_shares(name, work, args.overrides):
                print(f"    {key:40s} {100 * share:5.1f}%")


if __name__ == "__main__":
    main()
