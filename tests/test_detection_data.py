"""Detection data: COCO, YOLO and VOC layouts read into the spatial contract's targets, bad data refused in one line,
`dlcli data check` on them, and the example scene generator (examples/make_scenes.py)."""

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.data.catalog import parse_data
from dlcli.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_scenes", ROOT / "examples" / "make_scenes.py")
make_scenes = importlib.util.module_from_spec(_spec)
sys.modules["make_scenes"] = make_scenes  # dataclasses look their module up while the class is made
_spec.loader.exec_module(make_scenes)

runner = CliRunner()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """24 scenes of shapes, pictures of different sizes (40..72 px a side), in all three layouts."""
    out = tmp_path_factory.mktemp("scenes")
    summary = make_scenes.write_scenes(out, n=24, sizes=(40, 72), seed=5, val=0.25, test=0.25)
    return out, summary


def _coco(out, size=32, **keys):
    ann = Path(out) / "annotations"
    return parse_data({"dataset": "coco", "train_annotations": str(ann / "instances_train.json"),
                       "val_annotations": str(ann / "instances_val.json"),
                       "test_annotations": str(ann / "instances_test.json"), "image_size": size, "cache": False,
                       **keys})


def _yolo(out, size=32, **keys):
    return parse_data({"dataset": "yolo", "data_yaml": str(Path(out) / "data.yaml"), "image_size": size,
                       "cache": False, **keys})


def test_coco_and_yolo_layouts_of_the_same_scenes_read_into_identical_targets(scenes):
    out, summary = scenes
    coco, yolo = _coco(out).read(0), _yolo(out).read(0)
    assert coco.classes == yolo.classes == ["circle", "square", "triangle"]
    boxes = 0
    for split in ("train", "val", "test"):
        a, b = getattr(coco, split), getattr(yolo, split)
        assert a.y.dtype == torch.float32 and a.y.shape == b.y.shape and a.y.shape[2] == 5
        assert torch.equal(a.x, b.x)
        # identical to the last bit: shares and pixel boxes meet in float64 (the YOLO files hold each share's
        # shortest exact text), then round to the same float32
        assert torch.equal(a.y, b.y)
        real = a.y[..., 0] >= 0
        boxes += int(real.sum())
        assert (a.y[..., 1:][~real] == 0).all()
        assert ((a.y[..., 3] > a.y[..., 1]) | ~real).all() and ((a.y[..., 4] > a.y[..., 2]) | ~real).all()
        assert (a.y[..., 1:][real] >= 0).all() and (a.y[..., 1:][real] <= 32).all()
    assert boxes == sum(s["boxes"] for s in summary["splits"].values())


def _write_picture(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)


def test_voc_layout_of_the_same_scenes_reads_into_the_coco_targets(scenes):
    out, _ = scenes
    coco = _coco(out).read(0)
    voc = parse_data({"dataset": "voc", "root": str(out / "voc"), "classes": coco.classes, "image_size": 32,
                      "cache": False}).read(0)
    for split in ("train", "val", "test"):
        a, b = getattr(coco, split), getattr(voc, split)
        assert torch.equal(a.x, b.x) and torch.equal(a.y[..., 0], b.y[..., 0])
        assert (a.y[..., 1:] - b.y[..., 1:]).abs().max() < 1e-4


