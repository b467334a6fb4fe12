"""dlcli on a large table against a hand-written pyarrow + numpy + PyTorch script, each as a whole process.

    python benchmarks/tables.py                            # 1,000,000 rows x 20 features, CSV and Parquet, 3 repeats
    python benchmarks/tables.py --rows 20000 --repeats 1   # a quick smoke run
    python benchmarks/tables.py --rows 10000000 --stream --repeats 1   # dlcli streamed (cold, then warm cache)
    python benchmarks/tables.py --json                     # machine-readable

The table (N rows, 20 float feature columns of different scales, a `label` column with 4 classes drawn from a seeded
linear function of the features plus noise) is generated once with numpy + pyarrow and cached as CSV (values with
5 significant digits) and Parquet under --work (default /tmp/dlcli-bench-tables/data/).

Both sides train the same MLP (20-64-32-4, ReLU) for one epoch with Adam 1e-3 at batch 512 on a seeded 80/10/10
split, standardised with training statistics, then score validation and test accuracy. The plain side is
benchmarks/plain_table.py; the dlcli side is `python -m dlcli train CONFIG --quiet` with a config written into
--work (`stream: false`, or `stream: true` with --stream). Each run is a whole process timed from start to exit
(interpreter, imports, reading, encoding, training, scoring; dlcli also writes its run directory). Plain and dlcli
alternate so that drift of the machine hits both alike; the table shows medians of wall time and of peak memory
(each child's own maximum resident set size, os.wait4, through compare.py's `measured`); --stream also gives each
run's own CPU seconds (user + sys), which a loaded machine inflates far less than wall time.

Targets: dlcli's wall time at most 1.3x the plain script's, its peak memory at most 1.5x.

--stream: dlcli encodes the table in record batches into memory-mapped files in data/.cache/; that folder is
deleted before each first (cold) run, and a second run (warm) reuses the cache. The plain script still loads
everything into memory.

On a shared machine: the CPU time the machine spent busy during a run, less the run's own (/proc/stat and
getrusage), tells how many cores other processes took meanwhile; a run disturbed by more than --max-others cores
(default 0.25) is measured again, up to --retries times (default 2), and --wait-idle SECONDS waits for an idle
machine before each run. The JSON output lists those cores per run (other_processes_cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import machine, measured

FEATURES = 20
CLASSES = 4
GEN_CHUNK = 1_000_000
TARGET_WALL, TARGET_RSS = 1.3, 1.5


# ---------------------------------------------------------------- the table


def table_paths(work: Path, rows: int) -> dict[str, Path]:
    data = work / "data"
    return {"csv": data / f"table-{rows}.csv", "parquet": data / f"table-{rows}.parquet"}


def generate(work: Path, rows: int, log) -> dict[str, Path]:
    """Write the CSV and the Parquet file (once per row count); chunked, so 10M rows need ~0.5 GB of memory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    paths = table_paths(work, rows)
    if all(p.is_file() for p in paths.values()):
        return paths
    paths["csv"].parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rng = np.random.default_rng(1234)
    weights = rng.standard_normal((FEATURES, CLASSES))  # the signal: a linear function of the standard features
    scale = 10.0 ** rng.uniform(-1, 2, FEATURES)  # columns from ~0.1 to ~100 ...
    offset = rng.uniform(-5, 5, FEATURES) * scale  # ... not centred: standardisation matters
    decimals = (4 - np.floor(np.log10(scale))).astype(int)  # ~5 significant digits
    names = [f"f{j:02d}" for j in range(FEATURES)]
    schema = pa.schema([*(pa.field(n, pa.float64()) for n in names), pa.field("label", pa.int64())])
    tmp = {k: p.with_name(p.name + ".tmp") for k, p in paths.items()}
    with pacsv.CSVWriter(tmp["csv"], schema) as csv_out, pq.ParquetWriter(tmp["parquet"], schema) as pq_out:
        for start in range(0, rows, GEN_CHUNK):
            n = min(GEN_CHUNK, rows - start)
            z = rng.standard_normal((n, FEATURES))
            logits = z @ weights + rng.gumbel(size=(n, CLASSES)) * 1.5
            label = logits.argmax(1)
            columns = [np.round(z[:, j] * scale[j] + offset[j], decimals[j]) for j in range(FEATURES)]
            batch = pa.record_batch([*columns, label], schema=schema)
            csv_out.write_batch(batch)
            pq_out.write_batch(batch)
            del z, logits, columns, batch
    for k in paths:
        tmp[k].replace(paths[k])
    log(f"generated {rows:,} rows in {time.perf_counter() - started:.1f} s: "
        + ", ".join(f"{p} ({p.stat().st_size / 2**20:,.0f} MiB)" for p in paths.values()))
    return paths


