"""Training throughput per task on one table: regression and multi-label against classification, same engine.

    python benchmarks/task_throughput.py [--rows 200000] [--epochs 3] [--repeats 3]

One seeded table of numeric features with three kinds of targets (a class, two numbers, four 0/1 labels) is trained
with the same MLP, batch size and epochs under each task. Prints samples/s of the training loop (summary.json's
samples_per_second: fit time, checkpoint writes included) as the median of the repeats, and each task's ratio to
classification. Ratios near 1.0 mean the task adds nothing measurable to a step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_table(path: Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    w = rng.normal(size=(20, 2))
    y = x @ w + 0.1 * rng.normal(size=(rows, 2))
    columns = {f"f{i}": x[:, i] for i in range(20)}
    columns["value"], columns["other"] = y[:, 0], y[:, 1]
    columns["klass"] = np.digitize(y[:, 0], np.quantile(y[:, 0], [0.25, 0.5, 0.75])).astype(str)
    for j in range(4):
        columns[f"tag{j}"] = (x[:, j] + x[:, j + 4] > 0).astype(np.int8)
    pq.write_table(pa.table(columns), path)


TASKS = {
    "classification": ("classification", "klass"),
    "regression": ("regression", ["value", "other"]),
    "multilabel": ("multilabel", ["tag0", "tag1", "tag2", "tag3"]),
}


def config(table: Path, task: str, epochs: int) -> dict:
    name, label = TASKS[task]
    others = {"klass", "value", "other", "tag0", "tag1", "tag2", "tag3"}
    keep = [label] if isinstance(label, str) else label
    return {
        "name": task, "seed": 0, "task": name,
        "data": {"dataset": "parquet", "train_file": str(table), "label_column": label, "val_split": 0.05,
                 "test_split": 0.05, "split": "random", "categorical": []},
        "model": {"type": "mlp", "hidden": [128, 64]},
        "train": {"epochs": epochs, "batch_size": 256, "precision": "32"},
        "_drop": sorted(others - set(keep)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pyarrow.parquet as pq

    import dlcli

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_table(tmp / "all.parquet", args.rows)
        full = pq.read_table(tmp / "all.parquet")
        speeds: dict[str, list[float]] = {task: [] for task in TASKS}
        for repeat in range(args.repeats):
            for task in TASKS:  # interleaved, so a slow moment of the machine falls on every task alike
                cfg = config(tmp / "all.parquet", task, args.epochs)
                own = tmp / f"{task}.parquet"  # the other tasks' targets are not features
                pq.write_table(full.drop_columns(cfg.pop("_drop")), own)
                cfg["data"]["train_file"] = str(own)
                run = dlcli.train(cfg, runs_dir=tmp / "runs", quiet=True)
                speeds[task].append(run.summary["samples_per_second"])
        base = statistics.median(speeds["classification"])
        print(f"{args.rows:,} rows, {args.epochs} epochs, batch 256, MLP 20-128-64, median of {args.repeats}")
        print(f"{'task':<16}{'samples/s':>12}{'vs classification':>20}")
        for task, values in speeds.items():
            median = statistics.median(values)
            print(f"{task:<16}{median:>12,.0f}{median / base:>20.3f}")


if __name__ == "__main__":
    main()
