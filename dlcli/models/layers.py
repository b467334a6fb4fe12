"""The `sequential` layer registry: one entry per Keras-like layer name.

Each entry validates its YAML arguments and builds `(module, output_shape)` from the input shape (batch axis
excluded): images are (C, H, W), sequences (T, F), vectors (F,). Shapes follow Keras: 'valid' padding by default,
pooling floors, and parameter counts match Keras for conv1d, conv2d, dense and the pools. A `residual` entry holds a
list of entries; the builder (dlcli.models) builds it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, NonNegativeInt, PositiveInt, field_serializer, field_validator

from dlcli.registry import Entry, Registry, parse_list

LAYERS = Registry("layer")

# Activations that never decrease: max-pooling commutes with them, which the builder uses to pool first.
MONOTONE = {"relu", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "linear"}
ACTIVATIONS = sorted(MONOTONE | {"gelu", "silu", "softplus", "softmax", "mish"})

Activation = Literal[
    "relu", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "linear", "gelu", "silu", "softplus", "softmax", "mish"
]


def activation_module(name: str | None):
    """The nn.Module for an activation name; None for none/linear and for softmax (the loss takes logits)."""
    from torch import nn

    if name in (None, "linear", "softmax"):
        return None
    return {
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "elu": nn.ELU,
        "selu": nn.SELU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "softplus": nn.Softplus,
        "mish": nn.Mish,
    }[name]()


class ShapeError(ValueError):
    """A layer cannot take the shape the previous layer produces."""


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _image(shape, name: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"{name} needs an image input (channels, height, width), got shape {tuple(shape)}")
    return shape


# A weights setting (a name, a file, or `none`): YAML's bare `weights:` or `weights: null` means none too.
WeightsName = Annotated[str, BeforeValidator(lambda v: "none" if v is None else v)]


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class Layer(Entry):
    activation: Activation | None = Field(None, description="applied to the layer's output: relu, gelu, "
                                                            "softmax, ... (none: linear)")
    needs_vocab: ClassVar[bool] = False  # build(shape, vocab_size) for layers that look up token ids
    loads_weights: ClassVar[bool] = False  # build(shape, pretrained) for layers that can start from trained weights
    # A parameter-free step-wise module (dropout): the builder applies it to the values of (values, lengths).
    on_values: ClassVar[bool] = False

    def reads_lengths(self) -> bool | None:
        """How the layer takes a padded sequence (values, lengths) from an embedding or NaN-padded series: None, it
        cannot; True, it returns (values, lengths) again; False, it reads the lengths and returns plain values."""
        return None

    def build(self, shape: tuple[int, ...]):
        """(module or None, output shape); the builder appends `activation`."""
        raise NotImplementedError


@LAYERS.register("conv2d", positional="filters")
class Conv2D(Layer):
    filters: PositiveInt = Field(description="output channels (Keras's filters)")
    kernel_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        3, description="the kernel's size in pixels: one integer for a square kernel, or [height, width]")
    strides: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        1, description="the step between kernel positions in pixels: one integer, or [height, width]")
    padding: Literal["valid", "same"] | int = Field(
        "valid", description="valid: none (Keras's default), so each side gives (size - kernel_size) // strides + "
                             "1; same: the output keeps the input's height and width (strides 1 only); an integer: "
                             "that many zero pixels on every side")
    use_bias: bool = Field(True, description="add a learned bias per output channel (a batchnorm right after "
                                             "has its own shift)")

    def build(self, shape):
        from torch import nn

        c, h, w = _image(shape, "conv2d")
        kh, kw = _pair(self.kernel_size)
        sh, sw = _pair(self.strides)
        if self.padding == "same":
            if (sh, sw) != (1, 1):
                raise ShapeError("conv2d: padding 'same' needs strides 1; give an integer padding instead")
            pad: int | str = "same"
            oh, ow = h, w
        else:
            pad = 0 if self.padding == "valid" else self.padding
            oh, ow = _conv_out(h, kh, sh, pad), _conv_out(w, kw, sw, pad)
        if oh < 1 or ow < 1:
            raise ShapeError(f"conv2d: kernel {kh}x{kw} is larger than its {h}x{w} input")
        conv = nn.Conv2d(c, self.filters, (kh, kw), stride=(sh, sw), padding=pad, bias=self.use_bias)
        return conv, (self.filters, oh, ow)


class _Pool(Layer):
    pool_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        2, description="the window's size in pixels: one integer, or [height, width]; the output's size is "
                       "floored (Keras's 'valid' pooling)")
    strides: PositiveInt | tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="the step between windows in pixels; null: pool_size (windows that do not overlap, as "
                          "in Keras)")

    def _out(self, shape, name):
        c, h, w = _image(shape, name)
        kh, kw = _pair(self.pool_size)
        sh, sw = _pair(self.strides) if self.strides is not None else (kh, kw)
        oh, ow = _conv_out(h, kh, sh, 0), _conv_out(w, kw, sw, 0)
        if oh < 1 or ow < 1:
            raise ShapeError(f"{name}: pool {kh}x{kw} is larger than its {h}x{w} input")
        return (kh, kw), (sh, sw), (c, oh, ow)


@LAYERS.register("maxpool2d", positional="pool_size")
class MaxPool2D(_Pool):
    def build(self, shape):
        from torch import nn

        k, s, out = self._out(shape, "maxpool2d")
        return nn.MaxPool2d(k, s), out


@LAYERS.register("avgpool2d", positional="pool_size")
class AvgPool2D(_Pool):
    def build(self, shape):
        from torch import nn

        k, s, out = self._out(shape, "avgpool2d")
        return nn.AvgPool2d(k, s), out


@LAYERS.register("global_avg_pool2d")
class GlobalAvgPool2D(Layer):
    def build(self, shape):
        from torch import nn

        c, _, _ = _image(shape, "global_avg_pool2d")
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), (c,)


@LAYERS.register("flatten")
class Flatten(Layer):
    def build(self, shape):
        from torch import nn

        n = 1
        for d in shape:
            n *= d
        return nn.Flatten(), (n,)


@LAYERS.register("reshape", positional="target_shape")
class Reshape(Layer):
    target_shape: list[PositiveInt] = Field(
        description="the output's shape without the batch axis, channels first for an image ([C, H, W]); it must "
                    "hold as many values as the input")

    def build(self, shape):
        from dlcli.models.modules import Reshape as ReshapeModule

        n_in = n_out = 1
        for d in shape:
            n_in *= d
        for d in self.target_shape:
            n_out *= d
        if n_in != n_out:
            raise ShapeError(f"reshape: cannot turn {tuple(shape)} ({n_in} values) into {tuple(self.target_shape)}")
        return ReshapeModule(self.target_shape), tuple(self.target_shape)


@LAYERS.register("dense", positional="units")
class Dense(Layer):
    units: PositiveInt | Literal["outputs"] = Field(description="the width; outputs: the task's (classes, labels, "
                                                    "or horizon x targets), the usual last layer")
    use_bias: bool = Field(True, description="add a learned bias to each output")

    def build(self, shape):
        from torch import nn

        if self.units == "outputs":  # the builder resolves it from the task (dlcli.config's layer_list)
            raise ShapeError("dense: units outputs is the task's width, known only when a model is built for it")
        if len(shape) != 1:
            raise ShapeError(f"dense needs a flat input, got shape {tuple(shape)}: add `flatten` before it")
        return nn.Linear(shape[0], self.units, bias=self.use_bias), (self.units,)


@LAYERS.register("dropout", positional="rate")
class Dropout(Layer):
    rate: float = Field(0.5, ge=0.0, lt=1.0, description="the fraction of values zeroed at random in training "
                                                         "(the rest scaled by 1 / (1 - rate)); none at evaluation")
    on_values: ClassVar[bool] = True

    def reads_lengths(self):
        return True

    def build(self, shape):
        from torch import nn

        return nn.Dropout(self.rate), tuple(shape)


@LAYERS.register("batchnorm")
class BatchNorm(Layer):
    momentum: float = Field(0.99, gt=0.0, lt=1.0, description="Keras convention: weight of the running average")
    epsilon: float = Field(1e-3, gt=0.0, description="added to the variance before dividing by its square root "
                                                     "(Keras's default; torch's is 1e-5)")

    def build(self, shape):
        from torch import nn

        # torch's momentum is the weight of the new batch, Keras's the weight of the running value.
        kwargs = dict(eps=self.epsilon, momentum=1.0 - self.momentum)
        if len(shape) == 3:
            return nn.BatchNorm2d(shape[0], **kwargs), tuple(shape)
        if len(shape) == 1:
            return nn.BatchNorm1d(shape[0], **kwargs), tuple(shape)
        if len(shape) == 2:  # a sequence (steps, channels): per channel, over the batch and the steps
            from dlcli.models.modules import SequenceBatchNorm

            return SequenceBatchNorm(shape[1], **kwargs), tuple(shape)
        raise ShapeError(f"batchnorm takes an image, a sequence or a flat input, got shape {tuple(shape)}")

    def reads_lengths(self):
        return True


@LAYERS.register("activation", positional="activation")
class ActivationLayer(Layer):
    activation: Activation = Field(description="the activation to apply (required here): relu, gelu, tanh, ...; "
                                               "softmax and linear leave the values as they are (the loss takes "
                                               "logits)")

    def reads_lengths(self):
        return True

    def build(self, shape):
        return None, tuple(shape)  # the builder adds the activation, as for every layer


class _Recurrent(Layer):
    units: PositiveInt = Field(description="the hidden state's width, per direction")
    num_layers: PositiveInt = Field(1, description="recurrent layers stacked, each reading the one before's steps")
    bidirectional: bool = Field(False, description="also read the sequence backwards; the output is both "
                                                   "directions' states side by side (2 x units wide)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between stacked layers in training (no effect "
                                                            "with num_layers 1)")
    return_sequences: bool = Field(False, description="output every step's state (steps, width), for a "
                                                      "recurrent, conv1d or pooling layer to follow; false: only "
                                                      "the final state (width,), as in Keras (width: units, twice "
                                                      "that when bidirectional)")

    def reads_lengths(self):
        return self.return_sequences

    def _block(self, shape, block_class):
        if len(shape) == 3:  # an image is read row by row: H steps of C*W features
            steps, features = shape[1], shape[0] * shape[2]
        elif len(shape) == 2:
            steps, features = shape
        else:
            raise ShapeError(f"{self.entry_name} needs a sequence (steps, features) or an image, got shape "
                             f"{tuple(shape)}")
        block = block_class(features, self.units, self.num_layers, self.bidirectional, self.dropout,
                            self.return_sequences)
        width = self.units * (2 if self.bidirectional else 1)
        return block, ((steps, width) if self.return_sequences else (width,))


@LAYERS.register("lstm", positional="units")
class LSTM(_Recurrent):
    def build(self, shape):
        from dlcli.models.modules import LSTMBlock

        return self._block(shape, LSTMBlock)


@LAYERS.register("gru", positional="units")
class GRU(_Recurrent):
    def build(self, shape):
        from dlcli.models.modules import GRUBlock

        return self._block(shape, GRUBlock)


@LAYERS.register("embedding", positional="dim")
class Embedding(Layer):
    """Token ids (0 = padding) -> vectors; passes the sequence lengths on to a following lstm or pooling layer."""

    dim: PositiveInt = Field(64, description="the width of each token's vector (Keras's output_dim); id 0, the "
                                             "padding, maps to zeros")
    needs_vocab: ClassVar[bool] = True

    def build(self, shape, vocab_size=None):
        from dlcli.models.modules import MaskedEmbedding

        if vocab_size is None or len(shape) != 1:
            raise ShapeError("embedding needs token ids: use it with the text_csv dataset")
        return MaskedEmbedding(vocab_size, self.dim), (shape[0], self.dim)


@LAYERS.register("global_avg_pool1d")
class GlobalAvgPool1D(Layer):
    """Mean over the steps of a sequence (only the real steps of a padded one)."""

    def reads_lengths(self):
        return False

    def build(self, shape):
        from dlcli.models.modules import SequenceMean

        if len(shape) != 2:
            raise ShapeError(f"global_avg_pool1d needs a sequence (steps, features), got shape {tuple(shape)}")
        return SequenceMean(), (shape[1],)


def _sequence(shape, name: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise ShapeError(f"{name} needs a sequence (steps, channels), got shape {tuple(shape)}")
    return shape


@LAYERS.register("global_max_pool1d")
class GlobalMaxPool1D(Layer):
    """Max over the steps of a sequence (only the real steps of a padded one)."""

    def reads_lengths(self):
        return False

    def build(self, shape):
        from dlcli.models.modules import SequenceMax

        return SequenceMax(), (_sequence(shape, "global_max_pool1d")[1],)


@LAYERS.register("conv1d", positional="filters")
class Conv1D(Layer):
    """A convolution over the steps of (steps, channels); Keras's Conv1D, its parameter count included."""

    filters: PositiveInt = Field(description="output channels (Keras's filters)")
    kernel_size: PositiveInt = Field(3, description="the kernel's length in steps")
    strides: PositiveInt = Field(1, description="the step between kernel positions, in steps")
    padding: Literal["valid", "same"] | NonNegativeInt = Field(
        "valid", description="valid: none (Keras's default), so (steps - dilation x (kernel_size - 1) - 1) // "
                             "strides + 1 steps come out; same: as many steps out as in (strides 1 only); an "
                             "integer: that many zero steps at each end")
    dilation: PositiveInt = Field(1, description="the spacing of the kernel's taps, in steps (Keras's "
                                                 "dilation_rate)")
    use_bias: bool = Field(True, description="add a learned bias per output channel")

    def reads_lengths(self):
        return True

    def build(self, shape):
        from dlcli.models.modules import Conv1d

        steps, channels = _sequence(shape, "conv1d")
        if self.padding == "same":
            if self.strides != 1:
                raise ShapeError("conv1d: padding 'same' needs strides 1; give an integer padding instead")
            pad: int | str = "same"
            out = steps
        else:
            pad = 0 if self.padding == "valid" else self.padding
            out = (steps + 2 * pad - self.dilation * (self.kernel_size - 1) - 1) // self.strides + 1
        if out < 1:
            raise ShapeError(f"conv1d: kernel {self.kernel_size} (dilation {self.dilation}) is longer than its "
                             f"{steps} steps: use padding: same or a smaller kernel")
        conv = Conv1d(channels, self.filters, self.kernel_size, stride=self.strides, padding=pad,
                      dilation=self.dilation, bias=self.use_bias)
        return conv, (out, self.filters)


