"""1-D, recurrent, attention and residual layers over numeric sequences (batch, steps, channels): Keras's shapes and
parameter counts, padded series read as if alone, the fcn/resnet1d/gru presets, summary, ONNX export and DDP."""

import json
import tempfile
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from dlcli.config import validate_config
from dlcli.errors import DlcliError
from dlcli.models import build_model
from tests.conftest import tiny_config
from tests.test_distributed import assert_same, dlcli, finished, run_of


def build(model: dict, shape=(40, 2), classes=3, padded=False):
    cfg = validate_config({"data": {"dataset": "synthetic", "shape": list(shape)}, "model": model})
    return build_model(cfg.model, shape, classes, padded=padded)


def seq(*layers):
    return {"type": "sequential", "layers": list(layers)}


# Every sequence layer, each reading what the one before it gives: a padded batch runs through all of them.
EVERY_LAYER = [
    {"conv1d": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}}, "batchnorm",
    {"residual": {"layers": [{"conv1d": {"filters": 12, "kernel_size": 4, "padding": "same", "activation": "relu"}},
                             "layer_norm"], "batchnorm_shortcut": True, "activation": "relu"}},
    {"maxpool1d": 2}, {"avgpool1d": {"pool_size": 2, "strides": 1}},
    {"conv1d": {"filters": 8, "kernel_size": 2, "strides": 2, "dilation": 1, "activation": "tanh"}},
    {"conv1d": {"filters": 8, "kernel_size": 2, "padding": 1, "dilation": 2}},
    {"gru": {"units": 6, "return_sequences": True, "bidirectional": True}}, {"dropout": 0.1},
    {"transformer_encoder": {"num_heads": 2, "model_dim": 8}},
    {"lstm": {"units": 5, "bidirectional": True, "return_sequences": True}},
    "global_max_pool1d", {"dense": 3},
]
LENGTHS = [40, 33, 20, 9, 17, 12]  # every one long enough for the pools and strides above


def padded_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), 40, 2, generator=g)
    for i, n in enumerate(LENGTHS):
        x[i, n:] = float("nan")
    return x


def test_keras_shapes_and_parameter_counts():
    model, rows = build(seq(
        {"conv1d": {"filters": 16, "kernel_size": 5}}, {"conv1d": {"filters": 4, "kernel_size": 3, "use_bias": False}},
        {"conv1d": {"filters": 4, "kernel_size": 5, "dilation": 2}},
        {"conv1d": {"filters": 4, "strides": 3, "padding": 2}}, {"maxpool1d": 2},
        {"avgpool1d": {"pool_size": 3, "strides": 1}}, {"gru": {"units": 7, "return_sequences": True}},
        "global_avg_pool1d", {"dense": 3}), shape=(60, 3))
    shapes = [r.output_shape for r in rows]
    # Keras: valid steps = (T + 2p - d(k-1) - 1) // s + 1; pools floor
    assert shapes == [(56, 16), (54, 4), (46, 4), (16, 4), (8, 4), (6, 4), (6, 7), (7,), (3,)]
    # Keras's counts: k*c*f (+ f), and its GRU (reset_after) 3 * (u * (c + u) + 2u)
    assert [r.parameters for r in rows] == [5 * 3 * 16 + 16, 3 * 16 * 4, 5 * 4 * 4 + 4, 3 * 4 * 4 + 4, 0, 0,
                                            3 * (7 * (4 + 7) + 2 * 7), 0, 7 * 3 + 3]
    x = torch.randn(5, 60, 3)
    conv = model.conv1d_1
    expected = F.conv1d(x.permute(0, 2, 1), conv.weight, conv.bias).permute(0, 2, 1)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert model(x).shape == (5, 3)
    # 'same' with an even kernel pads one step more after than before, as Keras does
    model, rows = build(seq({"conv1d": {"filters": 4, "kernel_size": 4, "padding": "same"}}, "global_avg_pool1d",
                            {"dense": 3}), shape=(60, 3))
    conv = model.conv1d_1
    expected = F.conv1d(F.pad(x.permute(0, 2, 1), (1, 2)), conv.weight, conv.bias).permute(0, 2, 1)
    assert rows[0].output_shape == (60, 4) and torch.allclose(conv(x), expected, atol=1e-6)


def test_padded_series_give_what_each_gives_alone():
    torch.manual_seed(0)
    model, rows = build(seq(*EVERY_LAYER), padded=True)
    assert rows[0].name == "masking_1" and rows[0].output_shape == (40, 2)
    model.eval()
    x = padded_batch()
    with torch.no_grad():
        together = model(x)
        for i, n in enumerate(LENGTHS):
            alone = model(x[i:i + 1, :n])  # no NaN: its one series is n steps long
            assert torch.allclose(together[i], alone[0], atol=1e-5), (n, (together[i] - alone[0]).abs().max())
    # without the masking, the padding is read as numbers: the same weights give other answers
    unmasked = torch.nn.Sequential(*list(model.children())[1:])
    with torch.no_grad():
        assert not torch.allclose(unmasked(torch.nan_to_num(x))[3], together[3], atol=1e-3)


