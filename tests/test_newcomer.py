"""Where a new user stalled (issue 26): errors that name the run or the --set at fault, init and data check on a
bare table, flags in --help, predict's compact view and runs compare's differences."""

import json
import time

import pytest
import yaml

from tests.conftest import tiny_config


# ---------------------------------------------------------------- --set errors name the override


def test_set_errors_name_the_override_not_the_file(cli, write_config, tmp_path):
    path = write_config(tiny_config())
    result = cli("validate", path, "--set", "train.epoch=3")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith("error: --set train.epoch=3: train.epoch: unknown key") and "'epochs'" in line
    assert path not in line and "\n" not in line

    result = cli("validate", path, "--set", "train.epochs=x")
    assert result.exit_code == 2 and result.stderr.startswith("error: --set train.epochs=x: train.epochs:")
    assert "'auto'" in result.stderr and "got 'x'" in result.stderr
    import importlib.util

    if importlib.util.find_spec("optuna"):  # sweep --set is checked the same way
        result = cli("sweep", path, "--set", "train.epoch=3", "--runs-dir", tmp_path / "runs")
        assert result.exit_code == 2 and result.stderr.startswith("error: --set train.epoch=3: train.epoch:")

    # a key in the file itself is still the file's
    cfg = tiny_config()
    cfg["train"]["epoch"] = 3
    result = cli("validate", write_config(cfg, "typo.yaml"), "--set", "train.epochs=2")
    assert result.exit_code == 2 and "typo.yaml: train.epoch: unknown key" in result.stderr
    assert "--set" not in result.stderr


# ---------------------------------------------------------------- --help


def test_help_shows_flags_without_a_value(cli):
    import typer

    from dlcli.cli import app

    def paths(command, prefix=()):
        yield prefix
        for name, sub in getattr(command, "commands", {}).items():  # a group's sub-commands
            yield from paths(sub, (*prefix, name))

    seen = 0
    for path in paths(typer.main.get_command(app)):
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "<bool>" not in result.stdout, f"dlcli {' '.join(path)} --help shows a flag taking a value"
        seen += 1
    assert seen > 15  # every command and sub-command was looked at
    shown = cli("predict", "--help").stdout
    assert "--json" in shown and "<int>" in shown  # options that take a value still say what


# ---------------------------------------------------------------- runs compare


def test_compare_keeps_threads_out_of_the_config_differences(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    ids = []
    for lr, threads in ((0.01, 1), (0.02, 2)):
        cfg = tiny_config(optimizer={"name": "adam", "lr": lr}, train={"epochs": 1, "batch_size": 64})
        result = cli("train", write_config(cfg, f"c{lr}.yaml"), "--runs-dir", root, "-q")
        assert result.exit_code == 0, result.output
        run = root / result.stdout.strip()
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["train"]["threads"] = threads  # as training records a count it chose from the idle cores
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "threads": threads}))
        ids.append(run.name)
    report = json.loads(cli("runs", "compare", *ids, "--runs-dir", root, "--json").stdout)
    assert list(report["differ"]) == ["optimizer.lr"]
    assert report["metrics"]["threads"] == [1, 2]
    seconds = report["metrics"]["train seconds"]
    shown = cli("runs", "compare", *ids, "--runs-dir", root).stdout
    assert "train.threads" not in shown
    line = next(row for row in shown.splitlines() if "train seconds" in row)
    assert all(f"{s:.1f} s" in line for s in seconds) and f"{seconds[0]:.4f}" not in line


# ---------------------------------------------------------------- predict and serve with a run of another kind