class _Pool1D(Layer):
    pool_size: PositiveInt = Field(2, description="the window's length in steps; the output's length is floored "
                                                  "(Keras's 'valid' pooling)")
    strides: PositiveInt | None = Field(None, description="the step between windows; null: pool_size (windows "
                                                          "that do not overlap, as in Keras)")

    def reads_lengths(self):
        return True

    def _pool(self, shape, kind):
        from dlcli.models.modules import Pool1d

        steps, channels = _sequence(shape, self.entry_name)
        stride = self.strides or self.pool_size
        out = (steps - self.pool_size) // stride + 1
        if out < 1:
            raise ShapeError(f"{self.entry_name}: pool {self.pool_size} is longer than its {steps} steps")
        return Pool1d(kind, self.pool_size, stride), (out, channels)


@LAYERS.register("maxpool1d", positional="pool_size")
class MaxPool1D(_Pool1D):
    def build(self, shape):
        return self._pool(shape, "max")


@LAYERS.register("avgpool1d", positional="pool_size")
class AvgPool1D(_Pool1D):
    def build(self, shape):
        return self._pool(shape, "avg")


@LAYERS.register("layer_norm")
class LayerNorm(Layer):
    """Normalises each step's channels (or a flat vector) to zero mean and unit variance, then scales and shifts."""

    epsilon: float = Field(1e-3, gt=0.0, description="added to the variance before dividing by its square root "
                                                     "(Keras's default; torch's is 1e-5)")

    def reads_lengths(self):
        return True

    def build(self, shape):
        from dlcli.models.modules import SequenceLayerNorm

        if len(shape) not in (1, 2):
            raise ShapeError(f"layer_norm takes a sequence (steps, channels) or a flat input, got shape {tuple(shape)}")
        return SequenceLayerNorm(shape[-1], eps=self.epsilon), tuple(shape)


