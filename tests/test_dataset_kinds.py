"""Each dataset kind is a registry entry owning its keys: resolved configs hold only those, a key of another kind is
refused naming its owners, old spellings and old runs' configs still load, and the data layer imports nothing above
it."""

import ast
from pathlib import Path

import pytest
import yaml

from dlcli.config import validate_config
from dlcli.data.catalog import DATASETS
from dlcli.errors import DlcliError

MINIMAL = {"csv": {"train_file": "t.csv"}, "parquet": {"train_file": "t.parquet"}, "text_csv": {"train_file": "t.csv"},
           "image_table": {"table_file": "t.csv"}, "sequences": {"train_file": "t.npz"}, "series": {"train_file": "t.csv"},
           "coco": {"train_annotations": "instances_train.json"}, "yolo": {"data_yaml": "data.yaml"}}
MODEL = {"coco": "detector", "yolo": "detector", "voc": "detector"}  # the kinds whose default task needs its model


@pytest.mark.parametrize("name", DATASETS.names())
def test_a_kinds_resolved_config_holds_only_its_own_keys(name):
    model = {"type": MODEL.get(name, "mlp")}
    cfg = validate_config({"data": {"dataset": name, **MINIMAL.get(name, {})}, "model": model})
    data = cfg.resolved()["data"]
    assert set(data) == {"dataset", *DATASETS.entries[name].model_fields}
    assert data["dataset"] == name and data["val_split"] == DATASETS.entries[name].model_fields["val_split"].default
    assert validate_config(cfg.resolved()).resolved() == cfg.resolved()  # round trip


def test_table_and_image_kinds_do_not_share_keys():
    csv = set(validate_config({"data": {"dataset": "csv", "train_file": "t.csv"}, "model": {"type": "mlp"}})
              .resolved()["data"])
    mnist = set(validate_config({"data": {"dataset": "mnist"}, "model": {"type": "mlp"}}).resolved()["data"])
    assert {"image_size", "channels", "augment", "tokenizer", "vocab", "root", "num_classes"}.isdisjoint(csv)
    assert {"train_file", "label_column", "categorical", "test_split", "stream"}.isdisjoint(mnist)


def error_of(data) -> str:
    with pytest.raises(DlcliError) as err:
        validate_config({"data": data, "model": {"type": "mlp"}}, source="c.yaml")
    return str(err.value)


@pytest.mark.parametrize("data, expected", [
    ({"dataset": "mnist", "label_column": "y"},
     "c.yaml: data.label_column: not a key of the mnist dataset (it belongs to csv, image_table, parquet, sequences, "
     "series, text_csv;"),
    ({"dataset": "csv", "train_file": "t.csv", "image_size": 32},
     "c.yaml: data.image_size: not a key of the csv dataset (it belongs to coco, image_folder, image_table, masks, "
     "voc, yolo;"),
    ({"dataset": "csv", "train_file": "t.csv", "label_colum": "y"},
     "c.yaml: data.label_colum: unknown key (did you mean 'label_column'?)"),
    ({"dataset": "csv"}, "c.yaml: data.train_file: required key is missing"),
    ({"dataset": "mnst"}, "c.yaml: data.dataset: unknown dataset 'mnst' (did you mean 'mnist'?)"),
    ({"dataset": "image_folder", "channels": 2}, "c.yaml: data.channels: Input should be 1 or 3"),
    ({"val_split": 0.1}, "c.yaml: data.dataset: required key is missing"),
    ("mnist", "c.yaml: data: must be a mapping with a `dataset` key"),
    ({"dataset": "synthetic", "augment": [{"hflip": {"q": 1}}]}, "c.yaml: data.augment[0].hflip.q: unknown key"),
])
def test_keys_are_checked_per_kind(data, expected):
    assert error_of(data).startswith(expected)


def test_the_old_nested_synthetic_section_still_works_and_says_the_new_spelling(cli, write_config):
    old = {"dataset": "synthetic", "synthetic": {"shape": [1, 8, 8], "num_classes": 3}}
    cfg = validate_config({"data": old, "model": {"type": "mlp"}})
    assert cfg.data.shape == [1, 8, 8] and cfg.data.num_classes == 3 and "synthetic" not in cfg.resolved()["data"]
    assert cfg.notices and "data.shape" in cfg.notices[0]
    result = cli("validate", write_config({"data": old, "model": {"type": "mlp"}}))
    assert result.exit_code == 0, result.output
    assert "notice:" in result.stderr and "data.shape" in result.stderr


def test_a_run_written_by_the_flat_schema_still_loads():
    """dlcli 0.1 recorded every key of every kind in a run's config.yaml: evaluate/predict/resume read it."""
    old = {"dataset": "mnist", "root": "data", "download": True, "val_split": 0.1, "test_split": 0.1,
           "max_train_samples": None, "augment": [], "image_size": 32, "channels": 3, "stream": "auto",
           "num_workers": 2, "train_file": None, "test_file": None, "label_column": "label", "categorical": "auto",
           "missing": "fill", "text_column": "text", "tokenizer": {"lowercase": True, "pattern": "[\\w']+"},
           "vocab": {"min_freq": 1, "max_size": 20000}, "max_length": 200,
           "synthetic": {"shape": [1, 28, 28], "num_classes": 10, "train_samples": 1000, "test_samples": 200,
                         "noise": 1.0}}
    with pytest.raises(DlcliError):
        validate_config({"data": old, "model": {"type": "mlp"}})
    cfg = validate_config({"data": old, "model": {"type": "mlp"}}, legacy=True)
    assert cfg.data.dataset == "mnist" and set(cfg.resolved()["data"]) == {"dataset", *DATASETS.entries["mnist"]
                                                                             .model_fields}


def test_every_shipped_config_keeps_its_data_section():
    for path in sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        resolved = validate_config(raw, source=str(path)).resolved()["data"]
        for key, value in raw["data"].items():
            assert key in resolved, f"{path.name}: data.{key} was dropped"


def test_the_data_layer_imports_nothing_above_it():
    above = {"dlcli.predict", "dlcli.evaluate", "dlcli.training", "dlcli.engine", "dlcli.cli", "dlcli.rundirs",
             "dlcli.config"}
    for path in Path(__file__).parent.parent.joinpath("dlcli", "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module not in above, f"{path.name} imports {node.module}"
