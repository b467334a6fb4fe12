"""`dlcli predict one.png` as a whole process (interpreter start to exit), next to the floor any PyTorch command
pays: a process that only runs `import torch`.

    python benchmarks/predict_latency.py                # 7 repeats, alternating
    python benchmarks/predict_latency.py --repeats 3

The run predicted with is the quickstart's network (configs/fashion_mnist_cnn.yaml) trained for one epoch on 2,000
images, untimed (latency does not depend on how well it was trained); one.png is the first Fashion-MNIST test image,
a 28x28 grayscale PNG. The three processes alternate (import torch, dlcli predict, dlcli --help) so that the load of
a shared machine hits them alike; the table shows medians and the fastest of each, in wall time and in CPU time (user
+ system of the process and its children), which a loaded machine inflates far less.
"""

from __future__ import annotations

import argparse
import gzip
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fashion_mnist_cnn.yaml"
FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def first_test_image(path: Path) -> None:
    from PIL import Image

    with gzip.open(FASHION, "rb") as f:
        f.read(16)  # IDX header: magic, count, rows, columns
        pixels = f.read(28 * 28)
    Image.frombytes("L", (28, 28), pixels).save(path)


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {out.stderr[-1000:]}")
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not FASHION.is_file():
        sys.exit(f"{FASHION} is missing: apt-get install dataset-fashion-mnist")
    work = Path(tempfile.mkdtemp(prefix="dlcli-predict-latency-"))
    runs_dir = work / "runs"
    trained = subprocess.run([sys.executable, "-m", "dlcli", "train", str(CONFIG), "-q", "--runs-dir", str(runs_dir),
                              "--set", "data.max_train_samples=2000", "--set", "train.epochs=1",
                              "--set", f"data.root={work / 'data'}"], capture_output=True, text=True, cwd=ROOT)
    if trained.returncode:
        sys.exit(trained.stderr[-2000:])
    run = trained.stdout.strip().splitlines()[-1]
    first_test_image(work / "one.png")

    commands = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "dlcli predict one.png": [sys.executable, "-m", "dlcli", "predict", "one.png", "--run", run,
                                  "--runs-dir", str(runs_dir)],
        "dlcli --help": [sys.executable, "-m", "dlcli", "--help"],
    }
    for cmd in commands.values():  # untimed: the page cache warm for every side
        timed(cmd, work)
    times = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd, work))
    median = {name: [statistics.median(v[i] for v in values) for i in (0, 1)] for name, values in times.items()}
    floor = median["python -c 'import torch'"]
    print(f"{args.repeats} repeats, alternating; medians (fastest)")
    print("| process | wall s | CPU s | wall / import torch | CPU / import torch |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in times.items():
        (wall, cpu), fastest = median[name], min(v[0] for v in values)
        print(f"| `{name}` | {wall:.2f} ({fastest:.2f}) | {cpu:.2f} | {wall / floor[0]:.2f} | {cpu / floor[1]:.2f} |")


if __name__ == "__main__":
    main()
