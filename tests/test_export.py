"""`dlcli export`: ONNX and TorchScript files of a CNN on an image folder, an MLP on a CSV table and an LSTM on texts
answer as `dlcli predict` does, for any batch size, with their metadata, without dlcli's preprocessing code; so do a
regression's (values in the targets' own units) and a multilabel run's (per-label probabilities)."""

import csv
import json
import re
import sys

import numpy as np
import pytest
import torch
from dlcli.data.images import load_image
from tests.test_evaluate_predict import cli, ok
from tests.test_image_folder import folder_config, make_folder
from tests.test_tables import CONFIGS, write_table, write_texts

pytest.importorskip("onnxruntime", reason='the export extra is not installed: pip install -e ".[dev]"')

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")
def train_runs(root):
    """Three tiny runs in root/runs: `shapes` (CNN, 3-channel 16x16 image folder), `table_csv` (MLP), `text_csv`
    (bidirectional LSTM over packed sequences). Returns {kind: run path} and the data files."""
    make_folder(root / "shapes", per_class=12)
    cfg = folder_config(root / "shapes", channels=3)
    cfg["train"]["epochs"] = 3
    (root / "shapes.yaml").write_text(json.dumps(cfg))
    table = write_table(root / "table.csv", n=200)
    texts = write_texts(root / "text.csv", n=200)
    runs = root / "runs"
    trained = {}
    for kind, args in (
        ("image", [root / "shapes.yaml"]),
        ("table", [CONFIGS / "table_csv.yaml", "--set", f"data.train_file={table}", "--set", "train.epochs=10"]),
        ("text", [CONFIGS / "text_csv.yaml", "--set", f"data.train_file={texts}", "--set", "train.epochs=6",
                  "--set", "data.max_length=16", "--set", "model.hidden_size=16"]),
    ):
        result = ok("train", *args, "--runs-dir", runs, "--quiet")
        trained[kind] = runs / result.stdout.strip().splitlines()[-1]
    return trained


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("export"))


