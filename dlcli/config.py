"""The config schema, validated once at the edge: YAML + `--set` overrides -> Config, or a one-line DlcliError."""

from __future__ import annotations

import os
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, PrivateAttr
from pydantic import ValidationError
from pydantic import ValidationInfo, field_validator, model_validator

from dlcli.data.catalog import DATASETS, NOTICES, DataEntry, data_spec, parse_data
from dlcli.errors import ConfigError, closest
from dlcli.models.layers import ACTIVATIONS, LAYERS, Activation, WeightsName
from dlcli.optim import OPTIMIZERS, SCHEDULERS
from dlcli.registry import ItemError, Strict, parse_list
from dlcli.space import parse_space, space_schema
from dlcli.tasks import TASKS, TaskError, parse_task, task_spec
from dlcli.track import TRACKERS, items_schema

MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000
UNION_MEMBERS = {"int", "str", "float", "bool", "list", "dict", "tuple"}  # pydantic's names of union members
UNION_TAG = re.compile(r"constrained-\w+|\w+(-\w+)?\[.*\]")  # constrained-int, literal['auto'], function-after[..]
MONITOR_HELP = "a metric name of the task: train_loss, val_loss, val_accuracy (classification), val_r2, val_f1_micro, ..."


def _parse_named(registry, v, section):
    """`adam` or `{name: adam, lr: ...}` -> the registry entry; error paths read `optimizer.lr`."""
    if isinstance(v, dict) and "name" in v:
        if not isinstance(v["name"], str):  # found by tests/test_safety.py's property tests: a list is unhashable
            name = v["name"]
            raise ValueError(f"@.name: must be a string naming the {section}, not {type(name).__name__} {name!r:.40}")
        args = {k: val for k, val in v.items() if k != "name"}
        v = {v["name"]: args}
    elif not isinstance(v, str):
        raise ValueError(f"needs a `name` key, e.g. {section}: {{name: ...}}")
    try:
        return registry.parse(v, path_has_name=False)
    except ItemError as err:
        raise ValueError(f"@{err.where or '.name'}: {err.what}") from None


# model.init: start from another run's weights (every tensor whose name and shape match; dlcli.finetune)
InitFrom = Annotated[str | None, Field(None, min_length=1, description="a run id (its best.pt) or a checkpoint file: "
                                       "loads every tensor whose name and shape match")]


class SequentialModel(Strict):
    type: Literal["sequential"]
    layers: list[Any] = Field(min_length=1, description="the network, first layer first: each a layer's name "
                                                        "(flatten), {name: its first key} (dense: 128) or {name: "
                                                        "{key: value, ...}}; every shape follows from the data's")
    init: InitFrom = None

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        return parse_list(LAYERS, v)

    def layer_list(self, num_classes: int, tokens: bool = False):
        return _with_outputs(self.layers, num_classes)


def _with_outputs(layers: list, width: int) -> list:
    """`dense: outputs` -> `dense: width`, the task's outputs (classes, labels, horizon x targets), in residual blocks
    too; so a head follows the data and a sweep over horizon needs no second edit."""
    resolved = []
    for layer in layers:
        if layer.entry_name == "dense" and layer.units == "outputs":
            layer = layer.model_copy(update={"units": width})
        elif layer.entry_name == "residual":
            layer = layer.model_copy(update={"layers": _with_outputs(layer.layers, width)})
        resolved.append(layer)
    return resolved


HIDDEN_ACTIVATION = "the hidden layers' activation"
HIDDEN_DROPOUT = "dropout after each hidden layer, in training (0: none)"
CLASSIFIER_DROPOUT = "dropout before the last dense layer, in training (0: none)"


def _head(hidden, activation, dropout, batchnorm, num_classes):
    layers = []
    for units in hidden:
        layers.append(LAYERS.parse({"dense": {"units": units, "activation": activation}}))
        if batchnorm:
            layers.append(LAYERS.parse("batchnorm"))
        if dropout:
            layers.append(LAYERS.parse({"dropout": dropout}))
    layers.append(LAYERS.parse({"dense": num_classes}))
    return layers


class MLPModel(Strict):
    type: Literal["mlp"]
    hidden: list[PositiveInt] = Field([128], description="the widths of the hidden dense layers after flatten, in "
                                                         "order ([]: a linear model)")
    activation: Activation = Field("relu", description=HIDDEN_ACTIVATION)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description=HIDDEN_DROPOUT)
    batchnorm: bool = Field(False, description="a batchnorm after each hidden layer's activation")
    linear: bool = Field(False, description="a linear map from the inputs to the outputs beside the hidden layers "
                                            "(their sum is the answer): a linear model plus what the network adds")
    init: InitFrom = None

    def layer_list(self, num_classes: int, tokens: bool = False):
        head = _head(self.hidden, self.activation, self.dropout, self.batchnorm, num_classes)
        if self.linear:  # a residual block whose shortcut is a dense layer, inputs -> outputs, whatever the widths
            head = [LAYERS.parse({"residual": {"layers": [layer.to_spec() for layer in head], "projection": True}})]
        return [LAYERS.parse("flatten")] + head