def table_csv(path, rows=120, seed=0, extra=None):
    """A small table whose label follows x1 and colour; `extra(i)` adds a column named by its first value."""
    import random

    rng = random.Random(seed)
    lines = ["x1,x2,colour,label" + (f",{extra(None)}" if extra else "")]
    for i in range(rows):
        x1, colour = rng.uniform(-1, 1), rng.choice(["red", "blue"])
        label = "yes" if x1 + (0.5 if colour == "red" else -0.5) > 0 else "no"
        lines.append(f"{x1:.3f},{rng.uniform(-1, 1):.3f},{colour},{label}" + (f",{extra(i)}" if extra else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """An image run (synthetic 8x8 grayscale) and, after it, a table run, in one runs directory."""
    from typer.testing import CliRunner

    from dlcli.cli import app

    tmp = tmp_path_factory.mktemp("kinds")
    root = tmp / "runs"
    image_cfg = tmp / "image.yaml"
    image_cfg.write_text(yaml.safe_dump(tiny_config(train={"epochs": 1, "batch_size": 64})))
    table = table_csv(tmp / "rows.csv")
    table_cfg = tmp / "table.yaml"
    table_cfg.write_text(yaml.safe_dump({
        "name": "rows", "data": {"dataset": "csv", "train_file": str(table), "val_split": 0.2, "test_split": 0.2},
        "model": {"type": "mlp", "hidden": [8]}, "train": {"epochs": 1, "batch_size": 32}}))
    ids = []
    for cfg in (image_cfg, table_cfg):
        if ids:  # run ids stamp the second a run started: the table run must be the later one for `latest`
            time.sleep(1.05 - time.time() % 1)
        result = CliRunner().invoke(app, ["train", str(cfg), "--runs-dir", str(root), "-q"])
        assert result.exit_code == 0, result.output
        ids.append(result.stdout.strip())
    return root, ids[0], ids[1], table


def png(path, side=8):
    from PIL import Image

    Image.new("L", (side, side), 200).save(path)
    return path


def test_predict_names_the_run_and_one_that_takes_the_input(cli, two_runs, tmp_path):
    root, image_run, table_run, table = two_runs
    shirt = png(tmp_path / "shirt.png")
    result = cli("predict", shirt, "--runs-dir", root)  # latest: the table run
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.stderr.strip()
    assert "\n" not in line and "malformed CSV" not in line
    assert f"run {table_run} is a table model: it takes rows in CSV or Parquet files, not images" in line
    assert f"pass --run with an image run, e.g. {image_run} (the most recent)" in line

    result = cli("predict", table, "--run", image_run, "--runs-dir", root)
    assert result.exit_code == 2
    assert f"run {image_run} is an image model" in result.stderr and f"e.g. {table_run}" in result.stderr

    lone = tmp_path / "lone"
    result = cli("train", write_table_config(tmp_path, table), "--runs-dir", lone, "-q")
    assert result.exit_code == 0, result.output
    result = cli("predict", shirt, "--runs-dir", lone)
    assert result.exit_code == 2 and f"train an image run first: none in {lone}/ takes them" in result.stderr


def write_table_config(tmp_path, table):
    path = tmp_path / "lone.yaml"
    path.write_text(yaml.safe_dump({"name": "lone", "data": {"dataset": "csv", "train_file": str(table)},
                                    "model": {"type": "mlp", "hidden": [8]}, "train": {"epochs": 1}}))
    return path


def test_serve_answers_an_image_sent_to_a_table_run_with_the_same_line(two_runs, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dlcli.serve.app import create_app

    root, image_run, table_run, _ = two_runs
    with TestClient(create_app(root / table_run), base_url="http://127.0.0.1") as client:
        sent = client.post("/predict", content=png(tmp_path / "a.png").read_bytes(),
                           headers={"content-type": "image/png"})
    assert sent.status_code == 415
    detail = json.dumps(sent.json())
    assert f"run {table_run} is a table model" in detail and f"serve an image run, e.g. {image_run}" in detail


def test_predict_shows_many_inputs_one_line_each(cli, two_runs, tmp_path):
    root, image_run, table_run, table = two_runs
    folder = tmp_path / "a folder with a long name for every picture"
    folder.mkdir()
    names = [png(folder / f"picture-number-{i}-of-a-long-series.png") for i in range(5)]
    shown = cli("predict", folder, "--run", image_run, "--runs-dir", root)
    assert shown.exit_code == 0, shown.output
    answers = json.loads(cli("predict", folder, "--run", image_run, "--runs-dir", root, "--json").stdout)
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == len(names) == len(answers)
    for line, answer in zip(lines, answers):
        best = answer["top"][0]
        assert line == f"{answer['image']}  {best['label']} ({best['probability']:.4f})"
    one = cli("predict", names[0], "--run", image_run, "--runs-dir", root).stdout
    assert "probability" in one  # a few inputs keep the full top-k table

    rows = cli("predict", table, "--runs-dir", root).stdout.strip().splitlines()
    assert len(rows) == 120 and all(r.split("  ")[-1].split(" ")[0] in ("yes", "no") for r in rows)


# ---------------------------------------------------------------- init and data check on a bare table


def with_ids(path, rows=120):
    """table_csv's table with an R-style row number first and a person's name: both name rows."""
    table_csv(path, rows, extra=lambda i: "name" if i is None else f"person {i * 7919 % 1000:03d}")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([f"rownames,{lines[0]}"] + [f"{i},{line}" for i, line in enumerate(lines[1:], 1)]))
    return path


def test_id_like_columns():
    import pyarrow as pa

    from dlcli.data.tables import id_like

    n = 100
    assert "row number" in id_like("rownames", pa.array(list(range(n, 0, -1))), True)
    assert id_like("customer_id", pa.array([17 * i + 5 for i in range(n)]), True)
    assert id_like("name", pa.array([f"n{i}" for i in range(n)]), False)
    assert id_like("income", pa.array([17 * i + 5 for i in range(n)]), True) is None  # whole numbers that measure
    assert id_like("x", pa.array([i * 0.37 for i in range(n)]), True) is None  # distinct measurements
    assert id_like("colour", pa.array([f"c{i % 40}" for i in range(n)]), False) is None  # values that repeat
    assert id_like("id", pa.array(list(range(10))), True) is None  # too few rows to tell


def test_init_names_the_config_and_drops_id_columns(cli, tmp_path):
    table = with_ids(tmp_path / "people.csv")
    out = tmp_path / "flowers.yaml"
    result = cli("init", table, "--name", "flowers", "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    cfg = yaml.safe_load(text)
    assert cfg["name"] == "flowers" and cfg["data"]["label_column"] == "label"
    assert cfg["data"]["drop_columns"] == ["rownames", "name"]
    line = next(row for row in text.splitlines() if row.startswith("  drop_columns:"))
    assert "row number" in line and "# " in line  # says why, in the config itself

    result = cli("train", out, "--set", "train.epochs=1", "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "runs" / result.stdout.strip().splitlines()[-1] / "data.json").read_text())["preprocessing"]
    assert sorted([*state["numeric"], *state["categories"]]) == ["colour", "x1", "x2"]

    result = cli("init", table, "--name", "two words", "-o", tmp_path / "other.yaml")
    assert result.exit_code == 2 and "--name 'two words'" in result.stderr
    assert not (tmp_path / "other.yaml").exists()


def test_drop_columns_must_name_columns(cli, tmp_path, write_config):
    table = with_ids(tmp_path / "people.csv")
    cfg = {"name": "t", "data": {"dataset": "csv", "train_file": str(table), "drop_columns": ["rownamez"]},
           "model": {"type": "mlp", "hidden": [8]}, "train": {"epochs": 1}}
    path = write_config(cfg)
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: data.drop_columns: 'rownamez' is not a column of {table} "
                                     f"(did you mean 'rownames'?)")
    report = json.loads(cli("data", "check", path, "--json").stdout)
    assert not report["ok"] and any("'rownamez'" in f["message"] for f in report["findings"])
    result = cli("train", path, "--set", "data.drop_columns=[label]", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "'label' is the label column" in result.stderr


def test_data_check_on_a_bare_table_guesses_the_label_as_init_does(cli, tmp_path):
    table = tmp_path / "iris.csv"
    table.write_text(with_ids(tmp_path / "t.csv").read_text().replace(",label", ",species"))
    report = json.loads(cli("data", "check", table, "--json").stdout)
    assert report["ok"], report["findings"]
    roles = {c["name"]: c["role"] for c in report["columns"]}
    assert roles["species"] == "label"
    guessed = [f["message"] for f in report["findings"] if f["check"] == "guessed"]
    assert guessed and "'species'" in guessed[0] and "the last column" in guessed[0]
    flagged = {f["message"].split("'")[1] for f in report["findings"] if f["check"] == "id-column"}
    assert flagged == {"rownames", "name"}
    assert cli("init", table, "-o", tmp_path / "i.yaml").exit_code == 0
    assert yaml.safe_load((tmp_path / "i.yaml").read_text())["data"]["label_column"] == "species"

    prices = tmp_path / "prices.csv"  # a last column of numbers with many values: init writes task: regression
    prices.write_text("a,b,price\n" + "".join(f"{i % 7},{i % 3},{i * 1.37 + 2:.2f}\n" for i in range(80)))
    report = json.loads(cli("data", "check", prices, "--json").stdout)
    assert report["ok"], report["findings"] and "targets" in report
    assert any("task: regression" in f["message"] for f in report["findings"] if f["check"] == "guessed")


def test_many_classes_are_folded(cli, tmp_path):
    from dlcli.tasks.classification import FOLD, class_findings

    counts = {"train": {"big": 5000, **{f"c{i:03d}": 2 + i % 3 for i in range(300)}}}
    findings, section = class_findings(counts)
    near = [f for f in findings if f[1] == "near-empty-class"]
    assert len(findings) <= 4 and len(near) == 1
    assert near[0][2].startswith("300 classes have fewer than 5 training samples")
    assert near[0][2].count("(2 in train)") == FOLD  # the worst first
    assert len(section["names"]) == 301  # --json keeps every class's count

    few, _ = class_findings({"train": {"a": 4, "b": 5, "c": 6}})
    (message,) = [m for _, check, m in few if check == "near-empty-class"]
    assert message == "class 'a' has only 4 training samples (fewer than 5: too few to learn it or to score it)"
    rare, _ = class_findings({"train": {"a": 9, "b": 1000}})
    assert "class 'a' has 9 training samples, 0.9% of the largest class's 1,000" in [m for *_, m in rare]

    table = tmp_path / "many.csv"
    table.write_text("x,label\n" + "".join(f"{i % 13},k{(i * i) % 97 if i % 2 else 0}\n" for i in range(600)))
    shown = cli("data", "check", table).stdout
    assert "the 20 with the fewest training samples are shown" in shown and "more" in shown
    assert shown.count(" k") < 40  # not a row per class


def test_python_predict_names_the_run_too(two_runs, tmp_path):
    from dlcli import api
    from dlcli.errors import DlcliError

    root, image_run, table_run, _ = two_runs
    with pytest.raises(DlcliError) as err:
        api.load(table_run, runs_dir=root).predict([str(png(tmp_path / "a.png"))])
    assert str(err.value).startswith(f"run {table_run} is a table model") and f"load an image run, e.g. {image_run}" \
        in str(err.value)