def test_boxes_move_with_the_stretch_resize_as_computed_by_hand(tmp_path):
    # A 100 x 50 picture (width x height) stretched to image_size [32, 64] (height, width): x * 0.64, y * 0.64.
    _write_picture(tmp_path / "images" / "train" / "a.png", 100, 50)
    _write_picture(tmp_path / "images" / "train" / "b.png", 100, 50)
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50},
                       {"id": 2, "file_name": "b.png", "width": 100, "height": 50}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 5, 30, 20], "iscrowd": 0},
                            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [50, 0, 50, 50]},
                            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 50], "iscrowd": 1}],
            "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    entry = parse_data({"dataset": "coco", "train_annotations": str(tmp_path / "annotations/instances_train.json"),
                        "image_size": [32, 64], "val_split": 0.0, "test_split": 0.0, "cache": False})
    data = entry.read(0)
    assert data.classes == ["dog", "cat"]  # by category id: 3 then 7
    assert data.input_shape == (3, 32, 64)
    y = data.train.y
    assert y.shape == (2, 2, 5)  # two boxes at most (the crowd box is not a target)
    expected_a = torch.tensor([[1, 6.4, 3.2, 25.6, 16.0], [0, 32.0, 0.0, 64.0, 32.0]])
    assert torch.allclose(y[0], expected_a, atol=1e-5)
    assert torch.equal(y[1], torch.tensor([[-1.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0]]))  # b.png: no object
    assert any("1 crowd box (iscrowd: 1) left out" in n for n in data.notes)

    # The same boxes as YOLO lines: cx cy w h as shares of the picture.
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.25 0.3 0.3 0.4\n0 0.75 0.5 0.5 1.0\n")
    yolo = parse_data({"dataset": "yolo", "root": str(tmp_path), "names": ["dog", "cat"], "image_size": [32, 64],
                       "val_split": 0.0, "test_split": 0.0, "cache": False}).read(0)
    assert torch.allclose(yolo.train.y, y, atol=1e-5)

    # And as Pascal VOC: pixels counted from 1, both ends included (xmin 11 is the 11th pixel, whose left edge is 10).
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    _write_picture(tmp_path / "voc" / "JPEGImages" / "a.jpg", 100, 50)
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>100</width><height>50</height><depth>3</depth></size>"
        "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>40</xmax>"
        "<ymax>25</ymax></bndbox></object>"
        "<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
        "<ymax>9</ymax></bndbox></object></annotation>")
    voc = parse_data({"dataset": "voc", "root": str(tmp_path / "voc"), "classes": ["dog", "cat"],
                      "image_size": [32, 64], "val_split": 0.0, "test_split": 0.0, "cache": False}).read(0)
    assert torch.allclose(voc.train.y[0, 0], expected_a[0], atol=1e-5)
    assert any("1 difficult object left out" in n for n in voc.notes)


def test_val_and_test_are_cut_from_train_seeded_when_the_layout_has_none(tmp_path):
    make_scenes.write_scenes(tmp_path, n=30, size=32, seed=1, val=0.0, test=0.0, layouts=("yolo",))
    entry = _yolo(tmp_path, val_split=0.2, test_split=0.2)
    a, b, c = entry.read(0), entry.read(0), entry.read(1)
    assert len(a.train) + len(a.val) + len(a.test) == 30 and 5 <= len(a.val) <= 7 and 5 <= len(a.test) <= 7
    assert torch.equal(a.val.y, b.val.y) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.test.x, c.test.x)
    pixels = lambda s: {bytes(p.numpy()) for p in s.x}  # noqa: E731
    assert not pixels(a.train) & pixels(a.val) and not pixels(a.train) & pixels(a.test)


# ---------------------------------------------------------------- bad data, each refused in one line


def _coco_case(tmp_path, change) -> tuple[str, Path]:
    _write_picture(tmp_path / "pics" / "a.png", 100, 50)
    book = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [40, 10, 20, 20]}],
            "categories": [{"id": 1, "name": "thing"}]}
    change(book)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(book))
    entry = parse_data({"dataset": "coco", "train_annotations": str(path), "train_images": str(tmp_path / "pics"),
                        "image_size": 16})
    with pytest.raises(DataError) as err:
        entry.read(0)
    assert not (tmp_path / ".cache").exists()  # refused before anything was decoded or cached
    return str(err.value), path


def _set_box(box):
    def change(book):
        book["annotations"][1]["bbox"] = box
    return change


@pytest.mark.parametrize("change, words", [
    (_set_box([90, 10, 20, 20]), ["annotation id 7", "lies outside the picture", "x 90..110", "x 0..100"]),
    (_set_box([40, -5, 20, 20]), ["annotation id 7", "lies outside"]),
    (_set_box([40, 10, 0, 20]), ["annotation id 7", "box of zero area"]),
    (lambda b: b["annotations"][1].update(category_id=4), ["annotation id 7", "unknown category id 4",
                                                            "categories of this file are 1"]),
    (lambda b: b.pop("categories"), ["not a COCO instances file", "no 'categories' list"]),
    (lambda b: (b.pop("annotations"), b.pop("images")), ["no 'images' and 'annotations' lists"]),
    (lambda b: b["annotations"][1].pop("bbox"), ["annotation id 7 has no bbox"]),
    (lambda b: b["images"][0].update(file_name="gone.png"), ["image id 1", "gone.png: no such picture"]),
])
def test_bad_coco_data_is_refused_naming_the_file_and_annotation(tmp_path, change, words):
    message, path = _coco_case(tmp_path, change)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, message


