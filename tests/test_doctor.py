"""`dlcli data check`: planted problems in a generated image folder and table are each found (exit 1), clean data
passes (exit 0), --json lists the findings, and a folder or table path works in place of a config."""

import csv
import json
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
