"""Starting from trained weights and training parts of a model: `model.init`, `train.freeze`, the layer selectors
they and `optimizer.groups` share, and the input pipeline a pretrained backbone asks for.

- `model.init: RUN_ID | checkpoint`: every tensor of the new model whose name and shape match one in the run's
  best.pt (or the file) is loaded, the rest keep their fresh values; `init_from` reports loaded / skipped / new per
  layer and refuses a source of which nothing fits.
- `train.freeze`: FreezeSchedule, a callback. Frozen parameters get no gradient (the optimizer holds them all along,
  so its state and the checkpoints keep one layout), and the BatchNorm layers among them run on their running
  statistics, which then stay as they were. What is frozen follows from the epoch alone, so a resumed run freezes
  exactly what the uninterrupted one did at that point.
- A model that starts with a pretrained backbone gets its weights' input pipeline (`model_for`): their mean and
  std for uint8 images, grayscale repeated to RGB, images resized to the size they were trained at (or
  `image_size`). The normaliser holds all of it and data.json records it, so evaluate and predict feed the network
  alike.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import torch

from dlcli.engine import Callback
from dlcli.errors import DlcliError

# ---------------------------------------------------------------- selecting parameters


def select(model, selectors, where: str) -> tuple[list[str], list[str]]:
    """(parameter names, layer names) that `selectors` pick, in the model's order. A selector is a layer of the
    model's list by index (negative from the end) or name (`dense_2`), a layer kind (`backbone`: all of them), or a
    pattern over parameter names (`backbone_1.net.layer4.*`; a module's dotted name picks what is under it)."""
    layers = [name for name, _ in model.named_children()]
    params = [name for name, _ in model.named_parameters()]
    picked: set[str] = set()
    picked_layers: list[str] = []
    for i, selector in enumerate(selectors):
        if isinstance(selector, int) and not isinstance(selector, bool):
            if not -len(layers) <= selector < len(layers):
                raise DlcliError(f"{where}[{i}]: no layer {selector}: the model has {len(layers)} layers "
                                 f"({', '.join(layers)}), 0 to {len(layers) - 1} or -1 for the last")
            hits = [layers[selector]]
        else:
            selector = str(selector)
            hits = [selector] if selector in layers else [n for n in layers if n.rsplit("_", 1)[0] == selector]
        if hits:
            picked_layers += [h for h in hits if h not in picked_layers]
            picked.update(p for p in params if any(p.startswith(h + ".") for h in hits))
            continue
        found = [p for p in params if fnmatch.fnmatchcase(p, selector) or p.startswith(selector + ".")]
        if not found:
            example = f"; parameter names look like {params[-1]}" if params else ""
            raise DlcliError(f"{where}[{i}]: '{selector}' names no layer and matches no parameter (layers: "
                             f"{', '.join(layers)}{example})")
        picked.update(found)
    return [p for p in params if p in picked], picked_layers


# ---------------------------------------------------------------- freezing


@dataclass
class _Part:
    selectors: list
    epochs: int | None  # trained from this epoch on (0-based: after `epochs` epochs); None: never
    params: set[str]
    batchnorms: list[str]  # BatchNorm modules frozen with it


class FreezeSchedule(Callback):
    """train.freeze: what each epoch freezes, applied as the epoch starts (after the engine puts the model in
    training mode). When that changes, a DDP model is wrapped again: DDP syncs only parameters that take gradients."""

    def __init__(self, model, specs, console=None):
        self.console = console
        self.parts = []
        for i, spec in enumerate(specs):
            names, layers = select(model, spec.layers, f"train.freeze[{i}].layers")
            self.parts.append(_Part(list(spec.layers), spec.epochs, set(names), _batchnorms(model, names, layers)))

    def frozen(self, epoch: int) -> tuple[set[str], list[str]]:
        """(parameter names, BatchNorm module names) frozen during epoch `epoch` (0-based)."""
        params, norms = set(), []
        for part in self.parts:
            if part.epochs is None or epoch < part.epochs:
                params |= part.params
                norms += [n for n in part.batchnorms if n not in norms]
        return params, norms

    def apply(self, model, epoch: int) -> bool:
        """Set which parameters take gradients for `epoch`; whether that changed anything."""
        params, _ = self.frozen(epoch)
        changed = False
        for name, p in model.named_parameters():
            if p.requires_grad == (name in params):
                p.requires_grad_(name not in params)
                changed = True
        return changed

    def on_epoch_start(self, trainer, steps):
        model, epoch = trainer.model, trainer.state.epoch
        changed = self.apply(model, epoch)
        for name in self.frozen(epoch)[1]:
            model.get_submodule(name).eval()  # normalises with its running statistics, and leaves them as they are
        if changed:
            trainer.wrap_for_training()
            released = [str(s) for part in self.parts if part.epochs == epoch for s in part.selectors]
            if self.console is not None and released:  # (a run resumed past its unfreeze changes silently)
                trainable, frozen = parameter_counts(model)
                self.console.print(f"epoch {epoch + 1}: training {', '.join(released)} from now on ({trainable:,} "
                                   f"parameters trainable, {frozen:,} frozen)", soft_wrap=True)


def _batchnorms(model, params: list[str], layers: list[str]) -> list[str]:
    """The BatchNorm modules inside the selected layers, or whose own parameters are all selected."""
    chosen = set(params)
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            continue
        own = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
        if any(name.startswith(layer + ".") or name == layer for layer in layers) or (own and set(own) <= chosen):
            out.append(name)
    return out


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, frozen) parameter values."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters()) - trainable


