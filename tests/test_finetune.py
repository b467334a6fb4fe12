"""Fine-tuning: `model.init` from a run or a checkpoint, `train.freeze` then unfreeze (parameters and BatchNorm
statistics checked), exact resume across the unfreeze, optimizer groups with their own learning rates."""

import json
import signal
import time
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
import yaml

from dlcli import rundirs as runs
from dlcli.config import validate_config
from dlcli.models import build_model
from tests.conftest import tiny_config
from tests.test_resume import SignalAt, assert_same_training, inject, one_error_line  # noqa: F401 (a fixture)
from tests.test_tables import write_texts


def train(cli, write_config, cfg, runs_dir, *extra) -> Path:
    result = cli("train", write_config(cfg, f"{cfg['name']}-{time.monotonic_ns()}.yaml"), "--runs-dir", runs_dir,
                 *extra)
    assert result.exit_code == 0, result.output
    return Path(runs_dir) / result.stdout.strip().splitlines()[-1]


def val_accuracies(run: Path) -> list[float]:
    return [m["val_accuracy"] for m in runs.read_metrics(run)]


def weights(run: Path, name: str = "last.pt") -> dict:
    return runs.load_checkpoint(run / "checkpoints" / name)["model"]


# ---------------------------------------------------------------- model.init


def synthetic(classes: int, samples: int, val_split: float) -> dict:
    # The same seed draws the same class prototypes: 4 classes are the first 4 of the 8.
    return {"dataset": "synthetic", "shape": [1, 12, 12], "num_classes": classes, "train_samples": samples,
            "test_samples": 50, "noise": 1.5, "val_split": val_split}


CNN = {"type": "cnn", "channels": [8, 16], "padding": "same", "hidden": [32]}


def test_init_from_a_run_loads_what_fits_and_learns_a_related_task_faster(cli, write_config, tmp_path):
    source = train(cli, write_config, tiny_config(name="eight", seed=0, data=synthetic(8, 1000, 0.1), model=CNN,
                                                  optimizer={"name": "adam", "lr": 0.003},
                                                  train={"epochs": 3, "batch_size": 32}), tmp_path / "runs", "-q")
    # The related task: 4 of those classes, 60 training samples.
    task = tiny_config(name="four", seed=0, data=synthetic(4, 120, 0.5), model=CNN,
                       optimizer={"name": "adam", "lr": 0.003}, train={"epochs": 8, "batch_size": 16})
    scratch = train(cli, write_config, task, tmp_path / "runs", "-q")
    result = cli("train", write_config({**task, "model": {**CNN, "init": source.name}}, "ft.yaml"),
                 "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    tuned = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    table = result.stderr
    assert f"model.init from run {source.name}" in table
    for layer, loaded, skipped in (("conv2d_1", "2 (80)", "-"), ("conv2d_2", "2 (1,168)", "-"),
                                   ("dense_1", "2 (4,640)", "-"), ("dense_2", "-", "2 (132)")):
        assert any(line.split("│")[1:4] and [c.strip() for c in line.split("│")[1:4]] == [layer, loaded, skipped]
                   for line in table.splitlines()), table
    assert "dense_2.weight: (8, 32) in the source, (4, 32) here" in table

    def epochs_to(run, target=0.8):
        return next((i + 1 for i, acc in enumerate(val_accuracies(run)) if acc >= target), 99)

    assert epochs_to(tuned) + 2 <= epochs_to(scratch), (val_accuracies(tuned), val_accuracies(scratch))
    assert json.loads((tuned / "summary.json").read_text())["test"]["accuracy"] > \
        json.loads((scratch / "summary.json").read_text())["test"]["accuracy"]


def test_init_from_a_checkpoint_file_sets_the_starting_weights(tmp_path):
    from dlcli.finetune import init_from

    cfg = validate_config({"data": {"dataset": "mnist"}, "model": CNN})
    torch.manual_seed(1)
    source, _ = build_model(cfg.model, (1, 12, 12), 4)
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "some.pt")
    torch.manual_seed(2)
    model, _ = build_model(cfg.model, (1, 12, 12), 5)  # another class count: the last layer is new
    report = init_from(str(tmp_path / "some.pt"), model, tmp_path / "runs")
    assert torch.equal(model.conv2d_2.weight, source.conv2d_2.weight)
    assert not torch.equal(model.dense_2.weight[:4], source.dense_2.weight)
    assert report.rows[-1] == ("dense_2", [0, 0], [2, 5 * 32 + 5], [0, 0]) and report.unused == 0


