"""dlcli's example detection recipe against Ultralytics YOLO trained from scratch, same data, same CPU, same wall clock.

    python benchmarks/detection_vs_yolo.py --yolo-python /path/to/yolo-venv/bin/python [--kind shapes] [-n 1500]

Ultralytics is not a dlcli dependency: it runs in its own virtual environment (`python -m venv yolo-venv &&
yolo-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics`), offline (YOLO_OFFLINE=true, and a TTF
font saved as Arial.ttf in $YOLO_CONFIG_DIR/Ultralytics/, which this script does). What it does:

1. writes the example scenes (examples/make_scenes.py: the same pictures as COCO and YOLO layouts);
2. trains dlcli's configs/detection.yaml on the YOLO layout (data.yaml) at the scenes' size for --epochs epochs and
   takes its wall time as the budget;
3. trains YOLO (yolov8n.yaml, no weights, 0 loader workers, as Ultralytics runs on a CPU) for the same wall time
   (Ultralytics' own `time=` budget, in hours);
4. scores both on the test split with ONE scorer, pycocotools' COCOeval over the COCO test JSON, from each tool's
   predictions at confidence 0.001 (at most 100 boxes a picture): mAP@[.5:.95] and mAP@.5;
5. prints the time each needed to reach a val mAP50 (from each tool's own per-epoch validation: dlcli's
   metrics.jsonl, Ultralytics' results.csv).

Threads: both get the same torch thread count (--threads, default all cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

YOLO_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from ultralytics import YOLO
data, hours, size, out, test_dir, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), \
    Path(sys.argv[5]), int(sys.argv[6])
model = YOLO("yolov8n.yaml")
started = time.perf_counter()
model.train(data=data, epochs=10000, time=hours, imgsz=size, batch=batch, workers=0, device="cpu", pretrained=False,
            amp=False, plots=False, project=str(out), name="train", exist_ok=True, verbose=False, seed=0,
            deterministic=False)
seconds = time.perf_counter() - started
best = out / "train" / "weights" / "best.pt"
model = YOLO(str(best))
answers = {}
for path in sorted(test_dir.iterdir()):
    found = model.predict(str(path), imgsz=size, conf=0.001, iou=0.7, max_det=100, device="cpu", verbose=False)[0]
    answers[path.name] = {"boxes": found.boxes.xyxy.tolist(), "scores": found.boxes.conf.tolist(),
                          "classes": [int(c) for c in found.boxes.cls.tolist()]}
(out / "predictions.json").write_text(json.dumps({"seconds": seconds, "answers": answers}))
"""


def coco_scores(gt_json: Path, answers: dict) -> dict:
    """mAP@[.5:.95] and mAP@.5 of {file name: {boxes xyxy, scores, classes (0-based)}} by pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
    by_name = {img["file_name"].rsplit("/", 1)[-1]: img["id"] for img in gt.dataset["images"]}
    categories = sorted(c["id"] for c in gt.dataset["categories"])
    results = []
    for name, found in answers.items():
        for (x1, y1, x2, y2), score, cls in zip(found["boxes"], found["scores"], found["classes"]):
            results.append({"image_id": by_name[name], "category_id": categories[cls],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    if not results:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": float(ev.stats[0]), "map50": float(ev.stats[1])}


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first elapsed time at which a (seconds, mAP50) curve reaches target."""
    return next((t for t, v in curve if v >= target), None)


def run_dlcli(work: Path, data_yaml: Path, config: Path, epochs: int, size: int, threads: int, test_dir: Path,
              extra: list[str]):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    runs = work / "dlcli-runs"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dlcli", "train", str(config), "--set", f"data.data_yaml={data_yaml}",
                           "--set", f"train.epochs={epochs}",
                           "--set", f"data.image_size={size}", "--set", f"train.threads={threads}", "--runs-dir",
                           str(runs), "--quiet", *extra], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"dlcli train failed:\n{done.stderr[-2000:]}")
    run_id = done.stdout.strip().splitlines()[-1]
    import dlcli

    run = dlcli.load(run_id, runs_dir=runs)
    found = run.predict(sorted(str(p) for p in test_dir.iterdir()), conf=0.001)  # every box validation scores
    answers = {}
    for answer in found:
        boxes = answer["boxes"]
        answers[Path(answer["image"]).name] = {"boxes": [b["box"] for b in boxes],
                                               "scores": [b["score"] for b in boxes],
                                               "classes": [b["index"] for b in boxes]}
    curve, elapsed = [], 0.0
    for m in run.metrics:
        elapsed += m.get("seconds", 0.0)
        if "val_map50" in m:
            curve.append((elapsed, m["val_map50"]))
    return seconds, answers, curve


