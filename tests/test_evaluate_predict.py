"""`dlcli evaluate`, `predict`, `runs`, `show` and `plot` on tiny runs trained once per module, as a user types them."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, features
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.predict import ImageError, load_image
from tests.conftest import FASHION, needs_fashion

RUNNER = CliRunner()


def cli(*args):
    return RUNNER.invoke(app, [str(a) for a in args])


def ok(*args):
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def synthetic(name, shape, classes, val_split, model, epochs):
    return {
        "name": name, "seed": 0,
        "data": {"dataset": "synthetic", "val_split": val_split,
                 "shape": shape, "num_classes": classes, "train_samples": 300, "test_samples": 100},
        "model": model, "optimizer": {"name": "adam", "lr": 0.01}, "train": {"epochs": epochs, "batch_size": 64},
    }


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """Two runs trained once: `gray` (1x28x28, 10 classes, val split) and `rgb` (3x12x10 CNN, 4 classes, no val)."""
    root = tmp_path_factory.mktemp("runs")
    configs = [synthetic("gray", [1, 28, 28], 10, 0.2, {"type": "mlp", "hidden": [16]}, 2),
               synthetic("rgb", [3, 12, 10], 4, 0.0, {"type": "cnn", "channels": [4], "hidden": [8]}, 1)]
    for cfg in configs:
        path = root / f"{cfg['name']}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        ok("train", path, "--runs-dir", root, "--quiet")
    return root


@pytest.fixture(scope="module")
def gray(runs_root):
    return next(runs_root.glob("gray-*"))


@pytest.fixture(scope="module")
def rgb(runs_root):
    return next(runs_root.glob("rgb-*"))


def copy_run(run, root, name=None):
    """A copy of a run in another runs folder, to damage or rename without touching the shared ones."""
    dest = root / (name or run.name)
    shutil.copytree(run, dest)
    return dest


def summary(run):
    return json.loads((run / "summary.json").read_text())


# ---------------------------------------------------------------- evaluate


def test_evaluate_json_reports_every_metric_and_writes_files(runs_root, gray):
    report = json.loads(ok("evaluate", gray.name[:8], "--json", "--runs-dir", runs_root).stdout)
    assert report["run_id"] == gray.name and report["split"] == "test" and report["checkpoint"] == "best"
    assert report["samples"] == 100
    assert report["accuracy"] == pytest.approx(summary(gray)["test"]["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(summary(gray)["test"]["loss"], rel=1e-5)
    assert 0 <= report["top5_accuracy"] <= 1 and report["top5_accuracy"] >= report["accuracy"]
    assert set(report["macro"]) == {"precision", "recall", "f1"}
    assert [c["label"] for c in report["per_class"]] == [f"class_{i}" for i in range(10)]
    assert all({"precision", "recall", "f1", "support"} <= set(c) for c in report["per_class"])
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 100
    assert np.trace(cm) / 100 == pytest.approx(report["accuracy"])
    assert [c["support"] for c in report["per_class"]] == cm.sum(1).tolist()
    assert json.loads((gray / "eval-test.json").read_text()) == report
    with Image.open(gray / "confusion-test.png") as png:
        assert png.format == "PNG" and png.size[0] > 100


def test_evaluate_scores_agree_with_scikit_learn_on_the_models_own_predictions(runs_root, rgb):
    """Per-class and macro precision/recall/F1 and the confusion matrix, against scikit-learn on the labels and the
    argmax of the run's logits, computed here. The rgb run (one epoch) errs, and never predicts some class."""
    from sklearn import metrics as skm

    from dlcli.evaluate import rebuild_split
    from dlcli.loaded import load_run

    report = json.loads(ok("evaluate", rgb.name, "--json", "--runs-dir", runs_root).stdout)
    loaded = load_run(rgb, device="cpu")
    samples = rebuild_split(loaded, "test")
    truth, pred = samples.y.numpy(), loaded.logits(samples.x).argmax(1).numpy()
    labels = list(range(4))
    precision, recall, f1, support = skm.precision_recall_fscore_support(truth, pred, labels=labels,
                                                                         zero_division=0)
    assert not np.allclose(precision, recall)  # else swapping the two would go unnoticed
    got = report["per_class"]
    assert [c["precision"] for c in got] == pytest.approx(precision.tolist(), abs=1e-9)
    assert [c["recall"] for c in got] == pytest.approx(recall.tolist(), abs=1e-9)
    assert [c["f1"] for c in got] == pytest.approx(f1.tolist(), abs=1e-9)
    assert [c["support"] for c in got] == support.tolist()
    assert report["confusion_matrix"] == skm.confusion_matrix(truth, pred, labels=labels).tolist()
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(truth, pred))
    for name, score in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        assert report["macro"][name] == pytest.approx(score(truth, pred, average="macro", zero_division=0))