def test_a_coco_box_within_the_tolerance_is_clipped_not_refused(tmp_path):
    _write_picture(tmp_path / "a.png", 100, 50)
    book = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [80.5, -0.5, 20.4, 10]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "train.json").write_text(json.dumps(book))
    data = parse_data({"dataset": "coco", "train_annotations": str(tmp_path / "train.json"), "image_size": [50, 100],
                       "val_split": 0.0, "test_split": 0.0, "cache": False}).read(0)
    assert torch.allclose(data.train.y[0, 0], torch.tensor([0, 80.5, 0.0, 100.0, 9.5]))


def test_a_json_that_is_not_json_names_its_line(tmp_path):
    (tmp_path / "train.json").write_text('{"images": [],\n "annotations": [,]}')
    entry = parse_data({"dataset": "coco", "train_annotations": str(tmp_path / "train.json")})
    with pytest.raises(DataError, match=r"train.json: line 2, column \d+: not JSON"):
        entry.read(0)


def _yolo_case(tmp_path, lines: str, extra_label: bool = False) -> str:
    for name in ("a", "b"):
        _write_picture(tmp_path / "images" / "train" / f"{name}.png", 40, 20)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "train" / "b.txt").write_text(lines)
    if extra_label:
        (tmp_path / "labels" / "train" / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [thing, other, third]\n")
    with pytest.raises(DataError) as err:
        _yolo(tmp_path).read(0)
    assert not (tmp_path / ".cache").exists()
    return str(err.value)


@pytest.mark.parametrize("lines, where, words", [
    ("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n", "b.txt: line 2", ["4 fields, expected 5"]),
    ("0 0.5 0.5 0.2 0.2 0.9\n", "b.txt: line 1", ["6 fields, expected 5 (class cx cy w h) or a polygon"]),
    ("0 0.1 0.1 0.5 0.1 0.5 0.6 0.1\n", "b.txt: line 1", ["8 fields, expected 5"]),
    ("0 0.1 0.1 0.5 0.1 50 60\n", "b.txt: line 1", ["the points must be shares of the picture in 0..1"]),
    ("\n2 12 7 4 4\n", "b.txt: line 2", ["must be shares of the picture in 0..1", "12 7 4 4"]),
    ("3 0.5 0.5 0.2 0.2\n", "b.txt: line 1", ["class 3 is not one of the 3 classes (0..2)"]),
    ("1 0.95 0.5 0.3 0.2\n", "b.txt: line 1", ["lies outside the picture"]),
    ("1 0.5 0.5 0 0.2\n", "b.txt: line 1", ["box of zero area"]),
    ("0 0.5 zero 0.2 0.2\n", "b.txt: line 1", ["is not five numbers"]),
])
def test_bad_yolo_lines_are_refused_naming_the_file_and_line(tmp_path, lines, where, words):
    message = _yolo_case(tmp_path, lines)
    assert str(tmp_path / "labels" / "train") in message and where in message and "\n" not in message
    for word in words:
        assert word in message, message


def test_a_yolo_label_file_without_its_picture_is_refused(tmp_path):
    message = _yolo_case(tmp_path, "0 0.5 0.5 0.2 0.2\n", extra_label=True)
    assert f"{tmp_path / 'labels' / 'train' / 'c.txt'}: a label file without its picture" in message


def test_a_data_yaml_without_names_says_what_is_missing(tmp_path):
    (tmp_path / "data.yaml").write_text("train: images/train\n")
    with pytest.raises(DataError, match="not a YOLO data.yaml: no 'names'"):
        _yolo(tmp_path).read(0)


# ---------------------------------------------------------------- dlcli data check


def test_data_check_counts_boxes_per_class_and_size_and_pictures_without_objects(tmp_path):
    # By hand: a.png (100 x 100) holds a 10x10 box (small) and a 40x40 (medium) of 'cat', b.png a 99x99 (large) of
    # 'dog' and a crowd box, c.png nothing.
    for name in "abc":
        _write_picture(tmp_path / "images" / f"{name}.png", 100, 100)
    book = {"images": [{"id": i + 1, "file_name": f"{n}.png", "width": 100, "height": 100} for i, n in enumerate("abc")],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40]},
                            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 99, 99]},
                            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (tmp_path / "instances_train.json").write_text(json.dumps(book))
    result = runner.invoke(app, ["data", "check", str(tmp_path / "instances_train.json"), "--json",
                                 "--set", "data.image_size=20"])
    report = json.loads(result.stdout)
    assert report["dataset"] == "coco" and report["ok"], result.stdout
    assert report["classes"]["counts"]["train"] == {"cat": 2, "dog": 1}
    train = report["boxes"]["train"]
    assert (train["pictures"], train["without_objects"], train["boxes"], train["most_boxes"]) == (3, 1, 3, 2)
    assert (train["small"], train["medium"], train["large"], train["left_out"]) == (1, 1, 1, 1)
    checks = {f["check"]: f["message"] for f in report["findings"]}
    assert "1 of 3 pictures hold no object" in checks["no-objects"]
    assert "1 boxes are under 4 pixels" in checks["tiny-boxes"]  # 10 px of 100 is 2 px at image_size 20


