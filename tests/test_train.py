"""`dlcli train` end to end on tiny synthetic data, and the engine's options each doing what they say."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import needs_fashion, tiny_config


def train(cli, write_config, cfg, runs, *extra):
    result = cli("train", write_config(cfg), "--runs-dir", runs, *extra)
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip().splitlines()[-1]
    return Path(runs) / run_id


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_a_complete_run_directory(cli, write_config, tmp_path):
    run = train(cli, write_config, tiny_config(), tmp_path / "runs")
    assert run.name.startswith("tiny-")
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        assert all(key in r for r in rows)
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["epochs"] == 2 and config["optimizer"] == {
        "name": "adam", "lr": 0.01, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8, "amsgrad": False}
    data = json.loads((run / "data.json").read_text())
    assert data["classes"] == ["class_0", "class_1", "class_2"] and data["input_shape"] == [1, 8, 8]
    assert len(data["normalization"]["mean"]) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert summary["best_metric"]["name"] == "val_accuracy"
    assert summary["best_metric"]["value"] == max(r["val_accuracy"] for r in rows)
    assert summary["test"]["accuracy"] > 0.9  # the synthetic classes are well separated
    assert summary["device"] == "cpu" and summary["versions"]["torch"] == torch.__version__
    assert summary["samples_per_second"] > 0
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn at the end of training


def test_same_seed_same_metrics_on_cpu(cli, write_config, tmp_path):
    cfg = tiny_config(model={"type": "cnn", "channels": [4], "hidden": [8], "dropout": 0.2},
                      data={**tiny_config()["data"], "augment": ["hflip", {"random_crop": 1}]})
    a = metrics(train(cli, write_config, cfg, tmp_path / "a"))
    b = metrics(train(cli, write_config, cfg, tmp_path / "b"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    c = metrics(train(cli, write_config, {**cfg, "seed": 1}, tmp_path / "c"))
    assert strip(c) != strip(a)


def test_bad_config_exits_2_with_one_line_and_no_run(cli, write_config, tmp_path):
    runs = tmp_path / "runs"
    result = cli("train", write_config(tiny_config(train={"epochs": 0})), "--runs-dir", runs)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "train.epochs: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.output
    assert not runs.exists()


def test_missing_data_offline_says_where_to_put_it_and_leaves_no_run(cli, write_config, tmp_path):
    cfg = tiny_config(data={"dataset": "kmnist", "download": False, "root": str(tmp_path / "nowhere")})
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1
    assert "kmnist: no IDX files found" in result.stderr and "nowhere/kmnist/" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback(write_config):
    """As a user runs it: one line without --debug, the full traceback of the same error with it."""
    import subprocess
    import sys

    path = write_config(tiny_config(train={"epochs": -1}))
    plain, debug = (subprocess.run([sys.executable, "-m", "dlcli", *flag, "validate", path], capture_output=True,
                                   text=True, timeout=120) for flag in ([], ["--debug"]))
    message = "train.epochs: Input should be greater than 0"
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and message in plain.stderr, plain.stderr
    assert "Traceback" not in plain.stderr
    assert debug.returncode == 1 and debug.stderr.startswith("Traceback (most recent call last):"), debug.stderr
    assert "dlcli/cli.py" in debug.stderr and message in debug.stderr.strip().splitlines()[-1]


def test_runs_dir_from_environment(cli, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DLCLI_RUNS_DIR", str(tmp_path / "envruns"))
    result = cli("train", write_config(tiny_config(train={"epochs": 1})), "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envruns" / result.stdout.strip()).is_dir()


def test_early_stopping_stops_and_best_checkpoint_is_scored(cli, write_config, tmp_path):
    cfg = tiny_config(train={"epochs": 10, "batch_size": 32,
                             "early_stopping": {"monitor": "val_loss", "patience": 1, "min_delta": 100.0}})
    run = train(cli, write_config, cfg, tmp_path / "runs")
    assert len(metrics(run)) == 2  # epoch 1 sets the best; epoch 2 cannot beat it by 100
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs_completed"] == 2


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, {"name": "adam"}, {"name": "adamw"},
    {"name": "rmsprop"}, {"name": "adadelta"}, {"name": "adagrad", "lr": 0.1}])
def test_every_optimizer_learns(cli, write_config, tmp_path, optimizer):
    run = train(cli, write_config, tiny_config(optimizer=optimizer, train={"epochs": 3}), tmp_path / "runs")
    rows = metrics(run)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


@pytest.mark.parametrize("scheduler, lrs", [
    ({"name": "step", "step_size": 1, "gamma": 0.5}, [0.01, 0.005, 0.0025]),
    ({"name": "multistep", "milestones": [2], "gamma": 0.1}, [0.01, 0.01, 0.001]),
    ({"name": "exponential", "gamma": 0.5}, [0.01, 0.005, 0.0025]),
])
def test_epoch_schedulers_set_the_logged_lr(cli, write_config, tmp_path, scheduler, lrs):
    run = train(cli, write_config, tiny_config(scheduler=scheduler, train={"epochs": 3}), tmp_path / "runs")
    assert [r["lr"] for r in metrics(run)] == pytest.approx(lrs)


def test_cosine_warmup_and_onecycle_step_per_batch(cli, write_config, tmp_path):
    # 192 training samples, batch 32: 6 steps an epoch.
    run = train(cli, write_config, tiny_config(scheduler={"name": "cosine", "warmup_epochs": 1},
                                               train={"epochs": 3}), tmp_path / "a")
    lrs = [r["lr"] for r in metrics(run)]
    assert lrs[0] == pytest.approx(0.01)  # end of warm-up
    assert lrs[1] == pytest.approx(0.01 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 6 / 12)))
    run = train(cli, write_config, tiny_config(scheduler={"name": "onecycle", "max_lr": 0.05},
                                               train={"epochs": 2}), tmp_path / "b")
    assert [r["lr"] for r in metrics(run)] == pytest.approx([one_cycle(6, 12, 0.05), one_cycle(12, 12, 0.05)])


def one_cycle(step, total, max_lr, pct_start=0.3, div=25.0, final_div=1e4):
    """The learning rate after `step` steps of a cosine one-cycle schedule (Smith & Topin; torch's OneCycleLR
    defaults): up from max_lr/div to max_lr by step pct_start*total - 1, then down to max_lr/div/final_div by
    step total - 1. 0.0324 after epoch 1 and 0.0017 after epoch 2 here, where a constant rate would stay 0.01."""
    import math

    low, peak = max_lr / div, pct_start * total - 1
    start, end, frac = (low, max_lr, step / peak) if step <= peak else \
        (max_lr, low / final_div, (step - peak) / (total - 1 - peak))
    return end + (start - end) / 2 * (1 + math.cos(math.pi * frac))


def test_plateau_scheduler_reduces_on_a_flat_metric(cli, write_config, tmp_path):
    cfg = tiny_config(optimizer={"name": "sgd", "lr": 1e-7}, train={"epochs": 4},
                      scheduler={"name": "plateau", "monitor": "val_accuracy", "patience": 1, "factor": 0.5})
    lrs = [r["lr"] for r in metrics(train(cli, write_config, cfg, tmp_path / "runs"))]
    assert lrs[-1] < lrs[0]


def _first_layer_weights(run):
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    return next(v for k, v in state.items() if k.endswith("weight"))


def test_regularisers_change_training(cli, write_config, tmp_path):
    base = tiny_config(train={"epochs": 1})
    plain = train(cli, write_config, base, tmp_path / "plain")
    init = tiny_config(optimizer={"name": "sgd", "lr": 1e-12}, train={"epochs": 1})
    untouched = _first_layer_weights(train(cli, write_config, init, tmp_path / "init"))

    clipped = train(cli, write_config, {**base, "optimizer": {"name": "sgd", "lr": 1.0},
                                        "train": {"epochs": 1, "grad_clip": 1e-6}}, tmp_path / "clip")
    # 6 steps of lr 1 with gradient norm 1e-6 move no weight by more than 6e-6.
    assert (_first_layer_weights(clipped) - untouched).abs().max() < 1e-5

    l1 = train(cli, write_config, {**base, "train": {"epochs": 1, "l1": 0.01}}, tmp_path / "l1")
    smooth = train(cli, write_config, {**base, "train": {"epochs": 1, "label_smoothing": 0.3}}, tmp_path / "ls")
    assert metrics(l1)[0]["train_loss"] > metrics(plain)[0]["train_loss"] + 0.05
    assert metrics(smooth)[0]["train_loss"] > metrics(plain)[0]["train_loss"]
    decayed = train(cli, write_config, {**base, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 50.0}},
                    tmp_path / "wd")
    assert _first_layer_weights(decayed).abs().mean() < _first_layer_weights(plain).abs().mean()


def test_lstm_and_sequential_models_train(cli, write_config, tmp_path):
    for i, model in enumerate([{"type": "lstm", "hidden_size": 16},
                               {"type": "sequential", "layers": [{"conv2d": {"filters": 4, "padding": "same"}},
                                                                 "batchnorm", {"activation": "relu"},
                                                                 "global_avg_pool2d", {"dense": 3}]}]):
        run = train(cli, write_config, tiny_config(model=model, train={"epochs": 2}), tmp_path / str(i))
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_non_image_synthetic_data_trains_an_mlp(cli, write_config, tmp_path):
    data = {"dataset": "synthetic", "shape": [12], "num_classes": 4, "train_samples": 200}
    run = train(cli, write_config, tiny_config(data=data, train={"epochs": 3}), tmp_path / "runs")
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] > 0.8


@pytest.mark.slow
@needs_fashion
def test_fashion_mnist_trains_offline(cli, tmp_path):
    config = Path(__file__).parent.parent / "configs" / "fashion_mnist_cnn.yaml"
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--set", "train.epochs=1",
                 "--set", "data.max_train_samples=12000", "--set", f"data.root={tmp_path / 'data'}")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.75  # 0.799 with torch 2.14.1 on 2 cores: 1 epoch of 12,000 images
    assert json.loads((run / "data.json").read_text())["classes"][0] == "T-shirt/top"
    assert list((tmp_path / "data" / ".cache").glob("fashion_mnist-*.pt"))  # parsed once, cached