class CNNModel(Strict):
    type: Literal["cnn"]
    channels: list[PositiveInt] = Field([32, 64], min_length=1, description="one conv2d per entry, with this many "
                                                                            "filters, in order")
    kernel_size: PositiveInt = Field(3, description="every convolution's kernel side, in pixels")
    padding: Literal["valid", "same"] = Field("valid", description="every convolution's: valid (none, the picture "
                                                                   "shrinks) or same (kept), as conv2d's")
    pool: PositiveInt | None = Field(2, description="a maxpool2d of this size after each convolution; null: none")
    activation: Activation = Field("relu", description="the convolutions' and the hidden dense layers' activation")
    batchnorm: bool = Field(False, description="a batchnorm between each convolution and its activation")
    hidden: list[PositiveInt] = Field([128], description="the widths of the dense layers between flatten and the "
                                                         "classifier, in order")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description=HIDDEN_DROPOUT)
    init: InitFrom = None

    def layer_list(self, num_classes: int, tokens: bool = False):
        layers = []
        for filters in self.channels:
            conv = {"filters": filters, "kernel_size": self.kernel_size, "padding": self.padding}
            if self.batchnorm:
                layers += [LAYERS.parse({"conv2d": conv}), LAYERS.parse({"batchnorm": {"activation": self.activation}})]
            else:
                layers.append(LAYERS.parse({"conv2d": {**conv, "activation": self.activation}}))
            if self.pool:
                layers.append(LAYERS.parse({"maxpool2d": self.pool}))
        layers.append(LAYERS.parse("flatten"))
        return layers + _head(self.hidden, self.activation, self.dropout, False, num_classes)


class LSTMModel(Strict):
    """Reads an image row by row (or a sequence step by step) and classifies the last state."""

    type: Literal["lstm"]
    embedding_dim: PositiveInt = Field(64, description="text data only: the width of the token vectors (an "
                                                       "embedding layer) the recurrent layer reads")
    hidden_size: PositiveInt = Field(128, description="the recurrent layer's units, per direction")
    num_layers: PositiveInt = Field(1, description="recurrent layers stacked")
    bidirectional: bool = Field(False, description="also read backwards; the classifier sees both directions' "
                                                   "last states")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between stacked recurrent layers and before "
                                                            "the classifier, in training (0: none)")
    init: InitFrom = None

    def layer_list(self, num_classes: int, tokens: bool = False):
        rnn = {"units": self.hidden_size, "num_layers": self.num_layers, "bidirectional": self.bidirectional,
               "dropout": self.dropout}
        layers = [LAYERS.parse({"embedding": self.embedding_dim})] if tokens else []
        layers.append(LAYERS.parse({self.type: rnn}))
        if self.dropout:
            layers.append(LAYERS.parse({"dropout": self.dropout}))
        return layers + [LAYERS.parse({"dense": num_classes})]


class GRUModel(LSTMModel):
    """The lstm preset with a GRU: reads a sequence step by step (or an image row by row), classifies the last
    state."""

    type: Literal["gru"]  # type: ignore[assignment]


def _conv_bn_relu(filters: int, kernel: int) -> list:
    return [LAYERS.parse({"conv1d": {"filters": filters, "kernel_size": kernel, "padding": "same"}}),
            LAYERS.parse("batchnorm"), LAYERS.parse({"activation": "relu"})]


class FCNModel(Strict):
    """The fully convolutional network of Wang et al. (2017) for series classification: conv1d + batchnorm + relu
    blocks (128, 256, 128 filters; kernels 8, 5, 3; 'same' padding), a global average pool, the classifier."""

    type: Literal["fcn"]
    filters: list[PositiveInt] = Field([128, 256, 128], min_length=1, description="one conv1d + batchnorm + relu "
                                                                                  "block per entry, with this many "
                                                                                  "filters, in order")
    kernel_sizes: list[PositiveInt] = Field([8, 5, 3], min_length=1, description="each block's kernel length in "
                                                                                 "steps, one per filters entry")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description=CLASSIFIER_DROPOUT)
    init: InitFrom = None

    @model_validator(mode="after")
    def _same_length(self):
        if len(self.filters) != len(self.kernel_sizes):
            raise ValueError(f"@.kernel_sizes: gives {len(self.kernel_sizes)} kernels for {len(self.filters)} "
                             "filters; give one per convolution")
        return self

    def layer_list(self, num_classes: int, tokens: bool = False):
        layers = [layer for f, k in zip(self.filters, self.kernel_sizes) for layer in _conv_bn_relu(f, k)]
        layers.append(LAYERS.parse("global_avg_pool1d"))
        if self.dropout:
            layers.append(LAYERS.parse({"dropout": self.dropout}))
        return layers + [LAYERS.parse({"dense": num_classes})]