def test_data_check_lists_every_problem_of_a_yolo_dataset(tmp_path):
    for name in ("a", "b"):
        _write_picture(tmp_path / "images" / "train" / f"{name}.png", 40, 20)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.2\n1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "train" / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: {0: thing, 1: other}\n")
    result = runner.invoke(app, ["data", "check", str(tmp_path / "data.yaml"), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["dataset"] == "yolo" and report["errors"] == 3
    errors = {f["check"]: f["message"] for f in report["findings"] if f["severity"] == "error"}
    assert "a.txt: line 2: class 5" in errors["unknown-class"]
    assert "b.txt: line 1: 4 fields" in errors["bad-line"]
    assert "c.txt: a label file without its picture" in errors["label-without-picture"]
    assert report["classes"]["counts"]["train"] == {"thing": 1, "other": 1}  # the good lines are still counted


def test_data_check_on_generated_scenes_matches_a_count_of_the_json(scenes):
    out, _ = scenes
    result = runner.invoke(app, ["data", "check", str(out / "annotations" / "instances_train.json"), "--json"])
    report = json.loads(result.stdout)
    assert report["ok"], result.stdout
    for split in ("train", "val", "test"):
        book = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in book["categories"]}
        per_class = Counter(names[a["category_id"]] for a in book["annotations"])
        assert report["classes"]["counts"][split] == {n: per_class.get(n, 0) for n in names.values()}
        with_objects = {a["image_id"] for a in book["annotations"]}
        row = report["boxes"][split]
        assert row["pictures"] == len(book["images"])
        assert row["without_objects"] == len(book["images"]) - len(with_objects)
        areas = [a["bbox"][2] * a["bbox"][3] for a in book["annotations"]]
        assert row["small"] == sum(a < 32 ** 2 for a in areas) and row["medium"] == sum(32 ** 2 <= a < 96 ** 2
                                                                                        for a in areas)


def test_data_check_names_a_picture_whose_size_is_not_the_one_annotated(tmp_path):
    _write_picture(tmp_path / "a.png", 60, 50)
    book = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "train.json").write_text(json.dumps(book))
    result = runner.invoke(app, ["data", "check", str(tmp_path / "train.json"), "--json"])
    report = json.loads(result.stdout)
    found = [f["message"] for f in report["findings"] if f["check"] == "size-mismatch"]
    assert found and "is 60x50 when decoded, but its annotation says 100x50" in found[0]


# ---------------------------------------------------------------- the scene generator


def test_scene_generator_is_seeded_and_its_boxes_and_masks_agree(tmp_path):
    a = list(make_scenes.scenes(6, "shapes", 48, seed=3))
    b = list(make_scenes.scenes(6, "shapes", 48, seed=3))
    assert all(np.array_equal(x.image, y.image) and x.boxes == y.boxes for x, y in zip(a, b))
    glyphs = list(make_scenes.scenes(6, "glyphs", 64, seed=3))
    for found in a + glyphs:
        for (cls, x1, y1, x2, y2), area in zip(found.boxes, found.areas):
            inside = found.mask[y1:y2, x1:x2] == cls + 1
            assert inside.sum() == area  # objects never overlap: each box holds exactly its object's pixels
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
        assert (found.mask > 0).sum() == sum(found.areas)


# ---------------------------------------------------------------- dlcli init


