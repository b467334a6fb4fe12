"""`track:` loggers: TensorBoard event files, an MLflow run and metrics.csv, written as a run trains, continued by
`dlcli resume`, and never the reason a run fails."""

import json
from pathlib import Path

import pytest

from dlcli import rundirs as runs
from dlcli.errors import RUNTIME, DlcliError
from tests.conftest import tiny_config

pytest.importorskip("tensorboard", reason="pip install -e '.[dev]' installs tensorboard")
pytest.importorskip("mlflow", reason="pip install -e '.[dev]' installs mlflow-skinny")


def tracked(*track, epochs=3) -> dict:
    return tiny_config(track=list(track), train={"epochs": epochs, "batch_size": 32})


def train(cli, write_config, cfg, runs_dir) -> Path:
    result = cli("train", write_config(cfg), "--runs-dir", runs_dir, "-q")
    assert result.exit_code == 0, result.output
    return Path(runs_dir) / result.stdout.strip().splitlines()[-1]


def scalars(run: Path) -> dict[str, list[int]]:
    """Every scalar tag in the run's TensorBoard directory -> its steps, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_run(run: Path):
    from mlflow.tracking import MlflowClient

    record = json.loads((run / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    return client, client.get_run(record["run_id"])


def test_tensorboard_mlflow_and_csv_continue_a_run_that_failed_between_log_and_checkpoint(cli, write_config,
                                                                                         tmp_path, monkeypatch):
    """Epoch 2 is logged, then writing its checkpoint fails: the resumed run trains epoch 2 again, and each logger
    still holds one point per epoch."""
    save = runs.save_checkpoint

    def full_disk_at_epoch_2(path, state):
        if path.name == "last.pt" and state["epoch"] == 2:
            raise DlcliError(f"could not write {path}: no space left on device", RUNTIME)
        save(path, state)

    root = tmp_path / "runs"
    monkeypatch.setattr(runs, "save_checkpoint", full_disk_at_epoch_2)
    result = cli("train", write_config(tracked("tensorboard", "mlflow", "csv")), "--runs-dir", root, "-q")
    assert result.exit_code == 1 and "no space left" in result.stderr, result.output
    run = next(p for p in root.iterdir() if (p / "config.yaml").is_file())
    assert scalars(run)["loss/train"] == [1, 2]
    first = json.loads((run / "tracking.json").read_text())["mlflow"]
    assert first["tracking_uri"] == f"sqlite:///{root.resolve() / 'mlflow.db'}"  # the default store: beside the runs
    client, found = mlflow_run(run)
    assert found.info.status == "FAILED" and found.data.tags["dlcli.status"] == "failed"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "train_loss")] == [1]  # epoch 2 unsaved
    monkeypatch.setattr(runs, "save_checkpoint", save)

    result = cli("resume", run.name, "--runs-dir", root, "-q")
    assert result.exit_code == 0, result.output
    steps = scalars(run)
    for tag in ("loss/train", "accuracy/train", "loss/val", "accuracy/val", "lr", "seconds"):
        assert steps[tag] == [1, 2, 3], tag  # one point per epoch, none twice
    assert steps["accuracy/test"] == [3] and steps["loss/test"] == [3]

    client, found = mlflow_run(run)
    assert json.loads((run / "tracking.json").read_text())["mlflow"] == first  # the same MLflow run, continued
    assert found.info.status == "FINISHED" and found.data.tags["dlcli.status"] == "completed"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_accuracy")] == [1, 2, 3]

    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "train_loss", "train_accuracy"]
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    jsonl = runs.read_metrics(run)
    assert [float(r.split(",")[1]) for r in rows[1:]] == pytest.approx([m["train_loss"] for m in jsonl])


def test_mlflow_run_holds_params_metrics_test_figures_and_files(cli, write_config, tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    cfg = tracked({"mlflow": {"experiment": "tiny-experiments"}}, epochs=2)
    run = train(cli, write_config, cfg, tmp_path / "runs")
    client, found = mlflow_run(run)
    assert client.get_experiment(found.info.experiment_id).name == "tiny-experiments"
    assert found.info.run_name == run.name and found.data.tags["dlcli.run_id"] == run.name
    params = found.data.params
    assert params["optimizer.lr"] == "0.01" and params["train.batch_size"] == "32"
    assert params["model.hidden"] == "[16]" and params["data.dataset"] == "synthetic"
    history = {key: [m.step for m in client.get_metric_history(found.info.run_id, key)]
               for key in ("train_loss", "val_loss", "val_accuracy", "lr")}
    assert all(steps == [1, 2] for steps in history.values()), history
    summary = json.loads((run / "summary.json").read_text())
    assert found.data.metrics["test_accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert found.data.metrics["test_loss"] == pytest.approx(summary["test"]["loss"])
    files = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "data.json", "metrics.jsonl", "summary.json", "curves.png", "checkpoints"} <= files
    assert [a.path for a in client.list_artifacts(found.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # $MLFLOW_TRACKING_URI wins over the default


def test_a_missing_extra_is_one_line_and_leaves_no_run(cli, write_config, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    result = cli("train", write_config(tracked("csv", "mlflow")), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip() == 'error: track: mlflow needs the mlflow package: pip install "dlcli[mlflow]"'
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_failing_logger_warns_once_and_the_run_completes(cli, write_config, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    cfg = tracked({"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"}}, "csv", epochs=2)
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: mlflow")]
    assert len(warnings) == 1 and "stopped logging run" in warnings[0]
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # the other logger went on


def test_track_names_and_keys_are_checked_like_any_config_key(cli, write_config):
    result = cli("validate", write_config(tracked("tensorbord")))
    assert result.exit_code == 2 and "track[0]: unknown logger 'tensorbord' (did you mean 'tensorboard'?)" in \
        result.stderr
    result = cli("validate", write_config(tracked({"mlflow": {"experimnt": "x"}})))
    assert result.exit_code == 2 and "track[0].mlflow.experimnt: unknown key (did you mean 'experiment'?)" in \
        result.stderr
