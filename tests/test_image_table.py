"""`image_table`: a table of image paths and targets trains any task on the images, decoded (and cached) as an image
folder's; evaluate and predict answer from images; a missing image is one line naming the table's line and column."""

import csv
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from dlcli.config import validate_config
from dlcli.data import load_data
from dlcli.errors import DlcliError
from tests.conftest import tiny_config


def picture(path, level: float, rng: random.Random, left: int = 0, top: int = 0):
    """A noisy gray picture of mean brightness `level` (0-255), optionally brighter on its left or top half, saved
    at a random size and mode (the decoder makes them all 1 x 8 x 8)."""
    size = rng.choice([8, 12, 16])
    noise = np.random.default_rng(rng.randint(0, 10**6)).normal(0, 4, (size, size))
    half = np.arange(size) < size // 2
    pixels = np.clip(level + noise + left * half[None, :] + top * half[:, None], 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "L")
    img.convert(rng.choice(["L", "RGB"])).save(path)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def brightness_table(root, n=120, seed=0, name="table.csv", absolute_every=0):
    """image,brightness,kind: brightness = mean level / 25.5 (0-10); kind dark/light; paths relative to the table
    (in a subfolder), or absolute for every `absolute_every`-th row."""
    rng = random.Random(seed)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        level = rng.uniform(20, 235)
        file = root / "imgs" / f"{name.split('.')[0]}-{i}.png"
        picture(file, level, rng)
        path = str(file) if absolute_every and i % absolute_every == 0 else f"imgs/{file.name}"
        rows.append([path, f"{level / 25.5:.4f}", "light" if level > 127.5 else "dark"])
    return write_csv(root / name, ["image", "brightness", "kind"], rows)


def table_config(table, **data):
    return tiny_config(
        name="pics",
        data={"dataset": "image_table", "table_file": str(table), "image_size": 8, "channels": 1,
              "val_split": 0.2, **data},
        model={"type": "mlp", "hidden": [16]},
        optimizer={"name": "adam", "lr": 0.01},
        train={"epochs": 15, "batch_size": 16},
    )


def train(cli, write_config, cfg, tmp_path):
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / result.stdout.strip().splitlines()[-1]


def test_classes_from_a_label_column_train_and_predict_from_an_image(cli, write_config, tmp_path):
    table = brightness_table(tmp_path / "data", absolute_every=7)
    run = train(cli, write_config, table_config(table, label_column="kind"), tmp_path)
    info = json.loads((run / "data.json").read_text())
    assert info["classes"] == ["dark", "light"] and info["input_shape"] == [1, 8, 8]
    assert info["task"]["type"] == "classification"
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] > 0.8  # chance is about 1/2

    bright = tmp_path / "bright.png"
    Image.new("L", (20, 20), 230).save(bright)
    out = cli("predict", bright, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["top"][0]["label"] == "light"


def test_a_regression_on_the_images_trains_evaluates_and_predicts_numbers(cli, write_config, tmp_path):
    data = tmp_path / "data"
    table = brightness_table(data, n=150)
    test = brightness_table(data, n=40, seed=1, name="test.csv")
    cfg = table_config(table, label_column="brightness", test_file=str(test))
    cfg["task"] = "regression"
    run = train(cli, write_config, cfg, tmp_path)
    info = json.loads((run / "data.json").read_text())
    assert info["classes"] == ["brightness"] and info["task"]["type"] == "regression"
    targets = np.array([float(r["brightness"]) for r in csv.DictReader(open(table))])
    assert 3.0 < info["task"]["mean"][0] < 7.0 and info["task"]["std"][0] == pytest.approx(targets.std(), rel=0.3)

    evaluated = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["samples"] == 40 and report["r2"] > 0.9

    # The test split is test.csv: predict each of its images and score the answers here, independently.
    rows = list(csv.DictReader(open(test)))
    images = [data / r["image"] for r in rows]
    out = cli("predict", *images, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert out.exit_code == 0, out.output
    answers = json.loads(out.stdout)
    assert set(answers[0]) == {"image", "prediction"} and isinstance(answers[0]["prediction"], float)
    pred = np.array([a["prediction"] for a in answers])
    truth = np.array([float(r["brightness"]) for r in rows])
    r2 = 1 - ((pred - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    assert report["r2"] == pytest.approx(r2, abs=1e-4)
    assert report["mae"] == pytest.approx(np.abs(pred - truth).mean(), abs=1e-4)


def test_multilabel_from_01_columns_of_a_parquet_table(cli, write_config, tmp_path):
    rng = random.Random(0)
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    rows = {"image": [], "left": [], "top": []}
    for i in range(160):
        left, top = rng.randint(0, 1), rng.randint(0, 1)
        picture(root / "imgs" / f"{i}.png", 60, rng, left=120 * left, top=60 * top)
        rows["image"].append(f"imgs/{i}.png")
        rows["left"].append(left)
        rows["top"].append(top)
    pq.write_table(pa.table(rows), root / "labels.parquet")
    cfg = table_config(root / "labels.parquet", label_column=["left", "top"])
    cfg["task"] = "multilabel"
    cfg["train"]["epochs"] = 20
    run = train(cli, write_config, cfg, tmp_path)
    info = json.loads((run / "data.json").read_text())
    assert info["classes"] == ["left", "top"] and info["task"]["type"] == "multilabel"
    assert json.loads((run / "summary.json").read_text())["test"]["f1_micro"] > 0.8

    image = tmp_path / "left.png"
    picture(image, 60, random.Random(5), left=120)
    out = cli("predict", image, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)[0]
    assert answer["labels"] == ["left"] and set(answer["probabilities"]) == {"left", "top"}


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "imgs" / "table-2.png").unlink(),
     r"table\.csv: line 4, column 'image': no such file: imgs/table-2\.png \(looked for .*imgs/table-2\.png\)"),
    (lambda root: (root / "imgs" / "table-5.png").write_bytes(b"not a png"),
     r"table\.csv: line 7, column 'image': .*table-5\.png: not an image"),
    (lambda root: (root / "table.csv").write_text((root / "table.csv").read_text().replace("imgs/table-3.png", "")),
     r"table\.csv: line 5, column 'image' is empty"),
])
def test_a_bad_image_row_is_one_line_naming_the_table_line_and_column(cli, write_config, tmp_path, breakage, message):
    table = brightness_table(tmp_path / "data", n=12)
    breakage(tmp_path / "data")
    result = cli("train", write_config(table_config(table, label_column="kind")), "--runs-dir", tmp_path / "runs")
    assert result.exit_code != 0 and result.stderr.count("\n") == 1, result.output
    assert __import__("re").search(message, result.stderr), result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_drop_skips_rows_without_an_image_and_says_so(tmp_path):
    table = brightness_table(tmp_path / "data", n=30)
    table.write_text(table.read_text().replace("imgs/table-3.png", ""))
    data = load_data(validate_config(table_config(table, label_column="kind", missing="drop", val_split=0.1,
                                                  test_split=0.1)))
    assert len(data.train) + len(data.val) + len(data.test) == 29
    assert any("1 row without an image dropped" in note for note in data.notes)


