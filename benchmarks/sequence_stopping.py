"""When can a sequence run stop? Traces of configs/sequences_fcn.yaml's full runs, and stop rules replayed on them.

    python benchmarks/sequence_stopping.py --seeds 0 --json val0.json     # holdout 0 (run once a seed: each seed
    python benchmarks/sequence_stopping.py --seeds 1 --json val1.json     #   cuts its own holdout), then replay
    python benchmarks/sequence_stopping.py --traces val0.json val1.json   #   every rule on all the traces
    python benchmarks/sequence_stopping.py --test --seeds 0 --json test0.json   # the check on the test splits

Each problem of benchmarks/sequence_classification.py (the same files, written by the same aeon environment) is
trained once per seed for the recipe's full epoch count with `val_split: 0` and any early stopping switched off,
in this process, and after every epoch the model of that epoch is scored on the held-out series (with --test: the
official test split; without it: a stratified 30% holdout of the official train split, seeded by the first of
--seeds, as sequence_classification.py --validation cuts it; no test series is then written or read). Scoring
reads the model only (no random draw), so the run trains exactly as it would without the trace.

A stop rule (early stopping on `train_loss`: `patience` epochs without a fall of at least `min_delta`) depends on
the training curve alone, and the cosine schedule spans the recipe's epoch count whether or not the run stops, so
the run that rule would have made is this run cut at the epoch the rule fires: its best.pt is the epoch with the
highest train_accuracy up to there (a tie to the lower train_loss, as dlcli's RunRecorder keeps it), whose
held-out accuracy the trace holds, and its training time the sum of the epoch times up to there. Every rule of the
grid is replayed on every trace: held-out accuracy against the full run's, and the share of its training time.
benchmarks/README.md ("Stopping early") has the figures: the rule validation chose lost accuracy on the test check,
so the recipe keeps its 200 epochs.
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

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: one thread, runs repeat exactly

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sequence_classification as bench  # noqa: E402

PATIENCE = [5, 10, 15, 20, 30]
MIN_DELTA = [0.0, 0.001, 0.005, 0.01, 0.02]


def trace(work: Path, name: str, seed: int, overrides: list[str], config: Path) -> list[dict]:
    """One full run; per epoch: train_loss, train_accuracy, the epoch's seconds and the held-out accuracy."""
    import torch
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.engine import Callback
    from dlcli.training import train

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    layout = bench.PROBLEMS[name]
    sets = [f"data.train_file={bench.file_of(work, name, 'train', layout)}",
            f"data.test_file={bench.file_of(work, name, 'test', layout)}", f"seed={seed}",
            f"name={name}-{seed}", *bench.layout_keys(layout), "train.early_stopping=null", *overrides]
    cfg = load_config(str(config), sets)
    epochs: list[dict] = []

    class Trace(Callback):
        def on_epoch_end(self, trainer, metrics):
            held = trainer.evaluate(trainer.data.test)["accuracy"]
            epochs.append({"epoch": metrics["epoch"], "train_loss": metrics["train_loss"],
                           "train_accuracy": metrics["train_accuracy"], "seconds": metrics["seconds"],
                           "held_out": held})

    train(cfg, work / "runs", Console(stderr=True, quiet=True), show_progress=False, callbacks=(Trace(),))
    return epochs


def stop_epoch(curve: list[dict], patience: int, min_delta: float) -> int:
    """The epoch at which early stopping on train_loss (dlcli.engine.EarlyStopping's rule) ends the run."""
    best, bad = None, 0
    for e in curve:
        if best is None or e["train_loss"] < best - min_delta:
            best, bad = e["train_loss"], 0
        else:
            bad += 1
            if bad >= patience:
                return e["epoch"]
    return curve[-1]["epoch"]


def kept(curve: list[dict], last: int) -> dict:
    """best.pt among epochs 1..last: the highest train_accuracy, a tie to the lower train_loss."""
    best = None
    for e in curve[:last]:
        if best is None or e["train_accuracy"] > best["train_accuracy"] or (
                e["train_accuracy"] == best["train_accuracy"] and e["train_loss"] < best["train_loss"]):
            best = e
    return best


def replay(traces: dict, patience: int, min_delta: float) -> dict:
    accs, full, secs, full_secs, stops = [], [], [], [], []
    for (name, seed), curve in sorted(traces.items()):
        stop = stop_epoch(curve, patience, min_delta)
        accs.append(kept(curve, stop)["held_out"])
        full.append(kept(curve, len(curve))["held_out"])
        secs.append(sum(e["seconds"] for e in curve[:stop]))
        full_secs.append(sum(e["seconds"] for e in curve))
        stops.append(stop)
    return {"patience": patience, "min_delta": min_delta, "accuracy": statistics.fmean(accs),
            "full_accuracy": statistics.fmean(full), "time_share": sum(secs) / sum(full_secs),
            "worst": min(a - f for a, f in zip(accs, full)), "stops": stops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(bench.PROBLEMS), choices=list(bench.PROBLEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--test", action="store_true", help="trace the official test split (default: a holdout)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override")
    parser.add_argument("--config", type=Path, default=bench.CONFIG)
    parser.add_argument("--bench-python", default=os.environ.get("DLCLI_BENCH_PYTHON", "/work/bench-venv/bin/python"))
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--traces", type=Path, nargs="+", default=None,
                        help="replay the traces in these JSON files (no training)")
    parser.add_argument("--json", type=Path, default=None, help="also write the traces here")
    args = parser.parse_args()

    if args.traces:
        traces = {tuple(json.loads(k)): v for f in args.traces for k, v in json.loads(f.read_text()).items()}
        full = max(len(v) for v in traces.values())  # a trace cut short (a run that stopped) is no full run
        traces = {k: v for k, v in traces.items() if len(v) == full}
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="dlcli-seqstop-"))
        work.mkdir(parents=True, exist_ok=True)
        print(f"data and runs in {work}", file=sys.stderr, flush=True)
        # the benchmark environment writes the files (the baselines it also fits are not used here)
        done = subprocess.run([args.bench_python, "-c", bench.BASELINES, str(work), ",".join(args.problems),
                               ",".join(map(str, args.seeds)), "0" if args.test else "0.3"],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(f"writing the data failed: {done.stderr.strip()[-800:]}")
        traces = {}
        for name in args.problems:
            for seed in args.seeds:
                start = time.perf_counter()
                traces[(name, seed)] = curve = trace(work, name, seed, args.overrides, args.config)
                print(f"{name:18s} seed {seed}: {len(curve)} epochs, held-out accuracy at the end "
                      f"{kept(curve, len(curve))['held_out']:.3f}, {time.perf_counter() - start:.0f} s",
                      file=sys.stderr, flush=True)
                if args.json:
                    args.json.write_text(json.dumps({json.dumps(list(k)): v for k, v in traces.items()}))
    split = "official test split" if args.test else "30% holdout of the train split"
    print(f"\nstop rules on train_loss replayed on {len(traces)} traces ({split}); accuracy: mean held-out accuracy "
          f"of best.pt at the stop; full run: {replay(traces, 10**9, 0)['accuracy']:.4f}")
    print("| patience | min_delta | accuracy | worst run vs full | training time vs full | stop epochs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in PATIENCE:
        for d in MIN_DELTA:
            r = replay(traces, p, d)
            print(f"| {p} | {d} | {r['accuracy']:.4f} | {100 * r['worst']:+.1f} | {r['time_share']:.2f} | "
                  f"{' '.join(map(str, r['stops']))} |")


if __name__ == "__main__":
    main()
