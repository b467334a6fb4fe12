"""`dlcli init` writes a starter config from the user's data that validates and trains as written; `dlcli schema`
prints the config's JSON Schema, which the committed dlcli.schema.json and every file in configs/ agree with."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from dlcli.config import load_config
from tests.test_image_folder import make_folder
from tests.test_tables import write_table, write_texts

ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "configs"


def init(cli, *args):
    result = cli("init", *args)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    return path, yaml.safe_load(path.read_text())


def train(cli, config, tmp_path, epochs):
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet", "--set", f"train.epochs={epochs}")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    return json.loads((run / "summary.json").read_text())["test"]["accuracy"]


def every_key_commented(text: str) -> bool:
    keys = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return all(" # " in line for line in keys)


# ---------------------------------------------------------------- init


def test_init_image_folder_trains_above_chance(cli, tmp_path):
    make_folder(tmp_path / "shapes")
    path, cfg = init(cli, tmp_path / "shapes")
    assert path == Path("shapes.yaml") and (tmp_path / "shapes.yaml").is_file()  # in the current directory
    data = cfg["data"]
    assert data["dataset"] == "image_folder" and data["root"] == str(tmp_path / "shapes")
    assert data["channels"] == 3 and data["image_size"] == 40  # RGB among the modes; sizes 24, 40, 64
    assert cfg["model"]["type"] == "cnn" and cfg["optimizer"] == {"name": "adam", "lr": 0.001}
    assert every_key_commented(path.read_text())
    load_config(path)
    assert train(cli, path, tmp_path, 10) > 0.6  # chance is 1/3


def test_init_grayscale_digits_keep_their_size(cli, tmp_path):
    for name in ("zero", "one"):
        folder = tmp_path / "digits" / "train" / name
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), i * 40).save(folder / f"{i}.png")
    _, cfg = init(cli, tmp_path / "digits" / "train")  # a split folder: the root is its parent
    assert cfg["data"]["root"] == str(tmp_path / "digits")
    assert (cfg["data"]["channels"], cfg["data"]["image_size"], cfg["data"]["augment"]) == (1, 28, [])
    assert cfg["name"] == "digits"


def test_init_class_folders_without_train_say_so(cli, tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "pets" / name / "a.png")
    result = cli("init", tmp_path / "pets")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 'pets'}/train/" in result.stderr and "mv cat dog train/" in result.stderr
    assert not list(tmp_path.glob("*.yaml"))


def test_init_table_trains_above_chance(cli, tmp_path):
    table = write_table(tmp_path / "table.csv")
    path, cfg = init(cli, table, "-o", tmp_path / "starter.yaml")
    assert path == tmp_path / "starter.yaml"
    data = cfg["data"]
    assert (data["dataset"], data["train_file"], data["label_column"]) == ("csv", str(table), "label")
    assert cfg["model"] == {"type": "mlp", "hidden": [64, 32], "dropout": 0.1}
    assert cfg["optimizer"]["lr"] == 0.003 and cfg["train"]["epochs"] == "auto"  # measured best on small tables
    text = path.read_text()
    assert every_key_commented(text) and "guessed: named 'label'" in text and "color" in text
    assert train(cli, path, tmp_path, 15) > 0.85  # chance is about 0.5


def test_init_guesses_the_label_column_and_names_it(cli, tmp_path):
    rows = {"Target": ["a", "b"] * 20, "size": [float(i) for i in range(40)], "kind": ["x", "y", "z", "w"] * 10}
    pq.write_table(pa.table(rows), tmp_path / "named.parquet")
    path, cfg = init(cli, tmp_path / "named.parquet")
    assert (cfg["data"]["dataset"], cfg["data"]["label_column"]) == ("parquet", "Target")  # any case
    assert "other columns with few values: kind" in path.read_text()  # size has no repeats

    (tmp_path / "last.csv").write_text("height,weight,species\n1.0,2.0,cat\n1.5,2.5,dog\n0.9,2.1,cat\n")
    path, cfg = init(cli, tmp_path / "last.csv")
    assert cfg["data"]["label_column"] == "species" and "guessed: the last column" in path.read_text()
    load_config(path)


def prices(path, n=300, seed=0, label="target"):
    """x1, x2, kind and a number (about 1000 +- 80, a different one in nearly every row) made from them."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write(f"x1,x2,kind,{label}\n")
        for _ in range(n):
            x1, x2, kind = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice("abc")
            price = 1000 + 60 * x1 - 40 * x2 + (50 if kind == "a" else 0) + rng.gauss(0, 5)
            f.write(f"{x1:.3f},{x2:.3f},{kind},{price:.2f}\n")
    return path


