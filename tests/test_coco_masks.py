"""`dataset: coco` under `task: segmentation`: the masks a COCO file's polygons and RLE draw equal the mask files of
the same scenes bit for bit, objects on top of others keep their pixels, crowds are ignored, each bad segmentation is
refused in one line naming its annotation, and a run trains, evaluates and predicts masks from such a file."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.config import validate_config
from dlcli.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from make_scenes import write_scenes  # noqa: E402


def coco_entry(root: Path, image_size=32, **extra) -> dict:
    files = {f"{s}_annotations": str(root / "annotations" / f"instances_{s}.json") for s in ("train", "val", "test")}
    return {"dataset": "coco", **files, "image_size": image_size, **extra}


def masks_entry(root: Path, image_size=32) -> dict:
    return {"dataset": "masks", "root": str(root), "image_size": image_size}


def bundle(data: dict):
    cfg = validate_config({"task": "segmentation", "data": data, "model": {"type": "unet", "width": 4, "depth": 1}})
    return cfg.data.read(cfg.seed, task=cfg.task), cfg


def test_coco_rle_gives_the_mask_files_of_the_same_scenes(tmp_path):
    write_scenes(tmp_path, 12, size=48, layouts=("coco", "masks"))
    coco, cfg = bundle(coco_entry(tmp_path))
    files, _ = bundle(masks_entry(tmp_path))
    assert coco.classes == files.classes == ["background", "circle", "square", "triangle"]
    for split in ("train", "val", "test"):
        a, b = getattr(coco, split), getattr(files, split)
        assert np.array_equal(a.y.numpy(), b.y.numpy()), split
        assert np.array_equal(a.x.numpy(), b.x.numpy()), split
    assert coco.train.y.max() > 0
    assert coco.target["ignore_index"] == 255 and sum(coco.target["pixels"]) == coco.train.y.numel()
    shape, names, _ = cfg.data.describe(cfg.seed, task=cfg.task)
    assert names == coco.classes and shape == (3, 32, 32)


def write_book(root: Path, annotations: list, size=(20, 24), categories=("big", "small")) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(root / "images" / "a.png")
    book = {"images": [{"id": 1, "file_name": "a.png", "height": size[0], "width": size[1]}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)],
            "annotations": [{"id": i + 1, "image_id": 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)]}
    path = root / "instances.json"
    path.write_text(json.dumps(book))
    return path


def square(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def test_polygons_paint_small_objects_over_large_ones_and_crowds_are_ignored(tmp_path):
    from pycocotools import mask as coco_mask

    crowd = np.zeros((20, 24), np.uint8, order="F")
    crowd[15:20, 0:5] = 1
    rle = coco_mask.encode(crowd)  # COCO's compressed RLE, as pycocotools writes it
    rle["counts"] = rle["counts"].decode()
    small = {"category_id": 2, "bbox": [6, 6, 4, 4], "segmentation": square(6, 6, 10, 10)}
    big = {"category_id": 1, "bbox": [2, 2, 14, 14], "segmentation": square(2, 2, 16, 16)}
    path = write_book(tmp_path, [small, big,  # the small one first in the file: painting must not follow file order
                                 {"category_id": 1, "bbox": [0, 15, 5, 5], "iscrowd": 1, "segmentation": rle}])
    got, _ = bundle({"dataset": "coco", "train_annotations": str(path), "image_size": [20, 24], "val_split": 0,
                     "test_split": 0, "cache": False})
    mask = got.train.y[0].numpy()
    assert (mask[3:15, 3:6] == 1).all() and (mask[11:15, 3:15] == 1).all()  # inside the big square only
    assert (mask[7:9, 7:9] == 2).all()  # the small one, on top
    assert (mask[16:20, 0:4] == 255).all()  # the crowd
    assert (mask[0:2, :] == 0).all() and (mask[:, 17:] == 0).all() and (mask == 0).sum() > 240
    assert got.target["pixels"][2] == int((mask == 2).sum()) > 0


@pytest.mark.parametrize("segmentation, expected", [
    (None, "annotation id 1 (image id 1, a.png): no segmentation (missing)"),
    ({"size": [20, 24], "counts": 7}, "an RLE that does not decode"),
    ([[1, 1, 5, 1, 5]], "annotation id 1 (image id 1, a.png): a polygon of 5 values"),
    ([[1, 1, 5, 1]], "a polygon of 4 values"),
    ({"size": [24, 20], "counts": [480]}, "an RLE of size [24, 20] on a picture of 20x24"),
    ({"size": [20, 24], "counts": [10, 5]}, "the RLE's counts add up to 15 pixels, not 20x24"),
])
def test_a_bad_segmentation_is_refused_in_one_line_naming_its_annotation(tmp_path, segmentation, expected):
    ann = {"category_id": 1, "bbox": [1, 1, 4, 4]}
    if segmentation is not None:
        ann["segmentation"] = segmentation
    path = write_book(tmp_path, [ann])
    with pytest.raises(DataError) as err:
        bundle({"dataset": "coco", "train_annotations": str(path), "image_size": 20, "val_split": 0,
                "test_split": 0, "cache": False})
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_a_category_named_background_is_refused(tmp_path):
    path = write_book(tmp_path, [{"category_id": 1, "bbox": [1, 1, 4, 4], "segmentation": square(1, 1, 5, 5)}],
                      categories=("background", "cat"))
    with pytest.raises(DataError, match="a category is named 'background'"):
        bundle({"dataset": "coco", "train_annotations": str(path), "image_size": 20, "cache": False})


def test_train_evaluate_and_predict_masks_from_a_coco_file(tmp_path):
    write_scenes(tmp_path / "scenes", 40, size=32, layouts=("coco",))
    config = {"name": "cocoseg", "seed": 0, "task": "segmentation", "data": coco_entry(tmp_path / "scenes"),
              "model": {"type": "unet", "width": 8, "depth": 2}, "optimizer": {"name": "adam", "lr": 0.01},
              "train": {"epochs": 2, "batch_size": 8, "precision": "32"}}
    path = tmp_path / "cocoseg.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().splitlines()[-1]
    result = CliRunner().invoke(app, ["evaluate", run_id, "--runs-dir", str(runs), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["per_class"] and [c for c in report["classes"]] == ["background", "circle", "square", "triangle"]
    picture = next((tmp_path / "scenes" / "images" / "test").glob("*.png"))
    result = CliRunner().invoke(app, ["predict", str(picture), "--run", run_id, "--runs-dir", str(runs), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("["):])[0]
    rle = answer["mask"]
    assert (rle["height"], rle["width"]) == (32, 32) and sum(rle["counts"]) == 32 * 32
    assert set(answer["shares"]) == {"background", "circle", "square", "triangle"}


def test_data_check_lists_every_bad_outline_and_the_pixels_per_class(tmp_path):
    path = write_book(tmp_path, [{"category_id": 1, "bbox": [2, 2, 14, 14], "segmentation": square(2, 2, 16, 16)},
                                 {"category_id": 2, "bbox": [1, 1, 4, 4]},
                                 {"category_id": 2, "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5]]}])
    config = {"task": "segmentation", "data": {"dataset": "coco", "train_annotations": str(path), "image_size": 20},
              "model": {"type": "unet", "width": 4, "depth": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "c.yaml"), "--json"])
    assert result.exit_code != 0
    report = json.loads(result.output[result.output.index("{"):])
    bad = [f["message"] for f in report["findings"] if f["check"] == "bad-segmentation"]
    assert len(bad) == 2 and "annotation id 2" in bad[0] and "annotation id 3" in bad[1], bad
    share = next(f["message"] for f in report["findings"] if f["check"] == "pixel-share")
    assert f"big {196 / 480:.1%}" in share, share
