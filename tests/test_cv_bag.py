"""`train.cv_final: bag`: the K folds' best checkpoints averaged as the run's one model (dlcli.models.bag), checked
against the folds themselves, loaded and run one by one; predict, evaluate, serve and the ONNX export of a bag agree; what
a bag cannot do (resume, no folds, a task without an averaging rule) is refused in one line."""

import json

import numpy as np
import pytest
import torch
import yaml

from dlcli.config import validate_config
from dlcli.data import load_data
from dlcli.loaded import load_run
from tests.test_cv import write_houses
from tests.test_tables import CONFIGS, write_table


def bagged_run(tmp_path, task="classification", folds=3):
    import dlcli

    if task == "classification":
        table = write_table(tmp_path / "t.csv", n=60, gaps=False)
        cfg = yaml.safe_load((CONFIGS / "table_csv.yaml").read_text())
        cfg["data"] |= {"train_file": str(table), "test_split": 0.2}
        cfg["optimizer"] = {"name": "adam", "lr": 0.03}  # members sure enough of themselves to disagree
    else:
        table = write_houses(tmp_path / "houses.csv", 50, base=900)
        cfg = {"name": "houses", "seed": 1, "task": "regression",
               "data": {"dataset": "csv", "train_file": str(table), "label_column": "price", "test_split": 0.2},
               "model": {"type": "mlp", "hidden": [8]}}
    cfg["train"] = {"epochs": 2, "batch_size": 16, "cv": folds, "cv_final": "bag"}
    run = dlcli.train(cfg, runs_dir=tmp_path / "runs", quiet=True)
    return run, json.loads((run.dir / "cv.json").read_text())


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_bag_is_the_mean_of_its_folds_models(tmp_path, task):
    run, report = bagged_run(tmp_path, task)
    folds = [tmp_path / "runs" / name for name in report["runs"]]
    assert len(folds) == 3 and run.summary["bagged"]["folds"] == report["runs"]
    for key, figure in report["at_best"].items():  # each fold's validation figures at its own best epoch
        best = [json.loads((fold / "summary.json").read_text())["best_epoch"] for fold in folds]
        lines = [[json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()] for fold in folds]
        assert figure["per_fold"] == [next(m[key] for m in ms if m["epoch"] == b) for ms, b in zip(lines, best)]
    assert {"val_loss", f"val_{'accuracy' if task == 'classification' else 'r2'}"} <= set(report["at_best"])
    cfg = validate_config(yaml.safe_load((run.dir / "config.yaml").read_text()))
    assert (cfg.train.cv, cfg.train.cv_final, cfg.data.cv_fold, cfg.data.val_split) == (3, "bag", None, 0.0)
    test = load_data(cfg).test  # the raw test rows, as evaluate reads them
    bag = load_run(run.dir)
    got = bag.logits(test.x)
    # each fold loaded as its own run (its best.pt, its data.json) and run on the same raw rows
    members = [load_run(fold) for fold in folds]
    infos = [json.loads((fold / "data.json").read_text()) for fold in folds]
    assert all(i["shared_fits"] and i["normalization"] == infos[0]["normalization"] for i in infos)
    if task == "classification":
        probabilities = torch.stack([m.logits(test.x).softmax(1) for m in members]).mean(0)
        assert torch.allclose(got.softmax(1), probabilities, atol=1e-6)
        # a bag of probabilities is not a bag of logits: the test would not tell them apart if they agreed
        logits_mean = torch.stack([m.logits(test.x) for m in members]).mean(0).softmax(1)
        assert (logits_mean - probabilities).abs().max() > 1e-4
    else:
        values = torch.stack([m.task.predictions(m.logits(test.x)) for m in members]).mean(0)
        assert torch.allclose(bag.task.predictions(got), values, rtol=1e-5, atol=1e-3)
    # the summary's test figures are the bag's, and evaluate says the same
    evaluated = run.evaluate()
    headline = run.summary["headline"]
    assert evaluated[headline] == pytest.approx(run.summary["test"][headline], abs=1e-6)


