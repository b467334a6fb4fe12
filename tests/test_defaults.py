"""Defaults that hold on small, imbalanced data: stratified splits, best.pt ties broken by the loss, train.epochs auto,
class weights, and balanced accuracy."""

import json

import pytest
import torch
import torch.nn.functional as F

from dlcli.config import validate_config
from dlcli.data.bundle import Splitter
from dlcli.tasks.classification import class_weights
from dlcli.errors import DlcliError
from tests.conftest import tiny_config


def test_stratified_splits_keep_every_class_and_say_when_they_cannot():
    y = torch.tensor([0] * 95 + [1] * 4 + [2] * 1)
    for seed in range(20):
        cut = Splitter(y, seed, "stratified", ["a", "b", "c"])
        test, val, train = cut.cut(0.1, "test"), cut.cut(0.1, "val"), cut.train(None, 0.1)
        assert set(y[test].tolist()) == {0, 1} and set(y[val].tolist()) == {0, 1}  # b has 4: one each
        assert set(y[train].tolist()) == {0, 1, 2}
        assert (y[test] == 0).sum() == round(95 * 0.1) and len(set(test.tolist()) | set(val.tolist()) |
                                                              set(train.tolist())) == 100
        assert cut.notes == ["class 'c' has 1 sample(s) left for test: the test split has none of it",
                             "class 'c' has 1 sample(s) left for val: the val split has none of it"]
    missed = sum(1 - int(1 in y[Splitter(y, s, "random").cut(0.1, "val")].tolist()) for s in range(20))
    assert missed > 5  # a random cut often leaves the 4-sample class out of validation


def test_runs_recorded_before_stratified_splits_rebuild_their_random_split():
    cfg = {"data": {"dataset": "mnist"}, "model": {"type": "mlp"}}
    assert validate_config(cfg).data.split == "stratified"
    assert validate_config(cfg, legacy=True).data.split == "random"  # a run's config.yaml without the key
    cfg["data"]["split"] = "stratified"
    assert validate_config(cfg, legacy=True).data.split == "stratified"


def test_class_weights_auto_is_inverse_frequency_and_weights_the_loss():
    y = torch.tensor([0, 0, 0, 1])
    w = class_weights("auto", y, ["a", "b", "c"])
    assert w.tolist() == pytest.approx([4 / 6, 2.0, 1.0])  # n / (k * count); an absent class keeps 1
    assert class_weights("none", y, ["a", "b"]) is None
    assert class_weights({"b": 3.0}, y, ["a", "b"]).tolist() == [1.0, 3.0]
    with pytest.raises(DlcliError, match="no class 'bb' in this dataset \\(did you mean 'b'\\?\\)"):
        class_weights({"bb": 3.0}, y, ["a", "b"])

    from dlcli.data import load_data
    from dlcli.engine import Trainer
    from dlcli.models import build_model

    cfg = validate_config(tiny_config(train={"class_weights": "auto", "epochs": 1}))
    data = load_data(cfg)
    model, _ = build_model(cfg.model, data.input_shape, len(data.classes))
    trainer = Trainer(cfg, data, model, torch.device("cpu"))
    counts = torch.bincount(data.train.y, minlength=3).float()
    assert trainer.task._weights.tolist() == pytest.approx((counts.sum() / (3 * counts)).tolist())
    logits, target = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    expected = F.cross_entropy(logits, target, weight=trainer.task._weights)
    assert trainer.loss_fn(logits, target).item() == pytest.approx(expected.item())
    assert expected.item() != pytest.approx(F.cross_entropy(logits, target).item())


def test_an_unknown_class_weight_is_refused_before_any_run(cli, write_config, tmp_path):
    result = cli("train", write_config(tiny_config(train={"class_weights": {"class_9": 2.0}})),
                 "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "train.class_weights: no class 'class_9'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_epochs_auto_gives_small_data_enough_steps_and_records_what_it_chose(cli, write_config, tmp_path):
    cfg = tiny_config(train={"batch_size": 32})  # 400 samples: 320 train, 10 steps an epoch
    cfg["data"].update(train_samples=400, noise=4.0)  # noisy: val_loss soon stops falling
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "note: train.epochs auto: 300 epochs of 10 steps, stopping early after 30 epochs without a lower " \
           "val_loss" in result.stderr
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    recorded = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert recorded["train"]["epochs"] == 300
    assert recorded["train"]["early_stopping"] == {"monitor": "val_loss", "mode": "auto", "patience": 30,
                                                   "min_delta": 0.0}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 300 and 30 < summary["epochs_completed"] < 300 and summary["stopped_early"]
    assert summary["test"]["accuracy"] > 0.6  # 3 classes: chance is 1/3


def test_a_tie_on_a_saturated_validation_split_goes_to_the_lower_loss(cli, write_config, tmp_path):
    """A 10-sample validation split reaches accuracy 1.0 early; best.pt must still follow the falling val_loss."""
    cfg = tiny_config(train={"epochs": 12, "batch_size": 16})
    cfg["data"].update(train_samples=100, val_split=0.1, noise=0.5)
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    top = max(m["val_accuracy"] for m in history)
    tied = [m for m in history if m["val_accuracy"] == top]
    assert len(tied) > 1, "the validation split did not saturate: the test proves nothing"
    chosen = min(tied, key=lambda m: (m["val_loss"], m["epoch"]))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == chosen["epoch"] != tied[0]["epoch"]
    assert summary["best_reason"].startswith(f"val_accuracy tied at {top:.4f} with epoch")
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == chosen["epoch"]


def test_evaluate_reports_balanced_accuracy_and_the_runs_table_the_test_figure(cli, write_config, tmp_path):
    result = cli("train", write_config(tiny_config()), "--runs-dir", tmp_path / "runs", "--quiet")
    run_id = result.stdout.strip().splitlines()[-1]
    report = json.loads(cli("evaluate", run_id, "--runs-dir", tmp_path / "runs", "--json").stdout)
    recalls = [c["recall"] for c in report["per_class"] if c["support"]]
    assert report["balanced_accuracy"] == pytest.approx(sum(recalls) / len(recalls))
    assert "macro" in report and "f1" in report["macro"]
    table = cli("runs", "--runs-dir", tmp_path / "runs")
    summary = json.loads((tmp_path / "runs" / run_id / "summary.json").read_text())
    assert "acc " in table.stdout and f"{summary['test']['accuracy']:.4f}" in table.stdout
    listed = json.loads(cli("runs", "--runs-dir", tmp_path / "runs", "--json").stdout)
    assert listed[0]["test_accuracy"] == summary["test"]["accuracy"]


def test_a_feature_constant_in_training_is_centred_not_blown_up():
    from dlcli.data.bundle import statistics

    x = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    mean, std, _ = statistics(x)
    assert mean == pytest.approx([2.0, 5.0]) and std == pytest.approx([(2 / 3) ** 0.5, 1.0])