# ---------------------------------------------------------------- measuring on a shared machine


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine (all cores, every process) has spent busy since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def own_cpu_seconds() -> float:
    """CPU seconds of this process's finished children and their waited-for descendants (the measured runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Meter:
    """compare.py's `measured`, plus a check that nothing else used the machine meanwhile: the CPU seconds the
    machine spent busy during a run, less the run's own, over its wall time, are the cores other processes took.
    A run that others disturbed by more than --max-others cores is measured again (--retries times at most);
    --wait-idle first waits for the machine to be idle."""

    def __init__(self, args, log):
        self.args, self.log = args, log

    def settle(self) -> None:
        deadline = time.monotonic() + self.args.wait_idle
        while time.monotonic() < deadline:
            busy0 = machine_busy_seconds()
            time.sleep(1.0)
            if machine_busy_seconds() - busy0 <= 0.1:  # under a tenth of a core for a second
                return

    def run(self, cmd: list[str], label: str, before=None) -> tuple[float, float, str, float]:
        for attempt in range(self.args.retries + 1):
            if self.args.wait_idle:
                self.settle()
            if before is not None:
                before()
            busy0, own0 = machine_busy_seconds(), own_cpu_seconds()
            wall, rss, out = measured(cmd)
            cpu = own_cpu_seconds() - own0  # the run's own user + sys seconds: what load inflates least
            others = max(0.0, (machine_busy_seconds() - busy0) - cpu) / wall
            if others <= self.args.max_others or attempt == self.args.retries:
                return wall, rss, out, others, cpu
            self.log(f"  ({label}: other processes took {others:.2f} cores during the run ({wall:.1f} s); "
                     "measuring again)")
        raise AssertionError("unreachable")


# ---------------------------------------------------------------- the two sides


def plain_run(meter: Meter, path: Path) -> dict:
    wall, rss, out, others, cpu = meter.run(
        [sys.executable, str(HERE / "plain_table.py"), str(path), "--epochs", "1", "--batch-size", "512",
         "--lr", "0.001", "--hidden", "64,32", "--seed", "0"], f"plain {path.suffix[1:]}")
    r = json.loads(out.strip().splitlines()[-1])
    return {"wall": wall, "rss": rss, "others": others, "cpu": cpu, "test_accuracy": r["test_accuracy"],
            "val_accuracy": r["val_accuracy"], "load": r["load_seconds"], "train": r["train_seconds"]}


def write_config(work: Path, fmt: str, path: Path, stream: bool) -> Path:
    config = work / f"table_bench-{fmt}-{'stream' if stream else 'memory'}.yaml"
    config.write_text(
        "name: table_bench\n"
        "seed: 0\n"
        f"data: {{dataset: {fmt}, train_file: {path}, label_column: label, val_split: 0.1, test_split: 0.1, "
        f"stream: {str(stream).lower()}}}\n"
        "model: {type: mlp, hidden: [64, 32]}\n"
        "optimizer: {name: adam, lr: 0.001}\n"
        "train: {epochs: 1, batch_size: 512}\n"
    )
    return config


def dlcli_run(meter: Meter, config: Path, runs_dir: Path, before=None) -> dict:
    wall, rss, out, others, cpu = meter.run(
        [sys.executable, "-m", "dlcli", "train", str(config), "--runs-dir", str(runs_dir), "--quiet"],
        f"dlcli {config.stem.removeprefix('table_bench-')}", before)
    run_id = out.strip().splitlines()[-1]
    summary = json.loads((runs_dir / run_id / "summary.json").read_text())
    if summary.get("status") != "completed":
        sys.exit(f"dlcli run {run_id} ended {summary.get('status')}: {summary.get('error')}")
    return {"wall": wall, "rss": rss, "others": others, "cpu": cpu, "test_accuracy": summary["test"]["accuracy"],
            "val_accuracy": summary.get("best_metric", {}).get("value"), "train": summary["train_seconds"],
            "run_id": run_id}


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# ---------------------------------------------------------------- the modes


def in_memory(meter, paths, work, runs_dir) -> list[dict]:
    rows = []
    for fmt in meter.args.formats:
        config = write_config(work, fmt, paths[fmt], stream=False)
        plain, ours = [], []
        for i in range(meter.args.repeats):  # alternate, so drift of the machine hits both alike
            plain.append(plain_run(meter, paths[fmt]))
            ours.append(dlcli_run(meter, config, runs_dir))
            meter.log(f"  {fmt} repeat {i + 1}: plain {plain[-1]['wall']:.2f} s {plain[-1]['rss']:.0f} MiB | "
                      f"dlcli {ours[-1]['wall']:.2f} s {ours[-1]['rss']:.0f} MiB")
        row = {
            "format": fmt,
            "plain_wall_seconds": round(med(plain, "wall"), 2),
            "dlcli_wall_seconds": round(med(ours, "wall"), 2),
            "plain_peak_rss_mib": round(med(plain, "rss")),
            "dlcli_peak_rss_mib": round(med(ours, "rss")),
            "plain_test_accuracy": round(med(plain, "test_accuracy"), 4),
            "dlcli_test_accuracy": round(med(ours, "test_accuracy"), 4),
            "plain_load_seconds": round(med(plain, "load"), 2),
            "plain_train_seconds": round(med(plain, "train"), 2),
            "dlcli_train_seconds": round(med(ours, "train"), 2),
            "plain_walls": [round(r["wall"], 2) for r in plain],
            "dlcli_walls": [round(r["wall"], 2) for r in ours],
            "plain_rss": [round(r["rss"]) for r in plain],
            "dlcli_rss": [round(r["rss"]) for r in ours],
            "other_processes_cores": [round(r["others"], 2) for r in plain + ours],
        }
        row["wall_ratio"] = round(row["dlcli_wall_seconds"] / row["plain_wall_seconds"], 3)
        row["rss_ratio"] = round(row["dlcli_peak_rss_mib"] / row["plain_peak_rss_mib"], 3)
        row["wall_target_met"] = row["wall_ratio"] <= TARGET_WALL
        row["rss_target_met"] = row["rss_ratio"] <= TARGET_RSS
        rows.append(row)
    return rows


def streamed(meter, paths, work, runs_dir) -> list[dict]:
    rows = []
    cache = paths["csv"].parent / ".cache"  # where dlcli caches a streamed table: beside the data
    for fmt in meter.args.formats:
        config = write_config(work, fmt, paths[fmt], stream=True)
        plain, cold, warm = [], [], []
        for i in range(meter.args.repeats):
            plain.append(plain_run(meter, paths[fmt]))
            # the first streamed run is really cold: no cache (deleted again before a run that is measured again)
            cold.append(dlcli_run(meter, config, runs_dir, before=lambda: shutil.rmtree(cache, ignore_errors=True)))
            warm.append(dlcli_run(meter, config, runs_dir))
            meter.log(f"  {fmt} repeat {i + 1}: plain {plain[-1]['wall']:.2f} s {plain[-1]['rss']:.0f} MiB | "
                      f"dlcli streamed first {cold[-1]['wall']:.2f} s {cold[-1]['rss']:.0f} MiB, second "
                      f"{warm[-1]['wall']:.2f} s {warm[-1]['rss']:.0f} MiB")
        cache_mib = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20 if cache.is_dir() else 0
        row = {
            "format": fmt,
            "plain_wall_seconds": round(med(plain, "wall"), 2),
            "plain_peak_rss_mib": round(med(plain, "rss")),
            "plain_test_accuracy": round(med(plain, "test_accuracy"), 4),
            "dlcli_first_wall_seconds": round(med(cold, "wall"), 2),
            "dlcli_first_peak_rss_mib": round(med(cold, "rss")),
            "dlcli_second_wall_seconds": round(med(warm, "wall"), 2),
            "dlcli_second_peak_rss_mib": round(med(warm, "rss")),
            "dlcli_test_accuracy": round(med(warm, "test_accuracy"), 4),
            "dlcli_cache_mib": round(cache_mib),
            "plain_load_seconds": round(med(plain, "load"), 2),
            "plain_train_seconds": round(med(plain, "train"), 2),
            "dlcli_first_train_seconds": round(med(cold, "train"), 2),
            "dlcli_second_train_seconds": round(med(warm, "train"), 2),
            "other_processes_cores": [round(r["others"], 2) for r in plain + cold + warm],
            "plain_cpu_seconds": round(med(plain, "cpu"), 2),
            "dlcli_first_cpu_seconds": round(med(cold, "cpu"), 2),
            "dlcli_second_cpu_seconds": round(med(warm, "cpu"), 2),
        }
        for run in ("first", "second"):
            row[f"{run}_cpu_ratio"] = round(row[f"dlcli_{run}_cpu_seconds"] / row["plain_cpu_seconds"], 3)
            row[f"{run}_wall_ratio"] = round(row[f"dlcli_{run}_wall_seconds"] / row["plain_wall_seconds"], 3)
            row[f"{run}_rss_ratio"] = round(row[f"dlcli_{run}_peak_rss_mib"] / row["plain_peak_rss_mib"], 3)
        rows.append(row)
    return rows


def print_memory(rows):
    print(f"| format | plain wall s | dlcli wall s | wall ratio (<= {TARGET_WALL}) | plain peak MiB | dlcli peak MiB | "
          f"memory ratio (<= {TARGET_RSS}) | plain load s | train s plain / dlcli | plain test acc | dlcli test acc |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mark = lambda ok: "" if ok else " MISSED"
        print(f"| {r['format']} | {r['plain_wall_seconds']:.2f} | {r['dlcli_wall_seconds']:.2f} | "
              f"**{r['wall_ratio']:.3f}**{mark(r['wall_target_met'])} | {r['plain_peak_rss_mib']:,} | "
              f"{r['dlcli_peak_rss_mib']:,} | **{r['rss_ratio']:.3f}**{mark(r['rss_target_met'])} | "
              f"{r['plain_load_seconds']:.2f} | {r['plain_train_seconds']:.2f} / {r['dlcli_train_seconds']:.2f} | "
              f"{r['plain_test_accuracy']:.4f} | {r['dlcli_test_accuracy']:.4f} |")


def print_streamed(rows):
    print("| format | plain wall s | plain peak MiB | dlcli 1st wall s | 1st peak MiB | dlcli 2nd wall s | "
          "2nd peak MiB | wall ratio 1st / 2nd | memory ratio 1st / 2nd | plain load s | train s plain / 1st / 2nd | "
          "plain acc | dlcli acc | CPU s plain / 1st / 2nd | CPU ratio 1st / 2nd |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['format']} | {r['plain_wall_seconds']:.2f} | {r['plain_peak_rss_mib']:,} | "
              f"{r['dlcli_first_wall_seconds']:.2f} | {r['dlcli_first_peak_rss_mib']:,} | "
              f"{r['dlcli_second_wall_seconds']:.2f} | {r['dlcli_second_peak_rss_mib']:,} | "
              f"{r['first_wall_ratio']:.3f} / {r['second_wall_ratio']:.3f} | "
              f"{r['first_rss_ratio']:.3f} / {r['second_rss_ratio']:.3f} | {r['plain_load_seconds']:.2f} | "
              f"{r['plain_train_seconds']:.2f} / {r['dlcli_first_train_seconds']:.2f} / "
              f"{r['dlcli_second_train_seconds']:.2f} | {r['plain_test_accuracy']:.4f} | "
              f"{r['dlcli_test_accuracy']:.4f} | {r['plain_cpu_seconds']:.1f} / {r['dlcli_first_cpu_seconds']:.1f} / "
              f"{r['dlcli_second_cpu_seconds']:.1f} | {r['first_cpu_ratio']:.3f} / {r['second_cpu_ratio']:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", default="csv,parquet", help="comma-separated: csv, parquet")
    parser.add_argument("--stream", action="store_true", help="dlcli with data.stream: true, first and second run")
    parser.add_argument("--work", default="/tmp/dlcli-bench-tables", help="data, configs and runs (data is kept)")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="before each run, wait up to SECONDS for the machine to be idle (a shared machine)")
    parser.add_argument("--max-others", type=float, default=0.25, metavar="CORES",
                        help="measure a run again when other processes took more than CORES cores during it")
    parser.add_argument("--retries", type=int, default=2, help="how many times a disturbed run is measured again")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not args.formats or any(f not in ("csv", "parquet") for f in args.formats):
        parser.error("--formats takes csv and/or parquet")

    def log(msg):
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    work = Path(args.work)
    paths = generate(work, args.rows, log)
    runs_dir = work / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)  # checkpoints of earlier invocations
    results = {"machine": machine(), "rows": args.rows, "features": FEATURES, "classes": CLASSES,
               "repeats": args.repeats, "mode": "stream" if args.stream else "memory",
               "targets": {"wall_ratio": TARGET_WALL, "rss_ratio": TARGET_RSS},
               "files_mib": {k: round(p.stat().st_size / 2**20) for k, p in paths.items()}}
    results["rows_by_format"] = (streamed if args.stream else in_memory)(Meter(args, log), paths, work, runs_dir)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"\n{args.rows:,} rows x {FEATURES} features, {CLASSES} classes, 1 epoch, batch 512, medians of "
          f"{args.repeats}; {results['machine']}")
    (print_streamed if args.stream else print_memory)(results["rows_by_format"])
    worst = max(c for r in results["rows_by_format"] for c in r["other_processes_cores"])
    print(f"Other processes took at most {worst:.2f} cores during a kept run"
          + (" (disturbed: rerun, or pass --wait-idle)" if worst > args.max_others else "") + ".")


if __name__ == "__main__":
    main()