def test_batchnorm_on_a_padded_batch_counts_only_real_steps():
    model, _ = build(seq({"conv1d": {"filters": 4, "kernel_size": 1}}, "batchnorm", "global_avg_pool1d", {"dense": 3}),
                     padded=True)
    x = padded_batch()
    with torch.no_grad():
        values, lengths = model.conv1d_1(model.masking_1(x))
    assert lengths.tolist() == LENGTHS
    bn = model.batchnorm_1
    out, _ = bn((values, lengths))
    real = torch.cat([values[i, :n] for i, n in enumerate(LENGTHS)])  # (steps, channels) of the real steps
    assert torch.allclose(bn.running_mean, 0.01 * real.mean(0), atol=1e-6)  # Keras momentum 0.99: 1% of the batch
    expected = (real[:40] - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + 1e-3) * bn.weight + bn.bias
    assert torch.allclose(out[0, :40], expected, atol=1e-5)


@pytest.mark.parametrize("preset, parameters", [
    # FCN: per block k*c*f + f, batchnorm 2f; the classifier 128*3 + 3
    ({"type": "fcn"}, (8 * 2 * 128 + 128 + 256) + (5 * 128 * 256 + 256 + 512) + (3 * 256 * 128 + 128 + 256) + 387),
    # one residual block of 4 filters, kernel 3: conv 3*2*4+4, bn 8, 1x1 projection 2*4+4 and its bn 8; dense 4*3+3
    ({"type": "resnet1d", "filters": [4], "kernel_sizes": [3]}, 28 + 8 + 12 + 8 + 15),
    ({"type": "gru", "hidden_size": 8, "bidirectional": True}, 2 * 3 * (8 * (2 + 8) + 2 * 8) + 16 * 3 + 3),
    ({"type": "lstm", "hidden_size": 8}, 4 * 8 * (2 + 8) + 8 * 8 + 8 * 3 + 3),  # torch's two bias vectors
])
def test_sequence_presets_build_and_count(preset, parameters):
    model, rows = build(preset)
    assert sum(r.parameters for r in rows if not r.depth) == parameters == sum(p.numel() for p in model.parameters())
    assert model(torch.randn(4, 40, 2)).shape == (4, 3)
    padded, _ = build(preset, padded=True)
    padded.load_state_dict(model.state_dict())  # the masking holds no weights: a checkpoint fits either
    model.eval(), padded.eval()
    with torch.no_grad():
        x = torch.randn(2, 40, 2)
        assert torch.allclose(padded(x), model(x), atol=1e-5)


def test_resnet1d_blocks_follow_wang_et_al():
    model, rows = build({"type": "resnet1d"})
    block = [r.name for r in rows if r.name.startswith("residual_1.")]
    assert block == ["residual_1." + n for n in ("conv1d_1", "batchnorm_1", "activation_1", "conv1d_2", "batchnorm_2",
                                                 "activation_2", "conv1d_3", "batchnorm_3", "shortcut")]
    assert [model.get_submodule(f"residual_{i}.conv1d_1").kernel_size[0] for i in (1, 2, 3)] == [8, 8, 8]
    assert [r.output_shape for r in rows if r.depth == 0] == [(40, 64), (40, 128), (40, 128), (128,), (3,)]
    # the third block keeps its width: its shortcut is only a batchnorm
    assert isinstance(model.residual_3.shortcut, torch.nn.BatchNorm1d)
    x = torch.randn(3, 40, 2)
    block = model.residual_2
    block.eval()
    with torch.no_grad():
        h = model.residual_1(x)
        body = h
        for name in block.names:
            body = getattr(block, name)(body)
        assert torch.allclose(block(h), torch.relu(body + block.shortcut(h)), atol=1e-6)


@pytest.mark.parametrize("layers, message", [
    ([{"conv1d": 4}, "flatten", {"dense": 3}], "model.layers[1] (flatten): cannot read padded series"),
    ([{"residual": [{"conv1d": 4}]}, "global_max_pool1d", {"dense": 3}],
     "model.layers[0]: residual: its layers turn (40, 2) into (38, 4); a block must keep the steps"),
    ([{"transformer_encoder": {"num_heads": 3, "model_dim": 16}}, "global_max_pool1d", {"dense": 3}],
     "model.layers[0]: transformer_encoder: num_heads 3 must divide model_dim 16"),
    ([{"conv1d": {"filters": 4, "kernel_size": 41}}, "global_max_pool1d", {"dense": 3}],
     "model.layers[0]: conv1d: kernel 41 (dilation 1) is longer than its 40 steps"),
    ([{"residual": [{"conv1d": 4}, "global_max_pool1d"]}, {"dense": 3}],
     "model.layers[0]: residual: its last layer (global_max_pool1d_1) drops the series' lengths"),
])
def test_shape_errors_say_where(layers, message):
    with pytest.raises(DlcliError) as err:
        build(seq(*layers), padded=True)
    assert str(err.value).startswith(message), str(err.value)


