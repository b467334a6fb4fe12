"""`dlcli data check`: planted problems in a generated image folder and table are each found (exit 1), clean data
passes (exit 0), --json lists the findings, and a folder or table path works in place of a config."""

import csv
import json
import random
import shutil

from tests.conftest import tiny_config
from tests.test_image_folder import make_folder
from tests.test_tables import write_table, write_texts


def findings(result) -> dict[str, list[dict]]:
    """--json output -> {check: [finding, ...]}."""
    report = json.loads(result.stdout)
    out = {}
    for f in report["findings"]:
        out.setdefault(f["check"], []).append(f)
    return out


def test_clean_folder_passes(cli, tmp_path):
    make_folder(tmp_path / "shapes", per_class=12)
    result = cli("data", "check", tmp_path / "shapes")
    assert result.exit_code == 0, result.output
    assert "nothing blocks training" in result.stdout
    assert "cross" in result.stdout and "most common" in result.stdout  # the classes and images tables


def test_planted_folder_problems_are_found(cli, write_config, tmp_path):
    root = tmp_path / "shapes"
    make_folder(root, per_class=12)
    leaked = next((root / "train" / "cross").iterdir())
    copy = root / "test" / "disc" / f"copy{leaked.suffix}"
    shutil.copyfile(leaked, copy)  # the same file in train and test, even under another class
    png = next(p for p in (root / "train" / "disc").iterdir() if p.suffix == ".png")
    (root / "train" / "disc" / "cut.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    (root / "train" / "square" / "empty.jpg").write_bytes(b"")
    (root / "train" / "nothing").mkdir()
    (root / "train" / "cross" / "notes.txt").write_text("not an image")

    config = write_config(tiny_config(data={"dataset": "image_folder", "root": str(root), "image_size": 16}))
    result = cli("data", "check", config)
    assert result.exit_code == 1, result.output
    for text in ("leakage", str(leaked), str(copy), "cut.png", "zero-byte", "empty.jpg", "empty-class",
                 "'nothing'", "notes.txt", "errors block training"):
        assert text in result.stdout, text

    result = cli("data", "check", config, "--json")
    assert result.exit_code == 1
    found = findings(result)
    assert {"leakage", "unreadable-image", "zero-byte", "empty-class", "ignored-file"} <= set(found)
    assert all(f["severity"] == "error" for f in found["leakage"] + found["zero-byte"] + found["empty-class"])
    assert set(found["leakage"][0]["paths"]) == {str(leaked), str(copy)}
    assert found["unreadable-image"][0]["paths"] == [str(root / "train" / "disc" / "cut.png")]
    assert found["ignored-file"][0]["severity"] == "warning"
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["classes"]["counts"]["train"]["nothing"] == 0
    assert report["images"]["train"]["files"] == 12 * 3 + 2  # the cut and the empty file are listed, not decodable


def write_rows(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def planted_tables(tmp_path):
    """train.csv: a constant column, gaps in x2 (write_table's), a label seen once; test.csv: repeats a train row."""
    with open(write_table(tmp_path / "base.csv")) as f:
        header, *rows = list(csv.reader(f))
    train = [[*r[:3], "same", r[3]] for r in rows]
    train[7][-1] = "maybe"
    write_rows(tmp_path / "train.csv", [*header[:3], "const", header[3]], train)
    with open(write_table(tmp_path / "base_test.csv", n=40, seed=1)) as f:
        _, *rows = list(csv.reader(f))
    test = [[*r[:3], "same", r[3]] for r in rows] + [train[12]]
    write_rows(tmp_path / "test.csv", [*header[:3], "const", header[3]], test)
    return tmp_path / "train.csv", tmp_path / "test.csv"


def test_planted_table_problems_are_found(cli, write_config, tmp_path):
    train, test = planted_tables(tmp_path)
    config = write_config(tiny_config(data={"dataset": "csv", "train_file": str(train), "test_file": str(test)}))
    result = cli("data", "check", config)
    assert result.exit_code == 1, result.output
    for text in ("constant-column", "'const'", "missing-values", "'x2': 6 of 300", "label-seen-once", "'maybe'",
                 "leakage", f"{test}: line 42", f"{train}: line 14"):
        assert text in result.stdout, text

    result = cli("data", "check", config, "--json")
    assert result.exit_code == 1
    found = findings(result)
    assert {"constant-column", "missing-values", "leakage", "label-seen-once"} <= set(found)
    assert [f["severity"] for f in found["leakage"]] == ["error"]
    assert found["constant-column"][0]["severity"] == found["missing-values"][0]["severity"] == "warning"
    report = json.loads(result.stdout)
    columns = {c["name"]: c for c in report["columns"]}
    assert columns["x2"]["missing"] == 6 and columns["x2"]["role"] == "numeric"
    assert columns["color"]["role"] == "categorical" and columns["const"]["distinct"] == 1
    assert report["classes"]["counts"]["train"]["maybe"] == 1
    assert report["rows"] == {"train": 300, "test": 41}


def test_clean_table_passes_and_a_path_works(cli, write_config, tmp_path):
    train = write_table(tmp_path / "train.csv", gaps=False)
    test = write_table(tmp_path / "test.csv", n=60, seed=1, gaps=False)
    config = write_config(tiny_config(data={"dataset": "csv", "train_file": str(train), "test_file": str(test)}))
    result = cli("data", "check", config)
    assert result.exit_code == 0, result.output
    assert "nothing blocks training" in result.stdout

    result = cli("data", "check", train, "--json")  # a table path: the kind and its default keys are inferred
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == "csv" and report["ok"] and report["findings"] == []
    assert [c["role"] for c in report["columns"]] == ["numeric", "numeric", "categorical", "label"]


def test_a_path_with_planted_problems_and_a_missing_label_column(cli, tmp_path):
    train, _ = planted_tables(tmp_path)
    result = cli("data", "check", train, "--json")  # warnings only: no test_file, so no leakage
    assert result.exit_code == 0, result.output
    assert {"constant-column", "missing-values", "label-seen-once"} <= set(findings(result))

    result = cli("data", "check", train, "--set", "data.label_column=target", "--json")
    assert result.exit_code == 1
    assert findings(result)["label-column-missing"][0]["severity"] == "error"


def test_texts_report_lengths_and_coverage(cli, tmp_path):
    train = write_texts(tmp_path / "train.csv")
    test = write_rows(tmp_path / "test.csv", ["text", "label"], [["zebra quantum goal", "sport"],
                                                                 ["unknown words here", "tech"]])
    result = cli("data", "check", train, "--set", "dataset=text_csv", "--set", f"test_file={test}",
                 "--set", "max_length=6", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == "text_csv" and report["texts"]["test_coverage"] == round(1 / 6, 4)
    assert report["texts"]["train"]["min_tokens"] >= 5 and report["texts"]["train"]["cut_share"] > 0.1
    assert {"texts-cut", "low-coverage", "class-missing-from-split"} <= set(findings(result))


def test_bad_input_is_one_line_with_exit_2(cli, tmp_path):
    for target in (tmp_path / "nowhere", tmp_path / "nowhere.yaml"):
        result = cli("data", "check", target)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert str(target) in result.output
    (tmp_path / "notes.txt").write_text("hello")
    result = cli("data", "check", tmp_path / "notes.txt")
    assert result.exit_code == 2 and "not a config" in result.output


# ---------------------------------------------------------------- the task's targets


def measurements(path, n=120, seed=0, planted=()):
    """x, kind, price: a number with a different value in nearly every row; `planted`: (row, price cell) pairs."""
    rng = random.Random(seed)
    rows = [[f"{rng.gauss(0, 1):.3f}", rng.choice("ab"), f"{20 + 3 * rng.gauss(0, 1):.2f}"] for _ in range(n)]
    for i, cell in planted:
        rows[i][2] = cell
    return write_rows(path, ["x", "kind", "price"], rows)


def test_a_numeric_label_is_refused_as_training_refuses_it(cli, write_config, tmp_path):
    table = measurements(tmp_path / "cars.csv")
    cfg = tiny_config(data={"dataset": "csv", "train_file": str(table), "label_column": "price"})
    config = write_config(cfg)
    refused = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert refused.exit_code == 2, refused.output

    result = cli("data", "check", config, "--json")
    assert result.exit_code == 1, result.output
    found = findings(result)
    assert [f["severity"] for f in found["numeric-label"]] == ["error"]
    assert f"error: {found['numeric-label'][0]['message']}" == refused.stderr.strip()  # word for word
    assert "set `task: regression`" in refused.stderr and "'price'" in refused.stderr
    assert "label-seen-once" not in found and "classes" not in json.loads(result.stdout)  # no table of 120 classes

    spelled = write_config({**cfg, "task": "classification"}, "spelled.yaml")
    result = cli("data", "check", spelled, "--json")  # classifying it anyway is the user's call
    assert result.exit_code == 0 and "numeric-label" not in findings(result)
    assert "label-seen-once" in findings(result)
    result = cli("data", "check", table, "--set", "label_column=price", "--set", "task=regression")
    assert result.exit_code == 0 and "nothing blocks training" in result.stdout, result.output


def test_regression_targets_range_outliers_gaps_and_constants(cli, write_config, tmp_path):
    train = measurements(tmp_path / "train.csv", planted=[(4, "cheap"), (9, ""), (30, "2100"), (31, "-400")])
    test = write_rows(tmp_path / "test.csv", ["x", "kind", "price"], [["0.1", "a", "7"]] * 10)
    cfg = tiny_config(task="regression", data={"dataset": "csv", "train_file": str(train), "test_file": str(test),
                                               "label_column": "price"})
    result = cli("data", "check", write_config(cfg), "--json")
    assert result.exit_code == 1, result.output
    found = findings(result)
    gaps = found["missing-target"][0]
    assert gaps["severity"] == "error" and f"{train}: 2 of 120 rows" in gaps["message"]
    assert f"{train}: line 6" in gaps["message"] and "data.missing: drop" in gaps["message"]
    outliers = found["outliers"][0]
    assert outliers["severity"] == "warning" and "2 train values" in outliers["message"]
    assert f"{train}: line 32: 2100, {train}: line 33: -400" in outliers["message"]  # the farthest first
    assert "task.loss: huber" in outliers["message"]
    assert found["constant-target"][0]["severity"] == "warning" and "test r2" in found["constant-target"][0]["message"]
    assert not {"imbalance", "label-seen-once", "near-empty-class"} & set(found)  # no class advice for a number
    report = json.loads(result.stdout)
    assert "classes" not in report and "class weights" not in result.stdout
    stats = report["targets"]["stats"]
    assert stats["train"]["price"]["rows"] == 118 and stats["train"]["price"]["max"] == 2100
    assert stats["train"]["price"]["outliers"] == 2 and stats["test"]["price"]["std"] == 0

    dropped = write_config({**cfg, "task": {"type": "regression", "loss": "huber"},
                            "data": {**cfg["data"], "missing": "drop", "test_file": None}}, "drop.yaml")
    result = cli("data", "check", dropped)
    assert result.exit_code == 0, result.output
    for text in ("targets", "min", "outliers", "dropped (data.missing: drop)", "task.loss: huber keeps them"):
        assert text in result.stdout, text

    constant = write_rows(tmp_path / "constant.csv", ["x", "price"], [[str(i), "5"] for i in range(30)])
    result = cli("data", "check", constant, "--set", "label_column=price", "--set", "task=regression", "--json")
    assert result.exit_code == 1 and findings(result)["constant-target"][0]["severity"] == "error"


def test_multilabel_label_frequencies_and_labels_never_on(cli, write_config, tmp_path):
    rows = [[f"{i / 10:.1f}", str(i % 2), "1" if i < 3 else "0", "0"] for i in range(40)]
    rows[7][2] = "maybe"
    train = write_rows(tmp_path / "train.csv", ["x", "a", "b", "c"], rows)
    test = write_rows(tmp_path / "test.csv", ["x", "a", "b", "c"], [["0.5", "1", "0", "1"], ["0.2", "0", "0", "0"]])
    cfg = tiny_config(task="multilabel", data={"dataset": "csv", "train_file": str(train), "test_file": str(test),
                                               "label_column": ["a", "b", "c"]})
    result = cli("data", "check", write_config(cfg), "--json")
    assert result.exit_code == 1, result.output
    found = findings(result)
    assert found["bad-label-cell"][0]["severity"] == "error" and f"{train}: line 9" in found["bad-label-cell"][0][
        "message"]
    never = found["label-never-on"][0]
    assert never["severity"] == "error" and "label 'c' is on in 1 test row but never in train" in never["message"]
    assert "label 'b' is on in only 3 of 39" in found["rare-label"][0]["message"]
    assert "task.pos_weight: auto" in found["rare-label"][0]["message"]
    assert {f["severity"] for f in found["no-label"]} == {"info"}
    assert not {"imbalance", "label-seen-once"} & set(found)
    labels = json.loads(result.stdout)["labels"]
    assert labels["counts"] == {"train": {"a": 19, "b": 3, "c": 0}, "test": {"a": 1, "b": 0, "c": 1}}
    assert labels["rows"] == {"train": 39, "test": 2} and labels["no_label"]["test"] == 1

    joined = write_rows(tmp_path / "joined.csv", ["x", "tags"], [[str(i), "a|b" if i % 2 else "a"] for i in range(20)])
    test = write_rows(tmp_path / "joined_test.csv", ["x", "tags"], [["1", "a|z"], ["2", ""]])
    result = cli("data", "check", joined, "--set", "task=multilabel", "--set", "label_column=tags",
                 "--set", 'label_separator="|"', "--set", f"test_file={test}")
    assert result.exit_code == 1, result.output
    for text in ("labels: rows on", "(no label)", "label-not-in-train", "label 'z' is on in 1 test row",
                 "label-always-on", "label 'a' is on in every training row"):
        assert text in result.stdout, text


def test_a_numeric_label_shows_its_arrow_type_and_no_features_is_an_error(cli, write_config, tmp_path):
    rows = "".join(f"{1900 + i},{i % 5},{i * 0.5},{'true' if i % 2 else 'false'}\n" for i in range(40))
    (tmp_path / "t.csv").write_text("year,code,value,flag\n" + rows)
    data = {"dataset": "csv", "train_file": str(tmp_path / "t.csv"), "label_column": "code"}
    report = json.loads(cli("data", "check", write_config(tiny_config(data=data)), "--json").stdout)
    assert {c["name"]: c["arrow_type"] for c in report["columns"]} == {"year": "int64", "code": "int64",
                                                                         "value": "double", "flag": "bool"}
    data.update(label_column="value", drop_columns=["year", "code", "flag"])
    result = cli("data", "check", write_config(tiny_config(task="regression", data=data)), "--json")
    found = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert result.exit_code == 1 and found["no-features"]["severity"] == "error"
