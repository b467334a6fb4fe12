"""The schema: defaults, overrides typed by the schema, and one precise line for every kind of mistake."""

import subprocess
import sys

import pytest
import yaml

from dlcli.config import apply_override, load_config, validate_config
from dlcli.errors import DlcliError
from tests.conftest import tiny_config


def error_of(cfg: dict) -> str:
    with pytest.raises(DlcliError) as err:
        validate_config(cfg, source="c.yaml")
    return str(err.value)


def test_defaults_fill_everything_but_dataset_and_model():
    cfg = validate_config({"data": {"dataset": "mnist"}, "model": {"type": "cnn"}})
    assert cfg.train.epochs == "auto" and cfg.train.batch_size == 32 and cfg.seed == 42
    assert cfg.optimizer.entry_name == "adam" and cfg.optimizer.lr == 1e-3
    assert cfg.scheduler.entry_name == "none"
    assert cfg.data.val_split == 0.1 and cfg.train.checkpoint_monitor == "val_accuracy"


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"data": {"dataset": "fashoin_mnist"}, "model": {"type": "mlp"}},
         "data.dataset: unknown dataset 'fashoin_mnist' (did you mean 'fashion_mnist'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "cnn", "chanels": [8]}},
         "model.chanels: unknown key (did you mean 'channels'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "cnnn"}},
         "model.type: unknown model type 'cnnn' (did you mean 'cnn'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "sequential", "layers": ["flatten", {"dens": 3}]}},
         "model.layers[1]: unknown layer 'dens' (did you mean 'dense'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "sequential", "layers": [{"dense": {"unit": 3}}]}},
         "model.layers[0].dense.unit: unknown key (did you mean 'units'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "sequential", "layers": [{"dense": -3}]}},
         "model.layers[0].dense.units: Input should be greater than 0"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "mlp"}, "optimizer": {"name": "adam", "momentum": 0.9}},
         "optimizer.momentum: unknown key"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "mlp"}, "optimizer": {"name": "adamm"}},
         "optimizer.name: unknown optimizer 'adamm' (did you mean 'adam'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "mlp"}, "scheduler": {"name": "cosine", "warmup": 1}},
         "scheduler.warmup: unknown key (did you mean 'warmup_epochs'?)"),
        ({"data": {"dataset": "mnist", "augment": [{"random_crop": {"pad": 2}}]}, "model": {"type": "cnn"}},
         "data.augment[0].random_crop.pad: unknown key (did you mean 'padding'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "mlp"}, "train": {"epoch": 3}},
         "train.epoch: unknown key (did you mean 'epochs'?)"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "mlp"}, "train": {"precision": "fp8"}},
         "train.precision: Input should be"),
        ({"data": {"dataset": "mnist"}, "model": {"type": "mlp"}, "train": {"device": "tpu"}},
         "train.device: unknown device 'tpu'"),
        ({"model": {"type": "mlp"}}, "data: required key is missing"),
        ({"data": {"dataset": "mnist", "val_split": 1.5}, "model": {"type": "mlp"}},
         "data.val_split: Input should be less than 1"),
    ],
)
def test_errors_name_the_key_path_and_suggest_a_fix(cfg, expected):
    message = error_of(cfg)
    assert message.startswith("c.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_keras_style_layer_shorthands():
    cfg = validate_config({"data": {"dataset": "mnist"}, "model": {"type": "sequential", "layers": [
        {"conv2d": 8}, {"maxpool2d": 2}, "flatten", {"dropout": 0.2}, {"dense": 10}]}})
    names = [layer.entry_name for layer in cfg.model.layers]
    assert names == ["conv2d", "maxpool2d", "flatten", "dropout", "dense"]
    assert cfg.model.layers[0].filters == 8 and cfg.model.layers[1].pool_size == 2
    assert cfg.model.layers[3].rate == 0.2 and cfg.model.layers[4].units == 10


def test_overrides_are_typed_by_the_schema(write_config):
    path = write_config(tiny_config())
    cfg = load_config(path, ["train.epochs=7", "optimizer.lr=0.5", "train.grad_clip=1", "data.augment=[]",
                             "train.early_stopping={patience: 2}", "seed=3"])
    assert cfg.train.epochs == 7 and cfg.optimizer.lr == 0.5 and cfg.train.grad_clip == 1.0 and cfg.seed == 3
    assert cfg.train.early_stopping.patience == 2
    with pytest.raises(DlcliError, match="train.epochs: Input should be a valid integer"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(DlcliError, match="expected KEY=VALUE"):
        load_config(path, ["train.epochs"])


def test_override_indexes_lists():
    data = {"model": {"layers": [{"dense": {"units": 3}}]}}
    apply_override(data, "model.layers.0.dense.units=5")
    assert data["model"]["layers"][0]["dense"]["units"] == 5
    with pytest.raises(DlcliError, match="not an index"):
        apply_override(data, "model.layers.4.dense=1")


def test_set_opens_the_short_form_of_a_named_section():
    """`task: regression` (as init writes it) takes --set task.loss=huber, as data check's advice reads."""
    data = {"task": "regression", "optimizer": "adam", "train": {"epochs": 3}}
    apply_override(data, "task.loss=huber")
    apply_override(data, "optimizer.lr=0.01")
    assert data["task"] == {"type": "regression", "loss": "huber"}
    assert data["optimizer"] == {"name": "adam", "lr": 0.01}
    with pytest.raises(DlcliError, match="'epochs' holds a value, not a section"):
        apply_override(data, "train.epochs.max=4")  # a plain value opens nothing


def test_no_validation_split_moves_val_monitors_to_train():
    cfg = validate_config({**tiny_config(), "train": {"early_stopping": {"monitor": "val_loss"}}, "data": {
        "dataset": "synthetic", "val_split": 0}})
    assert cfg.train.checkpoint_monitor == "train_accuracy"
    assert cfg.train.early_stopping.monitor == "train_loss"


def test_resolved_config_round_trips():
    cfg = validate_config(tiny_config(model={"type": "sequential", "layers": ["flatten", {"dense": 3}]},
                                      scheduler={"name": "step", "step_size": 2}))
    again = validate_config(yaml.safe_load(yaml.safe_dump(cfg.resolved())))
    assert again.resolved() == cfg.resolved()
    assert cfg.resolved()["scheduler"] == {"name": "step", "step_size": 2, "gamma": 0.1}


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {dataset: mnist\nmodel: {type: cnn}\n")
    with pytest.raises(DlcliError, match=r"invalid YAML at line 2, column \d+"):
        load_config(path)


def test_every_shipped_config_validates():
    from pathlib import Path

    configs = sorted(Path(__file__).parent.parent.glob("configs/*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        load_config(path)


def test_help_and_validate_do_not_import_torch(tmp_path):
    probe = (
        "import sys\nfrom dlcli.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    for args in (["--help"], ["validate", str(config)]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True)
        assert out.stdout.strip().endswith("NO-TORCH"), (args, out.stdout[-300:])


@pytest.mark.parametrize("epochs,steps,pct", [(1, 4, 0.25), (2, 1, 0.5), (1, 10, 0.1), (3, 7, 0.3)])
def test_onecycle_runs_every_step_even_with_a_one_step_warmup(epochs, steps, pct):
    """torch's OneCycleLR divides by zero when pct_start x steps is exactly 1 (a tiny speed-run slice hit it)."""
    import torch

    from dlcli.optim import SCHEDULERS

    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = SCHEDULERS.parse({"onecycle": {"pct_start": pct}}).build(opt, epochs, steps)
    lrs = []
    for _ in range(epochs * steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(lr == lr and lr >= 0 for lr in lrs)  # no NaN, no error
    assert max(lrs) <= 0.1 + 1e-12


@pytest.mark.parametrize("key", ["str", "int", "float", "function-after", "list"])
def test_an_unknown_key_named_like_a_pydantic_type_is_named(key):
    """pydantic names a union's members (str, int, function-after[...]) in error locations and those are left out
    of key paths; an unknown key of the same name is the user's own and must still be named (hypothesis found
    `--set str=` ending in an IndexError, exit 1)."""
    cfg = tiny_config()
    cfg[key] = 1
    assert error_of(cfg).startswith(f"c.yaml: {key}: unknown key")
    cfg = tiny_config()
    cfg["train"][key] = 1
    assert error_of(cfg).startswith(f"c.yaml: train.{key}: unknown key")
