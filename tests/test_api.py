"""dlcli from Python: every public function, the same results as the command line, in-memory tables, errors that
raise instead of exiting, Ctrl-C in a notebook."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlcli
from dlcli import rundirs as store
from tests.conftest import tiny_config
from tests.test_tasks import cars, column

ROOT = Path(__file__).resolve().parents[1]


def test_import_dlcli_stays_light():
    code = "import sys, dlcli; dlcli.DlcliError; dlcli.ConfigError; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                         "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == "False"


def test_the_api_and_the_command_line_train_the_same_run(cli, write_config, tmp_path):
    cfg = tiny_config()
    result = cli("train", write_config(cfg), "--set", "train.epochs=3", "--runs-dir", tmp_path / "cli", "-q")
    assert result.exit_code == 0, result.output
    from_cli = store.read_metrics(tmp_path / "cli" / result.stdout.strip())
    seen = []
    run = dlcli.train(cfg, overrides={"train.epochs": "3"}, runs_dir=tmp_path / "api", quiet=True,
                      callbacks=seen.append)
    strip = lambda rows: [{k: v for k, v in m.items() if k != "seconds"} for m in rows]  # noqa: E731
    assert strip(run.metrics) == strip(from_cli)  # identical, not merely close
    assert strip(seen) == strip(run.metrics)  # the callback saw every epoch's metrics
    assert run.summary["status"] == "completed" and run.status == "completed"
    assert run.config["train"]["epochs"] == 3 and run.id == run.dir.name
    frame = run.metrics_frame()
    assert list(frame.index) == [1, 2, 3] and frame["val_accuracy"].tolist() == [m["val_accuracy"] for m in run.metrics]
    report = run.evaluate()
    cli_report = json.loads(cli("evaluate", run.id, "--runs-dir", tmp_path / "api", "--json").stdout)
    assert report["accuracy"] == cli_report["accuracy"] and report["confusion_matrix"] == cli_report["confusion_matrix"]


def test_load_runs_resume_export_and_the_model(tmp_path):
    root = tmp_path / "runs"
    first = dlcli.train(tiny_config(), runs_dir=root, quiet=True)
    second = dlcli.train(tiny_config(name="other"), runs_dir=root, quiet=True)
    assert dlcli.load(second.id, runs_dir=root).id == second.id
    assert dlcli.load(first.dir).id == first.id and dlcli.load(first.id[:-2], runs_dir=root).id == first.id
    assert sorted(r.id for r in dlcli.runs(root)) == sorted([first.id, second.id])  # oldest first; same second
    assert [r.id for r in dlcli.runs(root, where="id=other*")] == [second.id]
    again = first.resume(epochs=3, quiet=True)
    assert again is first and len(first.metrics) == 3 and first.summary["epochs_completed"] == 3
    import torch

    x = torch.rand(4, 1, 8, 8) * 255
    with torch.no_grad():
        out = first.model(first.preprocess(x))
    assert out.shape == (4, 3)
    path = first.export("torchscript", tmp_path / "m.pt")
    assert path == tmp_path / "m.pt" and path.is_file()


def test_errors_raise_one_line_exceptions_and_nothing_exits(tmp_path):
    with pytest.raises(dlcli.ConfigError, match=r"model.layers\[0\].dense.unit: unknown key \(did you mean 'units'\?\)"):
        dlcli.train(tiny_config(model={"type": "sequential", "layers": [{"dense": {"unit": 3}}]}), runs_dir=tmp_path)
    with pytest.raises(dlcli.ConfigError, match=r"overrides\['train.epoch.x'\]: 'epoch' holds a value"):
        dlcli.train(tiny_config(train={"epoch": 1}), overrides={"train.epoch.x": 1}, runs_dir=tmp_path)
    with pytest.raises(dlcli.DlcliError, match="no runs in"):
        dlcli.load("nope", runs_dir=tmp_path)
    table = {"dataset": "csv", "train_file": str(tmp_path / "absent.csv")}
    with pytest.raises(dlcli.DataError, match="absent.csv: no such file or directory"):
        dlcli.train(tiny_config(data=table), runs_dir=tmp_path)
    with pytest.raises(dlcli.DlcliError, match="a YAML path, a dict or a dlcli Config"):
        dlcli.train(42)
    assert not any(tmp_path.iterdir())


def test_ctrl_c_in_a_notebook_cell_leaves_a_resumable_run(tmp_path):
    """A real SIGINT to the process, as Jupyter's interrupt sends, during dlcli.train: a resumable checkpoint."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import dlcli