def _init_and_train(cli, target, tmp_path):
    """init's config, validated, then trained as written but for one epoch (a test's time); returns (config, the
    run's summary)."""
    import yaml

    result = cli("init", target, "-o", tmp_path / "starter.yaml")
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    text = path.read_text()
    keys = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all(" # " in line for line in keys)  # every key commented
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet", "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    return yaml.safe_load(text), json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("layout", ["yolo", "coco", "voc"])
def test_init_on_a_detection_layout_writes_a_config_that_trains(cli, tmp_path, layout):
    out = tmp_path / "scenes"
    make_scenes.write_scenes(out, n=16, size=40, seed=2, val=0.25, test=0.25, layouts=(layout,))
    target = {"yolo": out / "data.yaml", "coco": out / "annotations" / "instances_train.json", "voc": out / "voc"}[layout]
    cfg, summary = _init_and_train(cli, target, tmp_path)
    assert cfg["task"] == "detection" and cfg["model"]["type"] == "detector"
    data = cfg["data"]
    assert data["dataset"] == layout and data["image_size"] == 64  # 40 px pictures: the smallest input side
    if layout == "coco":
        assert data["val_annotations"].endswith("instances_val.json")
        assert data["test_annotations"].endswith("instances_test.json")
    assert cfg["name"] == ("voc" if layout == "voc" else "scenes")
    assert "map" in summary["test"]


def test_init_on_an_images_and_masks_folder_writes_a_segmentation_config_that_trains(cli, tmp_path):
    out = tmp_path / "scenes"
    make_scenes.write_scenes(out, n=12, size=40, seed=2, val=0.25, test=0.25, layouts=("masks",))
    cfg, summary = _init_and_train(cli, out / "masks", tmp_path)
    assert cfg["task"] == "segmentation" and cfg["data"] == {
        "dataset": "masks", "root": str(out), "image_size": 64, "channels": 3, "val_split": 0.1, "test_split": 0.1,
        "augment": ["hflip"]}
    assert "miou" in summary["test"]


def test_init_refuses_a_label_column_for_a_detection_layout(cli, tmp_path):
    make_scenes.write_scenes(tmp_path / "s", n=4, size=32, seed=0, val=0, test=0, layouts=("yolo",))
    result = cli("init", tmp_path / "s" / "data.yaml", "--label", "y")
    assert result.exit_code == 2 and "--label y: names a table's label column" in result.output


def test_coco_images_without_a_stated_size_take_their_pictures_own(tmp_path):
    _write_picture(tmp_path / "a.png", 100, 50)
    book = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 30, 20]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "train.json").write_text(json.dumps(book))
    data = parse_data({"dataset": "coco", "train_annotations": str(tmp_path / "train.json"), "image_size": [32, 64],
                       "val_split": 0.0, "test_split": 0.0, "cache": False}).read(0)
    assert torch.allclose(data.train.y[0, 0], torch.tensor([0, 6.4, 3.2, 25.6, 16.0]), atol=1e-5)


def test_a_data_yaml_copied_with_its_dataset_finds_it_beside_itself(tmp_path, monkeypatch):
    make_scenes.write_scenes(tmp_path / "s", n=6, size=32, seed=0, val=0, test=0, layouts=("yolo",))
    text = (tmp_path / "s" / "data.yaml").read_text()
    (tmp_path / "s" / "data.yaml").write_text(text.replace(str(tmp_path / "s"), "datasets/elsewhere"))
    monkeypatch.chdir(tmp_path)
    data = parse_data({"dataset": "yolo", "data_yaml": "s/data.yaml", "image_size": 32, "val_split": 0.0,
                       "test_split": 0.0, "cache": False}).read(0)
    assert len(data.train) == 6


def test_data_check_refuses_a_val_split_that_is_the_training_pictures(tmp_path):
    make_scenes.write_scenes(tmp_path, n=6, size=32, seed=0, val=0, test=0, layouts=("yolo",))
    text = (tmp_path / "data.yaml").read_text()
    (tmp_path / "data.yaml").write_text(text.replace("train: images/train", "train: images/train\nval: images/train"))
    result = runner.invoke(app, ["data", "check", str(tmp_path / "data.yaml"), "--json"])
    assert result.exit_code == 1
    found = [f["message"] for f in json.loads(result.stdout)["findings"] if f["check"] == "leakage"]
    assert found and found[0].startswith("6 pictures of val are also in train")