@LAYERS.register("transformer_encoder")
class TransformerEncoder(Layer):
    """Multi-head self-attention with sinusoidal positions: (steps, channels) in, (steps, model_dim) out, so a
    global pool follows. The channels are projected to model_dim when they differ."""

    num_heads: PositiveInt = Field(4, description="attention heads; each attends over model_dim / num_heads "
                                                  "channels, so it must divide model_dim")
    model_dim: PositiveInt | None = Field(None, description="the attention's width; default the input's channels "
                                          "when num_heads divides them and they are 16 or more, else 64")
    ff_dim: PositiveInt | None = Field(None, description="the feed-forward width; default 2 x model_dim")
    num_layers: PositiveInt = Field(1, description="encoder layers stacked (attention, then feed-forward, each)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the attention weights and in the "
                                                            "feed-forward, in training")

    def reads_lengths(self):
        return True

    def build(self, shape):
        from dlcli.models.modules import TransformerEncoder as Encoder

        steps, channels = _sequence(shape, "transformer_encoder")
        dim = self.model_dim
        if dim is None:
            dim = channels if channels >= 16 and channels % self.num_heads == 0 else 64
        if dim % self.num_heads:
            raise ShapeError(f"transformer_encoder: num_heads {self.num_heads} must divide model_dim {dim}")
        encoder = Encoder(steps, channels, dim, self.num_heads, self.ff_dim or 2 * dim, self.num_layers, self.dropout)
        return encoder, (steps, dim)


