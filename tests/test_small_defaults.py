"""A linear path beside the MLP (`model.linear`, tried as a small-table default for #31 item 1)."""

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

