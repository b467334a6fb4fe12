"""The model builder: a config's layer list -> an nn.Sequential, shapes inferred from the dataset's input shape."""

from __future__ import annotations

from dataclasses import dataclass

from dlcli.errors import DlcliError
from dlcli.models.layers import MONOTONE, ShapeError, activation_module


@dataclass
class Row:
    name: str
    output_shape: tuple[int, ...]
    parameters: int


SEQUENCE_READERS = {"lstm", "global_avg_pool1d"}  # the layers that take an embedding's (vectors, lengths)


def build_model(model_cfg, input_shape, num_classes: int, vocab_size: int | None = None, pretrained: bool = True,
                noun: str = "classes"):
    """(nn.Sequential, summary rows). The output is logits; a softmax on the last layer is left to the loss.

    vocab_size: for token inputs (text_csv); presets then start with an embedding.
    pretrained: load a backbone's weights; False where a checkpoint replaces them anyway (evaluate, predict, resume)
    or none are needed (summary).
    num_classes: the head's width, the task's outputs (`noun`: classes, targets, labels; dlcli.tasks).
    """
    from torch import nn

    layers = model_cfg.layer_list(num_classes, tokens=vocab_size is not None)
    where = "model.layers" if model_cfg.type == "sequential" else f"model ({model_cfg.type} preset) layer"
    shape = tuple(input_shape)
    built = []  # [name, [modules], activation module or None, shape]
    counts: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if layer.activation == "softmax" and i != len(layers) - 1:
            raise DlcliError(f"{where}[{i}] ({layer.entry_name}): softmax is only allowed on the last layer")
        masked = bool(built) and (built[-1][5] or False)
        if masked and layer.entry_name not in SEQUENCE_READERS:
            raise DlcliError(f"{where}[{i}] ({layer.entry_name}): after an embedding comes lstm or global_avg_pool1d")
        try:
            if layer.needs_vocab:
                module, shape = layer.build(shape, vocab_size)
            else:
                module, shape = layer.build(shape, pretrained) if layer.loads_weights else layer.build(shape)
        except ShapeError as err:
            raise DlcliError(f"{where}[{i}]: {err}") from None
        counts[layer.entry_name] = counts.get(layer.entry_name, 0) + 1
        name = f"{layer.entry_name}_{counts[layer.entry_name]}"
        mods = [module] if module is not None else []
        act = activation_module(layer.activation)
        prev = built[-1] if built else None
        # max(f(a), f(b)) == f(max(a, b)) for a non-decreasing f: pooling first makes the activation 4x cheaper,
        # with identical outputs and gradients.
        if layer.entry_name == "maxpool2d" and act is None and prev and prev[2] is not None and prev[4] in MONOTONE:
            act, prev[2], prev[4] = prev[2], None, None
        # does the output still carry sequence lengths (an embedding, or an lstm returning sequences after one)?
        keeps_mask = layer.entry_name == "embedding" or (masked and getattr(layer, "return_sequences", False))
        built.append([name, mods, act, shape, layer.activation, keeps_mask])
    if vocab_size is not None and not (layers and layers[0].entry_name == "embedding"):
        raise DlcliError(f"{where}[0]: text data starts with an `embedding` layer (token ids are not numbers)")
    if shape != (num_classes,):
        raise DlcliError(
            f"{where}: the last layer gives output shape {shape}, but the task has {num_classes} {noun}: "
            f"end with `dense: {num_classes}`"
        )
    model = nn.Sequential()
    rows = []
    for name, mods, act, out_shape, _, _ in built:
        parts = mods + ([act] if act is not None else [])
        module = nn.Sequential(*parts) if len(parts) > 1 else (parts[0] if parts else nn.Identity())
        model.add_module(name, module)
        rows.append(Row(name, out_shape, sum(p.numel() for p in module.parameters())))
    return model, rows


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
