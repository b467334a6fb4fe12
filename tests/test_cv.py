"""k-fold cross-validation (`dlcli train --cv K`, `train.cv`): stratified folds that partition the rows left after
the test cut, the epoch the folds' mean validation curve chooses, a refit on every training row that scores its
last epoch, and the figures in cv.json checked against the folds' own metrics.jsonl."""

import csv
import json
import random

import pytest
import torch
import yaml

from dlcli.config import validate_config
from dlcli.cv import choose_epoch
from dlcli.data import load_data
from dlcli.data.bundle import Splitter
from tests.test_tables import CONFIGS, write_table


def test_folds_are_stratified_and_partition_the_rows_left_after_the_test_cut():
    labels = torch.tensor([0] * 37 + [1] * 11 + [2] * 5)  # imbalanced; after the test cut class 2 has fewer rows than folds
    test = Splitter(labels, seed=7).cut(0.2, "test")
    folds = []
    for k in range(1, 6):
        cut = Splitter(labels, seed=7)
        assert torch.equal(cut.cut(0.2, "test"), test)  # the same test rows whatever the fold
        folds.append(cut.fold(k, 5))
        train = cut.train(None, 0.0)
        assert not set(train.tolist()) & set(folds[-1].tolist()) and not set(train.tolist()) & set(test.tolist())
    rest = sorted(set(range(len(labels))) - set(test.tolist()))
    assert sorted(torch.cat(folds).tolist()) == rest  # disjoint, and every non-test row validated once
    for c in range(3):
        per_fold = [int((labels[f] == c).sum()) for f in folds]
        total = int((labels[torch.tensor(rest)] == c).sum())
        assert sum(per_fold) == total and max(per_fold) - min(per_fold) <= 1, (c, per_fold)


def test_the_epoch_is_the_best_of_the_folds_mean_curve_ties_to_the_lower_loss():
    def history(accuracies, losses):
        return [{"epoch": e + 1, "val_accuracy": a, "val_loss": v} for e, (a, v) in enumerate(zip(accuracies, losses))]

    folds = [history([0.5, 0.9, 0.7, 0.8, 0.6], [0.9, 0.5, 0.6, 0.5, 0.7]),  # alone, its best epoch is 2
             history([0.5, 0.6, 0.9, 0.9, 0.9], [0.9, 0.8, 0.4, 0.3, 0.3]),  # its best is 3 (or later)
             history([0.4, 0.6, 0.8, 0.7], [1.0, 0.8, 0.4, 0.5])]  # stopped early after epoch 4
    epoch, curve = choose_epoch(folds, "val_accuracy", "val_loss")
    # means: 0.4667, 0.7, 0.8, 0.8 (epoch 5 not reached by all): epochs 3 and 4 tie, epoch 4 has the lower mean loss
    assert curve == pytest.approx([1.4 / 3, 2.1 / 3, 2.4 / 3, 2.4 / 3])
    assert epoch == 4
    epoch, curve = choose_epoch(folds, "val_loss", "val_accuracy")  # a loss monitor: the lowest mean
    assert epoch == 4 and curve == pytest.approx([2.8 / 3, 2.1 / 3, 1.4 / 3, 1.3 / 3])


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_train_cv_trains_folds_and_a_refit_with_the_chosen_epochs(cli, tmp_path):
    table = write_table(tmp_path / "t.csv", n=90, gaps=False)
    runs_dir = tmp_path / "runs"
    result = cli("train", CONFIGS / "table_csv.yaml", "--cv", "3", "--runs-dir", runs_dir, "--quiet",
                 "--set", f"data.train_file={table}", "--set", "train.epochs=4", "--set", "data.test_split=0.2")
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 4  # three folds, the refit last
    folds, refit = [runs_dir / i for i in ids[:3]], runs_dir / ids[3]

    configs = [validate_config(yaml.safe_load((run / "config.yaml").read_text())) for run in folds + [refit]]
    assert [c.data.cv_fold for c in configs] == [(1, 3), (2, 3), (3, 3), None]
    assert all(c.train.cv is None for c in configs)
    bundles = [load_data(c) for c in configs]  # what evaluate rebuilds from each run's config
    rows = lambda split: {tuple(r) for r in split.x.tolist()}  # noqa: E731 (rows are distinct real numbers)
    val_rows = [rows(b.val) for b in bundles[:3]]
    assert not (val_rows[0] & val_rows[1]) and not (val_rows[1] & val_rows[2]) and not (val_rows[0] & val_rows[2])
    assert bundles[3].val is None and len(bundles[3].train) == 72 and sum(map(len, val_rows)) == 72
    assert all(torch.equal(b.test.y, bundles[0].test.y) for b in bundles)  # one test split for all

    report = json.loads((refit / "cv.json").read_text())
    histories = [read_lines(run / "metrics.jsonl") for run in folds]
    means = [sum(h[e]["val_accuracy"] for h in histories) / 3 for e in range(4)]
    assert report["curve"] == pytest.approx(means) and report["runs"] == ids[:3]
    chosen = report["epochs"]
    assert means[chosen - 1] == max(means)
    at = [h[chosen - 1]["val_loss"] for h in histories]
    mean = sum(at) / 3
    std = (sum((v - mean) ** 2 for v in at) / 2) ** 0.5
    assert report["at_epoch"]["val_loss"]["mean"] == pytest.approx(mean)
    assert report["at_epoch"]["val_loss"]["std"] == pytest.approx(std)
    assert f"cv 3 folds at epoch {chosen}" in result.stderr

    summary = json.loads((refit / "summary.json").read_text())
    assert configs[3].train.epochs == chosen and summary["epochs_completed"] == chosen
    assert summary["best_epoch"] == chosen  # the refit scores its last epoch
    last = torch.load(refit / "checkpoints" / "last.pt", weights_only=True)["model"]
    best = torch.load(refit / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(last[k], best[k]) for k in last)
    tags = [json.loads((run / "tags.json").read_text()) for run in folds + [refit]]
    assert len({t["cv"] for t in tags}) == 1 and tags[3]["refit"] and tags[3]["epochs"] == chosen
    listing = cli("runs", "--runs-dir", runs_dir)
    assert "cv fold 2/3" in listing.stdout and f"cv refit ({chosen} epochs, 3 folds)" in listing.stdout