def test_a_stratified_cut_gives_val_and_test_a_picture_of_the_rarest_class(tmp_path):
    # 30 pictures: 27 hold a 'common' box, 3 a 'rare' one beside it; 10% cuts, stratified on each picture's rarest class.
    for i in range(30):
        _write_picture(tmp_path / "images" / "train" / f"{i:02d}.png", 16, 16)
        lines = "0 0.25 0.25 0.2 0.2\n" + ("1 0.75 0.75 0.2 0.2\n" if i % 10 == 3 else "")
        (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "train" / f"{i:02d}.txt").write_text(lines)
    entry = parse_data({"dataset": "yolo", "root": str(tmp_path), "names": ["common", "rare"], "image_size": 16,
                        "cache": False})
    for seed in range(3):
        data = entry.read(seed)
        for split in (data.train, data.val, data.test):
            assert int((split.y[..., 0] == 1).any(1).sum()) == 1


def test_a_streamed_detection_split_gives_the_in_memory_batches(scenes):
    out, _ = scenes
    memory = _yolo(out).read(0)
    streamed = _yolo(out, stream=True, num_workers=0).read(0)
    order = torch.randperm(len(memory.train), generator=torch.Generator().manual_seed(0)).split(5)
    for (xa, ya), (xb, yb) in zip(memory.train.batches(order), streamed.train.batches(order)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert memory.normalizer.mean == pytest.approx(streamed.normalizer.mean, abs=1e-6)


def test_roboflow_coco_export_is_recognised_with_its_splits(tmp_path, cli):
    # Roboflow writes train/, valid/, test/, each holding its pictures and _annotations.coco.json
    for split in ("train", "valid", "test"):
        _write_picture(tmp_path / "export" / split / "a.png", 40, 40)
        book = {"images": [{"id": 0, "file_name": "a.png", "width": 40, "height": 40}],
                "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [5, 5, 10, 10]}],
                "categories": [{"id": 0, "name": "things"}, {"id": 1, "name": "thing"}]}
        (tmp_path / "export" / split / "_annotations.coco.json").write_text(json.dumps(book))
    from dlcli.data.detection import recognise

    data = recognise(tmp_path / "export")
    assert data == {"dataset": "coco", "train_annotations": str(tmp_path / "export/train/_annotations.coco.json"),
                    "val_annotations": str(tmp_path / "export/valid/_annotations.coco.json"),
                    "test_annotations": str(tmp_path / "export/test/_annotations.coco.json")}
    bundle = parse_data({**data, "image_size": 20, "cache": False}).read(0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (1, 1, 1)
    assert bundle.classes == ["things", "thing"]
    assert torch.equal(bundle.val.y, torch.tensor([[[1.0, 2.5, 2.5, 7.5, 7.5]]]))
    result = cli("data", "check", tmp_path / "export", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"], result.stdout  # the unused placeholder category blocks nothing
    empty = [f for f in report["findings"] if f["check"] == "empty-class"]
    assert empty[0]["severity"] == "warning" and "'things'" in empty[0]["message"]


def test_bad_boxes_drop_skips_them_with_a_note_and_init_writes_it(tmp_path, cli):
    _write_picture(tmp_path / "images" / "a.png", 100, 50)
    _write_picture(tmp_path / "images" / "b.png", 100, 50)
    book = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50},
                       {"id": 2, "file_name": "b.png", "width": 100, "height": 50}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [40, 10, 0, 20]},
                            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [90, 10, 30, 20]},
                            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [50, 10, 30, 20]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "instances_train.json").write_text(json.dumps(book))
    keys = {"dataset": "coco", "train_annotations": str(tmp_path / "instances_train.json"), "image_size": [50, 100],
            "val_split": 0.0, "test_split": 0.0, "cache": False}
    with pytest.raises(DataError, match=r"annotation id 2 .*box of zero area .*\(data.bad_boxes: drop skips such"):
        parse_data(keys).read(0)
    data = parse_data({**keys, "bad_boxes": "drop"}).read(0)
    assert data.train.y[:, :, 0].tolist() == [[0], [0]]  # one box left per picture
    assert torch.equal(data.train.y[1, 0], torch.tensor([0.0, 50, 10, 80, 30]))
    assert any(n.startswith("2 boxes outside their pictures or of zero area dropped") for n in data.notes)
    result = cli("data", "check", tmp_path / "instances_train.json", "--json", "--set", "bad_boxes=drop")
    report = json.loads(result.stdout)
    assert report["ok"] and [f["severity"] for f in report["findings"] if f["check"] in ("zero-area", "box-outside")] \
        == ["warning", "warning"]
    result = cli("init", tmp_path / "instances_train.json", "-o", tmp_path / "c.yaml")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "c.yaml").read_text()
    assert "bad_boxes: drop" in text and "2 boxes lie outside their pictures or have no area" in text