@LAYERS.register("residual", positional="layers")
class Residual(Layer):
    """x + f(x) for the sub-list `layers` f, built with the same shape inference; where f changes the width, the
    shortcut is a 1x1 convolution (a dense layer for flat inputs). `activation` comes after the sum."""

    layers: list[Any] = Field(min_length=1, description="the layers of the block, as in model.layers")
    batchnorm_shortcut: bool = Field(False, description="batch-normalise the shortcut (Wang et al.'s ResNet)")
    projection: bool = Field(False, description="a learned shortcut (dense or 1x1 convolution) even where the width "
                                                "is kept: the block is then a linear map plus its layers")

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        return parse_list(LAYERS, v)

    @field_serializer("layers")
    def _specs(self, layers):
        return [layer.to_spec() for layer in layers]

    def reads_lengths(self):
        return True

    def build(self, shape):
        raise NotImplementedError("the model builder builds a residual block: it holds layers (dlcli.models)")


@LAYERS.register("backbone", positional="arch")
class Backbone(Layer):
    """A torchvision (or timm) classification network without its classification layer (dlcli.models.backbones).

    output: `features`, the last feature map (C, H, W) before the network's own pooling (a ViT's tokens (T, D)), for
    `global_avg_pool2d`, `dropout`, `dense: N` to follow; or `pooled`, the vector the network's classifier took.
    """

    arch: str = Field(min_length=1, description="architecture name: `dlcli backbones` lists them")
    weights: WeightsName = Field("DEFAULT", description="DEFAULT, a weights name (IMAGENET1K_V1), none, or a "
                                                        "file's path")
    source: Literal["torchvision", "timm"] = Field("torchvision", description="the library arch comes from "
                                                                         "(timm: the dlcli[timm] extra)")
    output: Literal["features", "pooled"] = Field(
        "features", description="features: the last feature map (C, H, W) before the network's own pooling (a "
                                "ViT's tokens (T, D)); pooled: the vector the network's classifier took")
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="the size the network sees; default: the weights' own (224 for most), or the data's")
    loads_weights: ClassVar[bool] = True  # build(shape, pretrained): evaluate, predict and resume skip the weights

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"

    def build(self, shape, pretrained: bool = True):
        from dlcli.models import backbones

        try:
            return backbones.build_backbone(self, shape, pretrained)
        except backbones.ShapeError as err:
            raise ShapeError(str(err)) from None



