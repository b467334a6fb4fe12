"""Tasks beyond picking a class: regression and multi-label targets through train, evaluate, predict, resume, DDP and
the runs table; binary ROC AUC; the task's config errors. Metrics are checked against scikit-learn, computed from
`dlcli predict --json` answers on a test file whose targets the test knows."""

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn import metrics as skm

from dlcli import rundirs as runs
from dlcli.config import validate_config
from dlcli.errors import DlcliError
from dlcli.tasks.metrics import average_precision, roc_auc
from tests.conftest import tiny_config
from tests.test_resume import SignalAt, assert_same_training, inject, one_error_line  # noqa: F401 (fixture)


def write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def cars(path: Path, n: int, seed: int, gap_at: int | None = None, bad_at: int | None = None) -> Path:
    """A numeric target in its own units (mean about 1000, spread about 100) from two numbers and a category, and a
    second target."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    kind = rng.choice(["a", "b", "c"], n)
    price = 1000 + 60 * x1 - 40 * x2 + np.where(kind == "a", 50, 0) + rng.normal(scale=5, size=n)
    km = 20 + 3 * x2 + rng.normal(scale=0.5, size=n)
    rows = [[f"{a:.4f}", f"{b:.4f}", k, f"{p:.2f}", f"{m:.3f}"] for a, b, k, p, m in zip(x1, x2, kind, price, km)]
    if gap_at is not None:
        rows[gap_at][3] = ""
    if bad_at is not None:
        rows[bad_at][3] = "cheap"
    return write_csv(path, ["x1", "x2", "kind", "price", "km"], rows)


def tagged(path: Path, n: int, seed: int) -> Path:
    """Three labels decided by the features, as 0/1 columns and as one joined column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    on = np.stack([x[:, 0] > 0, x[:, 1] > 0.5, x[:, 0] + x[:, 2] < -0.5], 1)
    rows = [[f"{a:.4f}", f"{b:.4f}", f"{c:.4f}", *map(int, flags), "|".join(l for l, f in zip("abc", flags) if f)]
            for (a, b, c), flags in zip(x, on)]
    return write_csv(path, ["x1", "x2", "x3", "a", "b", "c", "tags"], rows)


def table_config(name, train_file, label, task, test_file=None, **data) -> dict:
    cfg = {"name": name, "seed": 0, "task": task,
           "data": {"dataset": "csv", "train_file": str(train_file), "label_column": label, **data},
           "model": {"type": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 0.01},
           "train": {"epochs": 15, "batch_size": 32}}
    if test_file is not None:
        cfg["data"]["test_file"] = str(test_file)
    return cfg


def train(cli, write_config, cfg, runs_dir, *extra) -> Path:
    result = cli("train", write_config(cfg), "--runs-dir", runs_dir, *extra)
    assert result.exit_code == 0, result.output
    return Path(runs_dir) / result.stdout.strip().splitlines()[-1]