def test_decoded_splits_are_cached_beside_the_table_and_reused(tmp_path, monkeypatch):
    import dlcli.data.stream as stream

    table = brightness_table(tmp_path / "data", n=40)
    cfg = validate_config({**table_config(table, label_column="brightness"), "task": "regression"})
    first = load_data(cfg)
    assert len(sorted((tmp_path / "data" / ".cache").glob("images-*.pt"))) == 3  # train, val and test

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(stream, "decode_all", no_decoding)
    second = load_data(cfg)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split).x, getattr(second, split).x)
        assert torch.equal(getattr(first, split).y, getattr(second, split).y)
    assert first.normalizer.mean == second.normalizer.mean and first.target == second.target


def test_streamed_images_train_exactly_like_memory_with_augmentation(cli, write_config, tmp_path):
    table = brightness_table(tmp_path / "data", n=48)
    histories = []
    for streamed in (False, True):
        cfg = table_config(table, label_column="brightness", stream=streamed, num_workers=1, augment=["hflip"])
        cfg.update(task="regression", train={"epochs": 2, "batch_size": 16})
        run = train(cli, write_config, cfg, tmp_path / str(streamed))
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        histories.append([{k: v for k, v in r.items() if k != "seconds"} for r in rows])
    for a, b in zip(*histories):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a)


def test_a_backbone_decodes_the_table_at_its_image_size(cli, write_config, tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = tmp_path / "mnasnet.pth"
    torch.save(tvm.mnasnet0_5().state_dict(), weights)
    table = brightness_table(tmp_path / "data", n=24)
    cfg = table_config(table, label_column="kind")
    del cfg["data"]["image_size"]
    cfg.update(model={"type": "backbone", "arch": "mnasnet0_5", "weights": str(weights), "image_size": 32},
               train={"epochs": 1, "batch_size": 8})
    run = train(cli, write_config, cfg, tmp_path)
    config = __import__("yaml").safe_load((run / "config.yaml").read_text())
    assert config["data"]["image_size"] == 32  # decoded at the size the backbone was given
    info = json.loads((run / "data.json").read_text())
    assert info["input_shape"] == [1, 32, 32] and info["normalization"]["channels"] == 3


def test_the_table_is_checked_before_any_image_is_decoded(tmp_path):
    table = brightness_table(tmp_path / "data", n=12)
    with pytest.raises(DlcliError, match=r"table\.csv: no column 'label'"):
        load_data(validate_config(table_config(table)))
    cfg = validate_config({**table_config(table, label_column="kind"), "task": "regression"})
    with pytest.raises(DlcliError, match=r"line 2, column 'kind': '(dark|light)' is not a number"):
        load_data(cfg)
    cfg = validate_config({**table_config(table, label_column=["brightness"]), "task": "regression"})
    assert cfg.data.describe(0, cfg.task) == ((1, 8, 8), ["brightness"], None)  # reads the table, no image


def test_data_check_reads_an_image_table_as_training_does(tmp_path, cli, write_config):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(12):
        Image.new("L", (8, 8), color=i * 20).save(tmp_path / "imgs" / f"{i}.png")
        rows.append(f"imgs/{i}.png,{'dark' if i < 6 else 'light'}")
    (tmp_path / "t.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    cfg = {"data": {"dataset": "image_table", "table_file": str(tmp_path / "t.csv"), "channels": 1,
                    "image_size": 8}, "model": {"type": "mlp"}}
    result = cli("data", "check", write_config(cfg), "--json")
    report = __import__("json").loads(result.stdout)
    assert result.exit_code == 0 and report["classes"]["counts"]["train"] == {"dark": 4, "light": 4}
    (tmp_path / "imgs" / "3.png").unlink()
    result = cli("data", "check", write_config(cfg), "--json")
    assert result.exit_code == 1 and "no such file: imgs/3.png" in result.stdout