class ResNet1DModel(Strict):
    """The residual network of Wang et al. (2017) for series classification: blocks of three conv1d + batchnorm
    (kernels 8, 5, 3; relu between) whose input is added back through a batch-normalised shortcut (a 1x1
    convolution where the width changes), relu after the sum; 64, 128, 128 filters; global average pool,
    classifier."""

    type: Literal["resnet1d"]
    filters: list[PositiveInt] = Field([64, 128, 128], min_length=1, description="one residual block per entry, "
                                                                                 "its convolutions this many filters "
                                                                                 "wide")
    kernel_sizes: list[PositiveInt] = Field([8, 5, 3], min_length=1, description="the kernel lengths of every "
                                                                                 "block's convolutions, in order: "
                                                                                 "one conv1d each")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description=CLASSIFIER_DROPOUT)
    init: InitFrom = None

    def layer_list(self, num_classes: int, tokens: bool = False):
        layers = []
        for filters in self.filters:
            body = [item for k in self.kernel_sizes for item in (
                {"conv1d": {"filters": filters, "kernel_size": k, "padding": "same"}}, "batchnorm",
                {"activation": "relu"})]
            body.pop()  # the last relu comes after the sum
            block = {"layers": body, "batchnorm_shortcut": True, "activation": "relu"}
            layers.append(LAYERS.parse({"residual": block}))
        layers.append(LAYERS.parse("global_avg_pool1d"))
        if self.dropout:
            layers.append(LAYERS.parse({"dropout": self.dropout}))
        return layers + [LAYERS.parse({"dense": num_classes})]


class BackboneModel(Strict):
    """A pretrained network (dlcli.models.backbones) with a new classifier for the dataset's classes:
    backbone (pooled) -> dropout -> dense(hidden) ... -> dense(classes)."""

    type: Literal["backbone"]
    arch: str = Field(min_length=1, description="architecture name: `dlcli backbones` lists them")
    weights: WeightsName = Field("DEFAULT", description="DEFAULT, a weights name (IMAGENET1K_V1), none, or a "
                                                        "file's path")
    source: Literal["torchvision", "timm"] = Field("torchvision", description="the library arch comes from "
                                                                         "(timm: the dlcli[timm] extra)")
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="the size the network sees; default: the weights' own (224 for most), or the data's")
    hidden: list[PositiveInt] = Field([], description="the widths of dense layers between the backbone's pooled "
                                                      "vector and the classifier, in order")
    activation: Activation = Field("relu", description=HIDDEN_ACTIVATION)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the backbone's vector and after each hidden "
                                                            "layer, in training (0: none)")
    init: InitFrom = None

    def layer_list(self, num_classes: int, tokens: bool = False):
        backbone = LAYERS.parse({"backbone": {"arch": self.arch, "weights": self.weights, "source": self.source,
                                              "output": "pooled", "image_size": self.image_size}})
        dropout = [LAYERS.parse({"dropout": self.dropout})] if self.dropout else []
        return [backbone, *dropout, *_head(self.hidden, self.activation, self.dropout, False, num_classes)]


class DetectorModel(Strict):
    """An FCOS-style detector (dlcli.models.detection): a body (`tiny`, trained from scratch, or a torchvision
    network by name with its weights), a feature pyramid over its last `levels` map sizes, one head shared by them.
    `task: detection` trains it."""

    type: Literal["detector"]
    for_task: ClassVar[str] = "detection"  # the only task that reads its dense outputs
    backbone: str = Field("tiny", min_length=1, description="tiny (from scratch) or a torchvision network: "
                          "resnet18, resnet50, mobilenet_v3_large, ... (`dlcli backbones` lists them)")
    weights: WeightsName = Field("DEFAULT", description="a torchvision backbone's weights: DEFAULT, a weights "
                                                        "name, none, or a file's path")
    channels: list[PositiveInt] = Field([16, 32, 64, 96, 128], min_length=1,
                                        description="tiny: each stage's width; each stage halves the picture")
    levels: Annotated[int, Field(ge=1, le=5)] = Field(3, description="the pyramid's levels: the body's last (coarsest) "
                                                                     "map sizes, strides 8, 16, 32 by default")
    width: PositiveInt = Field(64, description="the pyramid's and the head's channels")
    head_convs: Annotated[int, Field(ge=0, le=8)] = Field(2, description="3x3 convolutions in each tower of the head")
    init: InitFrom = None

    def layer_list(self, num_classes: int, tokens: bool = False):
        return []  # built whole (build_module); the data's own statistics normalise its pictures

    def build_module(self, input_shape, num_classes: int, pretrained: bool = True):
        from dlcli.models.detection import build_detector

        return build_detector(self, input_shape, num_classes, pretrained)