# ---------------------------------------------------------------- segmentation (the networks: dlcli.models.segnets)
#
# `unet` gives a U-Net's last decoder map (width, H, W), for a 1x1 `conv2d: <classes>` to follow (the `unet`
# preset adds it); `segmenter` is torchvision's FCN, DeepLabV3 or LRASPP with its backbone, giving (classes, H, W)
# logits. Both keep the input's height and width, as `task: segmentation` wants: one answer per pixel.

# torchvision.models.list_models(module=torchvision.models.segmentation)
SEGMENTERS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
              "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")


@LAYERS.register("unet", positional="width")
class UNetLayer(Layer):
    """A U-Net (Ronneberger et al. 2015, 'same' convolutions): `depth` levels down and up with skip connections,
    `width` channels at full resolution, doubling per level. Output: (width, H, W)."""

    width: PositiveInt = Field(16, description="channels at full resolution; width x 2**depth at the bottom")
    depth: int = Field(4, ge=1, le=7, description="halvings of the resolution (2x2 max pooling)")
    batchnorm: bool = Field(True, description="a batchnorm after each 3x3 convolution (then without a bias), "
                                              "before its ReLU")

    def build(self, shape):
        from dlcli.models.segnets import UNet

        c, h, w = _image(shape, "unet")
        if min(h, w) < 2**self.depth:
            raise ShapeError(f"unet of depth {self.depth} halves {h}x{w} pictures {self.depth} times: give "
                             f"image_size >= {2**self.depth} or a smaller depth")
        return UNet(c, self.width, self.depth, self.batchnorm), (self.width, h, w)


