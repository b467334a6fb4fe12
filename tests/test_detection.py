"""task: detection and the detector preset: FCOS's assignment and loss on hand-made cases, mAP against pycocotools
called directly, a tiny detector trained for real on generated scenes (a box found where the truth is), and every
command on that run: evaluate, predict (--json, --save, --conf, --iou), the Python API, ONNX export, serve, resume."""

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dlcli import rundirs as runs
from dlcli.tasks import parse_task
from dlcli.tasks.detection import ROW, assign, centerness, coco_map

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_scenes", ROOT / "examples" / "make_scenes.py")
make_scenes = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("make_scenes", make_scenes)
_spec.loader.exec_module(make_scenes)


def detection_task(**options):
    return parse_task({"type": "detection", **options}).bind({}, ["a", "b"])


def grid(size: int, strides=(8, 16)) -> torch.Tensor:
    """The [px, py, stride] rows of a size x size picture's levels, finest first, as the detector lays them out."""
    rows = []
    for s in strides:
        centres = (torch.arange(size // s, dtype=torch.float32) + 0.5) * s
        py, px = torch.meshgrid(centres, centres, indexing="ij")
        rows.append(torch.stack([px.flatten(), py.flatten(), torch.full((px.numel(),), float(s))], 1))
    return torch.cat(rows)


# ---------------------------------------------------------------- assignment and loss, by hand


def test_assignment_by_hand():
    points = grid(32)  # stride 8: centres 4, 12, 20, 28; stride 16: 8, 24
    y = torch.tensor([[[1, 2, 2, 18, 18], [0, 0, 0, 32, 32], [-1, 0, 0, 0, 0]]], dtype=torch.float32)
    positive, index = assign(points, y, center_radius=1.5)
    found = {(float(px), float(py), float(s), int(i)) for (px, py, s), p, i in zip(points, positive[0], index[0]) if p}
    # the small box (index 0) owns the stride-8 points inside it and within 12 px of its centre (10, 10); the big
    # box (index 1) the stride-8 points within 12 px of (16, 16) that the small one does not hold; stride 16's
    # range starts at a reach of 64, which neither box has; the padding row owns nothing
    small = {(x, yy, 8.0, 0) for x in (4.0, 12.0) for yy in (4.0, 12.0)}
    big = {(x, yy, 8.0, 1) for x in (4.0, 12.0, 20.0, 28.0) for yy in (4.0, 12.0, 20.0, 28.0)
           if abs(x - 16) < 12 and abs(yy - 16) < 12} - {(x, yy, 8.0, 1) for x, yy, _, _ in small}
    assert found == small | big


def test_scale_ranges_send_large_boxes_to_coarse_levels():
    points = grid(256, strides=(8, 16, 32))
    y = torch.tensor([[[0, 28, 28, 228, 228]]], dtype=torch.float32)  # reach about 100 from its centre: stride 16
    positive, _ = assign(points, y, center_radius=1.5)
    assert set(points[positive[0], 2].tolist()) == {16.0}


def test_centerness_is_one_at_the_centre_and_falls_off():
    box = torch.tensor([0.0, 0.0, 20.0, 10.0])
    assert centerness(torch.tensor([10.0, 5.0]), box).item() == pytest.approx(1.0)
    assert centerness(torch.tensor([5.0, 5.0]), box).item() == pytest.approx(math.sqrt(5 / 15))


def dense_for(points, y, task, classes=2, box_shift=0.0, wrong_class=False):
    """Dense rows that answer `y` perfectly at its positives (boxes, classes, centre-ness) and say `nothing here`
    elsewhere; `box_shift` moves every predicted box, `wrong_class` names the other class."""
    positive, index = assign(points, y, task.center_radius)
    out = torch.zeros(1, len(points), ROW + classes)
    out[0, :, :3] = points
    out[0, :, 3:7] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    out[0, :, 7] = -8.0
    out[0, :, ROW:] = -12.0
    boxes = y[0, index[0], 1:5]
    cls = y[0, index[0], 0].long()
    p = positive[0]
    out[0, p, 3:7] = boxes[p] + box_shift
    target = centerness(points[p], boxes[p]).clamp(1e-4, 1 - 1e-4)
    out[0, p, 7] = torch.log(target / (1 - target))
    out[0, p, ROW + ((1 - cls[p]) if wrong_class else cls[p])] = 12.0
    return out


def test_loss_is_low_for_the_right_answer_and_grows_with_each_mistake():
    task = detection_task()
    points = grid(32)
    y = torch.tensor([[[1, 2, 2, 18, 18], [0, 14, 16, 30, 30]]], dtype=torch.float32)
    right = task.criterion(dense_for(points, y, task), y).item()
    shifted = task.criterion(dense_for(points, y, task, box_shift=4.0), y).item()
    wrong = task.criterion(dense_for(points, y, task, wrong_class=True), y).item()
    # what remains of the perfect answer is the centre-ness BCE's own entropy
    assert right < 0.8
    assert shifted > right + 0.2
    assert wrong > right + 5.0
    out = dense_for(points, y, task)
    assert task.step_stat(out, y).item() == pytest.approx(1.0)  # the positives' boxes are the truth: IoU 1


def test_decoding_keeps_the_best_of_overlapping_boxes_per_class():
    task = detection_task(nms_iou=0.5)
    out = torch.full((1, 4, ROW + 2), -12.0)
    out[0, :, 7] = 12.0
    out[0, :, 3:7] = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40]],
                                  dtype=torch.float32)
    out[0, 0, ROW + 0] = 3.0  # the best of class a
    out[0, 1, ROW + 0] = 1.0  # overlaps it (IoU 0.82): dropped
    out[0, 2, ROW + 1] = 2.0  # the same box, class b: kept
    out[0, 3, ROW + 0] = 0.5  # elsewhere: kept
    found = task.shrink(out)[0]
    kept = found[found[:, 4] >= 0]
    assert kept[:, 5].tolist() == [0.0, 1.0, 0.0]
    assert kept[:, :4].tolist() == [[0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]]
    assert (found[3:, 4] == -1).all() and found.shape == (task.max_detections, 6)