def test_init_numeric_label_writes_regression_that_trains(cli, tmp_path):
    table = prices(tmp_path / "prices.csv")
    result = cli("init", table)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output  # named 'target': no guess
    path = Path(result.stdout.strip().splitlines()[-1])
    cfg = yaml.safe_load(path.read_text())
    assert cfg["task"] == "regression" and cfg["data"]["label_column"] == "target"
    text = path.read_text()
    assert every_key_commented(text) and "label 'target' (a number: regression)" in result.stderr
    distinct = len({line.rsplit(",", 1)[1] for line in table.read_text().splitlines()[1:]})
    why = next(line for line in text.splitlines() if line.startswith("task:"))
    assert f"'target' holds numbers with {distinct} distinct values" in why and "judged on r2" in why
    load_config(path)
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet", "--set", "train.epochs=15")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / result.stdout.strip().splitlines()[-1] / "summary.json").read_text())
    assert summary["headline"] == "r2" and summary["test"]["r2"] > 0.8

    result = cli("init", prices(tmp_path / "unnamed.csv", label="price"))
    assert result.exit_code == 0, result.output
    assert "label column 'price' is a guess (the last column)" in result.stderr and "--label COLUMN" in result.stderr


def test_init_label_option_names_the_column(cli, tmp_path):
    prices(tmp_path / "prices.csv")
    path, cfg = init(cli, tmp_path / "prices.csv", "--label", "kind", "-o", tmp_path / "kind.yaml")
    assert cfg["data"]["label_column"] == "kind" and "task" not in cfg  # classes: today's config
    assert "named by --label" in path.read_text()
    load_config(path)

    codes = "x,code\n" + "".join(f"{i / 7:.3f},{i % 30}\n" for i in range(90))  # 30 classes coded 0..29
    (tmp_path / "codes.csv").write_text(codes)
    _, cfg = init(cli, tmp_path / "codes.csv", "--label", "code")
    assert "task" not in cfg and cfg["data"]["label_column"] == "code"

    for args, text in (([tmp_path / "prices.csv", "--label", "targte"], "--label targte: "
                        f"{tmp_path / 'prices.csv'} has no such column (did you mean 'target'?)"),
                       ([make_folder(tmp_path / "shapes", per_class=2, splits=("train",)) or tmp_path / "shapes",
                         "--label", "kind"], "image folder")):
        result = cli("init", *args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert text in result.stderr


def flag_table(path: Path, n: int = 200) -> Path:
    """20 numbers and three 0/1 label columns at the end, each decided by the numbers."""
    rng = random.Random(0)
    lines = [",".join([f"x{i}" for i in range(20)] + ["l0", "l1", "l2"])]
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in range(20)]
        lines.append(",".join(f"{v:.3f}" for v in x) + f",{int(x[0] > 0)},{int(x[1] > 0.5)},{int(x[2] < 0)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_init_label_list_writes_multilabel_and_trailing_flags_are_named(cli, tmp_path):
    table = flag_table(tmp_path / "flags.csv")
    path, cfg = init(cli, table, "--label", "l0,l1,l2", "-o", tmp_path / "ml.yaml")
    assert cfg["task"] == "multilabel" and cfg["data"]["label_column"] == ["l0", "l1", "l2"]
    assert load_config(path).task.entry_name == "multilabel"
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "-q", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output

    result = cli("init", table, "-o", tmp_path / "guess.yaml")  # the guess: the last column, and a word on the others
    assert result.exit_code == 0, result.output
    assert "the last 3 columns (l0, l1, l2) hold only 0/1" in result.stderr and "--label l0,l1,l2" in result.stderr
    for label, text in (("l0,l1,zz", "has no column 'zz' (its 23 columns: x0, x1, x2, "),
                        ("l0,x1", "'x1' holds values other than 0/1"), ("l0,,l1", "name each label column once")):
        result = cli("init", table, "--label", label, "-o", tmp_path / "bad.yaml")
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert text in result.stderr
    result = cli("init", table, "--label", "qqq")
    assert "(its 23 columns: x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, x16, x17, x18, " \
           "x19, l0, l1, l2)" in result.stderr  # every column, in the file's order


def test_init_reads_whole_number_years_as_a_yearly_series(cli, tmp_path):
    import math

    rows = [f"{year},{60 + 50 * math.sin((year - 1700) / 11 * 2 * math.pi):.1f}" for year in range(1700, 2009)]
    (tmp_path / "sunspots.csv").write_text("year,value\n" + "\n".join(rows) + "\n")
    path, cfg = init(cli, tmp_path / "sunspots.csv", "-o", tmp_path / "sun.yaml")
    assert cfg["task"]["type"] == "forecast" and cfg["data"]["dataset"] == "series"
    assert (cfg["data"]["time_column"], cfg["data"]["label_column"]) == ("year", "value")
    assert "yearly" in path.read_text()
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "-q", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    shuffled = rows[::7] + rows[1::7]  # years out of order are a feature, not a time
    (tmp_path / "cars.csv").write_text("year,km,price\n" + "\n".join(f"{r},{i}" for i, r in enumerate(shuffled)))
    _, cfg = init(cli, tmp_path / "cars.csv", "-o", tmp_path / "cars.yaml")
    assert cfg["data"]["dataset"] == "csv"
    kinds = "".join(f"{1900 + i},{i * 0.5},{'ab'[i % 2]}\n" for i in range(40))  # years and classes: a table
    (tmp_path / "kinds.csv").write_text("year,x,kind\n" + kinds)
    _, cfg = init(cli, tmp_path / "kinds.csv", "-o", tmp_path / "kinds.yaml")
    assert cfg["data"]["dataset"] == "csv" and cfg["data"]["label_column"] == "kind"


def test_init_text_csv_trains_above_chance(cli, tmp_path):
    texts = write_texts(tmp_path / "reviews.csv")
    path, cfg = init(cli, texts)
    data = cfg["data"]
    assert (data["dataset"], data["text_column"], data["label_column"]) == ("text_csv", "text", "label")
    assert data["max_length"] >= 14 and cfg["model"]["type"] == "lstm"  # texts of up to 14 words
    assert every_key_commented(path.read_text())
    assert train(cli, path, tmp_path, 5) > 0.6  # chance is 1/3


def test_init_refuses_to_overwrite(cli, tmp_path):
    table = write_table(tmp_path / "table.csv", n=40)
    (tmp_path / "table.yaml").write_text("mine\n")
    result = cli("init", table)
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "error: table.yaml exists; not overwriting it (delete it or choose another file with -o)"]
    assert (tmp_path / "table.yaml").read_text() == "mine\n"
    missing = cli("init", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "no such file or directory" in missing.stderr


def test_init_and_schema_do_not_import_torch(tmp_path):
    write_table(tmp_path / "t.csv", n=20)
    probe = ("import sys\nfrom dlcli.cli import app\n"
             "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    for args in (["init", str(tmp_path / "t.csv"), "-o", str(tmp_path / "t.yaml")], ["schema"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT,
                             check=False)
        assert out.returncode == 0 and out.stdout.strip().endswith("NO-TORCH"), (args, out.stderr[-300:])


# ---------------------------------------------------------------- schema


def test_committed_schema_is_current(cli):
    result = cli("schema")
    assert result.exit_code == 0, result.output
    committed = (ROOT / "dlcli.schema.json").read_text()
    assert result.stdout == committed, "dlcli.schema.json is stale: run `dlcli schema > dlcli.schema.json`"


def test_schema_spells_out_the_registries(cli):
    from dlcli.data.catalog import DATASETS
    from dlcli.models.layers import LAYERS
    from dlcli.optim import OPTIMIZERS

    schema = json.loads(cli("schema").stdout)
    assert schema["$schema"].endswith("2020-12/schema") and schema["required"] == ["data", "model"]
    defs = schema["$defs"]

    def resolve(ref):
        return defs[ref["$ref"].rsplit("/", 1)[-1]]

    kinds = {resolve(r)["properties"]["dataset"]["const"] for r in schema["properties"]["data"]["oneOf"]}
    assert kinds == set(DATASETS.entries)
    for ref in schema["properties"]["data"]["oneOf"]:
        kind = resolve(ref)
        assert kind["additionalProperties"] is False and "dataset" in kind["required"]
    csv = next(resolve(r) for r in schema["properties"]["data"]["oneOf"]
               if resolve(r)["properties"]["dataset"]["const"] == "csv")
    assert "train_file" in csv["required"] and "label_column" in csv["properties"]
    optimizers = schema["properties"]["optimizer"]["oneOf"]
    assert optimizers[0]["enum"] == sorted(OPTIMIZERS.entries)  # `optimizer: adam`
    assert {resolve(r)["properties"]["name"]["const"] for r in optimizers[1:]} == set(OPTIMIZERS.entries)
    layer = defs["SequentialModel"]["properties"]["layers"]["items"]["anyOf"]
    assert layer[0]["enum"] == sorted(LAYERS.entries) and set(layer[1]["properties"]) == set(LAYERS.entries)


def configs_and_starters(tmp_path, cli):
    make_folder(tmp_path / "shapes", per_class=4, splits=("train",))
    paths = sorted(CONFIGS.glob("*.yaml"))
    paths.append(init(cli, tmp_path / "shapes")[0])
    paths.append(init(cli, write_table(tmp_path / "table.csv", n=40))[0])
    paths.append(init(cli, write_texts(tmp_path / "texts.csv", n=40))[0])
    paths.append(init(cli, prices(tmp_path / "prices.csv", n=40))[0])
    return paths


def test_every_config_validates_against_the_schema(cli, tmp_path):
    schema = json.loads((ROOT / "dlcli.schema.json").read_text())
    for path in sorted(CONFIGS.glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../dlcli.schema.json", path
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed: the structure test stands")
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    for path in configs_and_starters(tmp_path, cli):
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
                  for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path, errors)
    for wrong in ({"data": {"dataset": "mnist", "train_file": "x.csv"}, "model": {"type": "mlp"}},
                  {"data": {"dataset": "mnist"}, "model": {"type": "sequential", "layers": [{"dense": {"unit": 3}}]}},
                  {"data": {"dataset": "mnist"}, "model": {"type": "mlp"}, "optimizer": {"name": "adam", "rho": 1}}):
        assert not validator.is_valid(wrong), wrong


# ---------------------------------------------------------------- seed 002


def test_seed_002_has_keras_parameter_count(cli):
    result = cli("summary", CONFIGS / "mnist_small_cnn.yaml", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parameters"] == 34_826