def test_init_refuses_a_source_of_which_nothing_fits(cli, write_config, tmp_path):
    data = {**tiny_config()["data"], "num_classes": 4}  # not even the output layer's bias fits
    mlp = train(cli, write_config, tiny_config(name="mlp", data=data, model={"type": "mlp", "hidden": [16]}),
                tmp_path / "runs", "-q")
    cfg = tiny_config(name="cnn", model={"type": "cnn", "channels": [4], "hidden": [24], "init": mlp.name})
    result = cli("train", write_config(cfg, "cnn.yaml"), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"model.init: nothing in run {mlp.name} fits this model: none of its 4 tensors" in line
    assert "its layers: dense_1, dense_2; this model's: conv2d_1, dense_1, dense_2" in line
    cfg["model"]["init"] = "no-such-run"
    result = cli("train", write_config(cfg, "cnn2.yaml"), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "model.init: 'no-such-run' is not a checkpoint file" in one_error_line(result)
    assert len(list((tmp_path / "runs").iterdir())) == 1  # neither left a run behind


def test_an_lstm_starts_again_on_new_texts(cli, write_config, tmp_path):
    first = write_texts(tmp_path / "a.csv", n=120, seed=0)
    second = write_texts(tmp_path / "b.csv", n=60, seed=1)
    base = {"name": "texts", "data": {"dataset": "text_csv", "train_file": str(first), "max_length": 20},
            "model": {"type": "lstm", "embedding_dim": 8, "hidden_size": 8}, "train": {"epochs": 1}}
    source = train(cli, write_config, base, tmp_path / "runs", "-q")
    again = {**base, "data": {**base["data"], "train_file": str(second), "vocab": {"max_size": 12}},
             "model": {**base["model"], "init": source.name}}
    result = cli("train", write_config(again, "again.yaml"), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in result.stderr.splitlines() if line.count("│") == 5}
    assert rows["embedding_1"][1] == "1 (112)"  # a smaller vocabulary: 14 ids of 8 values, started afresh
    assert rows["lstm_1"][0].startswith("4 (") and rows["dense_1"][0] == "2 (27)"


# ---------------------------------------------------------------- freezing


def frozen_config(init: str, epochs: int) -> dict:
    cfg = tiny_config(name="frozen", model={"type": "cnn", "channels": [4], "batchnorm": True, "hidden": [16],
                                            "dropout": 0.3, "init": init},
                      scheduler={"name": "exponential", "gamma": 0.9},
                      optimizer={"name": "adam", "lr": 0.01, "groups": [{"layers": [-1], "lr": 0.001}]})
    cfg["data"]["augment"] = [{"random_crop": 1}, "hflip"]
    # conv2d_1 and the BatchNorm layer for the first epoch; dense_1's bias (a pattern: the layer holds a Linear and
    # its relu, so the name is dense_1.0.bias) throughout.
    cfg["train"] = {"epochs": epochs, "batch_size": 32,
                    "freeze": [{"layers": [0, "batchnorm"], "epochs": 1}, {"layers": ["dense_1.*bias"]}]}
    return cfg


@pytest.fixture
def start(tmp_path):
    """A checkpoint file with the starting weights (BatchNorm statistics too), so that what changed is known."""
    cfg = validate_config(frozen_config("x", 1))
    torch.manual_seed(5)
    model, _ = build_model(cfg.model, (1, 8, 8), 3)
    model.batchnorm_1.running_mean.fill_(0.3)
    path = tmp_path / "start.pt"
    torch.save({"model": model.state_dict()}, path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_freeze_then_unfreeze_trains_only_what_it_should_and_resumes_exactly(cli, write_config, tmp_path, start):
    path, initial = start
    changed = lambda w, k: not torch.equal(w[k], initial[k])  # noqa: E731
    first = train(cli, write_config, frozen_config(str(path), 1), tmp_path / "b", "-q")
    w = weights(first)
    for key in ("conv2d_1.weight", "conv2d_1.bias", "batchnorm_1.weight", "batchnorm_1.bias",
                "batchnorm_1.running_mean", "batchnorm_1.running_var", "batchnorm_1.num_batches_tracked",
                "dense_1.0.bias"):
        assert not changed(w, key), key
    assert changed(w, "dense_1.0.weight") and changed(w, "dense_2.weight")

    result = cli("resume", first.name, "--epochs", "3", "--runs-dir", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "epoch 2: training 0, batchnorm from now on (675 parameters trainable, 16 frozen)" in result.stderr
    w = weights(first)
    for key in ("conv2d_1.weight", "batchnorm_1.weight", "batchnorm_1.running_mean", "dense_1.0.weight"):
        assert changed(w, key), key
    assert not changed(w, "dense_1.0.bias")  # frozen throughout

    straight = train(cli, write_config, frozen_config(str(path), 3), tmp_path / "a", "-q")
    assert_same_training(straight, first)


def test_interrupted_after_the_unfreeze_resumes_exactly(cli, write_config, tmp_path, start, inject):  # noqa: F811
    path, _ = start
    straight = train(cli, write_config, frozen_config(str(path), 3), tmp_path / "a", "-q")
    inject(SignalAt(8, signal.SIGINT))  # 6 steps an epoch: in epoch 2, the first after the unfreeze
    result = cli("train", write_config(frozen_config(str(path), 3), "b.yaml"), "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 130, result.output
    run = next((tmp_path / "b").iterdir())
    result = cli("resume", run.name, "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 0, result.output
    assert_same_training(straight, run)


def test_a_frozen_backbone_keeps_its_weights_and_batchnorm_statistics(cli, write_config, tmp_path):
    torch.manual_seed(0)
    net = tvm.mnasnet0_5()
    torch.save(net.state_dict(), tmp_path / "mnasnet.pth")
    reference = {f"backbone_1.net.{k}": v for k, v in net.state_dict().items() if not k.startswith("classifier.1")}
    cfg = tiny_config(name="mnasnet", data={**tiny_config()["data"], "shape": [3, 32, 32], "train_samples": 40,
                                                "test_samples": 20},
                      model={"type": "backbone", "arch": "mnasnet0_5", "weights": str(tmp_path / "mnasnet.pth")},
                      train={"epochs": 1, "batch_size": 16, "freeze": {"layers": ["backbone"], "epochs": 1}})
    run = train(cli, write_config, cfg, tmp_path / "runs", "-q")
    w = weights(run)
    assert all(torch.equal(w[k], v) for k, v in reference.items())  # running statistics included
    # The optimizer holds every parameter, but only the head's ever had a gradient.
    assert len(runs.load_checkpoint(run / "checkpoints" / "last.pt")["optimizer"]["state"]) == 2


def test_two_processes_unfreeze_together_and_train_like_one(tmp_path, write_config):
    """DDP syncs the parameters that take gradients when it wraps the model: after the unfreeze it wraps again, or
    the ranks' newly trained layers would drift apart."""
    from tests.test_distributed import assert_same, ddp_config, dlcli, finished, run_of

    config = write_config(ddp_config(freeze={"layers": ["conv2d_1"], "epochs": 1}, precision="32"))
    finished(dlcli("train", config, "--set", "train.batch_size=32", "--runs-dir", tmp_path / "one", "-q"))
    finished(dlcli("train", config, "--devices", "2", "--runs-dir", tmp_path / "two", "-q"))
    one, two = run_of(tmp_path / "one"), run_of(tmp_path / "two")
    assert_same(one, two, atol=1e-5)


# ---------------------------------------------------------------- selectors and groups


def test_optimizer_groups_take_their_parameters_and_learning_rates():
    cfg = validate_config(tiny_config(model={"type": "cnn", "channels": [4], "hidden": [16]},
                                      optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "groups": [
                                          {"layers": ["conv2d"], "lr": 0.01},
                                          {"layers": ["*.bias"], "weight_decay": 0.0}]},
                                      scheduler={"name": "onecycle", "max_lr": 1.0}))
    model, _ = build_model(cfg.model, (1, 8, 8), 3)
    optimizer = cfg.optimizer.build(model, "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [([names[id(p)] for p in g["params"]], g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    assert groups == [(["dense_1.0.weight", "dense_2.weight"], 0.1, 0.0),
                      (["conv2d_1.weight", "conv2d_1.bias"], 0.01, 0.0),  # the first group that picks one takes it
                      (["dense_1.0.bias", "dense_2.bias"], 0.1, 0.0)]
    scheduler = cfg.scheduler.build(optimizer, 2, 10)
    assert [g["max_lr"] for g in optimizer.param_groups] == pytest.approx([1.0, 0.1, 1.0])
    assert scheduler is not None


@pytest.mark.parametrize("section, value, message", [
    ("freeze", {"layers": ["nope"]}, ("train.freeze[0].layers[0]: 'nope' names no layer and matches no parameter "
                                      "(layers: flatten_1, dense_1, dense_2; parameter names look like dense_2.bias)")),
    ("freeze", {"layers": ["dense", 7]}, "train.freeze[0].layers[1]: no layer 7: the model has 3 layers"),
    ("groups", [{"layers": ["conv*"], "lr": 0.1}], "optimizer.groups[0].layers[0]: 'conv*' names no layer"),
])
def test_bad_selectors_are_one_line_before_any_run(cli, write_config, tmp_path, section, value, message):
    cfg = tiny_config()
    if section == "freeze":
        cfg["train"]["freeze"] = value
    else:
        cfg["optimizer"]["groups"] = value
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and message in one_error_line(result)
    assert not (tmp_path / "runs").exists()


def test_freeze_shorthands_validate_to_one_form():
    for value, expected in (("backbone", [{"layers": ["backbone"], "epochs": None}]),
                            ([0, 1], [{"layers": [0, 1], "epochs": None}]),
                            ({"layers": ["dense_1"], "epochs": 2}, [{"layers": ["dense_1"], "epochs": 2}])):
        cfg = validate_config(tiny_config(train={"freeze": value}))
        assert cfg.resolved()["train"]["freeze"] == expected
    assert "groups" not in validate_config(tiny_config()).resolved()["optimizer"]  # what it records is unchanged


# ---------------------------------------------------------------- channels_last under auto


def test_channels_last_auto_follows_the_measured_rule_and_the_run_records_it(cli, write_config, tmp_path):
    from dlcli.engine import use_channels_last
    from dlcli.loaded import load_run

    torch.manual_seed(0)
    resnet, mobilenet = tvm.resnet18(num_classes=3), tvm.mobilenet_v3_small(num_classes=3)
    resnet.train()
    stats = {k: v.clone() for k, v in resnet.state_dict().items()}
    # benchmarks/finetune.py --layouts: resnet18 loses or draws in channels_last at 32-64 px, wins from 128 px;
    # MobileNetV3 (depthwise convolutions) is faster in it at every size measured.
    assert not use_channels_last("auto", resnet, (3, 64, 64))
    assert not use_channels_last("auto", resnet, (3, 32, 32))
    assert use_channels_last("auto", resnet, (3, 128, 128))
    assert use_channels_last("auto", mobilenet, (3, 64, 64))
    assert use_channels_last(True, resnet, (3, 64, 64)) and not use_channels_last(False, mobilenet, (3, 64, 64))
    # the probe's forward pass changes no statistic and leaves every layer in its mode
    assert all(torch.equal(v, stats[k]) for k, v in resnet.state_dict().items())
    assert all(m.training for m in resnet.modules())

    cnn = tiny_config(name="cnn", model=CNN, train={"epochs": 1, "batch_size": 32})
    mlp = tiny_config(name="mlp", train={"epochs": 1, "batch_size": 32})
    for cfg, layout in ((cnn, True), (mlp, False)):  # seed 000-like convolutions on 28x28 digits; no convolution
        cfg["data"] = {**synthetic(3, 120, 0.2), "shape": [1, 28, 28]}
        run = train(cli, write_config, cfg, tmp_path / "runs", "-q")
        recorded = yaml.safe_load((run / "config.yaml").read_text())["train"]["channels_last"]
        assert recorded is layout  # resume, evaluate and predict compute in the layout the run trained in
        loaded = load_run(run)
        assert loaded.channels_last is layout
        assert loaded.model.conv2d_1.weight.is_contiguous(memory_format=torch.channels_last) if layout else True
