"""train.precise_bn: BatchNorm statistics that lag the weights (momentum 0.01) are recomputed from the training split
before validation, the checkpoints carry them, resume stays exact, and a divergence they cause is named."""

import json
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dlcli import rundirs as runs
from dlcli.config import validate_config
from dlcli.data import load_data
from dlcli.precise_bn import lagging, live_batchnorms, recalibrate
from tests.conftest import tiny_config
from tests.test_resume import SignalAt, assert_same_training, inject  # noqa: F401 (a fixture)

# Four conv + batchnorm blocks: dlcli's batchnorm layer has Keras momentum 0.99, torch's 0.01. After 20 steps 82% of
# each running average is still its initial 0 and 1, and in eval mode the network answers at chance. The dropout
# draws random numbers while the statistics are recomputed too, which must leave the training's draws alone.
DEEP = {"type": "sequential", "layers": [
    *[layer for _ in range(4) for layer in ({"conv2d": {"filters": 8, "padding": "same"}},
                                            {"batchnorm": {"activation": "relu"}})],
    "global_avg_pool2d", {"dropout": 0.1}, {"dense": 3}]}


def deep_config(precise_bn, epochs: int = 2) -> dict:
    data = {"dataset": "synthetic", "val_split": 0.2, "shape": [3, 12, 12], "num_classes": 3, "train_samples": 400,
            "test_samples": 90, "noise": 1.5}
    return tiny_config(name="deep", data=data, model=DEEP,
                       train={"epochs": epochs, "batch_size": 32, "precision": "32", "precise_bn": precise_bn})


def train(cli, write_config, cfg, runs_dir, *extra):
    result = cli("train", write_config(cfg, f"{cfg['name']}-{time.monotonic_ns()}.yaml"), "--runs-dir", runs_dir,
                 *extra)
    assert result.exit_code == 0, result.output
    return Path(runs_dir) / result.stdout.strip().splitlines()[-1], result


def test_lagging_statistics_are_recomputed_before_validation_and_kept_in_the_checkpoints(cli, write_config,
                                                                                          tmp_path):
    stale, said = train(cli, write_config, deep_config(False), tmp_path / "off")
    fixed, quiet = train(cli, write_config, deep_config("auto"), tmp_path / "auto")
    off, on = runs.read_metrics(stale), runs.read_metrics(fixed)

    # The same training either way: the recomputation changes no weight and draws from no shared random stream.
    assert [m["train_loss"] for m in off] == [m["train_loss"] for m in on]
    assert off[-1]["train_accuracy"] >= 0.85
    assert all(m["val_accuracy"] <= 0.5 for m in off)  # 3 classes: chance is 1/3
    assert on[-1]["val_accuracy"] >= 0.9 and on[0]["val_accuracy"] >= off[0]["val_accuracy"] + 0.25
    warning = [line for line in said.stderr.splitlines() if line.startswith("warning: epoch")]
    assert len(warning) == 1 and "BatchNorm running statistics lag" in warning[0] and "precise_bn" in warning[0]
    assert "warning" not in quiet.stderr

    w_off = runs.load_checkpoint(stale / "checkpoints" / "last.pt")["model"]
    w_on = runs.load_checkpoint(fixed / "checkpoints" / "last.pt")["model"]
    for key in w_on:
        if "running_" in key:
            assert not torch.allclose(w_on[key], w_off[key]), key
        else:  # weights, and num_batches_tracked as training counted it
            assert torch.equal(w_on[key], w_off[key]), key

    # The first BatchNorm normalises the first convolution's outputs: its recomputed mean is theirs over the
    # training split (all 320 samples, 10 batches of 32), computed here without the model.
    cfg = validate_config(deep_config("auto"))
    data = load_data(cfg)
    x = data.normalizer(data.train.x.float())
    conv = F.conv2d(x, w_on["conv2d_1.weight"], w_on["conv2d_1.bias"], padding=1)
    assert torch.allclose(w_on["batchnorm_1.0.running_mean"], conv.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(w_on["batchnorm_1.0.running_var"], conv.var((0, 2, 3)), rtol=0.05)

    # evaluate reads the recomputed statistics from best.pt and scores the test split as the run did.
    result = cli("evaluate", fixed.name, "--runs-dir", tmp_path / "auto", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads((fixed / "summary.json").read_text())
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-9)
    assert summary["test"]["accuracy"] >= 0.9


def test_interrupted_mid_epoch_resumes_exactly_with_statistics_recomputed(cli, write_config, tmp_path,
                                                                          inject):  # noqa: F811
    cfg = deep_config(True, epochs=3)
    straight, _ = train(cli, write_config, cfg, tmp_path / "a", "-q")
    inject(SignalAt(14, signal.SIGINT))  # 10 steps an epoch: inside epoch 2, after one recomputation
    result = cli("train", write_config(cfg, "b.yaml"), "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 130, result.output
    run = next((tmp_path / "b").iterdir())
    assert runs.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 14
    result = cli("resume", run.name, "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 0, result.output
    assert_same_training(straight, run)


def test_which_batchnorm_layers_lag_and_are_recomputed():
    fast, slow = torch.nn.BatchNorm1d(4, momentum=0.1), torch.nn.BatchNorm1d(4, momentum=0.01)
    assert lagging([fast], steps=1000) is None
    assert "only 10 steps" in lagging([fast], steps=10)  # 0.9 ** 10 of the initial values left
    assert "momentum 0.01" in lagging([slow], steps=100_000)
    assert "momentum None" in lagging([torch.nn.BatchNorm1d(4, momentum=None)], steps=100_000)

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), slow, torch.nn.Linear(4, 4), fast).train()
    fast.eval()  # frozen: its statistics stay the pretrained ones
    assert live_batchnorms(model) == [slow]
    before = fast.running_mean.clone()
    torch.manual_seed(0)
    batches = [torch.randn(16, 3) * 3 + 1 for _ in range(5)]
    assert recalibrate([slow], model, batches) == 5
    hidden = [model[0](b) for b in batches]  # the batch statistics, averaged batch by batch
    with torch.no_grad():
        assert torch.allclose(slow.running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0), atol=1e-5)
        assert torch.allclose(slow.running_var, torch.stack([h.var(0) for h in hidden]).mean(0), atol=1e-4)
    assert slow.momentum == 0.01 and int(slow.num_batches_tracked) == 0  # as training left them
    assert torch.equal(fast.running_mean, before)