class UNetModel(Strict):
    """Segmentation: a U-Net (skip connections; dlcli.models.segnets) and a 1x1 convolution to the classes,
    one answer per pixel."""

    type: Literal["unet"]
    width: PositiveInt = Field(16, description="channels at full resolution, doubling per level down")
    depth: int = Field(4, ge=1, le=7, description="halvings of the resolution")
    batchnorm: bool = Field(True, description="a batchnorm after each 3x3 convolution (then without a bias), "
                                              "before its ReLU")
    init: InitFrom = None

    def layer_list(self, num_classes: int, tokens: bool = False):
        return [LAYERS.parse({"unet": {"width": self.width, "depth": self.depth, "batchnorm": self.batchnorm}}),
                LAYERS.parse({"conv2d": {"filters": num_classes, "kernel_size": 1}})]


class SegmenterModel(Strict):
    """Segmentation: torchvision's FCN, DeepLabV3 or LRASPP with its backbone (dlcli.models.segnets), built
    for the dataset's classes; weights from files only (nothing is downloaded)."""

    type: Literal["segmenter"]
    arch: str = Field("deeplabv3_mobilenet_v3_large", description="fcn_resnet50, fcn_resnet101, deeplabv3_resnet50, "
                      "deeplabv3_resnet101, deeplabv3_mobilenet_v3_large or lraspp_mobilenet_v3_large")
    weights: str | None = Field("none", description="none, or a weights file of the whole model")
    backbone_weights: str | None = Field("none", description="none, or the backbone's ImageNet weights file")
    init: InitFrom = None

    @field_validator("arch")
    @classmethod
    def _arch(cls, v):
        from dlcli.models.layers import SEGMENTERS

        if v not in SEGMENTERS:
            raise ValueError(f"unknown segmentation architecture '{v}'{closest(v, SEGMENTERS)} (one of "
                             f"{', '.join(SEGMENTERS)})")
        return v

    def layer_list(self, num_classes: int, tokens: bool = False):
        return [LAYERS.parse({"segmenter": {"arch": self.arch, "classes": num_classes, "weights": self.weights,
                                            "backbone_weights": self.backbone_weights}})]


ModelConfig = Annotated[SequentialModel | MLPModel | CNNModel | LSTMModel | GRUModel | FCNModel | ResNet1DModel
                        | BackboneModel | DetectorModel | UNetModel | SegmenterModel, Field(discriminator="type")]
MODEL_TYPES = {"sequential": SequentialModel, "mlp": MLPModel, "cnn": CNNModel, "lstm": LSTMModel, "gru": GRUModel,
               "fcn": FCNModel, "resnet1d": ResNet1DModel, "backbone": BackboneModel, "detector": DetectorModel,
               "unet": UNetModel, "segmenter": SegmenterModel}


class EarlyStopping(Strict):
    monitor: str = Field("val_loss", description=MONITOR_HELP)
    mode: Literal["auto", "min", "max"] = Field("auto", description="whether lower (min) or higher (max) is better; "
                                                "auto: from the metric's name (losses and errors min, scores max)")
    patience: PositiveInt = Field(3, description="epochs without an improvement before training stops")
    min_delta: NonNegativeFloat = Field(0.0, description="the least change that counts as an improvement")


Selector = int | str  # a layer's index or name (dense_2), a layer kind (backbone), or a parameter-name pattern


class Freeze(Strict):
    """Parts of the model left untrained, BatchNorm statistics included, for the first `epochs` epochs (dlcli.finetune)."""

    layers: list[Selector] = Field(min_length=1, description="layer indices or names (dense_2, or a kind: "
                                   "backbone), or parameter-name patterns (backbone_1.net.layer1.*)")
    epochs: PositiveInt | None = Field(None, description="trained from epoch epochs + 1; null: never")


def _freeze_forms(schema: dict) -> None:
    """train.freeze's schema: the shorthands its validator accepts, besides a list of mappings."""
    freeze, selector = schema.pop("items"), {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "array", "items": freeze}, freeze, {"type": "array", "items": selector, "minItems": 1},
                       selector, {"type": "null"}]


