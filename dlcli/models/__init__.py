"""The model builder: a config's layer list -> an nn.Sequential, shapes inferred from the dataset's input shape."""

from __future__ import annotations

from dataclasses import dataclass, field

from dlcli.errors import DlcliError
from dlcli.models.layers import MONOTONE, ShapeError, activation_module


@dataclass
class Row:
    name: str  # a residual block's layers are `residual_1.conv1d_1`, their module paths
    output_shape: tuple[int, ...]
    parameters: int
    depth: int = 0  # 1 inside a residual block: its parameters are counted in the block's row too


@dataclass
class _Built:
    name: str
    modules: list
    act: object  # the activation's module, or None
    shape: tuple[int, ...]
    activation: str | None
    lengths: bool  # the output is (values, lengths)
    rows: list[Row] = field(default_factory=list)  # a residual block's own rows

    def module(self):
        from torch import nn

        parts = self.modules + ([self.act] if self.act is not None else [])
        return nn.Sequential(*parts) if len(parts) > 1 else (parts[0] if parts else nn.Identity())


SEQUENCE_HINT = ("sequence layers (conv1d, pools, batchnorm, layer_norm, dropout, transformer_encoder, lstm, gru, "
                 "residual), then global_avg_pool1d, global_max_pool1d or an lstm/gru without return_sequences")


def build_model(model_cfg, input_shape, num_classes: int, vocab_size: int | None = None, pretrained: bool = True,
                noun: str = "classes", padded: bool = False, outputs: tuple[int, ...] | None = None):
    """(nn.Sequential, summary rows). The output is logits; a softmax on the last layer is left to the loss.

    vocab_size: for token inputs (text_csv); presets then start with an embedding.
    pretrained: load a backbone's weights; False where a checkpoint replaces them anyway (evaluate, predict, resume)
    or none are needed (summary).
    num_classes: the head's width, the task's outputs (`noun`: classes, targets, labels; dlcli.tasks).
    padded: the inputs are series of unequal lengths padded with NaN (the sequences dataset's preprocessing says so):
    the model starts with a `masking` module that passes (zero-filled values, lengths) on.
    outputs: the output shape the task wants (its `output_shape`); default (num_classes,).
    """
    from torch import nn

    if hasattr(model_cfg, "build_module"):  # a preset built whole, not from a layer list (the detector)
        return model_cfg.build_module(tuple(input_shape), num_classes, pretrained)
    layers = model_cfg.layer_list(num_classes, tokens=vocab_size is not None)
    where = "model.layers" if model_cfg.type == "sequential" else f"model ({model_cfg.type} preset) layer"
    shape = tuple(input_shape)
    built: list[_Built] = []
    source = None  # what gives (values, lengths), for errors
    if padded:
        from dlcli.models.modules import NaNPadding

        if len(shape) != 2:
            raise DlcliError(f"padded series need a (steps, channels) input, got shape {shape}")
        built.append(_Built("masking_1", [NaNPadding()], None, shape, None, True))
        source = "padded series"
    shape = _build_list(layers, shape, where, built, {}, source, vocab_size, pretrained, top=True)
    if vocab_size is not None and not (layers and layers[0].entry_name == "embedding"):
        raise DlcliError(f"{where}[0]: text data starts with an `embedding` layer (token ids are not numbers)")
    expected = tuple(outputs) if outputs is not None else (num_classes,)
    if shape != expected and len(expected) == 3:  # one answer per pixel (task: segmentation)
        raise DlcliError(
            f"{where}: the last layer gives output shape {shape}, but the task answers {num_classes} {noun} per "
            f"pixel, {expected}: use model type unet or segmenter, or end with a 1x1 `conv2d: {num_classes}`"
        )
    if shape != expected:
        raise DlcliError(
            f"{where}: the last layer gives output shape {shape}, but the task has {num_classes} {noun}: "
            f"end with `dense: outputs` (the task's width, {num_classes} here)"
        )
    model = nn.Sequential()
    rows = []
    for b in built:
        module = b.module()
        model.add_module(b.name, module)
        rows.append(Row(b.name, b.shape, sum(p.numel() for p in module.parameters())))
        rows += b.rows
    return model, rows