def test_predict_evaluate_and_onnx_agree_on_a_bag(tmp_path):
    pytest.importorskip("onnxruntime", reason='the export extra is not installed: pip install -e ".[dev]"')
    import onnxruntime as ort
    import pandas as pd

    run, _ = bagged_run(tmp_path, folds=2)
    cfg = validate_config(yaml.safe_load((run.dir / "config.yaml").read_text()))
    data = load_data(cfg)
    # the test rows as a frame, in the order the split holds them: the table's rows at the test indices
    frame = pd.read_csv(cfg.data.train_file)
    loaded = load_run(run.dir, device="cpu")
    probabilities = loaded.logits(data.test.x).softmax(1).numpy()
    answers = run.predict(frame.drop(columns=["label"]), top_k=2)
    by_row = np.array([[next(p["probability"] for p in a["top"] if p["label"] == c) for c in loaded.classes]
                       for a in answers])
    # every table row through predict; the test rows are among them and carry the bag's probabilities
    matched = [np.abs(by_row - p).max(1).min() for p in probabilities]
    assert max(matched) <= 1e-5
    accuracy = float((probabilities.argmax(1) == data.test.y.numpy()).mean())
    assert run.evaluate()["accuracy"] == pytest.approx(accuracy)

    pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[dev]"')
    from fastapi.testclient import TestClient

    from dlcli.serve.app import create_app

    rows = frame.drop(columns=["label"]).head(8)
    with TestClient(create_app(run.dir, top_k=2), base_url="http://127.0.0.1") as client:
        served = client.post("/predict", json={"rows": rows.to_dict("records")}).json()
    assert [[p["label"] for p in a["top"]] for a in served] == [[p["label"] for p in a["top"]] for a in answers[:8]]
    assert np.allclose([[p["probability"] for p in a["top"]] for a in served],
                       [[p["probability"] for p in a["top"]] for a in answers[:8]], atol=1e-6)

    target = run.export("onnx", tmp_path / "bag.onnx")
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": data.test.x.numpy().astype(np.float32)})[0]
    assert np.abs(got - probabilities).max() <= 1e-5


def test_a_bag_lists_resumes_and_refuses_as_a_bag(cli, tmp_path):
    run, report = bagged_run(tmp_path, folds=2)
    listed = cli("runs", "--runs-dir", tmp_path / "runs")
    assert listed.exit_code == 0 and "cv bag of 2 folds" in listed.stdout
    result = cli("resume", run.id, "--epochs", "5", "--runs-dir", tmp_path / "runs")
    assert result.exit_code != 0 and "nothing to resume" in result.stderr and result.stderr.count("\n") == 1
    # a fold resumes with the fits it trained with (all training rows'), not its own split's
    fold = tmp_path / "runs" / report["runs"][0]
    before = json.loads((fold / "data.json").read_text())
    result = cli("resume", fold.name, "--epochs", "3", "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    after = json.loads((fold / "data.json").read_text())
    assert after["normalization"] == before["normalization"] and after["shared_fits"]
    summary = json.loads((fold / "summary.json").read_text())
    assert summary["epochs_completed"] == 3
    # trained and scored with the stored fits: the resumed run's test figures are what evaluate (data.json) finds
    import dlcli

    assert dlcli.load(fold).evaluate()["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-6)


def test_bad_bag_requests_are_one_line_errors(cli, tmp_path):
    table = write_table(tmp_path / "t.csv", n=40)
    base = [CONFIGS / "table_csv.yaml", "--runs-dir", tmp_path / "runs", "--set", f"data.train_file={table}"]
    result = cli("train", *base, "--set", "train.cv_final=bag")
    assert result.exit_code == 2 and "train.cv_final" in result.stderr and "set train.cv" in result.stderr
    assert result.stderr.count("\n") == 1
    result = cli("train", *base, "--cv", "3", "--set", "train.cv_final=average")
    assert result.exit_code == 2 and "train.cv_final" in result.stderr and result.stderr.count("\n") == 1
    result = cli("validate", CONFIGS / "table_multilabel.yaml", "--set", "train.cv=3", "--set", "train.cv_final=bag")
    assert result.exit_code == 2 and "not multilabel ones" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_init_bags_five_folds_on_a_small_table_only(cli, tmp_path):
    def train_keys(rows):
        table = write_table(tmp_path / f"t{rows}.csv", n=rows, gaps=False)
        out = tmp_path / f"t{rows}.yaml"
        result = cli("init", table, "-o", out)
        assert result.exit_code == 0, result.output
        cfg = yaml.safe_load(out.read_text())
        validate_config(cfg)
        return cfg["train"], out.read_text()

    small, text = train_keys(300)
    assert (small["cv"], small["cv_final"]) == (5, "bag") and "unused while train.cv's folds validate" in text
    large, text = train_keys(2_000)
    assert "cv" not in large and "cv_final" not in large and "unused while" not in text