# ---------------------------------------------------------------- metrics against pycocotools


def test_map_matches_pycocotools_called_directly():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    truth, found = [], []
    y = torch.full((6, 4, 5), -1.0)
    out = torch.full((6, 10, 6), -1.0)
    out[..., :4] = 0
    for i in range(6):
        for j in range(int(rng.integers(1, 5))):
            x1, y1 = rng.uniform(0, 60, 2)
            w, h = rng.uniform(8, 40, 2)
            c = int(rng.integers(0, 3))
            y[i, j] = torch.tensor([c, x1, y1, x1 + w, y1 + h])
            truth.append({"id": len(truth) + 1, "image_id": i, "category_id": c, "bbox": [x1, y1, w, h],
                          "area": w * h, "iscrowd": 0})
        for j in range(int(rng.integers(0, 10))):
            x1, y1 = rng.uniform(0, 60, 2)
            w, h = rng.uniform(8, 40, 2)
            c, s = int(rng.integers(0, 3)), float(rng.uniform(0.1, 1))
            if j < 3 and y[i, j, 0] >= 0:  # near a true box, so some are hits
                x1, y1 = (y[i, j, 1:3] + torch.tensor(rng.normal(0, 2, 2))).tolist()
                w, h = (y[i, j, 3:5] - y[i, j, 1:3]).tolist()
                c = int(y[i, j, 0])
            out[i, j] = torch.tensor([x1, y1, x1 + w, y1 + h, s, c])
            found.append({"image_id": i, "category_id": c, "bbox": [x1, y1, w, h], "score": s})
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(6)], "annotations": truth,
                  "categories": [{"id": c} for c in range(3)]}
    gt.createIndex()
    evaluation = COCOeval(gt, gt.loadRes(found), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    ours = coco_map(out, y, 3)
    assert evaluation.stats[1] > 0.05  # the case has hits to score
    assert ours["map"] == pytest.approx(evaluation.stats[0], abs=1e-6)
    assert ours["map_50"] == pytest.approx(evaluation.stats[1], abs=1e-6)
    assert ours["map_75"] == pytest.approx(evaluation.stats[2], abs=1e-6)
    assert ours["mar_100"] == pytest.approx(evaluation.stats[8], abs=1e-6)
    task = parse_task("detection").bind({}, ["a", "b", "c"])
    validation = task.scores(task.stats(out, y))  # what val_* and test_* record
    report = task.report(out, y)
    expected = {"map": evaluation.stats[0], "map50": evaluation.stats[1], "map75": evaluation.stats[2],
                "recall": evaluation.stats[8]}
    assert validation == pytest.approx(expected, abs=1e-6)
    assert {k: report[k] for k in expected} == pytest.approx(expected, abs=1e-6)
    per = {c: float(evaluation.eval["precision"][0, :, k, 0, -1].clip(0).mean()) for k, c in
           enumerate(evaluation.params.catIds)}
    assert [r["map50"] for r in report["per_class"]] == pytest.approx([per[c] for c in range(3)], abs=1e-6)


# ---------------------------------------------------------------- a tiny detector trained for real


def config(data_yaml: str, **train) -> dict:
    return {"name": "det", "seed": 0, "task": "detection",
            "data": {"dataset": "yolo", "data_yaml": data_yaml, "image_size": 64},
            "model": {"type": "detector", "channels": [16, 32, 48, 64, 64], "width": 48},
            "optimizer": {"name": "adamw", "lr": 0.004}, "scheduler": {"name": "cosine"},
            "train": {"epochs": 10, "batch_size": 16, "device": "cpu", **train}}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    make_scenes.write_scenes(out, n=200, kind="shapes", sizes=(56, 88), seed=1, val=0.1, test=0.1,
                             layouts=("yolo",), max_objects=2)
    return out


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    from dlcli.api import train

    return train(config(str(scenes / "data.yaml")), runs_dir=tmp_path_factory.mktemp("runs"), quiet=True)


def truth_of(label: Path, hw) -> list[tuple[int, list[float]]]:
    """A YOLO label file's boxes in its picture's pixels."""
    h, w = hw
    boxes = []
    for line in label.read_text().split("\n"):
        if line.strip():
            c, cx, cy, bw, bh = (float(v) for v in line.split())
            boxes.append((int(c), [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]))
    return boxes


def iou(a, b) -> float:
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


def test_trained_detector_finds_the_objects_in_their_own_pixels(trained, scenes):
    pictures = sorted((scenes / "images" / "test").glob("*.png"))
    answers = trained.predict([str(p) for p in pictures])
    hits = total = 0
    for picture, answer in zip(pictures, answers):
        with Image.open(picture) as img:
            hw = (img.height, img.width)
        for c, box in truth_of(scenes / "labels" / "test" / f"{picture.stem}.txt", hw):
            total += 1
            hits += any(b["index"] == c and iou(b["box"], box) > 0.5 for b in answer["boxes"])
    assert total >= 10
    assert hits / total >= 0.5, (hits, total)
    summary = json.loads((trained.dir / "summary.json").read_text())
    assert summary["test"]["map50"] > 0.3 and summary["headline"] == "map"
    assert summary["best_metric"]["name"] == "val_map"


def test_run_predict_takes_arrays_and_pil_images_in_their_own_pixels(trained, scenes):
    picture = sorted((scenes / "images" / "test").glob("*.png"))[0]
    from_file = trained.predict(str(picture))[0]["boxes"]
    with Image.open(picture) as img:
        as_pil = trained.predict(img.convert("RGB"))[0]["boxes"]
        as_array = trained.predict(np.asarray(img.convert("RGB")))[0]["boxes"]
        assert all(b["box"][2] <= img.width and b["box"][3] <= img.height for b in from_file)
    assert from_file and as_pil == from_file and as_array == from_file
    strict = trained.predict(str(picture), conf=0.99)[0]["boxes"]
    assert len(strict) < len(from_file) and all(b["score"] >= 0.99 for b in strict)


def test_predict_json_save_and_thresholds(trained, scenes, cli, tmp_path):
    pictures = sorted((scenes / "images" / "test").glob("*.png"))[:2]
    (tmp_path / "other").mkdir()  # a picture of the same name from another folder: drawn as NAME-2.png
    pictures.append(Path(shutil.copy(sorted((scenes / "images" / "val").glob("*.png"))[0],
                                     tmp_path / "other" / pictures[0].name)))
    common = ["--run", trained.dir.name, "--runs-dir", trained.dir.parent]
    result = cli("predict", *pictures, *common, "--json", "--conf", "0.1", "--save", tmp_path / "drawn")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [Path(f["image"]).name for f in found] == [p.name for p in pictures]
    saved = [f"{pictures[0].stem}.png", f"{pictures[1].stem}.png", f"{pictures[0].stem}-2.png"]
    for answer, picture, name in zip(found, pictures, saved):
        assert answer["boxes"] and all(b["score"] >= 0.1 for b in answer["boxes"])
        assert set(answer["boxes"][0]) == {"label", "index", "score", "box"}
        with Image.open(tmp_path / "drawn" / name) as drawn, Image.open(picture) as own:
            assert drawn.size == own.size and drawn.tobytes() != own.convert("RGB").tobytes()
    loose = json.loads(cli("predict", pictures[0], *common, "--json", "--conf", "0.05", "--iou", "0.95").stdout)
    tight = json.loads(cli("predict", pictures[0], *common, "--json", "--conf", "0.05", "--iou", "0.1").stdout)
    assert len(tight[0]["boxes"]) < len(loose[0]["boxes"])
    bad = cli("predict", pictures[0], *common, "--iou", "1.5")
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: --iou must be between 0 and 1, not 1.5"


def test_evaluate_writes_the_per_class_table_curves_and_boxes(trained, cli):
    result = cli("evaluate", trained.dir.name, "--runs-dir", trained.dir.parent, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    summary = json.loads((trained.dir / "summary.json").read_text())
    assert report["map"] == pytest.approx(summary["test"]["map"], abs=1e-6)
    assert [r["label"] for r in report["per_class"]] == ["circle", "square", "triangle"]
    assert sum(r["objects"] for r in report["per_class"]) == report["objects"] > 0
    for key in ("pr_curves", "boxes"):
        with Image.open(report["files"][key]) as figure:
            assert figure.width > 100
    text = cli("evaluate", trained.dir.name, "--runs-dir", trained.dir.parent)
    assert "mAP@.50" in text.stdout and "triangle" in text.stdout


def test_onnx_export_answers_as_predict(trained, scenes, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from dlcli.data.images import load_image
    from dlcli.export import export_run, read_metadata

    result = export_run(trained.dir, output=str(tmp_path / "det.onnx"), say=lambda *_: None)
    meta = read_metadata(result.path)
    assert meta["task"] == "detection" and meta["output_shape"] == [-1, 100, 6] and "NMS" in meta["output"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    pictures = sorted((scenes / "images" / "test").glob("*.png"))[:4]
    sizes = []
    x = torch.stack([load_image(str(p), (3, 64, 64), sizes=sizes) for p in pictures])
    got = session.run(None, {"input": x.permute(0, 2, 3, 1).numpy()})[0]
    expected = trained.predict([str(p) for p in pictures], conf=0.05)
    for rows, (h, w), answer in zip(got, sizes, expected):
        rows = rows[rows[:, 4] >= 0.05]
        assert len(rows) == len(answer["boxes"]) > 0
        scaled = rows[:, :4] * np.array([w / 64, h / 64, w / 64, h / 64])
        assert np.allclose(scaled, [b["box"] for b in answer["boxes"]], atol=0.02)
        assert rows[:, 5].astype(int).tolist() == [b["index"] for b in answer["boxes"]]


def test_serve_answers_boxes_in_each_uploads_pixels(trained, scenes):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dlcli.serve.app import create_app

    pictures = sorted((scenes / "images" / "test").glob("*.png"))[:2]
    expected = trained.predict([str(p) for p in pictures])
    with TestClient(create_app(trained.dir), base_url="http://127.0.0.1") as client:
        answer = client.post("/predict", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in pictures])
    assert answer.status_code == 200, answer.text
    for got, want in zip(answer.json(), expected):
        assert [b["label"] for b in got["boxes"]] == [b["label"] for b in want["boxes"]]
        assert np.allclose([b["box"] for b in got["boxes"]], [b["box"] for b in want["boxes"]], atol=0.02)


def test_resume_continues_exactly(scenes, tmp_path):
    from dlcli.api import load, train

    cfg = config(str(scenes / "data.yaml"), epochs=2)
    cfg["data"]["max_train_samples"] = 48
    cfg["scheduler"] = {"name": "exponential", "gamma": 0.5}  # a horizon-free schedule: the 1-epoch run's is the same
    straight = train(cfg, runs_dir=tmp_path / "a", quiet=True)
    first = train({**cfg, "train": {**cfg["train"], "epochs": 1}}, runs_dir=tmp_path / "b", quiet=True)
    load(first.dir.name, runs_dir=tmp_path / "b").resume(epochs=2, quiet=True)
    resumed, whole = runs.read_metrics(first.dir), runs.read_metrics(straight.dir)
    assert [m["epoch"] for m in resumed] == [m["epoch"] for m in whole] == [1, 2]
    for a, b in zip(resumed, whole):
        assert {k: v for k, v in a.items() if k != "seconds"} == pytest.approx({k: v for k, v in b.items()
                                                                               if k != "seconds"}, abs=1e-6)
    wa = runs.load_checkpoint(straight.dir / "checkpoints" / "last.pt")["model"]
    wb = runs.load_checkpoint(first.dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------- models, init, config errors


def test_torchvision_backbone_takes_a_classification_runs_weights(tmp_path):
    from dlcli.config import validate_config
    from dlcli.finetune import init_from
    from dlcli.models import build_model

    base = {"data": {"dataset": "synthetic", "shape": [3, 64, 64], "num_classes": 2}}
    classifier, _ = build_model(validate_config({**base, "model": {"type": "backbone", "arch": "resnet18",
                                                                   "weights": "none"}}).model, (3, 64, 64), 2)
    torch.save({"model": classifier.state_dict()}, tmp_path / "cls.pt")
    cfg = {"type": "detector", "backbone": "resnet18", "weights": "none"}
    boxes = {"task": "detection", "data": {"dataset": "yolo", "data_yaml": "data.yaml"}}  # not read to build a model
    detector, rows = build_model(validate_config({**boxes, "model": cfg}).model, (3, 64, 64), 3)
    assert [r.name for r in rows] == ["backbone_1", "fpn", "head"]
    report = init_from(str(tmp_path / "cls.pt"), detector, tmp_path)
    loaded = dict((layer, counts[0]) for layer, *counts in report.rows)
    assert loaded["backbone_1"][0] == len(detector.backbone_1.state_dict()) and loaded["head"][0] == 0
    key = "backbone_1.net.layer4.1.conv2.weight"
    assert torch.equal(detector.state_dict()[key], classifier.state_dict()[key])
    out = detector.eval()(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 64 + 16 + 4, ROW + 3)  # resnet18's strides 8, 16, 32 on 64 px
    # weights by file, as backbone layers take them: torchvision's resnet18 state dict (its fc left out)
    import torchvision

    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    from_file, _ = build_model(validate_config({**boxes, "model": {**cfg, "weights": str(tmp_path / "resnet18.pth")}})
                               .model, (3, 64, 64), 3)
    assert torch.equal(from_file.state_dict()["backbone_1.net.layer3.0.conv1.weight"], net.layer3[0].conv1.weight)


def test_detection_refuses_what_it_cannot_honour(scenes):
    from dlcli.errors import ConfigError
    from dlcli.config import validate_config

    with pytest.raises(ConfigError, match="'val_loss' is not a metric of the detection task"):
        validate_config(config(str(scenes / "data.yaml"), checkpoint_monitor="val_loss"))
    assert validate_config(config(str(scenes / "data.yaml"))).train.checkpoint_monitor == "val_map"
    with pytest.raises(ConfigError, match=r"model.type: detection needs a detector model .*, not cnn$"):
        validate_config({**config(str(scenes / "data.yaml")), "model": {"type": "cnn"}})
    with pytest.raises(ConfigError, match="model.type: a detector model answers detection, not classification"):
        validate_config({"data": {"dataset": "synthetic", "shape": [3, 32, 32]}, "model": {"type": "detector"}})


def test_two_processes_score_validation_map_over_the_whole_split(scenes, tmp_path):
    """DDP over gloo: each rank decodes its share of the validation pictures, and mAP (no sum over pictures) is
    computed from every rank's boxes gathered: each epoch's val_map equals a single process scoring that epoch's
    weights on the whole split, and the run's test map equals `dlcli evaluate`'s."""
    from tests.test_distributed import dlcli, finished, run_of

    # precise_bn off: each rank's batchnorm statistics drift apart with its own batches, and scoring must use rank 0's
    cfg = config(str(scenes / "data.yaml"), epochs=2, batch_size=8, precise_bn=False)
    cfg["data"]["max_train_samples"] = 48
    cfg["model"]["channels"], cfg["model"]["width"] = [8, 16, 16, 16, 16], 16
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    finished(dlcli("train", path, "--devices", "2", "--runs-dir", tmp_path / "two", "-q"))
    run = run_of(tmp_path / "two")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    from dlcli.evaluate import evaluate_run

    last = evaluate_run(run, split="val", checkpoint="last", device="cpu")
    assert rows[-1]["val_map"] == pytest.approx(last["map"], abs=1e-9)
    assert last["samples"] == 20 and rows[-1]["val_map"] > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["map"] == pytest.approx(evaluate_run(run, device="cpu")["map"], abs=1e-9)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.must_run_in_ci
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium (.ci/run does)")
def test_the_page_draws_the_boxes_on_the_picture(trained, scenes):
    playwright = pytest.importorskip("playwright.sync_api")
    picture = sorted((scenes / "images" / "test").glob("*.png"))[0]
    expected = trained.predict(str(picture))[0]["boxes"]
    from tests.test_serve import serving

    with serving(Path(trained.dir)) as (url, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        page.set_input_files("#file", str(picture))
        page.wait_for_selector(".result .label", timeout=10_000)
        labels = page.locator(".result .label").all_inner_texts()
        page.wait_for_function("document.querySelector('.result canvas').width > 0", timeout=10_000)
        width = page.evaluate("document.querySelector('.result canvas').width")
        # a pixel on the first box's left edge is the box's colour, not the picture's
        edge = [int(expected[0]["box"][0]), int((expected[0]["box"][1] + expected[0]["box"][3]) / 2)]
        drawn = page.evaluate("""([x, y]) => Array.from(document.querySelector('.result canvas')
            .getContext('2d').getImageData(x, y, 1, 1).data)""", edge)
        browser.close()
    with Image.open(picture) as img:
        assert width == img.width
        own = img.convert("RGB").getpixel(tuple(edge))
    js_round = lambda v: str(math.floor(v + 0.5))  # noqa: E731 (JavaScript's Math.round, halves up)
    assert labels == [f"{b['label']} [{', '.join(js_round(v) for v in b['box'])}]" for b in expected]
    assert tuple(drawn[:3]) != own