def write_houses(path, rows: int, base: float = 0.0):
    """A seeded regression table: price = 50 rooms - age + noise (+ base)."""
    rng = random.Random(3)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rooms", "age", "price"])
        for _ in range(rows):
            rooms, age = rng.uniform(1, 6), rng.uniform(0, 50)
            w.writerow([f"{rooms:.3f}", f"{age:.2f}", f"{50 * rooms - age + rng.gauss(0, 5) + base:.2f}"])
    return path


def test_a_regression_table_cross_validates_from_python(tmp_path):
    import dlcli

    path = write_houses(tmp_path / "houses.csv", 60)
    cfg = {"name": "houses", "seed": 1, "task": "regression",
           # val_split 0 makes the monitors fall back to training figures; every fold still validates
           "data": {"dataset": "csv", "train_file": str(path), "label_column": "price", "val_split": 0},
           "model": {"type": "mlp", "hidden": [8]}, "train": {"epochs": 3, "batch_size": 16, "cv": 2}}
    run = dlcli.train(cfg, runs_dir=tmp_path / "runs", quiet=True)
    report = json.loads((run.dir / "cv.json").read_text())
    assert report["folds"] == 2 and report["monitor"] == "val_loss" and 1 <= report["epochs"] <= 3
    assert set(report["at_epoch"]) >= {"val_loss", "val_mae"}
    assert report["curve"][report["epochs"] - 1] == min(report["curve"])


def test_the_refit_trains_for_the_epoch_the_folds_chose_not_train_epochs(tmp_path):
    """A target of pure noise, which an MLP with a large step size starts to memorise: the folds' mean validation
    loss is lowest before the last of the 4 configured epochs, and the refit trains that many epochs (where the
    folds choose the last epoch, as in the tests above, the two counts cannot be told apart)."""
    import dlcli

    rng = random.Random(0)
    path = tmp_path / "noise.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "y"])
        for _ in range(48):
            w.writerow([f"{rng.gauss(0, 1):.4f}" for _ in range(3)])
    cfg = {"name": "noise", "seed": 0, "task": "regression",
           "data": {"dataset": "csv", "train_file": str(path), "label_column": "y"},
           "model": {"type": "mlp", "hidden": [64, 64]}, "optimizer": {"name": "adam", "lr": 0.1},
           "train": {"epochs": 4, "batch_size": 8, "cv": 2}}
    run = dlcli.train(cfg, runs_dir=tmp_path / "runs", quiet=True)
    report = json.loads((run.dir / "cv.json").read_text())
    chosen = report["epochs"]
    assert chosen < 4 and report["curve"][chosen - 1] == min(report["curve"])  # the case this test is for
    assert run.config["train"]["epochs"] == chosen and run.summary["epochs_completed"] == chosen
    assert [m["epoch"] for m in run.metrics] == list(range(1, chosen + 1))
    assert torch.load(run.dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == chosen


def test_bad_cv_requests_are_one_line_errors(cli, tmp_path):
    table = write_table(tmp_path / "t.csv", n=40)
    base = [CONFIGS / "table_csv.yaml", "--runs-dir", tmp_path / "runs", "--set", f"data.train_file={table}"]
    result = cli("train", *base, "--cv", "3", "--repeat", "2")
    assert result.exit_code == 2 and "choose one" in result.stderr and result.stderr.count("\n") == 1
    result = cli("train", *base, "--set", "train.cv=1")
    assert result.exit_code == 2 and "train.cv" in result.stderr and result.stderr.count("\n") == 1
    result = cli("train", *base, "--cv", "3", "--set", "data.max_train_samples=10")
    assert result.exit_code == 2 and "max_train_samples" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_refit_keeps_its_last_epoch_even_when_an_earlier_one_scored_better(tmp_path):
    from types import SimpleNamespace

    from dlcli.tasks import parse_task
    from dlcli.training import RunRecorder

    (tmp_path / "checkpoints").mkdir()
    recorder = RunRecorder(tmp_path, "train_loss", parse_task(None), keep_last=True)
    for epoch, loss in enumerate([0.5, 0.3, 0.4], start=1):  # epoch 2 has the lowest loss
        trainer = SimpleNamespace(checkpoint_state=lambda epoch=epoch: {"epoch": epoch}, callbacks=[])
        recorder.on_epoch_end(trainer, {"epoch": epoch, "train_loss": loss})
    assert recorder.best_epoch == 3
    assert torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["epoch"] == 3
    resumed = RunRecorder(tmp_path, "train_loss", parse_task(None))  # a resume restores it from the checkpoint
    resumed.load_state_dict(recorder.state_dict())
    assert resumed.keep_last and "cross-validation refit" in resumed.reason
