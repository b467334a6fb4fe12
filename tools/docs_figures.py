"""The docs' figures, from real runs of the example configs on data written offline (a few minutes on 2 CPU cores).

    python tools/docs_figures.py           # writes docs/figures/*.png

Each figure is a file `dlcli train` + `dlcli evaluate` write into a run directory, copied as it is:
  curves.png, confusion.png   Fashion-MNIST (5,000 training images, 3 epochs) with configs/fashion_mnist_cnn.yaml
  detection-boxes.png         configs/detection.yaml on 600 example scenes (examples/make_scenes.py), 20 epochs
  detection-pr.png            the same run's precision against recall per class
  segmentation-masks.png      configs/segmentation.yaml on the same scenes' masks, 10 epochs
  forecast.png                configs/series_forecast.yaml with quantiles [0.1, 0.5, 0.9] on the example sales table
Fashion-MNIST is read from Debian's dataset-fashion-mnist package (or downloaded by torchvision).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures"


def dlcli(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "dlcli", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"dlcli {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def train_and_evaluate(config: Path, sets: list[str], work: Path) -> Path:
    args = ["train", str(config), "--runs-dir", str(work / "runs"), "--quiet"]
    for s in sets:
        args += ["--set", s]
    run = dlcli(*args, cwd=work)
    dlcli("evaluate", run, "--runs-dir", str(work / "runs"), cwd=work)
    return work / "runs" / run


def main() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from forecasting import write_example
    from make_scenes import write_scenes

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copies = []
        run = train_and_evaluate(ROOT / "configs" / "fashion_mnist_cnn.yaml",
                                 ["data.max_train_samples=5000", "train.epochs=3"], work)
        copies += [(run / "curves.png", "curves.png"), (run / "confusion-test.png", "confusion.png")]

        write_scenes(work / "shapes", 600, size=96, seed=0)
        run = train_and_evaluate(ROOT / "configs" / "detection.yaml",
                                 [f"data.data_yaml={work / 'shapes' / 'data.yaml'}", "train.epochs=20"], work)
        copies += [(run / "boxes-test.png", "detection-boxes.png"), (run / "pr-test.png", "detection-pr.png")]

        run = train_and_evaluate(ROOT / "configs" / "segmentation.yaml", [f"data.root={work / 'shapes'}"], work)
        copies += [(run / "masks-test.png", "segmentation-masks.png")]

        write_example(work / "sales.csv")
        run = train_and_evaluate(ROOT / "configs" / "series_forecast.yaml",
                                 [f"data.train_file={work / 'sales.csv'}", "task.quantiles=[0.1, 0.5, 0.9]"], work)
        copies += [(run / "forecast-test.png", "forecast.png")]

        for source, name in copies:
            shutil.copyfile(source, OUT / name)
            print(OUT / name)


if __name__ == "__main__":
    main()
