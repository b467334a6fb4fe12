"""dlcli on a folder of JPEGs against the torchvision ImageFolder + DataLoader tutorial loop, as whole processes.

    python benchmarks/image_folder.py                              # 22,000 64x64 JPEGs, 10 classes, 2 repeats
    python benchmarks/image_folder.py --images 2000 --repeats 1    # a quick smoke run
    python benchmarks/image_folder.py --json                       # machine-readable
    python benchmarks/image_folder.py --work /tmp/elsewhere        # where pictures, config and runs are kept
    python benchmarks/image_folder.py --set train.eval_batch_size=64   # an override for the dlcli runs

The pictures are generated once (2 processes) and kept under --work (default /tmp/dlcli-bench-folder):
<work>/pictures/train/class_<k>/*.jpg, 64x64 RGB, each class its own hue and stripe direction plus noise (so one
epoch learns something, short of 100%). They are made again only when --images changes.

Three whole processes, each measured like compare.py does (compare.measured: wall time from start to exit; peak
memory is the child's own maximum resident set size from os.wait4), alternating so that drift of the machine hits
all alike:
  plain         benchmarks/plain_folder.py: ImageFolder(ToTensor, Normalize), seeded random_split 80/10/10,
                DataLoader(batch_size=64, shuffle=True, num_workers=2), the same CNN (its parameter count is
                checked against `dlcli summary`), Adam 1e-3, one epoch and a validation pass, accuracy on the test 10%;
  dlcli first   `dlcli train <work>/config.yaml` (image_folder, val_split 0.1, test_split 0.1, stream: false) after
                deleting <work>/pictures/.cache: every JPEG is decoded, and the pixels cached;
  dlcli second  the same run again: the decoded pixels come memory-mapped from the cache.
test_split is 0.1, not 0.0: with 0.0 dlcli trains but scores an empty test split (test accuracy NaN).
Also shown: the CPU seconds of each whole process tree (user + system, workers included), which others using the
machine disturb far less than wall time; and, because os.wait4's ru_maxrss is the largest single process and not
the sum of the plain loop and its DataLoader workers, the peak summed PSS (proportional set size: shared pages split
between the processes) of each tree, sampled every 0.2 s.

Data loading alone: `python -c "...; load_data(load_config(CONFIG))"` as a whole process, with the cache deleted
(cold) and with it warm (median of --load-repeats), next to a process that only imports the same modules.
Targets (issue): dlcli's peak memory at most the tutorial loop's, and the second run's data loading (the warm
process above) under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, machine, measured

SIZE = 64
CLASSES = 10
GENERATOR_VERSION = 1


# ---------------------------------------------------------------- the pictures


def _picture(job):
    """One 64x64 JPEG: the class's hue and stripe direction, jittered, plus Gaussian noise (seeded by its index)."""
    import colorsys

    import numpy as np
    from PIL import Image

    index, label, path = job
    rng = np.random.default_rng([GENERATOR_VERSION, index])
    hue = (label / CLASSES + rng.normal(0, 0.04)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))) * 255
    angle = np.pi * label / CLASSES + rng.normal(0, 0.15)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    stripes = np.sin(2 * np.pi * rng.uniform(2, 5) * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 7))
    pixels = colour * (0.65 + 0.35 * stripes)[..., None] + rng.normal(0, 45, (SIZE, SIZE, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(path, quality=90)


def make_pictures(work: Path, images: int, quiet: bool) -> Path:
    """<work>/pictures/train/class_<k>/*.jpg, made once per --images (a marker file says what is there)."""
    root = work / "pictures"
    marker = root / ".generated.json"
    wanted = {"images": images, "classes": CLASSES, "size": SIZE, "version": GENERATOR_VERSION}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return root
    if root.exists():
        shutil.rmtree(root)
    jobs = []
    for k in range(CLASSES):
        (root / "train" / f"class_{k}").mkdir(parents=True)
    for i in range(images):
        label = i % CLASSES
        jobs.append((i, label, str(root / "train" / f"class_{label}" / f"{i:06d}.jpg")))
    started = time.perf_counter()
    with Pool(2) as pool:
        for _ in pool.imap_unordered(_picture, jobs, chunksize=256):
            pass
    marker.write_text(json.dumps(wanted))
    if not quiet:
        print(f"generated {images:,} JPEGs under {root}/train/ in {time.perf_counter() - started:.1f} s", flush=True)
    return root


# ---------------------------------------------------------------- measuring


class TreeMemory:
    """Peak of the summed PSS of every process below the measured command's wrapper (the command and its workers),
    sampled every `interval` seconds from /proc/<pid>/smaps_rollup while a `measured` call runs."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak_kib = interval, 0
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    def _run(self):
        me = os.getpid()
        while not self._stop.wait(self.interval):
            parents = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat") as f:
                            parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                    except (OSError, IndexError, ValueError):
                        pass
            total = 0
            for pid in parents:
                depth, p = 0, pid
                while p in parents and p != me and depth < 10:
                    p, depth = parents[p], depth + 1
                if p == me and depth >= 2:  # below the wrapper (depth 1): the command (2) and its workers (3+)
                    total += _pss_kib(pid)
            self.peak_kib = max(self.peak_kib, total)


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(cmd: list[str]) -> dict:
    """wall seconds, peak RSS MiB of the command's own process (compare.measured), peak summed PSS MiB of its tree,
    CPU seconds of the whole tree (user + system; less disturbed than wall time by others using the machine) and
    stdout. The CPU time is this process's RUSAGE_CHILDREN before and after: the wrapper waits for the command, the
    command for its DataLoader workers, so every process of the tree is in it (plus the tiny wrapper)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with TreeMemory() as tree:
        wall, rss, out = measured(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "rss": rss, "tree": tree.peak_mib, "cpu": cpu, "out": out}


# ---------------------------------------------------------------- the three sides


CONFIG_TEXT = """\
name: folder_bench
seed: 0
data: {{dataset: image_folder, root: {root}, image_size: {size}, channels: 3, val_split: 0.1, test_split: {test},
       stream: false}}
model: {{type: cnn, channels: [32, 64], padding: same, hidden: [128]}}
optimizer: {{name: adam, lr: 0.001}}
train: {{epochs: 1, batch_size: 64}}
"""


def write_config(work: Path, root: Path, test_split: float) -> Path:
    config = work / "config.yaml"
    config.write_text(CONFIG_TEXT.format(root=root, size=SIZE, test=test_split))
    return config


def dlcli_train(config: Path, runs_dir: Path, overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "dlcli", "train", str(config), "--runs-dir", str(runs_dir), "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def dlcli_load(config: Path) -> list[str]:
    code = ("from dlcli.config import load_config; from dlcli.data import load_data; "
            f"d = load_data(load_config({str(config)!r})); print(len(d.train), len(d.val or []), len(d.test))")
    return [sys.executable, "-c", code]


def plain(root: Path, test_split: float) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "plain_folder.py"), "--root", str(root / "train"),
            "--image-size", str(SIZE), "--val-share", "0.1", "--test-share", str(test_split)]


def drop_cache(root: Path) -> None:
    shutil.rmtree(root / ".cache", ignore_errors=True)


def parameters_dlcli(config: Path) -> int:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "dlcli", "summary", str(config), "--json"], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        sys.exit(f"dlcli summary failed: {proc.stderr[-2000:]}")
    return _find_parameters(json.loads(proc.stdout))