def cli_json(cli, *args):
    result = cli(*map(str, args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def column(path: Path, name: str) -> np.ndarray:
    with open(path) as f:
        return np.array([float(r[name]) for r in csv.DictReader(f)])


# ---------------------------------------------------------------- regression


def test_regression_predicts_in_the_targets_units_and_its_metrics_match_scikit_learn(cli, write_config, tmp_path):
    train_file, test_file = cars(tmp_path / "cars.csv", 400, 0), cars(tmp_path / "new.csv", 80, 1)
    cfg = table_config("cars", train_file, "price", "regression", test_file)
    run = train(cli, write_config, cfg, tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["best_metric"]["name"] == "val_loss"
    history = runs.read_metrics(run)
    assert {"train_loss", "train_mae", "val_loss", "val_mae", "val_rmse", "val_r2"} <= history[0].keys()
    info = json.loads((run / "data.json").read_text())
    assert info["classes"] == ["price"] and info["task"]["type"] == "regression"
    rows = list(csv.DictReader(open(train_file)))  # the standardisation was fitted on training rows only
    assert 900 < info["task"]["mean"][0] < 1100 and 50 < info["task"]["std"][0] < 150
    assert len(rows) == 400

    answers = cli_json(cli, "predict", test_file, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    pred = np.array([a["prediction"] for a in answers])
    actual = column(test_file, "price")
    assert len(pred) == 80 and 800 < pred.mean() < 1200  # the target's own units, not standardised ones
    report = cli_json(cli, "evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert report["task"] == "regression" and report["samples"] == 80
    assert report["r2"] == pytest.approx(skm.r2_score(actual, pred), abs=1e-4)
    assert report["mae"] == pytest.approx(skm.mean_absolute_error(actual, pred), rel=1e-4)
    assert report["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(actual, pred)), rel=1e-4)
    assert report["r2"] > 0.8  # the relation is nearly linear: the model must have learned it
    assert report["per_target"]["price"]["r2"] == pytest.approx(report["r2"])
    assert summary["test"]["r2"] == pytest.approx(report["r2"], abs=1e-5)
    assert Path(report["files"]["predicted_vs_actual"]).is_file()

    table = cli("runs", "--runs-dir", tmp_path / "runs")
    assert f"r2 {report['r2']:.4f}" in table.stdout and "val_loss" in table.stdout
    listed = cli_json(cli, "runs", "--runs-dir", tmp_path / "runs", "--json", "--where", "test_r2>0.5")
    assert [r["id"] for r in listed] == [run.name] and listed[0]["test_metric"] == "r2"


def test_regression_scales_by_the_training_rows_and_its_running_mae_is_in_the_targets_units(cli, write_config,
                                                                                              tmp_path):
    """The target's mean and std come from the training rows alone (the validation rows are data the run must not
    have seen), exactly numpy's population figures over them; train_mae, the running figure, is in the target's own
    units: under loss mae the loss is the same error in standard deviations, so train_mae = train_loss x std."""
    from dlcli.data import load_data

    train_file = cars(tmp_path / "cars.csv", 120, 0)
    cfg = table_config("units", train_file, "price", {"type": "regression", "loss": "mae"}, val_split=0.25)
    cfg["train"]["epochs"] = 2
    run = train(cli, write_config, cfg, tmp_path / "runs", "-q")
    fitted = json.loads((run / "data.json").read_text())["task"]
    split = load_data(validate_config(yaml.safe_load((run / "config.yaml").read_text())))  # the run's own rows
    train_y, val_y, test_y = (part.y[:, 0].double().numpy() for part in (split.train, split.val, split.test))
    every = column(train_file, "price")
    assert (len(train_y), len(val_y), len(test_y)) == (78, 30, 12)  # 10% test, 25% validation: the rest trains
    # prices are distinct: the three splits are disjoint sets of the file's rows
    assert set(np.round(np.concatenate([train_y, val_y, test_y]), 2)) == set(np.round(every, 2)) and len(every) == 120
    assert fitted["mean"] == [pytest.approx(train_y.mean(), rel=1e-9)]
    assert fitted["std"] == [pytest.approx(train_y.std(), rel=1e-9)]
    assert abs(every.std() - train_y.std()) > 1e-3 * train_y.std()  # all rows would give other figures

    std = fitted["std"][0]
    for epoch in runs.read_metrics(run):
        assert epoch["train_mae"] == pytest.approx(epoch["train_loss"] * std, rel=1e-5)
        assert epoch["val_mae"] == pytest.approx(epoch["val_loss"] * std, rel=1e-5)
        assert epoch["train_mae"] > 5  # the spread is about 100: standardised units would give about 1


def test_regression_of_two_targets_with_huber_answers_one_number_per_target(cli, write_config, tmp_path):
    train_file = cars(tmp_path / "cars.csv", 300, 0)
    cfg = table_config("two", train_file, ["price", "km"], {"type": "regression", "loss": "huber", "delta": 0.5})
    cfg["train"]["epochs"] = 5
    run = train(cli, write_config, cfg, tmp_path / "runs")
    answers = cli_json(cli, "predict", train_file, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert set(answers[0]["prediction"]) == {"price", "km"}
    report = cli_json(cli, "evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    per = report["per_target"]
    assert set(per) == {"price", "km"} and report["mae"] == pytest.approx((per["price"]["mae"] + per["km"]["mae"]) / 2)
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == {"type": "regression", "loss": "huber",
                                                                          "delta": 0.5, "standardize": True}


def test_a_missing_or_non_numeric_target_is_named_or_dropped(cli, write_config, tmp_path):
    gap = cars(tmp_path / "gap.csv", 100, 0, gap_at=6)
    result = cli("train", write_config(table_config("g", gap, "price", "regression")), "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    assert f"{gap}: line 8, column 'price' has no target value" in one_error_line(result)
    bad = cars(tmp_path / "bad.csv", 100, 0, bad_at=3)
    result = cli("train", write_config(table_config("b", bad, "price", "regression")), "--runs-dir", tmp_path / "r")
    assert f"{bad}: line 5, column 'price': 'cheap' is not a number" in one_error_line(result)
    cfg = table_config("d", bad, "price", "regression", missing="drop")
    cfg["train"]["epochs"] = 1
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "1 row without a numeric target dropped" in result.stderr


def test_a_numeric_label_with_many_values_is_refused_as_classes_unless_spelled_out(cli, write_config, tmp_path):
    train_file = cars(tmp_path / "cars.csv", 200, 0)
    cfg = table_config("c", train_file, "price", None)
    del cfg["task"]
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    line = one_error_line(result)
    distinct = len({r["price"] for r in csv.DictReader(open(train_file))})
    assert f"label column 'price' holds numbers with {distinct} distinct values" in line
    assert "task: regression" in line and "task: classification" in line
    cfg["task"], cfg["train"]["epochs"] = "classification", 1  # spelled out: classified as asked
    assert train(cli, write_config, cfg, tmp_path / "r").is_dir()


def test_task_config_errors_are_one_line_and_name_the_key():
    def error(**sections):
        with pytest.raises(DlcliError) as err:
            validate_config(tiny_config(**sections))
        return str(err.value)

    assert "task: unknown task 'regresion' (did you mean 'regression'?)" in error(task="regresion")
    assert "task.loss: " in error(task={"type": "regression", "loss": "l3"})
    assert "task.threshold: must be between 0 and 1" in error(task={"type": "multilabel", "threshold": 1.5})
    assert "task: regression needs targets the synthetic dataset cannot give" in error(task="regression")
    table = {"dataset": "csv", "train_file": "x.csv", "label_column": "y"}
    assert "train.label_smoothing: a regression has no classes to smooth" in error(
        task="regression", data=table, train={"label_smoothing": 0.1})
    assert "train.checkpoint_monitor: 'val_accuracy' is not a metric of the regression task (choose one of " \
        "train_loss, train_mae, val_loss, val_mae, val_rmse, val_r2)" in error(task="regression", data=table, train={"checkpoint_monitor": "val_accuracy"})
    cfg = validate_config(tiny_config(task="regression", data=table, train={"early_stopping": {
        "monitor": "val_r2"}}))
    assert cfg.train.checkpoint_monitor == "val_loss" and cfg.train.early_stopping.monitor == "val_r2"
    assert validate_config(tiny_config()).resolved()["task"] == {"type": "classification"}


def test_early_stopping_on_r2_stops_when_it_stops_rising(cli, write_config, tmp_path):
    from dlcli.tasks import metric_mode

    assert metric_mode("val_r2") == "max" and metric_mode("val_rmse") == "min" and metric_mode("val_f1_micro") == "max"
    train_file = cars(tmp_path / "cars.csv", 200, 0)
    cfg = table_config("es", train_file, "price", "regression")
    cfg["train"].update(epochs=30, checkpoint_monitor="val_r2", early_stopping={"monitor": "val_r2", "patience": 2,
                                                                                   "min_delta": 10})
    run = train(cli, write_config, cfg, tmp_path / "runs")
    history = runs.read_metrics(run)
    assert len(history) == 3  # nothing rises by 10: stopped after patience 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_metric"] == {"name": "val_r2", "value": max(m["val_r2"] for m in history)}


def test_regression_resumes_exactly_after_a_signal(cli, write_config, tmp_path, inject):
    train_file = cars(tmp_path / "cars.csv", 240, 0)
    cfg = table_config("resume", train_file, "price", {"type": "regression", "loss": "smooth_l1"})
    cfg["model"]["dropout"] = 0.2
    cfg["train"]["epochs"] = 4
    straight = train(cli, write_config, cfg, tmp_path / "a", "-q")
    inject(SignalAt(9, signal.SIGINT))
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 130, result.output
    run = next((tmp_path / "b").iterdir())
    assert cli("resume", run.name, "--runs-dir", tmp_path / "b", "-q").exit_code == 0
    assert_same_training(straight, run)


# ---------------------------------------------------------------- multi-label


def test_multilabel_spellings_give_the_same_run_and_metrics_match_scikit_learn(cli, write_config, tmp_path):
    train_file, test_file = tagged(tmp_path / "tags.csv", 400, 0), tagged(tmp_path / "new.csv", 100, 1)
    flags = table_config("flags", train_file, ["a", "b", "c"], "multilabel", test_file)
    joined = table_config("joined", train_file, "tags", "multilabel", test_file, label_separator="|")
    # in one table each spelling's label columns would be the other's features: each reads a table of its own
    rows = list(csv.DictReader(open(train_file)))
    test_rows = list(csv.DictReader(open(test_file)))
    for name, keep in (("flags", ["x1", "x2", "x3", "a", "b", "c"]), ("joined", ["x1", "x2", "x3", "tags"])):
        write_csv(tmp_path / f"{name}.csv", keep, [[r[k] for k in keep] for r in rows])
        write_csv(tmp_path / f"{name}-test.csv", keep, [[r[k] for k in keep] for r in test_rows])
    flags["data"].update(train_file=str(tmp_path / "flags.csv"), test_file=str(tmp_path / "flags-test.csv"))
    joined["data"].update(train_file=str(tmp_path / "joined.csv"), test_file=str(tmp_path / "joined-test.csv"))
    a = train(cli, write_config, flags, tmp_path / "runs")
    b = train(cli, write_config, joined, tmp_path / "runs")
    ma, mb = runs.read_metrics(a), runs.read_metrics(b)
    for x, y in zip(ma, mb, strict=True):
        assert {k: v for k, v in x.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in y.items() if k != "seconds"}, abs=1e-6)
    assert {"train_subset_accuracy", "val_f1_micro", "val_f1_macro", "val_subset_accuracy"} <= ma[0].keys()

    answers = cli_json(cli, "predict", tmp_path / "flags-test.csv", "--run", a.name, "--runs-dir", tmp_path / "runs",
                       "--json")
    probs = np.array([[ans["probabilities"][k] for k in "abc"] for ans in answers])
    pred = probs >= 0.5
    assert [ans["labels"] for ans in answers] == [[k for k, on in zip("abc", row) if on] for row in pred]
    truth = np.stack([column(test_file, k) for k in "abc"], 1).astype(bool)
    report = cli_json(cli, "evaluate", a.name, "--runs-dir", tmp_path / "runs", "--json")
    assert report["f1_micro"] == pytest.approx(skm.f1_score(truth, pred, average="micro"), abs=1e-6)
    assert report["f1_macro"] == pytest.approx(skm.f1_score(truth, pred, average="macro", zero_division=0), abs=1e-6)
    assert report["subset_accuracy"] == pytest.approx(skm.accuracy_score(truth, pred), abs=1e-6)
    aps = [skm.average_precision_score(truth[:, j], probs[:, j]) for j in range(3)]
    assert report["map"] == pytest.approx(np.mean(aps), abs=1e-4)
    assert report["f1_micro"] > 0.8
    assert Path(report["files"]["per_label"]).is_file()


def test_tuned_thresholds_are_chosen_on_validation_stored_and_used_by_predict(cli, write_config, tmp_path):
    train_file = tagged(tmp_path / "tags.csv", 300, 0)
    cfg = table_config("tuned", train_file, ["a", "b", "c"], {"type": "multilabel", "threshold": "tuned",
                                                                "pos_weight": "auto"})
    cfg["train"]["epochs"] = 3  # undertrained: the best thresholds are not 0.5
    run = train(cli, write_config, cfg, tmp_path / "runs")
    task = json.loads((run / "data.json").read_text())["task"]
    assert len(task["thresholds"]) == 3 and task["thresholds"] != [0.5] * 3
    assert task["positives"] == [int(v) for v in task["positives"]] and task["rows"] > 0
    answers = cli_json(cli, "predict", train_file, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    for ans in answers[:50]:
        assert ans["labels"] == [k for k, t in zip("abc", task["thresholds"]) if ans["probabilities"][k] >= t]


@pytest.mark.parametrize("task, monitor", [
    ("multilabel", "val_loss"),
    ({"type": "multilabel", "pos_weight": "auto"}, "val_f1_micro"),
    ({"type": "multilabel", "threshold": "tuned"}, "val_f1_micro"),
])
def test_multilabel_best_and_stopping_follow_micro_f1_where_the_loss_is_not_faithful(task, monitor, tmp_path):
    """pos_weight: auto rescales the loss and tuned thresholds move the decision after training: val_loss then
    picks the wrong epoch, so best.pt and epochs: auto's early stopping follow the headline, val_f1_micro."""
    from types import SimpleNamespace

    from dlcli.training import resolve_epochs

    cfg = validate_config(table_config("m", tmp_path / "t.csv", ["a", "b", "c"], task) | {"train": {}})
    assert cfg.train.checkpoint_monitor == monitor
    said = resolve_epochs(cfg, SimpleNamespace(train=range(300), val=range(30)))
    assert cfg.train.early_stopping.monitor == monitor and monitor in said
    explicit = table_config("m", tmp_path / "t.csv", ["a", "b", "c"], task)
    explicit["train"]["checkpoint_monitor"] = "val_loss"  # a monitor the user names is kept
    assert validate_config(explicit).train.checkpoint_monitor == "val_loss"


def test_a_reweighted_multilabel_run_keeps_the_epoch_of_the_best_micro_f1(cli, write_config, tmp_path):
    cfg = table_config("pw", tagged(tmp_path / "tags.csv", 300, 0), ["a", "b", "c"],
                       {"type": "multilabel", "pos_weight": "auto"})
    cfg["train"]["epochs"] = 6
    run = train(cli, write_config, cfg, tmp_path / "runs", "-q")
    history = runs.read_metrics(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_metric"] == {"name": "val_f1_micro", "value": max(m["val_f1_micro"] for m in history)}


def test_evaluate_counts_one_sample_in_the_singular(cli, write_config, tmp_path):
    one_row = cars(tmp_path / "one.csv", 1, 1)
    cfg = table_config("one", cars(tmp_path / "cars.csv", 120, 0), "price", "regression", one_row)
    cfg["train"]["epochs"] = 1
    run = train(cli, write_config, cfg, tmp_path / "runs", "-q")
    shown = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs")
    assert shown.exit_code == 0, shown.output
    assert "test split, 1 sample, best checkpoint" in shown.stdout
    shown = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs", "--split", "val")
    assert "val split, 12 samples, best checkpoint" in shown.stdout


def test_predict_dash_reads_rows_or_an_image_from_stdin(cli, write_config, tmp_path):
    """`dlcli predict -`: a table run reads CSV rows under their header, an image run one picture's bytes; the
    answers are those of the same file, named `stdin`."""
    from io import BytesIO

    from PIL import Image
    from typer.testing import CliRunner

    from dlcli.cli import app

    def piped(run, runs_dir, data):
        result = CliRunner().invoke(app, ["predict", "-", "--run", run.name, "--runs-dir", str(runs_dir), "--json"],
                                    input=data)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    rows = cars(tmp_path / "cars.csv", 120, 0)
    run = train(cli, write_config, table_config("stdin", rows, "price", "regression"), tmp_path / "runs", "-q")
    from_file = cli_json(cli, "predict", rows, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    answers = piped(run, tmp_path / "runs", Path(rows).read_bytes())
    assert [a["row"] for a in answers] == [f"stdin:{line}" for line in range(2, 122)]
    assert [a["prediction"] for a in answers] == [a["prediction"] for a in from_file]

    images = train(cli, write_config, tiny_config(), tmp_path / "images", "-q")
    png = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8), "L").save(png, "PNG")
    (tmp_path / "one.png").write_bytes(png.getvalue())
    from_file = cli_json(cli, "predict", tmp_path / "one.png", "--run", images.name, "--runs-dir", tmp_path / "images",
                         "--json")
    answers = piped(images, tmp_path / "images", png.getvalue())
    assert len(answers) == 1 and answers[0]["image"] == "stdin" and answers[0]["top"] == from_file[0]["top"]
    result = CliRunner().invoke(app, ["predict", "-", "--run", run.name, "--runs-dir", str(tmp_path / "runs")],
                                input=b"")
    assert result.exit_code == 2 and "stdin is empty" in result.stderr


def test_multilabel_resumes_exactly_after_a_signal(cli, write_config, tmp_path, inject):
    cfg = table_config("mlresume", tagged(tmp_path / "tags.csv", 240, 0), ["a", "b", "c"],
                       {"type": "multilabel", "pos_weight": "auto"})
    cfg["train"]["epochs"] = 3
    straight = train(cli, write_config, cfg, tmp_path / "a", "-q")
    inject(SignalAt(8, signal.SIGTERM))
    assert cli("train", write_config(cfg), "--runs-dir", tmp_path / "b", "-q").exit_code == 143
    run = next((tmp_path / "b").iterdir())
    assert cli("resume", run.name, "--runs-dir", tmp_path / "b", "-q").exit_code == 0
    assert_same_training(straight, run)


# ---------------------------------------------------------------- two classes, old runs, metrics


def test_two_classes_report_roc_auc_and_average_precision(cli, write_config, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    label = np.where(x[:, 0] + 0.7 * rng.normal(size=300) > 0, "yes", "no")
    rows = [[f"{a:.4f}", f"{b:.4f}", l] for (a, b), l in zip(x, label)]
    data = write_csv(tmp_path / "two.csv", ["x1", "x2", "label"], rows)
    cfg = table_config("two", data, "label", "classification", test_file=data)
    cfg["train"]["epochs"] = 3
    run = train(cli, write_config, cfg, tmp_path / "runs")
    report = cli_json(cli, "evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    answers = cli_json(cli, "predict", data, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json", "-k", "2")
    p_yes = np.array([next(t["probability"] for t in a["top"] if t["label"] == "yes") for a in answers])
    truth = label == "yes"
    assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, p_yes), abs=1e-4)
    assert report["average_precision"] == pytest.approx(skm.average_precision_score(truth, p_yes), abs=1e-4)


def test_ranking_metrics_with_ties_match_scikit_learn():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        scores = rng.integers(0, 6, n) / 5.0  # many ties
        truth = rng.random(n) < 0.4
        if truth.all() or not truth.any():
            continue
        assert roc_auc(torch.tensor(scores), torch.tensor(truth)) == pytest.approx(skm.roc_auc_score(truth, scores))
        assert average_precision(torch.tensor(scores), torch.tensor(truth)) == pytest.approx(
            skm.average_precision_score(truth, scores))
    assert roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([True, True])) is None


def test_a_run_from_before_tasks_evaluates_predicts_and_resumes_as_it_did(cli, write_config, tmp_path):
    run = train(cli, write_config, tiny_config(), tmp_path / "runs", "-q")
    before = cli_json(cli, "evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["task"]  # what dlcli wrote before tasks
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    info = json.loads((run / "data.json").read_text())
    del info["task"]
    (run / "data.json").write_text(json.dumps(info))
    summary = json.loads((run / "summary.json").read_text())
    for key in ("task", "headline"):
        del summary[key]
    (run / "summary.json").write_text(json.dumps(summary))
    after = cli_json(cli, "evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert after["accuracy"] == before["accuracy"] and after["loss"] == before["loss"]
    listed = cli_json(cli, "runs", "--runs-dir", tmp_path / "runs", "--json")
    assert listed[0]["test_metric"] == "accuracy" and listed[0]["test_value"] == summary["test"]["accuracy"]
    assert cli("resume", run.name, "--epochs", "3", "--runs-dir", tmp_path / "runs", "-q").exit_code == 0


@pytest.mark.parametrize("task, label, make", [
    ({"type": "regression", "loss": "huber"}, "price", cars),
    ({"type": "multilabel", "pos_weight": "auto"}, ["a", "b", "c"], tagged),
])
def test_two_processes_train_every_task_like_one_with_the_whole_batch(tmp_path, write_config, task, label, make):
    from tests.test_distributed import assert_same, dlcli, finished, run_of

    cfg = table_config("ddp", make(tmp_path / "data.csv", 250, 0), label, task)
    cfg["train"].update(epochs=2, batch_size=16, grad_clip=1.0, precision="32")
    config = write_config(cfg)
    finished(dlcli("train", config, "--set", "train.batch_size=32", "--runs-dir", tmp_path / "one", "-q"))
    finished(dlcli("train", config, "--devices", "2", "--runs-dir", tmp_path / "two", "-q"))
    one, two = run_of(tmp_path / "one"), run_of(tmp_path / "two")
    assert_same(one, two, atol=1e-5)
    test_one = json.loads((one / "summary.json").read_text())["test"]
    assert test_one == pytest.approx(json.loads((two / "summary.json").read_text())["test"], abs=1e-5)


def test_loggers_record_the_tasks_metric_names(cli, write_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = table_config("logged", cars(tmp_path / "cars.csv", 120, 0), "price", "regression")
    cfg["train"]["epochs"], cfg["track"] = 2, ["csv", "tensorboard"]
    run = train(cli, write_config, cfg, tmp_path / "runs", "-q")
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_mae", "val_r2", "val_rmse"} <= set(header)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"mae/train", "r2/val", "r2/test", "rmse/test"} <= set(events.Tags()["scalars"])


def test_a_regression_sweep_ranks_trials_by_the_tasks_metric(cli, write_config, tmp_path):
    pytest.importorskip("optuna")
    cfg = table_config("sweepreg", cars(tmp_path / "cars.csv", 150, 0), "price", "regression")
    cfg["train"]["epochs"] = 2
    cfg["sweep"] = {"trials": 3, "metric": "val_r2", "pruner": None,
                    "space": {"optimizer.lr": {"loguniform": [1.0e-4, 0.05]}}}
    result = cli("sweep", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "sweeps" / "sweepreg" / "summary.json").read_text())
    assert summary["metric"] == "val_r2" and summary["direction"] == "maximize"
    best_runs = [max(m["val_r2"] for m in runs.read_metrics(p)) for p in (tmp_path / "runs").glob("sweepreg-*")]
    assert summary["best"]["value"] == pytest.approx(max(best_runs))
    assert summary["best"]["test_metric"] == "r2" and "test r2" in result.stderr


def test_tuned_thresholds_come_from_a_grid_and_need_enough_positives():
    from dlcli.tasks import parse_task

    task = parse_task({"type": "multilabel", "threshold": "tuned"})
    rng = np.random.default_rng(0)
    truth = torch.zeros(200, 2)
    truth[:60, 0] = 1  # label 0: 60 positives, scored 0.3..0.4 (below 0.5); the negatives below 0.25
    truth[:5, 1] = 1  # label 1: 5 positives, too few to tune on
    p = torch.tensor(np.where(truth[:, 0] == 1, rng.uniform(0.3, 0.4, 200), rng.uniform(0.0, 0.25, 200)))
    logits = torch.stack([torch.logit(p.float()), torch.randn(200)], 1)
    thresholds = task.tune(logits, truth)["thresholds"]
    assert thresholds[1] == 0.5 and thresholds[0] in (0.25, 0.3)  # a grid point separating the two groups


def test_ten_validation_positives_are_enough_to_tune_a_threshold_nine_are_not():
    from dlcli.tasks import parse_task
    from dlcli.tasks.multilabel import MIN_TUNING_POSITIVES

    task = parse_task({"type": "multilabel", "threshold": "tuned"})
    truth = torch.zeros(100, 2)
    truth[:MIN_TUNING_POSITIVES, 0] = 1  # exactly 10 positives: tuned
    truth[:MIN_TUNING_POSITIVES - 1, 1] = 1  # 9: kept at 0.5, though the same scores would tune it the same way
    logits = torch.logit(torch.where(truth == 1, 0.32, 0.1))
    # 0.15 to 0.3 separate positives from negatives (F1 1): the tie goes to the grid point nearest 0.5
    assert MIN_TUNING_POSITIVES == 10 and task.tune(logits, truth)["thresholds"] == [0.3, 0.5]


def test_multilabel_macro_f1_counts_a_label_neither_present_nor_predicted_as_scikit_learn_does():
    from dlcli.tasks import parse_task

    task = parse_task("multilabel").bind({}, ["a", "b", "c", "d"])
    truth = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
    pred = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0]])  # c: never present, never predicted
    logits = torch.tensor(np.where(pred == 1, 2.0, -2.0), dtype=torch.float32)
    expected = skm.f1_score(truth.numpy(), pred, average="macro", zero_division=0)
    assert expected == pytest.approx((1 + 2 / 3 + 0 + 1 / 2) / 4)  # a, b, c (0: the label the old mean skipped), d
    assert task.scores(task.stats(logits, truth))["f1_macro"] == pytest.approx(expected, abs=1e-12)
    assert task.report(logits, truth)["f1_macro"] == pytest.approx(expected, abs=1e-12)
    assert task.scores(task.stats(logits, truth))["f1_micro"] == pytest.approx(
        skm.f1_score(truth.numpy(), pred, average="micro"), abs=1e-12)


def test_tuned_thresholds_come_from_the_validation_outputs_not_the_training_ones(cli, write_config, tmp_path):
    import dlcli
    from dlcli.data import load_data
    from dlcli.tasks import parse_task

    cfg = table_config("val-tuned", tagged(tmp_path / "tags.csv", 200, 0), ["a", "b", "c"],
                       {"type": "multilabel", "threshold": "tuned"}, val_split=0.4)
    cfg["train"]["epochs"] = 2  # undertrained: where the best threshold lies depends on the rows it is tuned on
    run = train(cli, write_config, cfg, tmp_path / "runs", "-q")
    stored = json.loads((run / "data.json").read_text())["task"]["thresholds"]
    split = load_data(validate_config(yaml.safe_load((run / "config.yaml").read_text())))
    loaded, tuner = dlcli.load(run), parse_task({"type": "multilabel", "threshold": "tuned"})
    with torch.no_grad():  # best.pt's outputs, which the run tuned on
        chosen = {name: tuner.tune(loaded.model(loaded.preprocess(part.x)), part.y)["thresholds"]
                  for name, part in (("val", split.val), ("train", split.train))}
    assert chosen["train"] != chosen["val"]  # the case tells the two apart
    assert stored == chosen["val"]


def test_a_repeated_header_column_is_one_line_before_training(cli, write_config, tmp_path):
    data = write_csv(tmp_path / "dup.csv", ["x", "x", "price"], [[1, 2, 3], [4, 5, 6]] * 10)
    result = cli("train", write_config(table_config("dup", data, "price", "regression")), "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    assert f"{data}: column 'x' appears more than once (keep one)" in one_error_line(result)
