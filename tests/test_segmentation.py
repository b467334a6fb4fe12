"""`task: segmentation` on `dataset: masks`: a tiny U-Net trained for real on generated scenes (coloured shapes on
noise) finds the shapes; the metrics agree with hand computations, torchmetrics and scikit-learn; each kind of bad
data is refused in one line naming the file; predict, the Python API, export and serve answer masks in each
picture's own pixels; a resumed run ends exactly where a straight one does."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from dlcli.cli import app

CLASSES = ["background", "square", "disc"]


def scene(rng, height: int, width: int):
    """(picture uint8 (H, W, 3), mask uint8 (H, W)): a red square (class 1, left half) and a green disc (class 2,
    right half) on noise, never overlapping."""
    img = rng.integers(0, 90, (height, width, 3)).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    side = max(3, int(min(height, width) * rng.uniform(0.2, 0.35)))
    x0, y0 = rng.integers(0, width // 2 - side + 1), rng.integers(0, height - side)  # the left half
    square = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
    r = max(2, int(min(height, width) * rng.uniform(0.12, 0.2)))
    cx, cy = rng.integers(width // 2 + r, width - r), rng.integers(r, height - r)  # the right half
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img[square], mask[square] = (220, 40, 40), 1
    img[disc], mask[disc] = (40, 220, 40), 2
    return img, mask


def write_scenes(root: Path, n: int, size=(32, 32), seed: int = 0, split: str = "train") -> list[str]:
    """n scenes as root/images/<split>/sNNN.png and root/masks/<split>/sNNN.png; returns the stems."""
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(n):
        img, mask = scene(rng, *size)
        stem = f"s{seed}_{i:03d}"
        Image.fromarray(img).save(root / "images" / split / f"{stem}.png")
        Image.fromarray(mask, "L").save(root / "masks" / split / f"{stem}.png")
        stems.append(stem)
    return stems


def seg_config(root: Path, **train) -> dict:
    return {"name": "seg", "seed": 0, "task": "segmentation",
            "data": {"dataset": "masks", "root": str(root), "classes": CLASSES, "image_size": 32, "val_split": 0.15,
                     "test_split": 0.15, "augment": ["hflip"]},
            "model": {"type": "unet", "width": 8, "depth": 2},
            "optimizer": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 8, "batch_size": 8, "precision": "32", **train}}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def train(root: Path, cfg: dict, runs: Path, *extra) -> Path:
    path = root / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = ok("train", path, "--runs-dir", runs, "-q", *extra)
    return runs / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    write_scenes(root / "data", 48)
    run = train(root, seg_config(root / "data"), root / "runs")
    return {"run": run, "root": root, "data": root / "data"}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ---------------------------------------------------------------- learning


def test_a_tiny_unet_finds_the_shapes(trained):
    run = trained["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["headline"] == "miou"
    report = json.loads(ok("evaluate", run.name, "--runs-dir", run.parent, "--json").stdout)
    per = {row["label"]: row for row in report["per_class"]}
    assert per["square"]["iou"] > 0.8 and per["disc"]["iou"] > 0.8, per
    assert report["miou"] > 0.8 and report["miou"] == pytest.approx(summary["test"]["miou"], abs=1e-6)
    grid = Image.open(report["files"]["masks"])
    assert grid.size[0] > 6 * 32 and grid.size[1] >= 32  # pictures, true and predicted masks side by side


def test_validation_and_evaluate_score_in_chunks_never_a_whole_splits_outputs(trained, monkeypatch):
    """A split's class scores per pixel (pictures x classes x H x W floats) can outgrow memory: evaluate and
    validation sum the task's stats over batches of eval_batch_size pictures, and give what scoring the whole split's
    outputs at once gives (computed here by hand from them)."""
    from dlcli.evaluate import evaluate_run, rebuild_split
    from dlcli.loaded import load_run
    from dlcli.tasks.segmentation import Segmentation, confusion

    seen = []
    stats = Segmentation.stats
    monkeypatch.setattr(Segmentation, "stats", lambda self, out, y: seen.append(len(out)) or stats(self, out, y))
    root = trained["root"]
    run = train(root, {**seg_config(trained["data"]), "name": "chunks",
                       "train": {"epochs": 1, "batch_size": 8, "precision": "32", "eval_batch_size": 3}},
                root / "runs-chunks")
    assert len(seen) >= 6 and max(seen) <= 3, seen  # validation and test: 7 pictures each, 3 at a time
    seen.clear()
    report = evaluate_run(run)
    assert len(seen) == 3 and max(seen) <= 3, seen
    summary = json.loads((run / "summary.json").read_text())
    assert report["miou"] == pytest.approx(summary["test"]["miou"], abs=1e-12)

    held = load_run(run, "best", "cpu")
    test = rebuild_split(held, "test")
    out = held.logits(test.x)  # the whole split at once, scored by hand
    cm = confusion(out.argmax(1), test.y, len(CLASSES), 255).numpy()
    with np.errstate(invalid="ignore"):
        iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert report["miou"] == pytest.approx(float(np.nanmean(iou)), abs=1e-9)
    loss = torch.nn.functional.cross_entropy(out, test.y.long(), reduction="none").flatten(1).mean(1).mean()
    assert report["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert report["confusion_matrix"] == cm.astype(int).tolist()


def test_the_default_monitor_is_val_miou(trained):
    cfg = yaml.safe_load((trained["run"] / "config.yaml").read_text())
    assert cfg["train"]["checkpoint_monitor"] == "val_miou"
    rows = [json.loads(line) for line in (trained["run"] / "metrics.jsonl").read_text().splitlines()]
    assert {"val_miou", "val_miou_foreground", "val_dice", "val_pixel_accuracy", "val_loss"} <= rows[-1].keys()


def test_predict_answers_in_the_pictures_own_pixels(trained, tmp_path):
    """A 48x40 picture (not the 32x32 the model takes): the mask comes back 48 wide and 40 high, finding the shapes
    there; --save writes the same mask as a PNG; Run.predict gives it as an array for a PIL image."""
    import dlcli

    run = trained["run"]
    rng = np.random.default_rng(7)
    ious = []
    for i in range(4):
        img, truth = scene(rng, 40, 48)
        path = tmp_path / f"p{i}.png"
        Image.fromarray(img).save(path)
        answer = json.loads(ok("predict", path, "--run", run.name, "--runs-dir", run.parent, "--json",
                               "--save", tmp_path / "masks").stdout)[0]
        rle = answer["mask"]
        assert (rle["height"], rle["width"]) == (40, 48) and sum(rle["counts"]) == 40 * 48
        mask = np.repeat(np.asarray(rle["values"], np.uint8), rle["counts"]).reshape(40, 48)
        saved = np.array(Image.open(tmp_path / "masks" / f"p{i}.png"))
        assert saved.dtype == np.uint8 and np.array_equal(saved, mask)
        shares = answer["shares"]
        assert shares["disc"] == pytest.approx((mask == 2).mean(), abs=1e-6)
        ious += [iou(mask == c, truth == c) for c in (1, 2)]
        python = dlcli.load(run.name, runs_dir=run.parent).predict(Image.fromarray(img))[0]
        assert np.array_equal(python["mask"], mask)
    assert min(ious) > 0.7 and np.mean(ious) > 0.8, ious


def test_save_is_refused_for_answers_without_pictures(tmp_path):
    from dlcli.errors import DlcliError
    from dlcli.predict import Prediction, save_answers
    from dlcli.tasks import TASKS

    with pytest.raises(DlcliError, match="JSON only"):
        save_answers([Prediction("a.png", {"top": []}, TASKS.entries["classification"]())], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- metrics and loss


def bound(k: int = 3, ignore: int = 255):
    from dlcli.tasks import TASKS

    return TASKS.entries["segmentation"]().bind({"ignore_index": ignore}, CLASSES[:k])


def logits_for(pred: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred.long(), k).permute(0, 3, 1, 2).float() * 5


def test_metrics_by_hand():
    """Two 3x3 masks with ignored pixels; the counts below were worked out on paper."""
    y = torch.tensor([[[0, 0, 1], [0, 1, 1], [2, 2, 255]],
                      [[0, 0, 0], [255, 2, 2], [1, 1, 2]]], dtype=torch.uint8)
    p = torch.tensor([[[0, 1, 1], [0, 1, 0], [2, 2, 2]],
                      [[0, 0, 2], [0, 2, 2], [1, 0, 2]]])
    task = bound()
    scores = task.scores(task.stats(logits_for(p, 3), y))
    # scored pixels: 16. true 0: 6 (predicted 0,1,0,0,0,2 -> tp 4), true 1: 5 (1,1,0,1,0 -> tp 3), true 2: 5 (all 2)
    # predicted 0: 4 + 1 + 1 = 6 (of which tp 4); predicted 1: 1 + 3 = 4; predicted 2: 1 + 5 = 6
    iou = [4 / (6 + 6 - 4), 3 / (5 + 4 - 3), 5 / (5 + 6 - 5)]
    dice = [2 * 4 / (6 + 6), 2 * 3 / (5 + 4), 2 * 5 / (5 + 6)]
    assert scores["miou"] == pytest.approx(sum(iou) / 3)
    assert scores["miou_foreground"] == pytest.approx((iou[1] + iou[2]) / 2)
    assert scores["dice"] == pytest.approx(sum(dice) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(12 / 16)
    report = task.report(logits_for(p, 3), y)
    assert [r["iou"] for r in report["per_class"]] == pytest.approx(iou)
    assert report["ignored_pixels"] == 2 and report["confusion_matrix"][0] == [4, 1, 1]


def test_a_class_in_neither_truth_nor_prediction_is_left_out_of_the_means():
    y = torch.zeros(1, 4, 4, dtype=torch.uint8)
    y[0, :2] = 1
    scores = bound().scores(bound().stats(logits_for(y, 3), y))
    assert scores["miou"] == 1.0 and scores["miou_foreground"] == 1.0  # class 2 absent: not a 0, not counted


def test_metrics_agree_with_torchmetrics_and_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(3)
    k = 4
    out = torch.randn(6, k, 9, 7, generator=g)
    y = torch.randint(0, k, (6, 9, 7), generator=g).to(torch.uint8)
    y[torch.rand(6, 9, 7, generator=g) < 0.1] = 255
    task = bound(4)
    task._names = ["bg", "a", "b", "c"]
    scores = task.scores(task.stats(out, y))
    report = task.report(out, y)
    valid = (y != 255).numpy().ravel()
    truth, pred = y.numpy().ravel()[valid], out.argmax(1).numpy().ravel()[valid]
    assert np.array_equal(np.array(report["confusion_matrix"]), confusion_matrix(truth, pred, labels=range(k)))
    jaccard = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=255)(out.argmax(1), y.long())
    assert [r["iou"] for r in report["per_class"]] == pytest.approx(jaccard.tolist(), abs=1e-6)
    assert scores["miou"] == pytest.approx(jaccard.mean().item(), abs=1e-6)
    assert scores["miou_foreground"] == pytest.approx(jaccard[1:].mean().item(), abs=1e-6)
    per_dice = f1_score(truth, pred, labels=range(k), average=None)  # Dice is the per-class F1 of pixels
    assert [r["dice"] for r in report["per_class"]] == pytest.approx(per_dice.tolist())
    assert scores["dice"] == pytest.approx(per_dice.mean())
    assert scores["pixel_accuracy"] == pytest.approx(accuracy_score(truth, pred))
    # additive: the sums over two halves (two DDP ranks) give the whole split's scores
    a, b = task.stats(out[:2], y[:2]), task.stats(out[2:], y[2:])
    summed = task.scores({key: a[key] + b[key] for key in a})
    assert summed == pytest.approx(scores)


def test_the_loss_skips_ignored_pixels_and_averages_per_picture():
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 4, 4), generator=g).to(torch.uint8)
    y[0, 0, :3] = 255
    task = bound()
    by_hand = torch.stack([F.cross_entropy(out[i].permute(1, 2, 0)[y[i] != 255], y[i][y[i] != 255].long())
                           for i in range(2)])
    assert task.criterion(out, y).item() == pytest.approx(by_hand.mean().item(), abs=1e-6)
    assert task.criterion(out, y, reduction="sum").item() == pytest.approx(by_hand.sum().item(), abs=1e-6)
    changed = out.clone()
    changed[0, :, 0, :3] = 100.0  # whatever the model says at ignored pixels
    assert task.criterion(changed, y).item() == pytest.approx(task.criterion(out, y).item(), abs=1e-6)


def test_run_length_round_trip():
    from dlcli.tasks.segmentation import decode_run_length, run_length

    mask = np.random.default_rng(0).integers(0, 3, (5, 7)).astype(np.uint8)
    mask[2:4] = 1
    rle = run_length(mask)
    assert np.array_equal(decode_run_length(rle), mask) and sum(rle["counts"]) == 35
    assert len(rle["values"]) < 35  # runs, not pixels


# ---------------------------------------------------------------- reading masks


def read(root: Path, **data):
    from dlcli.config import validate_config
    from dlcli.data import load_data

    cfg = seg_config(root)
    cfg["data"].update(data)
    cfg["data"]["augment"] = []
    return load_data(validate_config(cfg))


def test_masks_are_read_resized_with_nearest_and_split(tmp_path):
    write_scenes(tmp_path, 10, size=(64, 64))
    write_scenes(tmp_path, 3, size=(64, 64), seed=1, split="test")
    mask = np.array(Image.open(tmp_path / "masks" / "train" / "s0_000.png"))
    mask[0, 0] = 255
    Image.fromarray(mask, "L").save(tmp_path / "masks" / "train" / "s0_000.png")
    data = read(tmp_path, val_split=0.2)
    assert len(data.train) == 8 and len(data.val) == 2 and len(data.test) == 3  # test/ given, val cut from train
    assert data.train.y.dtype == torch.uint8 and data.train.y.shape[1:] == (32, 32)
    assert data.train.x.shape[1:] == (3, 32, 32) and data.classes == CLASSES
    assert set(torch.unique(data.train.y).tolist()) <= {0, 1, 2, 255}
    files = sorted((tmp_path / "masks" / "train").glob("*.png"))
    whole = torch.cat([data.train.y, data.val.y])
    seen = {tuple(np.array(Image.open(f))[1::2, 1::2].ravel()) for f in files}  # nearest at half size: odd pixels
    assert {tuple(m.ravel().tolist()) for m in whole} <= seen
    again = read(tmp_path, val_split=0.2)  # from the cache: the same tensors
    assert torch.equal(again.train.y, data.train.y) and torch.equal(again.train.x, data.train.x)
    assert any((tmp_path / ".cache").glob("masks-*.pt"))


def one_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _other_size(root):
    Image.new("L", (30, 32)).save(root / "masks" / "train" / "s0_003.png")
    return "s0_003.png", "30x32"


def _value_outside(root):
    mask = np.zeros((32, 32), np.uint8)
    mask[5, 9] = 7
    Image.fromarray(mask, "L").save(root / "masks" / "train" / "s0_004.png")
    return "s0_004.png", "value 7 at x=9, y=5"


def _no_mask(root):
    (root / "masks" / "train" / "s0_002.png").unlink()
    return "s0_002.png", "picture without a mask"


def _no_picture(root):
    Image.new("L", (32, 32)).save(root / "masks" / "train" / "stray.png")
    return "stray.png", "mask without a picture"


def _rgb_mask(root):
    Image.new("RGB", (32, 32)).save(root / "masks" / "train" / "s0_001.png")
    return "s0_001.png", "single-channel"


@pytest.mark.parametrize("spoil", [_other_size, _value_outside, _no_mask, _no_picture, _rgb_mask])
def test_bad_data_is_refused_in_one_line_naming_the_file(tmp_path, spoil):
    write_scenes(tmp_path / "data", 8)
    name, words = spoil(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(seg_config(tmp_path / "data", epochs=1)))
    line = one_error(invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs"))
    assert name in line and words in line, line
    assert not any((tmp_path / "runs").glob("*/checkpoints/*.pt"))


def test_ignore_index_values_and_a_classes_file_are_accepted(tmp_path):
    write_scenes(tmp_path, 6)
    mask = np.array(Image.open(tmp_path / "masks" / "train" / "s0_000.png"))
    mask[:4] = 9
    Image.fromarray(mask, "L").save(tmp_path / "masks" / "train" / "s0_000.png")
    (tmp_path / "classes.txt").write_text("background\nsquare\ndisc\n")
    data = read(tmp_path, classes=None, ignore_index=9, val_split=0.0, test_split=0.0)
    assert data.classes == CLASSES and (data.train.y == 9).sum() >= 4 * 32
    assert data.target["ignore_index"] == 9


# ---------------------------------------------------------------- models


def test_summary_shows_unet_and_torchvision_segmenters(tmp_path):
    write_scenes(tmp_path / "data", 4)
    cfg = seg_config(tmp_path / "data")
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(cfg))
    layers = json.loads(ok("summary", tmp_path / "u.yaml", "--json").stdout)["layers"]
    assert [row["output_shape"] for row in layers] == [[8, 32, 32], [3, 32, 32]]
    cfg["model"] = {"type": "segmenter", "arch": "lraspp_mobilenet_v3_large"}
    cfg["data"]["channels"] = 1
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    found = json.loads(ok("summary", tmp_path / "s.yaml", "--json").stdout)
    assert found["layers"][-1]["output_shape"] == [3, 32, 32] and found["parameters"] > 1_000_000
    cfg["model"] = {"type": "cnn", "channels": [4]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert "per pixel" in one_error(invoke("summary", tmp_path / "c.yaml"))


def test_segmenters_give_logits_at_the_input_size():
    from dlcli.models.layers import SEGMENTERS
    from dlcli.models.segnets import torchvision_segmenter

    for arch in ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"):
        assert arch in SEGMENTERS
        net = torchvision_segmenter(arch, 5, 3, "none", "none").eval()
        with torch.no_grad():
            assert net(torch.randn(1, 3, 40, 48)).shape == (1, 5, 40, 48)


def test_a_segmenter_loads_backbone_weights_from_a_file(tmp_path):
    import torchvision

    from dlcli.errors import DlcliError
    from dlcli.models.segnets import torchvision_segmenter

    torch.manual_seed(0)
    imagenet = torchvision.models.mobilenet_v3_large().state_dict()
    torch.save(imagenet, tmp_path / "mnv3.pt")
    net = torchvision_segmenter("lraspp_mobilenet_v3_large", 3, 3, "none", str(tmp_path / "mnv3.pt"))
    got = net.net.backbone.state_dict()
    assert torch.equal(got["0.0.weight"], imagenet["features.0.0.weight"])
    torch.save({"nothing.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(DlcliError, match="not weights of"):
        torchvision_segmenter("lraspp_mobilenet_v3_large", 3, 3, "none", str(tmp_path / "bad.pt"))


# ---------------------------------------------------------------- export, serve, resume


def test_onnx_export_equals_predict(trained, tmp_path):
    import onnxruntime as ort

    run = trained["run"]
    result = ok("export", run.name, "--runs-dir", run.parent)
    path = Path(result.stdout.strip().splitlines()[-1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pictures = sorted((trained["data"] / "images" / "train").glob("*.png"))[:5]
    batch = np.stack([np.array(Image.open(p)) for p in pictures])  # uint8 N x H x W x C, as PIL gives
    probs = session.run(None, {"input": batch})[0]
    assert probs.shape == (5, 3, 32, 32) and np.allclose(probs.sum(1), 1, atol=1e-5)
    answers = json.loads(ok("predict", *pictures, "--run", run.name, "--runs-dir", run.parent, "--json").stdout)
    for p, answer in zip(probs, answers):
        rle = answer["mask"]
        mask = np.repeat(np.asarray(rle["values"], np.uint8), rle["counts"]).reshape(32, 32)
        assert np.array_equal(p.argmax(0), mask)


def test_serve_answers_a_mask_in_the_uploads_pixels(trained, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dlcli.serve.app import create_app

    run = trained["run"]
    img, _ = scene(np.random.default_rng(3), 40, 48)
    path = tmp_path / "up.png"
    Image.fromarray(img).save(path)
    expected = json.loads(ok("predict", path, "--run", run.name, "--runs-dir", run.parent, "--json").stdout)[0]
    with TestClient(create_app(run), base_url="http://127.0.0.1") as client:
        answer = client.post("/predict", files=[("files", ("up.png", path.read_bytes(), "image/png"))])
        assert answer.status_code == 200, answer.text
        got = answer.json()[0]
        assert got["image"] == "up.png" and got["mask"] == expected["mask"] and got["shares"] == expected["shares"]
        info = client.get("/info").json()
        assert info["task"] == "segmentation" and info["classes"] == CLASSES


def test_resume_ends_exactly_where_a_straight_run_does(tmp_path):
    from tests.test_resume import assert_same_training

    write_scenes(tmp_path / "data", 24)
    cfg = seg_config(tmp_path / "data", epochs=2)
    cfg["data"]["augment"] = ["hflip", {"random_crop": 2}]
    straight = train(tmp_path, cfg, tmp_path / "a")
    cfg["train"]["epochs"] = 1
    first = train(tmp_path, cfg, tmp_path / "b")
    ok("resume", first.name, "--epochs", 2, "--runs-dir", tmp_path / "b", "-q")
    assert_same_training(straight, first)


def test_two_processes_train_like_one_with_twice_the_batch(tmp_path):
    """DDP over gloo: the confusion matrices of the ranks' shares sum to the split's, and the per-picture loss
    averages to the same gradient (no batchnorm, whose statistics are per rank)."""
    from tests.test_distributed import assert_same, dlcli, finished, run_of

    write_scenes(tmp_path / "data", 22)
    cfg = seg_config(tmp_path / "data", epochs=2, batch_size=4)
    cfg["model"] = {"type": "unet", "width": 4, "depth": 1, "batchnorm": False}
    cfg["data"].update(val_split=0.25, augment=[])  # each rank draws its own flips
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    finished(dlcli("train", path, "--set", "train.batch_size=8", "--runs-dir", tmp_path / "one", "-q"))
    finished(dlcli("train", path, "--devices", "2", "--runs-dir", tmp_path / "two", "-q"))
    one, two = run_of(tmp_path / "one"), run_of(tmp_path / "two")
    assert_same(one, two, atol=1e-5)
    assert json.loads((two / "summary.json").read_text())["test"]["miou"] == pytest.approx(
        json.loads((one / "summary.json").read_text())["test"]["miou"], abs=1e-6)


def test_data_check_lists_every_bad_file_and_the_pixels_per_class(tmp_path):
    write_scenes(tmp_path / "data", 8)
    _other_size(tmp_path / "data")
    _value_outside(tmp_path / "data")
    _no_picture(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(seg_config(tmp_path / "data")))
    result = invoke("data", "check", tmp_path / "c.yaml", "--json")
    report = json.loads(result.stdout)
    assert not report["ok"] and report["errors"] == 3, report["findings"]
    named = " ".join(f["message"] for f in report["findings"])
    assert "s0_003.png" in named and "s0_004.png" in named and "stray.png" in named
    good = [f for f in sorted((tmp_path / "data" / "masks" / "train").glob("s0_*.png"))
            if f.name not in ("s0_003.png", "s0_004.png")]
    by_hand = np.bincount(np.concatenate([np.array(Image.open(f)).ravel() for f in good]), minlength=3)
    assert report["classes"]["counts"]["train"] == dict(zip(CLASSES, by_hand.tolist()))


def test_save_names_two_pictures_of_one_name_apart(tmp_path):
    from dlcli.predict import Prediction, save_answers
    from dlcli.tasks.segmentation import run_length

    a, b = np.zeros((3, 4), np.uint8), np.ones((3, 4), np.uint8)
    task = bound()
    found = save_answers([Prediction("x/p.png", {"mask": run_length(a)}, task),
                          Prediction("y/p.png", {"mask": run_length(b)}, task)], str(tmp_path))
    assert [Path(f).name for f in found] == ["p.png", "p-2.png"]
    assert np.array_equal(np.array(Image.open(tmp_path / "p-2.png")), b)