def freeze_at_start(cfg, model) -> FreezeSchedule | None:
    """Freeze what the first epoch freezes, and check the freeze and optimizer-group selectors, before a run exists
    (a bad selector is a one-line error, not a failed run). The schedule, or None without train.freeze."""
    cfg.optimizer.param_groups(model)
    if not cfg.train.freeze:
        return None
    schedule = FreezeSchedule(model, cfg.train.freeze)
    schedule.apply(model, 0)
    return schedule


def frozen_note(cfg, model) -> str:
    """'5,130 trainable, 11,176,512 frozen for the first 3 epochs' for a model with frozen parameters, else ''."""
    trainable, frozen = parameter_counts(model)
    if not frozen:
        return ""
    epochs = {spec.epochs for spec in cfg.train.freeze}
    when = ""
    if len(epochs) > 1:
        when = " at the start"
    elif epochs != {None}:
        n = epochs.pop()
        when = f" for the first {n} epochs" if n > 1 else " for the first epoch"
    return f"{trainable:,} trainable, {frozen:,} frozen{when}"


# ---------------------------------------------------------------- the input pipeline of a pretrained backbone


def leading_backbone(model_cfg):
    """The `backbone` layer entry a model starts with, or None."""
    layers = model_cfg.layer_list(2)  # the class count shapes only the head
    return layers[0] if layers and layers[0].entry_name == "backbone" else None


def input_spec(model_cfg):
    """The leading backbone's InputSpec (dlcli.models.backbones); a bad architecture or weights name is a one-line
    error naming the layer, as the model builder would name it."""
    from dlcli.models import backbones

    try:
        return backbones.input_spec(leading_backbone(model_cfg))
    except backbones.ShapeError as err:
        where = "model.layers" if model_cfg.type == "sequential" else f"model ({model_cfg.type} preset) layer"
        raise DlcliError(f"{where}[0]: {err}") from None


def resolve_image_size(cfg) -> None:
    """An image folder is decoded at the size a leading backbone takes (its image_size, else its weights' size),
    unless data.image_size is given; the run's config then records that size."""
    entry = leading_backbone(cfg.model)
    if entry is None or "image_size" not in type(cfg.data).model_fields or "image_size" in cfg.data.model_fields_set:
        return
    size = input_spec(cfg.model).size
    if size is not None:
        cfg.data.image_size = size[0] if size[0] == size[1] else tuple(size)


@dataclass
class Pipeline:
    channels: int | None  # repeat grayscale to this many channels
    size: list[int] | None  # resize to [height, width]
    mean: list[float] | None = None  # the weights' statistics on a 0-1 scale; None: the data's own
    std: list[float] | None = None

    def shape(self, shape):
        from dlcli.data.bundle import adapted_shape

        return adapted_shape(shape, self.channels, self.size)


def pipeline(cfg, shape) -> Pipeline | None:
    """What a leading backbone needs done to images of `shape` (C, H, W); None for other models and data."""
    entry = leading_backbone(cfg.model)
    if entry is None or len(shape) != 3:
        return None
    spec = input_spec(cfg.model)
    # An image folder is decoded at the chosen size (resolve_image_size); the backbone's own image_size still rules.
    own_size = "image_size" in type(cfg.data).model_fields and entry.image_size is None
    size = None if own_size or spec.size is None or tuple(spec.size) == tuple(shape[1:]) else list(spec.size)
    return Pipeline(3 if shape[0] == 1 else None, size, spec.mean, spec.std)


def model_input_shape(cfg, shape) -> tuple[int, ...]:
    pipe = pipeline(cfg, shape)
    return tuple(pipe.shape(shape)) if pipe else tuple(shape)