def test_a_parsed_coco_file_is_cached_until_it_changes(tmp_path, monkeypatch):
    import dlcli.data.detection as detection

    def no_parse(*args):
        raise AssertionError("parsed again")

    make_scenes.write_scenes(tmp_path, n=12, size=32, seed=4, val=0.25, test=0, layouts=("coco",))
    entry = _coco(tmp_path, cache=True, test_annotations=None)
    first = entry.read(0)
    assert len(list((tmp_path / "annotations" / ".cache").glob("coco-*.pt"))) == 1
    with monkeypatch.context() as m:
        m.setattr(detection, "_load_json", no_parse)
        again = entry.read(0)  # from the cache: no JSON parsed
    truth = _coco(tmp_path, cache=False, test_annotations=None).read(0)  # parsed, never packed
    assert again.classes == first.classes == truth.classes and again.notes == truth.notes
    for split in ("train", "val", "test"):
        for found in (first, again):
            assert torch.equal(getattr(truth, split).y, getattr(found, split).y)
            assert torch.equal(getattr(truth, split).x, getattr(found, split).x)
    train_json = tmp_path / "annotations" / "instances_train.json"
    book = json.loads(train_json.read_text())
    book["annotations"] = book["annotations"][1:]
    train_json.write_text(json.dumps(book))
    with monkeypatch.context() as m:
        m.setattr(detection, "_load_json", no_parse)
        with pytest.raises(AssertionError, match="parsed again"):  # a changed file is read again, never stale
            entry.read(0)
    boxes = lambda data: sum(int((s.y[..., 0] >= 0).sum()) for s in (data.train, data.val, data.test))  # noqa: E731
    assert boxes(entry.read(0)) == boxes(first) - 1


def test_a_yolo_polygon_line_is_read_as_its_box(tmp_path):
    _write_picture(tmp_path / "images" / "train" / "a.png", 40, 20)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.1 0.2 0.5 0.25 0.3 0.8\n0 0.5 0.5 0.2 0.2\n")
    data = parse_data({"dataset": "yolo", "root": str(tmp_path), "names": ["a", "b"], "image_size": [20, 40],
                       "val_split": 0.0, "test_split": 0.0, "cache": False}).read(0)
    # x 0.1..0.5 of 40 px, y 0.2..0.8 of 20 px
    assert torch.allclose(data.train.y[0], torch.tensor([[1, 4.0, 4.0, 20.0, 16.0], [0, 16.0, 8.0, 24.0, 12.0]]))


@pytest.mark.parametrize("xml, words", [
    ("<annotation><size><width>40</width><height>20</height></size><object><name>dog</name><bndbox><xmin>1</xmin>"
     "<ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>",
     ["a.xml: object 1 (dog): unknown class 'dog' (data.classes: cat)"]),
    ("<annotation><size><width>40</width><height>20</height></size><object><name>cat</name><bndbox><xmin>30</xmin>"
     "<ymin>1</ymin><xmax>45</xmax><ymax>9</ymax></bndbox></object></annotation>",
     ["a.xml: object 1 (cat): box x 29..45", "lies outside the picture"]),
    ("<annotation><size><width>40</width></size></annotation>", ["a.xml: no <size> with <width> and <height>"]),
    ("<annotation><size>", ["a.xml: line 1, column", "not XML"]),
])
def test_bad_voc_data_is_refused_naming_the_file_and_object(tmp_path, xml, words):
    (tmp_path / "Annotations").mkdir()
    _write_picture(tmp_path / "JPEGImages" / "a.jpg", 40, 20)
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    with pytest.raises(DataError) as err:
        parse_data({"dataset": "voc", "root": str(tmp_path), "classes": ["cat"], "image_size": 16}).read(0)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert not (tmp_path / ".cache").exists()


def test_data_check_reads_an_images_and_masks_folder_as_masks(tmp_path, cli):
    make_scenes.write_scenes(tmp_path / "s", n=6, size=32, seed=0, val=0, test=0, layouts=("masks",))
    for target in (tmp_path / "s", tmp_path / "s" / "masks"):
        result = cli("data", "check", target, "--json")
        report = json.loads(result.stdout)
        assert report["dataset"] == "masks", result.stdout