def test_evaluate_prints_tables_with_class_names(runs_root, gray):
    out = ok("evaluate", gray.name, "--runs-dir", runs_root).stdout
    for text in ("accuracy", "top-5 accuracy", "macro F1", "per class", "confusion matrix", "class_7", "eval-test.json"):
        assert text in out


def test_evaluate_val_split_with_last_checkpoint_matches_training_metrics(runs_root, gray):
    report = json.loads(ok("evaluate", gray.name, "--split", "val", "--checkpoint", "last", "--json",
                           "--runs-dir", runs_root).stdout)
    last_epoch = json.loads((gray / "metrics.jsonl").read_text().splitlines()[-1])
    assert report["samples"] == 60  # 20% of 300
    assert report["accuracy"] == pytest.approx(last_epoch["val_accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(last_epoch["val_loss"], rel=1e-5)
    assert (gray / "eval-val.json").is_file() and (gray / "confusion-val.png").is_file()


def test_evaluate_val_of_a_run_without_val_split_is_a_clear_error(runs_root, rgb):
    one_line_error(cli("evaluate", rgb.name, "--split", "val", "--runs-dir", runs_root), 2, "val_split 0")
    report = json.loads(ok("evaluate", rgb.name, "--json", "--runs-dir", runs_root).stdout)
    assert "top5_accuracy" not in report and len(report["confusion_matrix"]) == 4  # top-5 only from 10 classes


def test_evaluate_uses_the_runs_normalization_not_recomputed_stats(runs_root, gray, tmp_path):
    run = copy_run(gray, tmp_path / "runs")
    data = json.loads((run / "data.json").read_text())
    data["normalization"]["mean"] = [m + 3.0 for m in data["normalization"]["mean"]]
    (run / "data.json").write_text(json.dumps(data))
    shifted = json.loads(ok("evaluate", run.name, "--json", "--runs-dir", tmp_path / "runs").stdout)
    assert shifted["loss"] != pytest.approx(summary(gray)["test"]["loss"], rel=1e-3)


def test_unknown_ambiguous_and_bad_run_ids(gray, tmp_path):
    root = tmp_path / "runs"
    copy_run(gray, root, "gray-a")
    copy_run(gray, root, "gray-b")
    one_line_error(cli("evaluate", "gray", "--runs-dir", root), 2, "ambiguous", "gray-a", "gray-b")
    one_line_error(cli("evaluate", "nope", "--runs-dir", root), 2, "no run 'nope'")
    one_line_error(cli("evaluate", "../gray-a", "--runs-dir", root), 2, "not a run id")
    one_line_error(cli("evaluate", "latest", "--runs-dir", tmp_path / "empty"), 2, "no runs")
    one_line_error(cli("show", "nope", "--runs-dir", root), 2, "no run")
    one_line_error(cli("plot", "gray", "--runs-dir", root), 2, "ambiguous")
    img = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(img)
    one_line_error(cli("predict", img, "--run", "gray", "--runs-dir", root), 2, "ambiguous")
    assert json.loads(ok("evaluate", "gray-a", "--json", "--runs-dir", root).stdout)["run_id"] == "gray-a"


def test_runs_without_checkpoints_fail_with_one_line(gray, tmp_path):
    run = copy_run(gray, tmp_path / "runs")
    for ckpt in (run / "checkpoints").iterdir():
        ckpt.unlink()
    one_line_error(cli("evaluate", "latest", "--runs-dir", tmp_path / "runs"), 1, "no checkpoint")
    img = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(img)
    one_line_error(cli("predict", img, "--runs-dir", tmp_path / "runs"), 1, "no checkpoint")
    (run / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    one_line_error(cli("evaluate", "latest", "--runs-dir", tmp_path / "runs"), 1, "not a readable dlcli checkpoint")


# ---------------------------------------------------------------- predict: preprocessing


BASE = (np.arange(28 * 28).reshape(28, 28) * 7 % 256).astype(np.uint8)  # every gray level, no flat areas


def save_variants(directory: Path) -> dict[str, Path]:
    """BASE in many lossless modes and formats: each must decode to exactly BASE."""
    directory.mkdir(parents=True, exist_ok=True)
    gray = Image.fromarray(BASE, "L")
    palette = Image.fromarray(BASE, "P")
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    rgba = gray.convert("RGBA")
    variants = {
        "l.png": gray, "rgb.png": gray.convert("RGB"), "rgba.png": rgba, "la.png": gray.convert("LA"),
        "p.png": palette, "i16.png": Image.fromarray(BASE.astype(np.uint16) * 257), "l.bmp": gray,
        "rgb.bmp": gray.convert("RGB"), "l.tif": gray, "rgb.gif": gray, "l.pgm": gray,
        "f.tif": Image.fromarray(BASE.astype(np.float32) / 255.0, "F"),
    }
    if features.check("webp"):
        variants["rgb.webp"] = gray.convert("RGB")
    paths = {}
    for name, img in variants.items():
        paths[name] = directory / name
        img.save(paths[name], **({"lossless": True} if name.endswith(".webp") else {}))
    return paths


def test_lossless_modes_and_formats_give_exactly_the_pixels(tmp_path):
    expected = torch.from_numpy(BASE).unsqueeze(0)
    for name, path in save_variants(tmp_path).items():
        x = load_image(str(path), (1, 28, 28))
        assert x.dtype == torch.uint8 and x.shape == (1, 28, 28), name
        assert torch.equal(x, expected), name
    with Image.open(tmp_path / "i16.png") as img:
        assert img.mode.startswith("I")  # 16-bit, scaled 65535 -> 255 rather than clipped


def test_jpeg_is_close_and_rgb_runs_get_three_channels(tmp_path):
    Image.fromarray(BASE, "L").convert("RGB").save(tmp_path / "a.jpg", quality=95)
    x = load_image(str(tmp_path / "a.jpg"), (1, 28, 28))
    assert (x.float() - torch.from_numpy(BASE).float()).abs().mean() < 8
    Image.fromarray(BASE, "L").save(tmp_path / "l.png")
    rgb = load_image(str(tmp_path / "l.png"), (3, 28, 28))
    assert rgb.shape == (3, 28, 28) and torch.equal(rgb[0], rgb[2]) and torch.equal(rgb[0], torch.from_numpy(BASE))
    colour = np.zeros((12, 10, 3), np.uint8)
    colour[..., 0], colour[..., 2] = 200, 50
    Image.fromarray(colour, "RGB").save(tmp_path / "c.png")
    x = load_image(str(tmp_path / "c.png"), (3, 12, 10))
    assert x.shape == (3, 12, 10) and x[0].eq(200).all() and x[1].eq(0).all() and x[2].eq(50).all()


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (28, 28), (2000, 1500), (20, 24)])
def test_any_size_is_resized_to_the_runs_input(tmp_path, size):
    path = tmp_path / "flat.png"
    Image.new("RGB", size, (90, 90, 90)).save(path)
    gray = load_image(str(path), (1, 28, 28))
    assert gray.shape == (1, 28, 28) and gray.eq(90).all()
    colour = load_image(str(path), (3, 12, 10))  # H=12, W=10: not square, so the axes cannot be swapped
    assert colour.shape == (3, 12, 10) and colour.eq(90).all()


def test_transparency_becomes_background_and_invert_flips(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255  # white, but fully transparent except one opaque stroke
    rgba[10:18, 12:16, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "stroke.png")
    x = load_image(str(tmp_path / "stroke.png"), (1, 28, 28))
    assert x[0, 10:18, 12:16].eq(255).all() and x.sum() == 255 * 8 * 4  # transparent -> black background
    dark = rgba.copy()
    dark[..., :3] = 0  # a black stroke on transparency, as drawing programs save it
    Image.fromarray(dark, "RGBA").save(tmp_path / "dark.png")
    inv = load_image(str(tmp_path / "dark.png"), (1, 28, 28), invert=True)
    assert torch.equal(inv, x)  # with --invert, transparency still ends up black and the stroke white
    Image.fromarray(BASE).save(tmp_path / "base.png")
    assert torch.equal(load_image(str(tmp_path / "base.png"), (1, 28, 28), invert=True),
                       255 - torch.from_numpy(BASE).unsqueeze(0))


def test_unreadable_files_raise_one_line_image_errors(tmp_path, monkeypatch):
    Image.fromarray(BASE).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n")
    cases = {"truncated.png": "truncated", "empty.png": "empty", "text.png": "not an image", "missing.png": "no such"}
    for name, fragment in cases.items():
        with pytest.raises(ImageError, match=fragment) as err:
            load_image(str(tmp_path / name), (1, 28, 28))
        assert "\n" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 28x28 = 784 > 2 x 300: PIL's decompression-bomb error
    with pytest.raises(ImageError, match="refused.*decompression bomb"):
        load_image(str(tmp_path / "good.png"), (1, 28, 28))


# ---------------------------------------------------------------- predict: the command


def test_predict_json_one_object_per_image_in_sorted_order(runs_root, gray, tmp_path):
    paths = save_variants(tmp_path / "imgs")
    result = ok("predict", tmp_path / "imgs", "--run", gray.name, "--top-k", "3", "--json", "--runs-dir", runs_root)
    out = json.loads(result.stdout)
    assert [o["image"] for o in out] == [str(paths[n]) for n in sorted(paths)]
    for obj in out:
        assert set(obj) == {"image", "top"} and len(obj["top"]) == 3
        probs = [t["probability"] for t in obj["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert all(t["label"] == f"class_{t['index']}" for t in obj["top"])
    # the same pixels in every lossless format: the same probabilities, end to end
    assert all(o["top"] == out[0]["top"] for o in out)


def test_predict_matches_the_model_on_the_same_tensor(runs_root, gray, tmp_path):
    from dlcli.loaded import load_run

    Image.fromarray(BASE).save(tmp_path / "a.png")
    out = json.loads(ok("predict", tmp_path / "a.png", "--top-k", "99", "--json", "--run", gray.name,
                        "--runs-dir", runs_root).stdout)
    assert len(out[0]["top"]) == 10  # clamped to the number of classes
    probs = torch.softmax(load_run(gray, device="cpu").logits(torch.from_numpy(BASE)[None, None]), 1)[0]
    got = {t["index"]: t["probability"] for t in out[0]["top"]}
    assert got == pytest.approx({i: p for i, p in enumerate(probs.tolist())}, abs=1e-6)


def test_predict_human_output_is_a_table_per_image(runs_root, rgb, tmp_path):
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "a.jpg")
    Image.new("L", (5, 5), 128).save(tmp_path / "b.bmp")
    out = ok("predict", tmp_path / "a.jpg", tmp_path / "b.bmp", "--run", rgb.name, "-k", "2",
             "--runs-dir", runs_root).stdout
    assert "a.jpg" in out and "b.bmp" in out and out.count("probability") == 2 and "class_" in out


def test_predict_default_run_is_latest_and_invert_changes_the_input(gray, tmp_path):
    root = tmp_path / "runs"
    copy_run(gray, root)
    Image.fromarray(BASE).save(tmp_path / "a.png")
    plain = json.loads(ok("predict", tmp_path / "a.png", "--json", "-k", "10", "--runs-dir", root).stdout)
    inverted = json.loads(ok("predict", tmp_path / "a.png", "--json", "-k", "10", "--invert", "--runs-dir",
                             root).stdout)
    assert plain[0]["top"] != inverted[0]["top"]
    Image.fromarray(255 - BASE).save(tmp_path / "b.png")
    again = json.loads(ok("predict", tmp_path / "b.png", "--json", "-k", "10", "--runs-dir", root).stdout)
    assert again[0]["top"] == inverted[0]["top"]


def test_predict_partial_failure_reports_each_bad_input_and_exits_1(runs_root, gray, tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(BASE).save(folder / "a_good.png")
    Image.fromarray(BASE).convert("RGB").save(folder / "c_good.jpg")
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "d_text.png").write_text("hello")
    data = (folder / "a_good.png").read_bytes()
    (folder / "e_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("skipped: not an image extension")
    Image.new("L", (60, 60)).save(folder / "f_bomb.png")  # 3600 pixels > 2 x 1000
    Image.new("L", (40, 40)).save(folder / "g_big.png")  # 1600 pixels: PIL's warning zone, still predicted
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    result = cli("predict", folder, tmp_path / "missing.png", "--json", "--run", gray.name, "--runs-dir", runs_root)
    assert result.exit_code == 1, result.output
    assert [Path(o["image"]).name for o in json.loads(result.stdout)] == ["a_good.png", "c_good.jpg", "g_big.png"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 5 and "Traceback" not in result.output
    for name in ("missing.png", "b_empty.png", "d_text.png", "e_truncated.png", "f_bomb.png"):
        assert sum(name in line for line in errors) == 1, (name, errors)
    assert any(line.startswith("warning: ") and "g_big.png" in line for line in result.stderr.splitlines())


def test_predict_bad_options_and_non_image_runs(runs_root, gray, tmp_path):
    Image.fromarray(BASE).save(tmp_path / "a.png")
    result = cli("predict", tmp_path / "a.png", "--top-k", "0", "--run", gray.name, "--runs-dir", runs_root)
    one_line_error(result, 2, "--top-k")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    result = cli("predict", empty, "--json", "--run", gray.name, "--runs-dir", runs_root)
    assert result.exit_code == 1 and json.loads(result.stdout) == [] and "no image files" in result.stderr
    run = copy_run(gray, tmp_path / "runs")
    data = json.loads((run / "data.json").read_text())
    data.update(input_shape=[784], normalization={"mean": [0.0], "std": [1.0], "image": False})
    (run / "data.json").write_text(json.dumps(data))
    one_line_error(cli("predict", tmp_path / "a.png", "--runs-dir", tmp_path / "runs"), 2, "is a table model",
                   "not images")


def test_predict_and_help_stay_light(runs_root, gray, tmp_path):
    """`dlcli --help` never imports torch; predict never imports torchvision or matplotlib."""
    Image.fromarray(BASE).save(tmp_path / "a.png")
    code = (
        "import sys\nfrom dlcli.cli import app\n"
        "def run(args):\n    try:\n        app(args)\n    except SystemExit as e:\n        assert not e.code, e.code\n"
        "run(['--help'])\nassert 'torch' not in sys.modules\nprint('@@@')\n"
        f"run(['predict', {str(tmp_path / 'a.png')!r}, '--json', '--runs-dir', {str(runs_root)!r}, "
        f"'--run', {gray.name!r}])\n"
        "heavy = [m for m in ('torchvision', 'matplotlib') if m in sys.modules]\nassert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.split("@@@")[1])[0]["image"].endswith("a.png")


# ---------------------------------------------------------------- runs, show, plot


def test_runs_lists_every_run_even_damaged_ones(runs_root, gray, rgb, tmp_path):
    out = ok("runs", "--runs-dir", runs_root).stdout
    for text in (gray.name, rgb.name, "synthetic", "mlp", "cnn", "2/2", "1/1", "completed", "val_acc", "train_acc"):
        assert text in out, text
    root = tmp_path / "runs"
    broken = copy_run(gray, root, "broken")
    (broken / "summary.json").write_text("{not json")
    stopped = copy_run(gray, root, "stopped")
    (stopped / "summary.json").write_text(json.dumps({"status": "interrupted", "epochs_completed": 1}))
    rows = {r["id"]: r for r in json.loads(ok("runs", "--json", "--runs-dir", root).stdout)}
    assert rows["broken"]["status"] == "unknown" and rows["broken"]["epochs_completed"] == 2  # from metrics.jsonl
    assert rows["stopped"]["status"] == "interrupted" and rows["stopped"]["epochs"] == 2  # total from the config
    assert rows["stopped"]["best_metric"]["name"] == "val_accuracy"
    assert {"id", "dataset", "model", "epochs_completed", "epochs", "best_metric", "status", "started"} <= set(
        rows["stopped"])
    assert "interrupted" in ok("runs", "--runs-dir", root).stdout
    assert "damaged JSON" in ok("show", "broken", "--runs-dir", root).stdout  # the config is still shown
    empty = cli("runs", "--runs-dir", tmp_path / "none")
    assert empty.exit_code == 0 and "no runs" in empty.stderr


def test_plot_writes_curves_and_show_prints_everything(gray, tmp_path):
    root = tmp_path / "runs"
    run = copy_run(gray, root)
    for made in [*run.glob("*.png"), *run.glob("eval-*.json")]:  # left there by the evaluate tests
        made.unlink()
    assert "no plots yet" in ok("show", "latest", "--runs-dir", root).stdout
    printed = ok("plot", run.name, "--runs-dir", root).stdout.strip()
    assert Path(printed) == run / "curves.png"
    with Image.open(printed) as png:
        assert png.format == "PNG" and png.size[0] > 300
    out = ok("show", run.name[:6], "--runs-dir", root).stdout
    assert "dataset: synthetic" in out and '"status": "completed"' in out and str(run / "curves.png") in out
    shown = json.loads(ok("show", run.name, "--json", "--runs-dir", root).stdout)
    assert shown["config"]["data"]["dataset"] == "synthetic" and shown["plots"] == [str(run / "curves.png")]
    (run / "metrics.jsonl").unlink()
    one_line_error(cli("plot", run.name, "--runs-dir", root), 1, "nothing to plot")


def test_write_curves_is_callable_on_a_run_directory(gray, tmp_path):
    from dlcli.plots import write_curves

    run = copy_run(gray, tmp_path)
    assert write_curves(run) == run / "curves.png" and (run / "curves.png").stat().st_size > 1000


# ---------------------------------------------------------------- real data


@pytest.mark.slow
@needs_fashion
def test_fashion_mnist_predict_agrees_with_evaluate(tmp_path):
    from dlcli.data.loaders import read_idx
    from dlcli.evaluate import rebuild_split
    from dlcli.loaded import load_run

    config = Path(__file__).parent.parent / "configs" / "fashion_mnist_cnn.yaml"
    root = tmp_path / "runs"
    ok("train", config, "--runs-dir", root, "--quiet", "--set", "data.max_train_samples=5000",
       "--set", "train.epochs=1", "--set", f"data.root={tmp_path / 'data'}")
    run = next(root.iterdir())
    report = json.loads(ok("evaluate", "latest", "--json", "--runs-dir", root).stdout)
    assert report["accuracy"] == pytest.approx(summary(run)["test"]["accuracy"], abs=1e-6)
    assert report["accuracy"] > 0.7 and report["per_class"][0]["label"] == "T-shirt/top"

    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:100]
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:100].long()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img.numpy(), "L").save(folder / f"{i:03d}.png")
    out = json.loads(ok("predict", folder, "--json", "-k", "1", "--runs-dir", root).stdout)
    predicted = torch.tensor([o["top"][0]["index"] for o in out])

    loaded = load_run(run, device="cpu")
    test = rebuild_split(loaded, "test")
    assert torch.equal(test.x[:100], images.unsqueeze(1)) and torch.equal(test.y[:100], labels)
    expected = loaded.logits(test.x[:100]).argmax(1)
    assert torch.equal(predicted, expected)  # 100% agreement on the same 100 images
    assert (predicted == labels).float().mean().item() == (expected == labels).float().mean().item()


def test_latest_is_the_newest_run_even_after_an_older_one_is_written_to(tmp_path):
    from dlcli import rundirs as runs

    root = tmp_path / "runs"
    for run_id in ("zeta-20260101-000000", "alpha-20261231-235959", "alpha-20261231-235959-2", "mid-20260601-120000"):
        (root / run_id).mkdir(parents=True)
        (root / run_id / "config.yaml").write_text("name: x\n")
    (root / "zeta-20260101-000000" / "eval-test.json").write_text("{}")  # touching an old run
    assert runs.resolve_run(root, "latest").name == "alpha-20261231-235959-2"
    assert [p.name for p in runs.list_runs(root)][0] == "zeta-20260101-000000"


def test_latest_is_the_later_of_two_runs_started_in_one_second(tmp_path, monkeypatch):
    """Run ids stamp the second: a run of another name started in the same second counts on from it, so `latest` is
    the later run, not the one whose name sorts last."""
    from dlcli import rundirs as runs

    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *a: "20261208-101010")
    first = runs.create_run(tmp_path, "zeta")
    second = runs.create_run(tmp_path, "alpha")
    third = runs.create_run(tmp_path, "alpha")
    assert (first.name, second.name, third.name) == ("zeta-20261208-101010", "alpha-20261208-101010-2",
                                                     "alpha-20261208-101010-3")
    for run in (first, second, third):
        (run / "config.yaml").write_text("name: x\n")
    assert runs.resolve_run(tmp_path, "latest") == third
