"""`csv` and `text_csv`: generated files with real signal train to better than chance, and evaluate and predict
reuse the preprocessing stored in the run."""

import csv
import json
import random
from pathlib import Path

import pytest

CONFIGS = Path(__file__).parent.parent / "configs"


def write_table(path, n=300, seed=0, gaps=True):
    """label = pos when x1 + 2*x2 (+1 if red) > 0: linearly separable after one-hot encoding."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x1", "x2", "color", "label"])
        for i in range(n):
            x1, x2, color = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(["red", "green", "blue"])
            label = "pos" if x1 + 2 * x2 + (1 if color == "red" else 0) > 0 else "neg"
            w.writerow([f"{x1:.3f}", "" if gaps and i % 50 == 0 else f"{x2:.3f}", color, label])
    return path


TOPICS = {"sport": ["goal", "match", "team", "score"], "tech": ["code", "chip", "robot", "data"],
          "food": ["pizza", "bread", "soup", "taste"]}


def write_texts(path, n=300, seed=0):
    rng = random.Random(seed)
    filler = ["the", "a", "today", "really", "very", "new", "big", "and"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(n):
            topic = rng.choice(sorted(TOPICS))
            words = [rng.choice(filler) for _ in range(rng.randint(3, 12))] + rng.sample(TOPICS[topic], 2)
            rng.shuffle(words)
            w.writerow([" ".join(words).capitalize() + ".", topic])
    return path


def train(cli, config, tmp_path, *sets):
    args = []
    for s in sets:
        args += ["--set", s]
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet", *args)
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / result.stdout.strip().splitlines()[-1]


def test_csv_table_trains_evaluates_and_predicts_rows(cli, tmp_path):
    table = write_table(tmp_path / "table.csv")
    run = train(cli, CONFIGS / "table_csv.yaml", tmp_path, f"data.train_file={table}", "train.epochs=15")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.85  # chance is about 0.5
    pre = json.loads((run / "data.json").read_text())["preprocessing"]
    assert pre["kind"] == "tabular" and pre["numeric"] == ["x1", "x2"]
    assert pre["categories"] == {"color": ["blue", "green", "red"]}

    evaluated = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"])

    rows = tmp_path / "rows.csv"
    rows.write_text("x1,x2,color\n3.0,3.0,red\n-3.0,-3.0,blue\n0.1,,green\n")
    predicted = cli("predict", rows, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json", "-k", "1")
    assert predicted.exit_code == 0, predicted.output
    answers = json.loads(predicted.stdout)
    assert [a["row"] for a in answers] == [f"{rows}:2", f"{rows}:3", f"{rows}:4"]
    assert [a["top"][0]["label"] for a in answers[:2]] == ["pos", "neg"]


def test_text_csv_trains_evaluates_and_predicts_texts(cli, tmp_path):
    texts = write_texts(tmp_path / "text.csv")
    run = train(cli, CONFIGS / "text_csv.yaml", tmp_path, f"data.train_file={texts}", "train.epochs=6")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.8  # chance is 1/3
    vocab = json.loads((run / "data.json").read_text())["preprocessing"]["vocab"]
    assert vocab[:2] == ["<pad>", "<unk>"] and "pizza" in vocab

    evaluated = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"])

    lines = tmp_path / "lines.txt"
    lines.write_text("Robot code and chip data\n\nMatch goal team score\n")
    predicted = cli("predict", "Pizza and bread soup taste", "--text-file", lines, "--run", run.name,
                    "--runs-dir", tmp_path / "runs", "--json", "-k", "1")
    assert predicted.exit_code == 0, predicted.output
    answers = json.loads(predicted.stdout)
    assert [a["text"] for a in answers] == ["Pizza and bread soup taste", "Robot code and chip data",
                                            "Match goal team score"]
    assert [a["top"][0]["label"] for a in answers] == ["food", "tech", "sport"]


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    from dlcli.config import validate_config
    from dlcli.data import load_data

    path = write_texts(tmp_path / "text.csv", n=50)
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(["zebra zebra zebra", "food"])  # the only row with three tokens
    # Seed 0 cuts the planted row into the validation split (asserted below): a vocabulary fitted on every row
    # would then hold "zebra" and this test would fail.
    cfg = validate_config({"seed": 0, "data": {"dataset": "text_csv", "train_file": str(path), "val_split": 0.2,
                                               "test_split": 0.2}, "model": {"type": "lstm"}})
    data = load_data(cfg)

    def planted(split):
        return [row[:4].tolist() for row in split.x if int((row != 0).sum()) == 3]

    assert planted(data.train) == [] and len(planted(data.val) + planted(data.test)) == 1
    vocab = data.preprocessing["vocab"]
    assert "zebra" not in vocab and "pizza" in vocab
    assert (planted(data.val) + planted(data.test))[0] == [1, 1, 1, 0]  # read back as <unk>
    assert data.train.x.dtype.is_floating_point is False and data.vocab_size == len(vocab)


@pytest.mark.parametrize("content, sets, message", [
    ("a,b\n1,x\n2,y\n", [], "no column 'label'"),
    ("x1,label\n1.5,a\n2.5,b\noops,a\n" + "".join(f"{i},b\n" for i in range(20)), [],
     "line 4, column 'x1': 'oops' is not a number"),
    ("x1,label\n1.5,a\n,b\n", ["data.missing=error"], "line 3, column 'x1' is empty"),
    ("x1,label\n1.5,a\n2.0,a\n", [], "has only one class"),
])
def test_malformed_tables_give_one_line(cli, tmp_path, content, sets, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    args = []
    for s in [f"data.train_file={path}", *sets]:
        args += ["--set", s]
    result = cli("train", CONFIGS / "table_csv.yaml", "--runs-dir", tmp_path / "runs", *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_empty_text_is_one_line(cli, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"hello there",a\n"",b\n')
    result = cli("train", CONFIGS / "text_csv.yaml", "--runs-dir", tmp_path / "runs", "--set",
                 f"data.train_file={path}")
    assert result.exit_code == 2 and "line 3, column 'text' is empty" in result.stderr


def test_text_layers_in_a_sequential_model(cli, tmp_path):
    texts = write_texts(tmp_path / "text.csv", n=150)
    model = ("model={type: sequential, layers: [{embedding: 16}, {lstm: {units: 8, return_sequences: true}}, "
             "global_avg_pool1d, {dense: 3}]}")
    run = train(cli, CONFIGS / "text_csv.yaml", tmp_path, f"data.train_file={texts}", model, "train.epochs=2")
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    bad = cli("validate", CONFIGS / "text_csv.yaml", "--set", f"data.train_file={texts}")
    assert bad.exit_code == 0
    wrong = cli("summary", CONFIGS / "text_csv.yaml", "--set", f"data.train_file={texts}", "--set",
                "model={type: sequential, layers: [{embedding: 8}, flatten, {dense: 3}]}")
    assert wrong.exit_code == 2 and "(flatten): cannot read an embedding's token vectors" in wrong.stderr
    assert "then global_avg_pool1d, global_max_pool1d or an lstm/gru" in wrong.stderr