class TrainConfig(Strict):
    epochs: PositiveInt | Literal["auto"] = Field(
        "auto", description="passes over the training split; auto: about 3,000 steps in 10 to 300 epochs, stopping "
                            "early when the task's validation figure stops improving")
    batch_size: PositiveInt = Field(32, description="samples per step and device: a step trains devices x batch_size")
    devices: PositiveInt = Field(1, description="processes trained with DDP, one per GPU (or sharing the CPU)")
    eval_batch_size: PositiveInt = Field(1024, description="samples per batch when scoring (validation, test, "
                                                           "evaluate, predict); memory, not results")
    device: str = Field("auto", description="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "32", "bf16", "16-mixed"] = Field(
        "auto", description="auto: bf16 on CUDA (16-mixed where bf16 is missing); on a CPU, bf16 for convolutional "
                            "and recurrent networks where the CPU has native bf16, else 32")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="classification: the share of each target "
                                                                     "spread evenly over the classes")
    grad_clip: PositiveFloat | None = Field(None, description="clip the gradients' global norm to this")
    l1: NonNegativeFloat = Field(0.0, description="add l1 x the sum of |weights| of the weight matrices to the loss")
    early_stopping: EarlyStopping | None = Field(None, description="stop when a monitored metric stops improving")
    checkpoint_monitor: str | None = Field(None, description="best.pt's metric; default the task's (val_accuracy "
                                           "for classification, val_loss for regression and multilabel, "
                                           "val_f1_micro for multilabel with pos_weight auto or threshold tuned)")
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="NHWC memory layout for convolutional networks; auto: decided by a measured rule")
    precise_bn: bool | Literal["auto"] = Field(
        "auto", description="recompute the BatchNorm statistics from the training split after each epoch, before "
                            "validation (dlcli.precise_bn); auto: where they lag (a momentum below torch's 0.1, or "
                            "too few steps to forget their initial values), and without a validation split only for "
                            "the epochs a checkpoint keeps (best.pt, the last)")
    compile: bool = Field(False, description="torch.compile the model (slower start, faster steps on large models)")
    threads: PositiveInt | None = Field(None, description="torch's CPU threads; unset: one per idle core")
    on_nan: Literal["stop", "skip_batch"] = Field("stop", description="a non-finite loss: fail the run (stop) or "
                                                                      "skip that batch's update (skip_batch)")
    class_weights: Literal["none", "auto"] | dict[str, PositiveFloat] = Field(
        "none", description="classification: weight each class's loss; auto: inverse class frequency; or "
                            "{class: weight}")
    cv: Annotated[int, Field(ge=2, le=50)] | None = Field(
        None, description="k-fold cross-validation (dlcli.cv): K runs, each validating on one fold, then the final "
                          "model (cv_final: a refit on all training rows for the epoch count the folds chose, or "
                          "the folds' models bagged); null: one run")
    cv_final: Literal["refit", "bag"] = Field(
        "refit", description="with train.cv, the run's final model: refit (one model trained on all training rows "
                             "for the epoch count the folds chose) or bag (the K fold models' best checkpoints as one "
                             "model that averages their outputs: class probabilities or values; no refit)")
    # `backbone`, [0, 1], {layers: [backbone], epochs: 3} or a list of such mappings
    freeze: list[Freeze] = Field([], json_schema_extra=_freeze_forms,
                                 description="layers kept fixed: `backbone`, [0, 1], {layers: [backbone], epochs: 3} "
                                             "(unfrozen after 3 epochs) or a list of such")

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, v):
        if v is None:
            return []
        if isinstance(v, (str, int)) or (isinstance(v, list) and v and all(isinstance(i, (str, int)) for i in v)):
            return [{"layers": v if isinstance(v, list) else [v]}]
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _bag_needs_folds(self):
        if self.cv_final == "bag" and not self.cv:
            raise ValueError("@.cv_final: bag averages the cross-validation folds' models: set train.cv (e.g. 5), or "
                             "remove cv_final")
        return self

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, v):
        return str(v) if isinstance(v, int) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        base = v.split(":")[0]
        index = v[5:]
        if base not in ("auto", "cpu", "cuda", "mps") or (":" in v and (base != "cuda" or not (
                index.isascii() and index.isdigit()))):
            raise ValueError(f"unknown device '{v}': use auto, cpu, cuda, cuda:N or mps")
        return v


class Pruner(Strict):
    """Optuna's median pruner: a trial stops when its metric at an epoch is worse than the median of finished trials'
    at that epoch."""

    startup_trials: NonNegativeInt = Field(3, description="trials that must finish before any is pruned")
    min_epochs: PositiveInt = Field(1, description="the first epoch at which a trial may be pruned")