def model_for(cfg, data, pretrained: bool = True):
    """The model a config declares for a dataset. A leading backbone first makes the data's normaliser its input
    pipeline (the weights' statistics for uint8 images; the data's own for float ones, and random weights); what
    the first epoch freezes is frozen and the selectors are checked."""
    from dlcli.data.bundle import Normalizer
    from dlcli.models import build_model

    pipe = pipeline(cfg, data.input_shape)
    if pipe is not None:
        old = data.normalizer
        mean, std = old.mean, old.std
        if pipe.mean is not None and getattr(data.train.x, "dtype", torch.uint8) == torch.uint8:
            mean, std = [255.0 * m for m in pipe.mean], [255.0 * s for s in pipe.std]
        data.normalizer = Normalizer(mean, std, True, channels=pipe.channels, size=pipe.size)
    shape = data.normalizer.output_shape(data.input_shape)
    model, _ = build_model(cfg.model, shape, len(data.classes), data.vocab_size, pretrained,
                           noun=cfg.task.noun, padded=bool((data.preprocessing or {}).get("padded")),
                           outputs=cfg.task.output_shape(len(data.classes), shape))
    freeze_at_start(cfg, model)
    return model


# ---------------------------------------------------------------- model.init


@dataclass
class InitReport:
    source: str
    rows: list[tuple[str, list[int], list[int], list[int]]]  # layer, [tensors, values] loaded / skipped / new
    unused: int  # tensors of the source the model has no name for
    example_skip: str = ""

    def render(self, console) -> None:
        from rich.table import Table

        table = Table(title=f"model.init from {self.source}", title_justify="left")
        for col in ("layer", "loaded", "skipped (other shape)", "new (not in the source)"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        cell = lambda tv: f"{tv[0]} ({tv[1]:,})" if tv[0] else "-"  # noqa: E731
        for layer, loaded, skipped, new in self.rows:
            table.add_row(layer, cell(loaded), cell(skipped), cell(new))
        console.print(table)
        notes = [f"tensors (values); {self.unused} tensors of the source have no place in this model"
                 if self.unused else "tensors (values)"]
        if self.example_skip:
            notes.append(self.example_skip)
        console.print("; ".join(notes), soft_wrap=True)


def resolve_init(source: str | None, runs_root: Path) -> str | None:
    """model.init as what it names now: a file path as given, a run id prefix or `latest` as the exact run id. A
    run records that, so repeating it (or a sweep's next trial) starts from the same weights, not the newest run."""
    from dlcli import rundirs as runs

    if not source or Path(source).expanduser().is_file():
        return source
    try:
        return runs.resolve_run(runs_root, source).name
    except DlcliError as err:
        raise DlcliError(f"model.init: '{source}' is not a checkpoint file, and as a run id: {err}") from None


def init_from(source: str, model, runs_root: Path) -> InitReport:
    """Load `source` (a checkpoint file, or a run id / prefix / `latest` in runs_root: its best.pt) into every tensor
    of `model` with the same name and shape; a one-line error when none fits."""
    from dlcli import rundirs as runs
    from dlcli.models.backbones import read_weights, with_metadata

    path = Path(source).expanduser()
    if path.is_file():
        label = str(path)
    else:
        try:
            run = runs.resolve_run(runs_root, source)
        except DlcliError as err:
            raise DlcliError(f"model.init: '{source}' is not a checkpoint file, and as a run id: {err}") from None
        path, label = run / "checkpoints" / "best.pt", f"run {run.name}"
        if not path.is_file():
            raise DlcliError(f"model.init: run {run.name} has no checkpoints/best.pt yet")
    try:
        state = read_weights(path)
    except DlcliError as err:
        raise DlcliError(f"model.init: {err}") from None
    target = model.state_dict()
    rows: dict[str, list[list[int]]] = {}
    fits, example = {}, ""
    for name, tensor in target.items():
        layer = name.split(".", 1)[0]
        counts = rows.setdefault(layer, [[0, 0], [0, 0], [0, 0]])
        found = state.get(name)
        kind = 2 if found is None else (0 if found.shape == tensor.shape else 1)
        counts[kind][0] += 1
        counts[kind][1] += tensor.numel()
        if kind == 0:
            fits[name] = found
        elif kind == 1 and not example:
            example = f"e.g. {name}: {tuple(found.shape)} in the source, {tuple(tensor.shape)} here"
    if not fits:
        theirs = sorted({k.split(".", 1)[0] for k in state})
        raise DlcliError(f"model.init: nothing in {label} fits this model: none of its {len(state)} tensors has the "
                         f"name and shape of one here (its layers: {', '.join(theirs[:8])}; this model's: "
                         f"{', '.join(rows)})")
    model.load_state_dict(with_metadata(fits, getattr(state, "_metadata", None) or target._metadata), strict=False)
    unused = sum(1 for k in state if k not in target)
    return InitReport(label, [(layer, *c) for layer, c in rows.items()], unused, example)
