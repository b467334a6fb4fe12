"""The defaults at the edges of what users bring (#31): a linear path beside the MLP (an option tried on small
tables), and sequence runs that stop once the training loss stops falling."""

import torch

from dlcli.config import validate_config
from dlcli.models import build_model


def mlp(**keys):
    cfg = validate_config({"data": {"dataset": "csv", "train_file": "t.csv", "label_column": "y"},
                           "model": {"type": "mlp", "hidden": [16, 8], "dropout": 0.1, **keys}})
    return cfg.model


def test_mlp_linear_adds_a_learned_map_from_inputs_to_outputs_even_at_equal_widths():
    for width in (7, 3):  # 7 inputs -> 3 classes, and 3 -> 3, where a plain residual block would add x itself
        model, rows = build_model(mlp(linear=True), (width,), 3)
        shortcut = model.residual_1.shortcut
        assert isinstance(shortcut, torch.nn.Linear) and (shortcut.in_features, shortcut.out_features) == (width, 3)
        assert "residual_1.shortcut" in [r.name for r in rows]
        model.eval()
        x = torch.randn(5, width)
        with torch.no_grad():
            body = model(x) - shortcut(x)
            model.residual_1.dense_3.weight.zero_()
            model.residual_1.dense_3.bias.zero_()
            assert torch.allclose(model(x), shortcut(x))  # the answer is the linear map plus the network's part
            assert not torch.allclose(body, torch.zeros_like(body))
    plain, _ = build_model(mlp(), (3,), 3)  # the default is unchanged: no block, no shortcut
    assert not hasattr(plain, "residual_1")
    same = sum(p.numel() for p in build_model(mlp(linear=True), (3,), 3)[0].parameters())
    assert same == sum(p.numel() for p in plain.parameters()) + 3 * 3 + 3


def test_init_sequences_stop_when_the_training_loss_stops_falling(tmp_path, cli):
    import json

    import yaml

    from dlcli.init import SEQUENCE_MIN_DELTA, SEQUENCE_PATIENCE
    from tests.test_sequences import make_series, write_npz

    x, y, lengths = make_series(n=30)
    write_npz(tmp_path / "s_train.npz", x, y, lengths)
    write_npz(tmp_path / "s_test.npz", x[:9], y[:9], lengths[:9])
    result = cli("init", tmp_path / "s_train.npz", "-o", tmp_path / "s.yaml")
    assert result.exit_code == 0, result.stderr
    cfg = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert cfg["data"]["val_split"] == 0 and cfg["train"]["epochs"] == 200  # no cut on 30 series: nothing else stops
    assert cfg["train"]["early_stopping"] == {"monitor": "train_loss", "patience": SEQUENCE_PATIENCE,
                                              "min_delta": SEQUENCE_MIN_DELTA}
    # the written rule stops a run whose training loss has settled (a small network, so the test is quick)
    result = cli("train", tmp_path / "s.yaml", "--runs-dir", tmp_path / "runs", "--quiet",
                 "--set", "model={type: fcn, filters: [16, 16], kernel_sizes: [5, 3]}", "--set", "data.augment=[]",
                 "--set", "optimizer.lr=0.01")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / result.stdout.strip().splitlines()[-1] / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs_completed"] < 100
    assert summary["test"]["accuracy"] > 0.8  # chance is 1/3