def write_rows(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def task_tables(root, n=300, seed=0):
    """cars.csv: two targets in their own units, a price about 1000 (spread about 80) and a distance about 20, from
    two numbers and a category; tags.csv: labels a, b, c as 0/1 columns decided by three numbers."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    kind = rng.choice(["a", "b", "c"], n)
    price = 1000 + 60 * x[:, 0] - 40 * x[:, 1] + np.where(kind == "a", 50, 0) + rng.normal(scale=5, size=n)
    km = 20 + 3 * x[:, 1] + rng.normal(scale=0.5, size=n)
    cars = write_rows(root / "cars.csv", [{"x1": f"{a:.4f}", "x2": f"{b:.4f}", "kind": k, "price": f"{p:.2f}",
                                           "km": f"{m:.3f}"} for (a, b, _), k, p, m in zip(x, kind, price, km)])
    on = np.stack([x[:, 0] > 0, x[:, 1] > 0.5, x[:, 0] + x[:, 2] < -0.5], 1).astype(int)
    tags = write_rows(root / "tags.csv", [{"x1": f"{a:.4f}", "x2": f"{b:.4f}", "x3": f"{c:.4f}", "a": fa, "b": fb,
                                           "c": fc} for (a, b, c), (fa, fb, fc) in zip(x, on)])
    return cars, tags


# New rows for the task runs: a gap, an unseen category; rows whose labels are plain from the rule above
TASK_ROWS = {
    "regression": [{"x1": "1.0", "x2": "0.0", "kind": "a"}, {"x1": "-1.5", "x2": "1.0", "kind": "b"},
                   {"x1": "0.2", "x2": "", "kind": "c"}, {"x1": "0.0", "x2": "-2", "kind": "zzz"}],
    "multilabel": [{"x1": "2", "x2": "2", "x3": "0"}, {"x1": "-2", "x2": "-2", "x3": "-2"},
                   {"x1": "1", "x2": "-1", "x3": "0.5"}, {"x1": "-1", "x2": "1.5", "x3": "1.5"}],
}


def train_task_runs(root):
    """Two tiny table runs in root/runs beyond classification: `regression` of price and km, and `multilabel` of
    a, b, c with thresholds tuned on validation. Returns {task: run path}."""
    cars, tags = task_tables(root)
    runs = root / "runs"
    trained = {}
    for task, data, label in (("regression", cars, ["price", "km"]),
                              ("multilabel", tags, ["a", "b", "c"])):
        cfg = {"name": task, "seed": 0, "task": {"type": "multilabel", "threshold": "tuned"} if task == "multilabel"
               else "regression", "data": {"dataset": "csv", "train_file": str(data), "label_column": label},
               "model": {"type": "mlp", "hidden": [16]}, "optimizer": {"name": "adam", "lr": 0.01},
               "train": {"epochs": 15, "batch_size": 32}}
        (root / f"{task}.yaml").write_text(json.dumps(cfg))
        result = ok("train", root / f"{task}.yaml", "--runs-dir", runs, "--quiet")
        trained[task] = runs / result.stdout.strip().splitlines()[-1]
    return trained


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    return train_task_runs(tmp_path_factory.mktemp("export-tasks"))


def as_outputs(answers, names):
    """predict's answers as one row of numbers per input, in output order: a regression's values in the targets'
    units, a multilabel run's per-label probabilities."""
    def row(answer):
        if "prediction" in answer:
            value = answer["prediction"]
            return [value[n] for n in names] if isinstance(value, dict) else [value]
        return [answer["probabilities"][n] for n in names]

    return np.array([row(a) for a in answers])


def predict_json(run, *inputs):
    result = ok("predict", *inputs, "--run", run.name, "--runs-dir", run.parent, "--json", "-k", "10")
    return json.loads(result.stdout)


def as_probabilities(answers, classes):
    """predict's top-k lists (k = every class) as one probability row per input, in class order."""
    out = np.zeros((len(answers), len(classes)))
    for i, answer in enumerate(answers):
        for entry in answer["top"]:
            out[i, entry["index"]] = entry["probability"]
    return out


def image_inputs(run, layout="nhwc"):
    """Test images decoded by the decoder predict uses; the graph starts after decoding."""
    files = sorted((run.parent.parent / "shapes" / "test").glob("*/*"))[::2]
    shape = tuple(json.loads((run / "data.json").read_text())["input_shape"])
    x = torch.stack([load_image(str(f), shape) for f in files])
    return [str(f) for f in files], (x.permute(0, 2, 3, 1) if layout == "nhwc" else x).contiguous().numpy()


def table_inputs(path, sidecar, rows=None):
    """Rows encoded by hand from the columns file written beside the model: no dlcli code."""
    spec = json.loads(sidecar.read_text())
    assert spec["features"][: len(spec["numeric"])] == spec["numeric"]
    rows = rows or [{"x1": "3.0", "x2": "3.0", "color": "red"}, {"x1": "-2.5", "x2": "-1", "color": "blue"},
                    {"x1": "0.1", "x2": "", "color": "green"}, {"x1": "0.4", "x2": "-0.3", "color": "purple"}]
    write_rows(path, rows)
    x = np.zeros((len(rows), len(spec["features"])), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, c in enumerate(spec["numeric"]):
            x[i, j] = float(row[c]) if row[c] else spec["fill"][c]
        for c, values in spec["categories"].items():
            slot = f"{c}={row[c]}" if row[c] in values else f"{c}="
            x[i, spec["features"].index(slot)] = 1.0
    return [str(path)], x


def text_inputs(sidecar):
    """Texts turned into ids by hand from the vocabulary file written beside the model: no dlcli code."""
    spec = json.loads(sidecar.read_text())
    index = {w: i for i, w in enumerate(spec["vocab"])}
    texts = ["Pizza and bread soup taste", "the robot code really", "Match goal, team score!", "zebra goal"]
    x = np.zeros((len(texts), spec["max_length"]), dtype=np.int64)
    for i, text in enumerate(texts):
        words = re.findall(spec["tokenizer"]["pattern"], text.lower() if spec["tokenizer"]["lowercase"] else text)
        ids = [index.get(w, spec["unk_id"]) for w in words[: spec["max_length"]]]
        x[i, : len(ids)] = ids
    return texts, x


def run_exported(path, fmt, x, output="probabilities"):
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["input"]
        assert [o.name for o in session.get_outputs()] == [output]
        return session.run([output], {"input": x})[0]
    model = torch.jit.load(str(path))
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["image", "table", "text"])
def test_exported_model_answers_as_predict_does(trained, tmp_path, kind, fmt):
    from dlcli.export import read_metadata

    run = trained[kind]
    target = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    result = ok("export", run.name, "--format", fmt, "-o", target, "--runs-dir", run.parent)
    assert result.stdout.strip() == str(target)
    checked = re.search(r"checked on (\d+) test samples: max \|difference\| from PyTorch (\S+)", result.stderr)
    assert checked and float(checked.group(2)) <= 1e-4, result.stderr

    info = json.loads((run / "data.json").read_text())
    meta = read_metadata(target)
    assert meta["classes"] == info["classes"] and meta["run_id"] == run.name and meta["data_kind"] == kind
    assert meta["checkpoint"] == "best" and meta["output_name"] == "probabilities"
    assert meta["task"] == "classification" and meta["output_shape"] == [-1, len(info["classes"])]
    sidecar = None
    if kind == "image":
        inputs, x = image_inputs(run)
        c, h, w = info["input_shape"]
        assert (meta["input_layout"], meta["input_dtype"], meta["input_shape"]) == ("NHWC", "uint8", [-1, h, w, c])
    elif kind == "table":
        sidecar = target.with_name("model.columns.json")
        assert meta["preprocessing_file"] == sidecar.name and meta["input_dtype"] == "float32"
        inputs, x = table_inputs(tmp_path / "rows.csv", sidecar)
        assert meta["input_features"] == json.loads(sidecar.read_text())["features"]
        assert meta["input_shape"] == [-1, x.shape[1]] and meta["input_layout"] == "NF"
    else:
        sidecar = target.with_name("model.vocab.json")
        assert meta["preprocessing_file"] == sidecar.name
        assert json.loads(sidecar.read_text())["vocab"] == info["preprocessing"]["vocab"]
        inputs, x = text_inputs(sidecar)
        assert (meta["input_dtype"], meta["input_shape"]) == ("int64", [-1, 16])

    expected = as_probabilities(predict_json(run, *inputs), info["classes"])
    got = run_exported(target, fmt, x)
    assert got.shape == expected.shape
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert np.abs(got - expected).max() <= 1e-4
    assert len(set(expected.argmax(1).tolist())) > 1  # the inputs are told apart, not one class for all
    # any batch size: one at a time and in other groupings give the same rows
    singles = np.concatenate([run_exported(target, fmt, x[i : i + 1]) for i in range(len(x))])
    assert np.abs(singles - got).max() <= 1e-5
    if len(x) >= 3:
        assert np.abs(run_exported(target, fmt, x[:3]) - got[:3]).max() <= 1e-5


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_exported_task_outputs_are_predicts_numbers(task_runs, tmp_path, task, fmt):
    """A regression's file returns values in the targets' own units, a multilabel run's per-label probabilities: the
    numbers of `dlcli predict --json`; the metadata names the task, its outputs and the tuned thresholds."""
    from dlcli.export import read_metadata

    run = task_runs[task]
    target = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    result = ok("export", run.name, "--format", fmt, "-o", target, "--runs-dir", run.parent)
    assert result.stdout.strip() == str(target)
    output, noun, names = {"regression": ("predictions", "targets", ["price", "km"]),
                           "multilabel": ("probabilities", "labels", ["a", "b", "c"])}[task]
    assert f"output '{output}' N x {len(names)} ({task}: {noun})" in result.stderr
    checked = re.search(r"checked on (\d+) test samples: max \|difference\| from PyTorch (\S+)", result.stderr)
    assert checked and float(checked.group(2)) <= 1e-4, result.stderr

    info = json.loads((run / "data.json").read_text())
    meta = read_metadata(target)
    assert (meta["task"], meta["output_name"], meta["output_shape"]) == (task, output, [-1, len(names)])
    assert meta[noun] == names and "classes" not in meta and meta["run_id"] == run.name
    if task == "multilabel":
        assert meta["thresholds"] == pytest.approx(info["task"]["thresholds"])
        assert meta["thresholds"] != [0.5, 0.5, 0.5]  # tuned on validation, and the file says so
    inputs, x = table_inputs(tmp_path / "rows.csv", target.with_name("model.columns.json"), TASK_ROWS[task])
    answers = predict_json(run, *inputs)
    expected = as_outputs(answers, names)
    got = run_exported(target, fmt, x, output)
    assert got.shape == expected.shape == (len(x), len(names))
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    if task == "regression":  # the targets' own units, not standardised ones
        assert ((800 < got[:, 0]) & (got[:, 0] < 1300) & (10 < got[:, 1]) & (got[:, 1] < 30)).all()
        assert got[0, 0] > got[1, 0] + 100  # 60 * 2.5 + 40 + 50 apart by the rule the data follows
    else:
        assert ((got >= 0) & (got <= 1)).all()
        on = got >= np.array(meta["thresholds"])  # the file's probabilities and thresholds give predict's label sets
        assert [[n for n, f in zip(names, row) if f] for row in on] == [a["labels"] for a in answers]
        assert [a["labels"] for a in answers] == [["a", "b"], ["c"], ["a"], ["b"]]
    singles = np.concatenate([run_exported(target, fmt, x[i : i + 1], output) for i in range(len(x))])
    assert np.abs(singles - got).max() <= 1e-5 * max(1.0, np.abs(got).max())


def test_nchw_layout_and_default_path(trained):
    run = trained["image"]
    result = ok("export", run.name, "--layout", "nchw", "--runs-dir", run.parent)
    target = run / "export" / "model.onnx"
    assert result.stdout.strip() == str(target)
    from dlcli.export import read_metadata

    meta = read_metadata(target)
    assert meta["input_layout"] == "NCHW" and meta["input_shape"] == [-1, *meta["input_shape"][1:]]
    inputs, nchw = image_inputs(run, "nchw")
    expected = as_probabilities(predict_json(run, *inputs), meta["classes"])
    assert np.abs(run_exported(target, "onnx", nchw) - expected).max() <= 1e-4


def test_a_model_that_does_not_match_is_not_kept(trained, tmp_path, monkeypatch):
    from dlcli import export

    real = export.TorchScript.runner
    monkeypatch.setattr(export.TorchScript, "runner", lambda self, path: (lambda x: real(self, path)(x) + 1e-3))
    target = tmp_path / "model.pt"
    result = cli("export", trained["table"].name, "-f", "torchscript", "-o", target, "--runs-dir",
                 trained["table"].parent)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: the exported torchscript model differs from the PyTorch model by up to")
    assert "not written" in result.stderr and result.stderr.count("\n") == 1
    assert not target.exists() and not list(tmp_path.iterdir())


def test_missing_extra_is_one_line(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    result = cli("export", trained["table"].name, "-o", tmp_path / "m.onnx", "--runs-dir", trained["table"].parent)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert 'pip install "dlcli[export]"' in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_without_the_run_data_it_checks_on_random_inputs(trained, tmp_path):
    import shutil

    run = shutil.copytree(trained["text"], tmp_path / "runs" / trained["text"].name)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(re.sub(r"train_file: .*", f"train_file: {tmp_path / 'gone.csv'}", config))
    result = ok("export", run.name, "-f", "torchscript", "--runs-dir", run.parent)
    assert "note: the run's data cannot be read here" in result.stderr
    assert "checked on 64 random token sequences" in result.stderr
    assert (run / "export" / "model.pt").is_file() and (run / "export" / "model.vocab.json").is_file()


@pytest.mark.parametrize("layers", [
    [{"embedding": 8}, {"lstm": {"units": 6, "num_layers": 2, "bidirectional": True}}, {"dense": 3}],
    [{"embedding": 8}, {"lstm": {"units": 6, "bidirectional": True, "return_sequences": True}},
     {"lstm": {"units": 5}}, {"dense": 3}],
    [{"embedding": 8}, {"lstm": {"units": 6, "return_sequences": True}}, "global_avg_pool1d", {"dense": 3}],
])
def test_unpacked_lstm_computes_what_the_packed_one_does(layers):
    """The export's LSTM (no PackedSequence) against the model's own, on texts of every length, an empty one too."""
    from dlcli.config import SequentialModel
    from dlcli.export import exportable
    from dlcli.models import build_model

    torch.manual_seed(0)
    model, _ = build_model(SequentialModel(type="sequential", layers=layers), (12,), 3, vocab_size=30)
    model.eval()
    ids = torch.zeros((6, 12), dtype=torch.long)
    for i, n in enumerate([12, 1, 5, 0, 7, 11]):
        ids[i, :n] = torch.randint(2, 30, (n,))
    with torch.no_grad():
        expected, got = model(ids), exportable(model)(ids)
    assert torch.allclose(expected, got, atol=1e-6), (expected - got).abs().max()