class SweepConfig(Strict):
    """What `dlcli sweep` searches (dlcli.sweep); `dlcli train` ignores this section."""

    space: dict[str, Any] = Field(json_schema_extra=lambda s: s.update(additionalProperties=space_schema()),
                                  description="a dotted config key (as --set spells it) -> its distribution: "
                                              "{loguniform: [1e-4, 1e-2]}, {uniform: [...]}, {int: [low, high, step]}"
                                              " or {choice: [...]}")
    trials: PositiveInt = Field(20, description="runs trained, each with values drawn from space")
    metric: str | None = Field(None, description="ranks and prunes trials; default train.checkpoint_monitor")
    sampler: Literal["tpe", "random"] = Field("tpe", description="how trials draw: tpe, Optuna's tree-structured "
                                                                 "Parzen estimator, learns from earlier trials; "
                                                                 "random draws each independently")
    startup_trials: NonNegativeInt = Field(5, description="tpe: trials drawn at random before it models the space")
    pruner: Pruner | None = Field(Pruner(), description="stops trials that fall behind; null: every trial trains to "
                                                        "the end")

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v):
        return parse_space(v)


class Config(Strict):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80,
                      description="the run's name: its folder is runs/<time>-<name>")
    seed: int = Field(42, description="seeds weights, splits, batch order and augmentation: the same seed, the "
                                      "same run")
    task: Any = Field(None, validate_default=True, json_schema_extra=lambda s: s.update(anyOf=task_schema()),
                      description="what the model answers: classification (the default), regression, multilabel, "
                                  "forecast, ...")
    data: Any  # a dlcli.data.catalog entry: the dataset kind and its own keys
    model: ModelConfig = Field(description="a preset (`type:`) or a list of layers (`type: sequential`)")
    optimizer: Any = Field({"name": "adam"}, validate_default=True, description="the optimizer by name, or a "
                                                                                 "mapping with `name` and its keys")
    scheduler: Any = Field({"name": "none"}, validate_default=True, description="the learning-rate schedule by "
                                                                                 "name, or a mapping with `name`")
    train: TrainConfig = Field(TrainConfig(), description="how training runs")
    track: list[Any] = Field([], json_schema_extra=lambda s: s.update(items=items_schema()),
                             description="loggers: csv, tensorboard, mlflow (dlcli.track)")
    sweep: SweepConfig | None = Field(None, description="`dlcli sweep`'s search space and trials; not part of a "
                                                         "run's resolved config")
    _notices: list[str] = PrivateAttr(default_factory=list)  # old spellings met, for the CLI to point out

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, v, info: ValidationInfo):
        if isinstance(v, DataEntry):
            return v
        return parse_data(v, legacy=bool(info.context and info.context.get("legacy")))

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v, info: ValidationInfo):
        try:
            task = parse_task(v)
        except TaskError as err:
            raise ValueError(str(err)) from None
        if v is None and info.context and info.context.get("legacy"):
            task._spelled = True  # a run recorded before tasks: it was accepted as classification then
        return task

    @property
    def notices(self) -> list[str]:
        return self._notices

    @field_validator("track", mode="before")
    @classmethod
    def _track(cls, v):
        if v is None:
            return []
        if isinstance(v, str):  # `track: tensorboard`
            v = [v]
        if not isinstance(v, list):
            raise ValueError("a list of logger names, e.g. [tensorboard, mlflow, csv]")
        return parse_list(TRACKERS, v)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer(cls, v):
        return _parse_named(OPTIMIZERS, v, "optimizer")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler(cls, v):
        return _parse_named(SCHEDULERS, v, "scheduler")

    @model_validator(mode="after")
    def _task_fits(self):
        """The task's metrics name the monitors; its dataset must be able to give its targets."""
        task = self.task
        if not task._spelled and task.entry_name not in self.data.tasks:  # series: forecast unless told otherwise
            task = self.task = parse_task(self.data.tasks[0])
        if task.entry_name not in self.data.tasks:
            givers = [n for n in DATASETS.names() if task.entry_name in DATASETS.entries[n].tasks]
            raise ValueError(f"@task: {task.entry_name} needs targets the {self.data.dataset} dataset cannot give (it gives "
                             f"{' or '.join(self.data.tasks)} targets); {task.entry_name} reads its targets from "
                             f"dataset: {', '.join(givers)}")
        problem = task.check_train(self.train)
        if problem:
            raise ValueError(f"@train.{problem}")
        problem = task.check_model(self.model)
        if problem:
            raise ValueError(f"@model.{problem}")
        if self.train.cv_final == "bag" and task.bag_rule is None:
            raise ValueError(f"@train.cv_final: bag averages classification or regression models, not "
                             f"{task.entry_name} ones: use cv_final: refit")
        if self.train.checkpoint_monitor is None:
            self.train.checkpoint_monitor = task.best_monitor()
        valid = task.monitors()
        found = [("train.checkpoint_monitor", self.train.checkpoint_monitor)]
        if self.train.early_stopping:
            found.append(("train.early_stopping.monitor", self.train.early_stopping.monitor))
        if hasattr(self.scheduler, "monitor"):
            found.append(("scheduler.monitor", self.scheduler.monitor))
        if self.sweep is not None and self.sweep.metric:
            found.append(("sweep.metric", self.sweep.metric))
        for where, name in found:
            if name not in valid:
                raise ValueError(f"@{where}: '{name}' is not a metric of the {task.entry_name} task (choose one "
                                 f"of {', '.join(valid)})")
        return self

    @model_validator(mode="after")
    def _monitors_need_validation(self):
        if self.data.val_split == 0:
            self.monitor_training()
        return self

    def monitor_training(self) -> bool:
        """Without a validation split, val_* monitors fall back to their train_* twins (the task's running metric,
        or the loss where the metric has no training twin); the resolved config says so. Returns whether any
        changed."""
        train = {"train_loss", f"train_{self.task.step_metric}"}

        def swap(m):
            twin = m.replace("val_", "train_")
            return twin if twin in train else ("train_loss" if m.startswith("val_") else m)

        before = self.train.checkpoint_monitor
        self.train.checkpoint_monitor = swap(self.train.checkpoint_monitor)
        changed = before != self.train.checkpoint_monitor
        if self.train.early_stopping:
            before = self.train.early_stopping.monitor
            self.train.early_stopping.monitor = swap(before)
            changed |= before != self.train.early_stopping.monitor
        if hasattr(self.scheduler, "monitor"):
            before = self.scheduler.monitor
            self.scheduler.monitor = swap(before)
            changed |= before != self.scheduler.monitor
        if self.sweep is not None and self.sweep.metric:
            self.sweep.metric = swap(self.sweep.metric)
        return changed

    def resolved(self) -> dict:
        """The config as plain data, every default filled in: what the run directory records."""
        out = self.model_dump(mode="json", exclude={"task", "data", "optimizer", "scheduler", "track", "sweep"})
        out["task"] = task_spec(self.task)
        out["data"] = data_spec(self.data)
        unused = set() if self.optimizer.groups else {"groups"}  # configs without groups record what they did
        out["optimizer"] = {"name": self.optimizer.entry_name, **self.optimizer.model_dump(mode="json", exclude=unused)}
        out["scheduler"] = {"name": self.scheduler.entry_name, **self.scheduler.model_dump(mode="json")}
        if isinstance(self.model, SequentialModel):
            out["model"]["layers"] = [layer.to_spec() for layer in self.model.layers]
        out["track"] = [tracker.to_spec() for tracker in self.track]
        return out