def test_a_bad_key_inside_a_residual_block_names_its_path(cli, write_config):
    config = write_config({"data": {"dataset": "synthetic", "shape": [40, 2]},
                           "model": seq({"residual": [{"conv1d": {"filters": 4, "kernal_size": 3}}]}, {"dense": 3})})
    result = cli("validate", config)
    assert result.exit_code == 2
    assert result.output.strip().endswith("model.layers[0].residual.layers[0].conv1d.kernal_size: unknown key "
                                          "(did you mean 'kernel_size'?)")


def test_summary_lists_a_residual_blocks_layers(cli, write_config):
    config = write_config({"data": {"dataset": "synthetic", "shape": [16, 2], "num_classes": 3},
                           "model": {"type": "resnet1d", "filters": [4], "kernel_sizes": [3]}})
    out = json.loads(cli("summary", config, "--json").stdout)
    assert out["parameters"] == 71  # as counted in test_sequence_presets_build_and_count
    layers = {layer["name"]: layer for layer in out["layers"]}
    assert layers["residual_1"]["parameters"] == 56 and layers["residual_1.shortcut"]["parameters"] == 20
    assert layers["residual_1.conv1d_1"]["depth"] == 1 and layers["residual_1.conv1d_1"]["output_shape"] == [16, 4]
    table = cli("summary", config).stdout
    assert "│   conv1d_1 " in table and "│ residual_1 " in table and "total parameters: 71" in table


def test_onnx_export_of_every_layer_on_padded_series():
    pytest.importorskip("onnxruntime")
    from dlcli.export import FORMATS, exportable

    class Raw(torch.nn.Module):  # the exporter names the input `x`, as dlcli.export's graph does
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)

    torch.manual_seed(0)
    model, _ = build(seq(*EVERY_LAYER), padded=True)
    model.eval()
    x = padded_batch(1)
    with torch.no_grad():  # the reference: each series run alone, unpadded, so that no masking takes part in it
        expected = torch.cat([model(x[i:i + 1, :n]) for i, n in enumerate(LENGTHS)]).numpy()
    onnx = FORMATS.entries["onnx"]()
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    onnx.write(Raw(exportable(model)), x[:2], path, {"output_name": "logits"})
    run = onnx.runner(path)
    assert abs(run(x.numpy()) - expected).max() < 1e-4
    assert abs(run(x[3:4].numpy()) - expected[3:4]).max() < 1e-4  # any batch size, any lengths


def test_two_processes_train_sequence_layers_like_one(tmp_path, write_config):
    # no batchnorm or dropout: then 2 x 16 samples per step give the very gradients of 32. SGD, as attention's key
    # bias has a zero gradient up to rounding, which Adam would scale up to full steps of either sign.
    cfg = tiny_config(model=seq({"conv1d": {"filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"}},
                                {"residual": [{"conv1d": {"filters": 8, "kernel_size": 3, "padding": "same"}},
                                              "layer_norm"]},
                                {"maxpool1d": 2},
                                {"gru": {"units": 6, "bidirectional": True, "return_sequences": True}},
                                {"transformer_encoder": {"num_heads": 2, "model_dim": 8, "dropout": 0.0}},
                                "global_max_pool1d", {"dense": 3}))
    cfg["data"].update(shape=[12, 2], train_samples=250)
    cfg["train"] = {"epochs": 2, "batch_size": 16, "precision": "32"}
    cfg["optimizer"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    config = write_config(cfg)
    single = dlcli("train", config, "--set", "train.batch_size=32", "--runs-dir", tmp_path / "one", "-q")
    finished(single)
    finished(dlcli("train", config, "--devices", "2", "--runs-dir", tmp_path / "two", "-q"))
    assert_same(run_of(tmp_path / "one"), run_of(tmp_path / "two"), atol=1e-5)


def test_a_gru_trains_on_padded_series_from_a_npz(cli, tmp_path, write_config):
    """dataset: sequences with unequal lengths: the class is the sign of each series' last real value, which a
    packed GRU reads as its final step; evaluate rebuilds the masking from the run's data.json."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, steps = 200, 16
    lengths = rng.integers(4, steps + 1, n)
    x = rng.normal(size=(n, steps, 1)).astype(np.float32)
    y = (x[np.arange(n), lengths - 1, 0] > 0).astype(int)
    np.savez(tmp_path / "signs.npz", x=x, y=y, lengths=lengths)
    config = write_config({"seed": 0, "data": {"dataset": "sequences", "train_file": str(tmp_path / "signs.npz")},
                           "model": {"type": "gru", "hidden_size": 16}, "optimizer": {"name": "adam", "lr": 0.02},
                           "train": {"epochs": 8, "batch_size": 32}})
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    assert json.loads((run / "data.json").read_text())["preprocessing"]["padded"] is True
    trained = json.loads((run / "summary.json").read_text())["test"]["accuracy"]
    assert trained >= 0.9, trained
    scored = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["accuracy"] == pytest.approx(trained)