from tests.conftest import tiny_config
cfg = tiny_config(train={{"epochs": 5, "batch_size": 8}})
def interrupt(metrics):
    if metrics["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGINT)
try:
    dlcli.train(cfg, runs_dir={str(tmp_path)!r}, quiet=True, callbacks=interrupt)
except dlcli.TrainingInterrupted as err:
    print("raised", err.exit_code, err)
run = dlcli.runs({str(tmp_path)!r})[0]
print(run.status)
run.resume(quiet=True)
print(run.status, len(run.metrics))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("raised 130 interrupted by SIGINT in epoch 3")
    assert lines[1:] == ["interrupted", "completed 5"]


def test_an_interrupt_outside_dlclis_handler_reaches_the_user_as_training_interrupted(tmp_path):
    """Python's own handler raises KeyboardInterrupt where dlcli's is not installed (reading the data, scoring the
    test split): train raises TrainingInterrupted all the same, and the run says it was interrupted."""
    def interrupt(metrics):
        if metrics["epoch"] == 2:  # after epoch 1's checkpoint, so that there is a run to resume
            raise KeyboardInterrupt

    try:
        dlcli.train(tiny_config(train={"epochs": 3}), runs_dir=tmp_path, quiet=True, callbacks=interrupt)
    except KeyboardInterrupt:
        pytest.fail("a bare KeyboardInterrupt reached the user")
    except dlcli.TrainingInterrupted as err:
        assert err.exit_code == 130 and "KeyboardInterrupt" in str(err)
    else:
        pytest.fail("train returned")
    run = dlcli.runs(tmp_path)[0]
    assert run.status == "interrupted"
    try:
        run.resume(quiet=True, callbacks=interrupt)  # resume is training too
    except KeyboardInterrupt:
        pytest.fail("a bare KeyboardInterrupt reached the user from resume")
    except dlcli.TrainingInterrupted:
        pass
    else:
        pytest.fail("resume returned")


def test_in_memory_tables_train_record_a_fingerprint_and_evaluate_only_with_the_frame(cli, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(cars(tmp_path / "cars.csv", 300, 0))
    test_frame = pd.read_csv(cars(tmp_path / "new.csv", 60, 1))
    cfg = {"name": "frame", "task": "regression", "data": {"dataset": "csv", "label_column": "price"},
           "model": {"type": "mlp", "hidden": [16]}, "train": {"epochs": 3}}
    with pytest.raises(dlcli.ConfigError, match="data.train_file: required key is missing"):
        dlcli.train(cfg, runs_dir=tmp_path / "runs")
    run = dlcli.train(cfg, runs_dir=tmp_path / "runs", quiet=True, data=frame, test_data=test_frame)
    info = json.loads((run.dir / "data.json").read_text())["in_memory"]
    assert info["train_file"]["rows"] == 300 and info["train_file"]["columns"] == list(frame.columns)
    assert len(info["train_file"]["sha256"]) == 64 and info["test_file"]["rows"] == 60
    # The same frames through the files they came from give the same run.
    from_file = dlcli.train({**cfg, "data": {**cfg["data"], "train_file": str(tmp_path / "cars.csv"),
                                             "test_file": str(tmp_path / "new.csv")}},
                            runs_dir=tmp_path / "runs", quiet=True)
    assert [m["val_loss"] for m in run.metrics] == [m["val_loss"] for m in from_file.metrics]
    # From the command line the data is gone: one line says so.
    result = cli("evaluate", run.id, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "this run's table lived in memory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    report = run.evaluate(data=frame, test_data=test_frame)
    assert report["r2"] == pytest.approx(run.summary["test"]["r2"], abs=1e-6)
    with pytest.raises(dlcli.DlcliError, match="not the frame this run was trained with"):
        run.evaluate(data=frame.head(100), test_data=test_frame)
    predictions = run.predict(test_frame)
    assert len(predictions) == 60
    actual = column(tmp_path / "new.csv", "price")
    got = np.array([p["prediction"] for p in predictions])
    assert 1 - ((got - actual) ** 2).sum() / ((actual - actual.mean()) ** 2).sum() == pytest.approx(report["r2"],
                                                                                                    abs=1e-4)


def test_predict_takes_what_a_python_user_holds(tmp_path):
    import torch
    from PIL import Image

    run = dlcli.train(tiny_config(), runs_dir=tmp_path / "runs", quiet=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    files = []
    for i, p in enumerate(pixels):
        Image.fromarray(p, "L").save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    by_file = run.predict(files, top_k=2)

    def same(answers):  # the same inputs: the same labels, probabilities equal to float32 rounding
        for a, b in zip(answers, by_file, strict=True):
            assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
            assert [t["probability"] for t in a["top"]] == pytest.approx([t["probability"] for t in b["top"]],
                                                                           rel=1e-4, abs=1e-7)
        return True

    assert same(run.predict([Image.open(f) for f in files], top_k=2))
    assert same(run.predict(pixels, top_k=2)) and same(run.predict(torch.from_numpy(pixels), top_k=2))
    assert same(run.predict(list(pixels), top_k=2))
    assert len(by_file[0]["top"]) == 2 and by_file[0]["image"] == files[0]
    with pytest.raises(dlcli.DlcliError, match="top_k must be at least 1"):
        run.predict(files, top_k=0)


def test_the_example_script_runs_as_the_readme_says(tmp_path):
    pytest.importorskip("pandas")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "from_python.py")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "DLCLI_RUNS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    r2 = float(next(line for line in lines if line.startswith("test r2")).split()[2].rstrip(","))
    assert r2 > 0.9 and lines[-1] == "True"
    assert sum(line.startswith("array[") for line in lines) == 4
    assert len(dlcli.runs(tmp_path)) == 2


def test_public_names_are_plain_functions_whatever_is_imported():
    """dlcli.train and dlcli.runs are the API's functions, also after the modules doing the work are imported
    (a submodule named train or runs would replace them as the package's attribute)."""
    import inspect
    import subprocess
    import sys

    code = ("import inspect, dlcli, dlcli.training, dlcli.rundirs, dlcli.api\n"
            "assert dlcli.train is dlcli.api.train and dlcli.runs is dlcli.api.runs\n"
            "assert inspect.isfunction(dlcli.train) and inspect.isfunction(dlcli.runs)\n"
            "print(inspect.signature(dlcli.train))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "overrides" in done.stdout
    assert inspect.isfunction(__import__("dlcli").load)