def _build_list(layers, shape, where, built: list[_Built], counts: dict, source, vocab_size, pretrained, top: bool):
    """Appends each layer's _Built to `built`; returns the output shape. `source` names what gives (values, lengths)
    to the first layer (None: plain tensors)."""
    for i, layer in enumerate(layers):
        name = layer.entry_name
        if layer.activation == "softmax" and not (top and i == len(layers) - 1):
            raise DlcliError(f"{where}[{i}] ({name}): softmax is only allowed on the last layer")
        masked = bool(built) and built[-1].lengths
        reads = layer.reads_lengths()
        if masked and reads is None:
            raise DlcliError(f"{where}[{i}] ({name}): cannot read {source} (values with their lengths); after them "
                             f"come {SEQUENCE_HINT}")
        counts[name] = counts.get(name, 0) + 1
        label = f"{name}_{counts[name]}"
        rows: list[Row] = []
        try:
            if name == "residual":
                module, shape, rows = _residual(layer, shape, f"{where}[{i}].residual.layers", label,
                                                source if masked else None, vocab_size, pretrained)
            elif layer.needs_vocab:
                module, shape = layer.build(shape, vocab_size)
            else:
                module, shape = layer.build(shape, pretrained) if layer.loads_weights else layer.build(shape)
        except ShapeError as err:
            raise DlcliError(f"{where}[{i}]: {err}") from None
        keeps = name == "embedding" or bool(masked and reads)  # the output is (values, lengths)
        if name == "embedding":
            source = "an embedding's token vectors"
        if module is not None and masked and layer.on_values:
            from dlcli.models.modules import OnValues

            module = OnValues(module)
        act = activation_module(layer.activation) if name != "residual" else None  # a block applies its own
        if act is not None and keeps:
            from dlcli.models.modules import OnValues

            act = OnValues(act)
        prev = built[-1] if built else None
        # max(f(a), f(b)) == f(max(a, b)) for a non-decreasing f: pooling first makes the activation 4x cheaper,
        # with identical outputs and gradients.
        if name == "maxpool2d" and act is None and prev and prev.act is not None and prev.activation in MONOTONE:
            act, prev.act, prev.activation = prev.act, None, None
        built.append(_Built(label, [module] if module is not None else [], act, shape, layer.activation, keeps, rows))
    return shape


def _residual(layer, shape, where, label, source, vocab_size, pretrained):
    """(Residual module, output shape, its rows): the sub-list built like the model's, a 1x1 projection on the
    shortcut where the width changes."""
    from torch import nn

    from dlcli.models.modules import Conv1d, Residual, SequenceBatchNorm

    inner: list[_Built] = []
    if source is not None:  # the block's first layer reads what the layer before it gives
        inner.append(_Built("", [], None, shape, None, True))
    out = _build_list(layer.layers, shape, where, inner, {}, source, vocab_size, pretrained, top=False)
    if source is not None:
        inner.pop(0)
        if not inner[-1].lengths:
            raise ShapeError(f"residual: its last layer ({inner[-1].name}) drops the series' lengths; a block keeps "
                             "the steps")
    kept = {1: True, 2: out[:1] == shape[:1], 3: out[1:] == shape[1:]}.get(len(shape), False)
    if len(out) != len(shape) or not kept:
        raise ShapeError(f"residual: its layers turn {shape} into {out}; a block must keep the steps (or height and "
                         "width): use padding: same and no pooling inside")
    width_in, width_out = (shape[0], out[0]) if len(shape) == 3 else (shape[-1], out[-1])
    momentum, eps = 1.0 - 0.99, 1e-3  # Keras's batchnorm defaults, in torch's convention (as the layer's)
    parts = []
    if width_in != width_out or layer.projection:
        parts.append({1: lambda: nn.Linear(width_in, width_out), 2: lambda: Conv1d(width_in, width_out, 1),
                      3: lambda: nn.Conv2d(width_in, width_out, 1)}[len(shape)]())
    if layer.batchnorm_shortcut:
        parts.append({1: nn.BatchNorm1d, 2: SequenceBatchNorm, 3: nn.BatchNorm2d}[len(shape)](
            width_out, eps=eps, momentum=momentum))
    shortcut = (nn.Sequential(*parts) if len(parts) > 1 else parts[0]) if parts else None
    act = activation_module(layer.activation)
    block = Residual([(b.name, b.module()) for b in inner], shortcut, act)
    rows = [Row(f"{label}.{b.name}", b.shape, sum(p.numel() for p in block.get_submodule(b.name).parameters()), 1)
            for b in inner]
    for b in inner:
        rows += [Row(f"{label}.{r.name}", r.output_shape, r.parameters, r.depth + 1) for r in b.rows]
    if shortcut is not None:
        rows.append(Row(f"{label}.shortcut", out, sum(p.numel() for p in shortcut.parameters()), 1))
    return block, out, rows


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
