"""The builder: Keras's parameter counts for the seeds' models, inferred shapes, presets and shape errors."""

import json

import pytest
import torch

from dlcli.config import validate_config
from dlcli.errors import DlcliError
from dlcli.models import build_model


def build(model: dict, shape=(1, 28, 28), classes=10):
    cfg = validate_config({"data": {"dataset": "mnist"}, "model": model})
    return build_model(cfg.model, shape, classes)


@pytest.mark.parametrize(
    "config, parameters",
    [("mnist_cnn", 225_034), ("mnist_mlp", 101_770), ("mnist_keras_cnn", 1_199_882), ("cifar10_cnn", 122_570),
     ("fashion_mnist_cnn", 225_034)],
)
def test_summary_gives_keras_parameter_counts(cli, config, parameters):
    from pathlib import Path

    path = Path(__file__).parent.parent / "configs" / f"{config}.yaml"
    result = cli("summary", path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parameters"] == parameters


def test_summary_table_shows_keras_shapes(cli):
    from pathlib import Path

    result = cli("summary", Path(__file__).parent.parent / "configs" / "mnist_cnn.yaml")
    assert result.exit_code == 0
    for text in ("conv2d_1", "(None, 32, 26, 26)", "(None, 64, 5, 5)", "(None, 1600)", "225,034"):
        assert text in result.stdout


def test_pooling_before_a_monotone_activation_changes_nothing():
    torch.manual_seed(0)
    model, rows = build({"type": "sequential", "layers": [
        {"conv2d": {"filters": 4, "activation": "relu"}}, {"maxpool2d": 2}, "flatten", {"dense": 10}]})
    conv, pool = model[0], model[1]
    assert isinstance(conv, torch.nn.Conv2d)  # the relu moved behind the pool
    x = torch.randn(5, 1, 28, 28)
    reference = torch.nn.functional.max_pool2d(torch.relu(conv(x)), 2)
    assert torch.equal(pool(conv(x)), reference)
    assert [r.output_shape for r in rows][:2] == [(4, 26, 26), (4, 13, 13)]


@pytest.mark.parametrize("preset", [
    {"type": "mlp", "hidden": [32, 16], "dropout": 0.1, "batchnorm": True},
    {"type": "cnn", "channels": [8, 16], "padding": "same", "batchnorm": True, "dropout": 0.2},
    {"type": "lstm", "hidden_size": 16, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
])
def test_presets_build_and_run(preset):
    model, rows = build(preset)
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert rows[-1].output_shape == (10,)


def test_every_layer_kind_builds():
    model, rows = build({"type": "sequential", "layers": [
        {"conv2d": {"filters": 8, "padding": "same", "activation": "gelu"}},
        "batchnorm", {"activation": "relu"}, {"avgpool2d": 2}, {"conv2d": {"filters": 8, "strides": 2}},
        "global_avg_pool2d", {"reshape": [2, 4]}, {"lstm": {"units": 6, "return_sequences": True}},
        {"lstm": 5}, {"dense": {"units": 10, "activation": "softmax"}}]})
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert [r.output_shape for r in rows][4:7] == [(8, 6, 6), (8,), (2, 4)]


def test_lstm_reads_an_image_row_by_row():
    model, _ = build({"type": "lstm", "hidden_size": 8})
    x = torch.randn(2, 1, 28, 28)
    lstm = model[0].lstm
    _, (h, _) = lstm(x[:, 0])  # rows as steps, pixels as features
    assert torch.allclose(model[0](x), h[-1])


@pytest.mark.parametrize("layers, message", [
    (["flatten", {"conv2d": 8}], "model.layers[1]: conv2d needs an image input"),
    ([{"dense": 10}], "model.layers[0]: dense needs a flat input, got shape (1, 28, 28): add `flatten` before it"),
    ([{"conv2d": {"filters": 4, "kernel_size": 40}}, "flatten", {"dense": 10}], "kernel 40x40 is larger"),
    (["flatten", {"dense": 12}], "the last layer gives output shape (12,), but the task has 10 classes: end with "
                                 "`dense: outputs` (the task's width, 10 here)"),
    (["flatten", {"dense": {"units": 5, "activation": "softmax"}}, {"dense": 10}], "softmax is only allowed on the last"),
    ([{"reshape": [5, 5]}], "reshape: cannot turn (1, 28, 28)"),
])
def test_shape_errors_name_the_layer(layers, message):
    with pytest.raises(DlcliError) as err:
        build({"type": "sequential", "layers": layers})
    assert message in str(err.value)


@pytest.mark.parametrize("classes", [3, 10])
def test_dense_outputs_is_the_tasks_width_in_blocks_too(classes):
    model, rows = build({"type": "sequential", "layers": [
        "flatten", {"dense": {"units": 16, "activation": "relu"}},
        {"residual": [{"dense": 8}, {"dense": "outputs"}]}, {"dense": {"units": "outputs", "activation": "softmax"}}]},
        classes=classes)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, classes)
    assert [r.output_shape for r in rows if r.depth == 0][-2:] == [(classes,), (classes,)]
    cfg = validate_config({"data": {"dataset": "mnist"}, "model": {"type": "sequential", "layers": [
        "flatten", {"dense": "outputs"}]}})
    assert cfg.resolved()["model"]["layers"][1] == {"dense": {"units": "outputs", "activation": None,
                                                              "use_bias": True}}  # the run records the spelling
    with pytest.raises(DlcliError) as err:
        validate_config({"data": {"dataset": "mnist"}, "model": {"type": "sequential", "layers": [
            "flatten", {"dense": "output"}]}})
    assert "model.layers[1].dense.units: Input should be a valid integer" in str(err.value)  # no union member named
    assert str(err.value).endswith("(or 'outputs')")