@LAYERS.register("segmenter", positional="arch")
class SegmenterLayer(Layer):
    """torchvision's segmentation networks, built here without downloading anything: fcn_resnet50/101,
    deeplabv3_resnet50/101, deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large. Output: (classes, H, W)
    logits. weights: a file of the whole model's weights (the classifier's last layer is kept as built where the
    classes differ); backbone_weights: a file of the backbone's ImageNet classification weights."""

    arch: Literal[SEGMENTERS] = Field(  # type: ignore[valid-type]
        "deeplabv3_mobilenet_v3_large", description="the torchvision segmentation network, built with its backbone")
    classes: PositiveInt = Field(description="the outputs per pixel: the task's classes")
    weights: WeightsName = Field("none", description="none, or a weights file of this architecture (weights-only "
                                                     "load)")
    backbone_weights: WeightsName = Field("none", description="none, or the backbone's classification weights file")
    loads_weights: ClassVar[bool] = True

    def build(self, shape, pretrained: bool = True):
        from dlcli.models.backbones import probe
        from dlcli.models.segnets import torchvision_segmenter

        c, h, w = _image(shape, "segmenter")
        module = torchvision_segmenter(self.arch, self.classes, c, self.weights, self.backbone_weights, pretrained)
        from dlcli.models.backbones import ShapeError as BackboneShapeError

        try:
            out = probe(module, shape, self.arch)
        except BackboneShapeError as err:
            raise ShapeError(str(err)) from None
        return module, out