def _find_parameters(summary) -> int:
    for key in ("total_parameters", "parameters", "total"):
        if isinstance(summary, dict) and isinstance(summary.get(key), int):
            return summary[key]
    raise SystemExit(f"dlcli summary --json: no parameter total in {str(summary)[:300]}")


def parameters_plain() -> int:
    from plain_folder import make_model

    return sum(p.numel() for p in make_model(3, SIZE, CLASSES).parameters())


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlcli-bench-folder"))
    parser.add_argument("--images", type=int, default=22000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--load-repeats", type=int, default=3, help="warm data-loading processes timed (median)")
    parser.add_argument("--test-split", type=float, default=0.1,
                        help="dlcli's data.test_split, and the share the plain loop scores on (0.0 runs, but "
                             "dlcli then scores an empty test split: NaN accuracy)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for dlcli train (repeatable), e.g. --set train.eval_batch_size=64")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    say = (lambda *a, **k: None) if args.json else (lambda *a, **k: print(*a, **k, flush=True))

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    root = make_pictures(work, args.images, args.json)
    runs_dir = work / "runs"
    test_split = args.test_split
    config = write_config(work, root, test_split)

    ours, theirs = parameters_dlcli(config), parameters_plain()
    if ours != theirs:
        sys.exit(f"parameter counts differ: dlcli summary says {ours:,}, the plain CNN has {theirs:,}")
    say(f"{args.images:,} images, 10 classes, val_split 0.1, test_split {test_split}; the CNN has {ours:,} "
        f"parameters on both sides (dlcli summary agrees); config {config}")

    sides = {"plain": [], "dlcli_first": [], "dlcli_second": []}
    for r in range(args.repeats):  # alternate, so drift of the machine hits all sides alike
        m = run(plain(root, test_split))
        sides["plain"].append(_row(m, json.loads(m["out"].strip().splitlines()[-1]), "plain"))
        say(_line(f"repeat {r + 1} plain", sides["plain"][-1]))
        for side in ("dlcli_first", "dlcli_second"):
            if side == "dlcli_first":
                drop_cache(root)
            m = run(dlcli_train(config, runs_dir, args.set))
            summary = json.loads((runs_dir / m["out"].strip().splitlines()[-1] / "summary.json").read_text())
            sides[side].append(_row(m, summary, "dlcli"))
            say(_line(f"repeat {r + 1} {side.replace('_', ' ')}", sides[side][-1]))

    drop_cache(root)
    cold = run(dlcli_load(config))
    warm = [run(dlcli_load(config)) for _ in range(args.load_repeats)]
    just_imports = "import dlcli.config, dlcli.data.bundle, dlcli.data.folders, dlcli.data.stream"
    imports = [run([sys.executable, "-c", just_imports]) for _ in range(args.load_repeats)]

    results = {"machine": machine(), "images": args.images, "test_split": test_split, "parameters": ours,
               "dlcli_overrides": args.set, "repeats": args.repeats, "load_repeats": args.load_repeats, "sides": {}}
    for side, rows in sides.items():
        results["sides"][side] = {
            "wall_seconds": round(statistics.median(x["wall"] for x in rows), 2),
            "fastest_wall_seconds": round(min(x["wall"] for x in rows), 2),
            "cpu_seconds": round(statistics.median(x["cpu"] for x in rows), 1),
            "peak_rss_mib": round(max(x["rss"] for x in rows)),
            "tree_peak_pss_mib": round(max(x["tree"] for x in rows)),
            "test_accuracy": round(statistics.median(x["accuracy"] for x in rows), 4),
            "train_seconds": round(statistics.median(x["train"] for x in rows), 2),
            "other_seconds": round(statistics.median(x["other"] for x in rows), 2),
            "all_walls": [round(x["wall"], 2) for x in rows],
        }
    p, first, second = (results["sides"][s] for s in ("plain", "dlcli_first", "dlcli_second"))
    results["ratios"] = {
        f"{s}_over_plain_{k}": round(results["sides"][s][k] / p[k], 3)
        for s in ("dlcli_first", "dlcli_second")
        for k in ("wall_seconds", "fastest_wall_seconds", "cpu_seconds", "peak_rss_mib", "tree_peak_pss_mib")
    }
    d = results["data_loading"] = {
        "cold_seconds": round(cold["wall"], 2),
        "cold_peak_rss_mib": round(cold["rss"]),
        "warm_seconds": round(statistics.median(x["wall"] for x in warm), 3),
        "warm_fastest_seconds": round(min(x["wall"] for x in warm), 3),
        "warm_cpu_seconds": round(statistics.median(x["cpu"] for x in warm), 3),
        "warm_peak_rss_mib": round(max(x["rss"] for x in warm)),
        "imports_only_seconds": round(statistics.median(x["wall"] for x in imports), 3),
        "imports_only_fastest_seconds": round(min(x["wall"] for x in imports), 3),
    }
    d["warm_minus_imports_seconds"] = round(d["warm_fastest_seconds"] - d["imports_only_fastest_seconds"], 3)
    # Like with like: the plain loop decodes its JPEGs inside its training loop (DataLoader workers), dlcli before
    # it. dlcli's decoding is taken from the data-loading processes above (cold for the first run, which decodes
    # every file; warm for the second, which maps the cache), less their imports, and added to its loop's time.
    decoding = {"plain": 0.0, "dlcli_first": d["cold_seconds"] - d["imports_only_seconds"],
                "dlcli_second": d["warm_seconds"] - d["imports_only_seconds"]}
    for side, x in results["sides"].items():
        x["decode_and_train_seconds"] = round(x["train_seconds"] + max(0.0, decoding[side]), 2)
    results["targets"] = {
        "dlcli_peak_rss_at_most_plain": max(first["peak_rss_mib"], second["peak_rss_mib"]) <= p["peak_rss_mib"],
        "dlcli_tree_pss_at_most_plain": max(first["tree_peak_pss_mib"], second["tree_peak_pss_mib"])
        <= p["tree_peak_pss_mib"],
        "second_run_data_loading_under_1s": d["warm_seconds"] < 1.0,
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


def _row(m: dict, result: dict, kind: str) -> dict:
    """One measured process; `other` is its wall time outside the training loop (interpreter, imports, data,
    model, test scoring, and for dlcli its run directory and checkpoints)."""
    accuracy = result["test_accuracy"] if kind == "plain" else result["test"]["accuracy"]
    train = result["train_seconds"]
    return {**m, "accuracy": accuracy, "train": train, "other": m["wall"] - train}


def _line(label: str, x: dict) -> str:
    return (f"{label:<22} wall {x['wall']:6.2f} s  CPU {x['cpu']:6.1f} s  peak RSS {x['rss']:6.0f} MiB  "
            f"tree PSS {x['tree']:6.0f} MiB  train {x['train']:6.2f} s  acc {x['accuracy']:.4f}")


def print_table(r: dict) -> None:
    s, ratios, d = r["sides"], r["ratios"], r["data_loading"]
    print()
    print("| side | wall s | fastest s | CPU s | peak RSS MiB | tree PSS MiB | test acc | loop s | decode + loop s "
          "| fastest / plain | CPU / plain | RSS / plain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for side in ("plain", "dlcli_first", "dlcli_second"):
        x = s[side]
        ratio = lambda k: ratios.get(f"{side}_over_plain_{k}", 1.0)  # noqa: B023
        print(f"| {side.replace('_', ' ')} | {x['wall_seconds']:.2f} | {x['fastest_wall_seconds']:.2f} | "
              f"{x['cpu_seconds']:.1f} | {x['peak_rss_mib']:,} | {x['tree_peak_pss_mib']:,} | "
              f"{x['test_accuracy']:.4f} | "
              f"{x['train_seconds']:.2f} | {x['decode_and_train_seconds']:.2f} | "
              f"{ratio('fastest_wall_seconds'):.3f} | {ratio('cpu_seconds'):.3f} | "
              f"{ratio('peak_rss_mib'):.3f} |")
    print()
    print(f"dlcli data loading as a whole process: cold (no cache) {d['cold_seconds']:.2f} s, peak RSS "
          f"{d['cold_peak_rss_mib']:,} MiB; warm {d['warm_seconds']:.3f} s (median of {r['load_repeats']}; fastest "
          f"{d['warm_fastest_seconds']:.3f} s, CPU {d['warm_cpu_seconds']:.2f} s), "
          f"peak RSS {d['warm_peak_rss_mib']:,} MiB; "
          f"the same imports alone (torch among them) {d['imports_only_seconds']:.3f} s (fastest "
          f"{d['imports_only_fastest_seconds']:.3f} s), so about {d['warm_minus_imports_seconds']:.3f} s of the warm "
          f"process is listing the folder, reading the cache and computing the normalisation")
    t = r["targets"]
    print(f"targets: dlcli peak RSS <= plain: {'met' if t['dlcli_peak_rss_at_most_plain'] else 'MISSED'}; "
          f"tree PSS <= plain: {'met' if t['dlcli_tree_pss_at_most_plain'] else 'MISSED'}; second run's data loading "
          f"< 1 s: {'met' if t['second_run_data_loading_under_1s'] else 'MISSED'}")
    if r["dlcli_overrides"]:
        print(f"dlcli train overrides: {' '.join(r['dlcli_overrides'])}")
    print(f"{r['images']:,} images, test_split {r['test_split']}, {r['parameters']:,} parameters, "
          f"{r['repeats']} repeats (medians; peaks are maxima); machine: {r['machine']}")


if __name__ == "__main__":
    main()