def test_without_validation_only_kept_epochs_are_recomputed_and_the_checkpoints_are_unchanged(cli, write_config,
                                                                                             tmp_path, monkeypatch):
    """val_split 0: auto puts the recomputation off until a checkpoint keeps the epoch (best.pt, the last epoch);
    best.pt, the final last.pt and the test figures are those of recomputing after every epoch (true)."""
    import dlcli.precise_bn as precise_bn

    calls = []
    real = precise_bn.recalibrate
    monkeypatch.setattr(precise_bn, "recalibrate", lambda *a: calls.append(1) or real(*a))

    def run(setting):
        cfg = deep_config(setting, epochs=8)
        cfg["data"] |= {"val_split": 0, "train_samples": 160}
        cfg["optimizer"] = {"name": "sgd", "lr": 0.3}  # a curve that dips: epoch 6 does not rewrite best.pt
        calls.clear()
        run_dir, _ = train(cli, write_config, cfg, tmp_path / str(setting))
        return run_dir, len(calls)

    every, every_count = run(True)
    lazy, lazy_count = run("auto")
    assert every_count == 8
    summary, lazy_summary = (json.loads((r / "summary.json").read_text()) for r in (every, lazy))
    assert lazy_summary["best_epoch"] == summary["best_epoch"]
    metrics = runs.read_metrics(lazy)
    best, kept = None, set()  # the recorder's rule without validation: higher train accuracy, ties to lower loss
    for m in metrics:
        if best is None or (m["train_accuracy"], -m["train_loss"]) > best:
            best, kept = (m["train_accuracy"], -m["train_loss"]), kept | {m["epoch"]}
    assert lazy_count == len(kept | {8}) < 8
    for name in ("best", "last"):
        a = runs.load_checkpoint(every / "checkpoints" / f"{name}.pt")["model"]
        b = runs.load_checkpoint(lazy / "checkpoints" / f"{name}.pt")["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert lazy_summary["test"] == summary["test"]
    assert [m["train_loss"] for m in metrics] == [m["train_loss"] for m in runs.read_metrics(every)]
