"""`image_folder`: the user's own pictures, decoded as predict decodes them, trained to better than chance."""

import json
import random

import pytest
from PIL import Image, ImageDraw

from dlcli.config import validate_config
from dlcli.data import load_data
from tests.conftest import tiny_config


def draw(shape: str, rng: random.Random, size: int, mode: str) -> Image.Image:
    """A white square, disc or cross at a random place on a dark background, in the given mode and size."""
    img = Image.new("RGB", (size, size), (rng.randint(0, 40),) * 3)
    d = ImageDraw.Draw(img)
    r = size // 5
    cx, cy = rng.randint(r, size - r - 1), rng.randint(r, size - r - 1)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "square":
        d.rectangle(box, fill=(255, 255, 255))
    elif shape == "disc":
        d.ellipse(box, fill=(255, 255, 255))
    else:
        d.line((cx - r, cy, cx + r, cy), fill=(255, 255, 255), width=max(2, r // 2))
        d.line((cx, cy - r, cx, cy + r), fill=(255, 255, 255), width=max(2, r // 2))
    return img.convert(mode)


def make_folder(root, per_class=40, splits=("train", "test")):
    rng = random.Random(0)
    modes, sizes, formats = ["L", "RGB", "RGBA", "P"], [24, 40, 64], ["png", "jpg", "bmp", "webp"]
    for split in splits:
        for shape in ("cross", "disc", "square"):
            folder = root / split / shape
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else per_class // 4):
                img = draw(shape, rng, rng.choice(sizes), rng.choice(modes))
                fmt = rng.choice(formats)
                if fmt in ("jpg", "bmp") and img.mode in ("RGBA", "P"):
                    img = img.convert("RGB")
                img.save(folder / f"{i}.{fmt}")


def folder_config(root, **data):
    return tiny_config(
        name="shapes",
        data={"dataset": "image_folder", "root": str(root), "image_size": 16, "channels": 1, **data},
        model={"type": "cnn", "channels": [8, 16], "padding": "same", "hidden": [32]},
        optimizer={"name": "adam", "lr": 0.003},
        train={"epochs": 6, "batch_size": 16},
    )


def test_image_folder_trains_better_than_chance(cli, write_config, tmp_path):
    make_folder(tmp_path / "shapes")
    result = cli("train", write_config(folder_config(tmp_path / "shapes")), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    info = json.loads((run / "data.json").read_text())
    assert info["classes"] == ["cross", "disc", "square"] and info["input_shape"] == [1, 16, 16]
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] > 0.6  # chance is 1/3

    summary = cli("summary", write_config(folder_config(tmp_path / "shapes")), "--json")
    assert json.loads(summary.stdout)["input_shape"] == [1, 16, 16]


def test_val_and_test_folders_are_used_else_cut_from_train(tmp_path):
    make_folder(tmp_path / "a", per_class=8, splits=("train", "val", "test"))
    data = load_data(validate_config(folder_config(tmp_path / "a")))
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 6)
    make_folder(tmp_path / "b", per_class=20, splits=("train",))
    data = load_data(validate_config(folder_config(tmp_path / "b", val_split=0.1, test_split=0.2)))
    assert (len(data.train), len(data.val), len(data.test)) == (42, 6, 12)
    assert data.train.x.shape[1:] == (1, 16, 16)


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "train" / "empty").mkdir(), "class folder .*empty/ has no images"),
    (lambda root: (root / "train" / "disc" / "0.png").write_bytes(b"not a png"), "0.png: not an image"),
    (lambda root: (root / "test" / "bird").mkdir(), "bird/ is not a class of train/"),
])
def test_malformed_folders_give_one_line(cli, write_config, tmp_path, breakage, message):
    make_folder(tmp_path / "shapes", per_class=4)
    breakage(tmp_path / "shapes")
    result = cli("train", write_config(folder_config(tmp_path / "shapes")), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert __import__("re").search(message, result.stderr), result.stderr
    assert not (tmp_path / "runs").exists()


def test_streaming_from_disk_trains_exactly_like_memory(cli, write_config, tmp_path):
    make_folder(tmp_path / "shapes", per_class=16)
    histories = []
    for stream in (False, True):
        cfg = folder_config(tmp_path / "shapes", stream=stream, num_workers=2)
        cfg["train"] = {"epochs": 2, "batch_size": 16}
        cfg["data"]["augment"] = ["hflip", {"random_crop": 2}]
        result = cli("train", write_config(cfg), "--runs-dir", tmp_path / f"runs{stream}", "--quiet")
        assert result.exit_code == 0, result.output
        run = tmp_path / f"runs{stream}" / result.stdout.strip()
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        histories.append([{k: v for k, v in r.items() if k != "seconds"} for r in rows])
    for a, b in zip(*histories):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < 1e-6 for k in a)


def test_a_bad_file_met_while_streaming_is_one_line(cli, write_config, tmp_path):
    make_folder(tmp_path / "shapes", per_class=8)
    (tmp_path / "shapes" / "train" / "disc" / "3.png").write_bytes(b"\x89PNG broken")
    cfg = folder_config(tmp_path / "shapes", stream=True, num_workers=1)
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "3.png" in result.stderr


def test_decoded_splits_are_cached_and_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    import time

    import torch

    import dlcli.data.stream as stream

    make_folder(tmp_path / "shapes", per_class=12)
    cfg = validate_config(folder_config(tmp_path / "shapes"))
    first = load_data(cfg)
    cached = sorted((tmp_path / "shapes" / ".cache").glob("images-*.pt"))
    assert len(cached) == 3  # train, val (cut from train) and test

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(stream, "decode_all", no_decoding)
    second = load_data(cfg)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split).x, getattr(second, split).x)
    assert first.normalizer.mean == second.normalizer.mean

    victim = next((tmp_path / "shapes" / "test" / "disc").iterdir())
    time.sleep(0.01)
    victim.write_bytes(victim.read_bytes())  # same bytes, new modification time: decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_data(cfg)
    monkeypatch.undo()
    assert torch.equal(load_data(validate_config(folder_config(tmp_path / "shapes", cache=False))).test.x, first.test.x)