def task_schema() -> list[dict]:
    """`task:` in the JSON Schema: a task name, or a mapping with `type` and that task's keys."""
    forms: list[dict] = [{"type": "string", "enum": TASKS.names()}]
    for name in TASKS.names():
        schema = TASKS.entries[name].model_json_schema()
        props = {"type": {"const": name}, **schema.get("properties", {})}
        forms.append({"type": "object", "properties": props, "required": ["type"], "additionalProperties": False})
    return forms


# ---------------------------------------------------------------- loading


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config (limit {MAX_CONFIG_BYTES})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML at {where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (name, data, model, ...)")
    if _expanded_size(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{path}: expands to over {MAX_CONFIG_VALUES:,} values (repeated YAML aliases?); refused")
    return data


def _expanded_size(data, limit: int) -> int:
    """Values in the loaded data, an alias counted at every use (a few KB of aliases can mean billions); stops
    counting past `limit`."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            stack += node
    return count


def apply_override(data: dict, override: str) -> None:
    """`train.epochs=3` sets data['train']['epochs'] = 3; the value is parsed as YAML, then typed by the schema."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    set_key(data, key.strip(), value, f"--set {key}")


# Sections whose short form is a name (`task: regression`, `optimizer: adam`): a key set inside one opens it as the
# mapping it stands for, with the name under this key.
SHORT_FORMS = {"task": "type", "optimizer": "name", "scheduler": "name"}


def set_key(data: dict, key: str, value, where: str) -> None:
    """data[a][b]... = value for the dotted `a.b...` (list items by index); `where` starts an error's line."""
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not (part.isascii() and part.isdigit()) or int(part) >= len(node):
                raise ConfigError(f"{where}: '{part}' is not an index of the {len(node)}-item list there")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                elif depth == 0 and part in SHORT_FORMS and isinstance(node[part], str):
                    node[part] = {SHORT_FORMS[part]: node[part]}  # task: regression -> {type: regression, ...}
                node = node[part]
        else:
            raise ConfigError(f"{where}: '{parts[depth - 1]}' holds a value, not a section")


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    data = read_yaml(path)
    for override in overrides or []:
        apply_override(data, override)
    return validate_config(data, source=str(path), overrides=overrides)


def validate_config(data: dict, source: str = "config", legacy: bool = False,
                    overrides: list[str] | None = None) -> Config:
    """legacy: `data` is a run's resolved config, possibly written by an older dlcli (see catalog.parse_data).
    overrides: the `--set KEY=VALUE`s applied to `data`; an error at a key one of them set names it, not `source`."""
    notices: list[str] = []
    token = NOTICES.set(notices)
    try:
        cfg = Config.model_validate(data, context={"legacy": legacy})
        cfg._notices = notices
        return cfg
    except ValidationError as err:
        errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo explains a missing key
        blamed = _override_at(_error_path(errors[0]), overrides or [])
        raise ConfigError(f"{blamed or source}: {format_error(errors[0], data, errors)}") from None
    finally:
        NOTICES.reset(token)


def _override_at(loc: list, overrides: list[str]) -> str | None:
    """`--set KEY=VALUE`, the last override that set the key an error is at (or a section holding it, or a key
    inside the value the error is about); None when the error is in the file's own keys."""
    if not loc:
        return None
    for override in reversed(overrides):
        parts = [int(p) if p.isascii() and p.isdigit() else p for p in override.partition("=")[0].strip().split(".")]
        if loc[: len(parts)] == parts or parts[: len(loc)] == loc:
            return f"--set {override}"
    return None


def _error_path(error: dict) -> list:
    """An error's location as the config's keys. An unknown key is the user's own word, kept whatever it is (a key
    named `str` or `int` is not a union member's name)."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden" and loc:
        return _key_path(loc[:-1]) + [loc[-1]]
    return _key_path(loc)


def _key_path(raw_loc) -> list:
    """pydantic's error location as the config's keys: union members and model-type tags left out."""
    # A union puts the member it tried into the path (train.epochs.constrained-int): keep only key names.
    loc = [p for p in raw_loc if isinstance(p, int) or not (p in UNION_MEMBERS or UNION_TAG.fullmatch(p))]
    # A discriminated union puts the tag into the path (model.cnn.channels): drop it.
    if len(loc) >= 2 and loc[0] == "model" and loc[1] in MODEL_TYPES:
        del loc[1]
    return loc


def _also_accepted(error: dict, errors: list[dict]) -> list[str]:
    """The literal values (`'auto'`) that other members of the same union accept where `error` failed: pydantic
    reports each member's failure, and the first alone would hide that `epochs: auto` is valid."""
    loc = _key_path(error["loc"])
    return [e["ctx"]["expected"] for e in errors if e is not error and e["type"] == "literal_error"
            and "expected" in e.get("ctx", {}) and e["loc"] != error["loc"] and _key_path(e["loc"]) == loc]


def format_error(error: dict, data: dict, errors: list[dict] = ()) -> str:
    loc = _error_path(error)
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    msg = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        fields = _fields_at(loc[:-1], data)
        return f"{path}: unknown key{closest(loc[-1], fields) if fields else ''}"
    if kind == "union_tag_invalid":
        return f"{path}.type: unknown model type '{_get(data, loc + ['type'])}'{closest(str(_get(data, loc + ['type'])), MODEL_TYPES)}"
    if kind == "union_tag_not_found":
        return f"{path}.type: missing; choose one of {', '.join(MODEL_TYPES)}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if msg.startswith("@"):  # a registry item: the message carries the rest of its path
        return f"{path}{msg[1:]}"
    if kind == "literal_error":
        return f"{path}: {msg} (got {_short(_get(data, loc))})"
    also = _also_accepted(error, list(errors))
    if also:
        return f"{path}: {msg} (or {' or '.join(also)}; got {_short(_get(data, loc))})"
    return f"{path}: {msg}"


def _short(value) -> str:
    """A bounded repr: YAML aliases can make a small file hold a structure billions of items large."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, 60, 60
    return r.repr(value)


def _get(data, loc):
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _fields_at(loc, data) -> list[str]:
    """The valid keys of the section at `loc`, for suggesting a fix to a misspelt one."""
    cls: Any = Config
    for i, part in enumerate(loc):
        if part == "model" and cls is Config:
            cls = MODEL_TYPES.get(str(_get(data, ["model", "type"])))
        elif isinstance(part, str) and cls is not None and part in cls.model_fields:
            ann = cls.model_fields[part].annotation
            args = getattr(ann, "__args__", ())
            cls = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        else:
            return []
        if cls is None:
            return []
    return list(cls.model_fields)


__all__ = ["Config", "load_config", "validate_config", "read_yaml", "apply_override", "ACTIVATIONS"]