def run_yolo(work: Path, data_yaml: Path, python: str, seconds: float, size: int, threads: int, batch: int,
             test_dir: Path):
    config_dir = work / "yolo-config"
    font_dir = config_dir / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    fonts = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    try:
        import matplotlib

        fonts.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
    except ImportError:
        pass
    font = next((f for f in fonts if f.exists()), None)
    if font is None:
        sys.exit("no TTF font found to save as Arial.ttf for Ultralytics offline")
    shutil.copy(font, font_dir / "Arial.ttf")
    env = dict(os.environ, YOLO_OFFLINE="true", YOLO_CONFIG_DIR=str(config_dir), OMP_NUM_THREADS=str(threads))
    out = work / "yolo"
    done = subprocess.run([python, "-c", YOLO_SCRIPT, str(data_yaml), str(seconds / 3600), str(size), str(out),
                           str(test_dir), str(batch)], capture_output=True, text=True, env=env, cwd=work)
    if done.returncode != 0:
        sys.exit(f"YOLO failed:\n{done.stderr[-3000:]}")
    found = json.loads((out / "predictions.json").read_text())
    curve = []
    with open(out / "train" / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            row = {k.strip(): v for k, v in row.items()}
            if "time" in row and "metrics/mAP50(B)" in row:
                curve.append((float(row["time"]), float(row["metrics/mAP50(B)"])))
    return found["seconds"], found["answers"], curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yolo-python", default=os.environ.get("YOLO_PYTHON", ""),
                        help="the Python of a virtual environment with ultralytics")
    parser.add_argument("--kind", default="shapes", choices=["shapes", "glyphs"])
    parser.add_argument("-n", type=int, default=1500, help="scenes (train/val/test as make_scenes splits them)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=30, help="dlcli's epochs; its wall time is YOLO's budget")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=32, help="YOLO's batch size")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "detection.yaml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlcli-detection-bench"))
    parser.add_argument("--set", action="append", default=[], help="more --set for dlcli")
    args = parser.parse_args()
    if not args.yolo_python:
        sys.exit("pass --yolo-python (or set YOLO_PYTHON): a venv's python with ultralytics installed")
    from make_scenes import write_scenes

    work = args.work / args.kind
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_scenes(work / "data", args.n, size=args.size, kind=args.kind, seed=0)
    data_yaml = work / "data" / "data.yaml"
    test_dir = work / "data" / "images" / "test"
    extra = [a for s in args.set for a in ("--set", s)]
    d_seconds, d_answers, d_curve = run_dlcli(work, data_yaml, args.config, args.epochs, args.size, args.threads,
                                                test_dir, extra)
    y_seconds, y_answers, y_curve = run_yolo(work, data_yaml, args.yolo_python, d_seconds, args.size, args.threads,
                                             args.batch, test_dir)
    gt = work / "data" / "annotations" / "instances_test.json"
    d_scores, y_scores = coco_scores(gt, d_answers), coco_scores(gt, y_answers)
    print(f"{args.kind}: {args.n} scenes of {args.size} px, {args.threads} threads; test split scored by pycocotools")
    print(f"{'':10} {'seconds':>8} {'mAP50-95':>9} {'mAP50':>7}")
    print(f"{'dlcli':10} {d_seconds:8.0f} {d_scores['map']:9.3f} {d_scores['map50']:7.3f}")
    print(f"{'YOLOv8n':10} {y_seconds:8.0f} {y_scores['map']:9.3f} {y_scores['map50']:7.3f}")
    print(f"mAP50-95 difference (dlcli - YOLO): {100 * (d_scores['map'] - y_scores['map']):+.1f} points")
    for target in (0.5, 0.7, 0.9):
        d, y = time_to(d_curve, target), time_to(y_curve, target)
        fmt = lambda t: f"{t:.0f} s" if t is not None else "not reached"  # noqa: E731
        print(f"time to val mAP50 {target}: dlcli {fmt(d)}, YOLO {fmt(y)} (each tool's own validation)")
    out = {"kind": args.kind, "n": args.n, "size": args.size, "dlcli": {"seconds": d_seconds, **d_scores},
           "yolo": {"seconds": y_seconds, **y_scores}, "curves": {"dlcli": d_curve, "yolo": y_curve}}
    (work / "result.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
