"""The segmentation networks (torch): a U-Net, and torchvision's FCN / DeepLabV3 / LRASPP returning plain logits.

Both give a (B, C, H, W) tensor at the input's height and width, as the `segmentation` task reads it. The layer
entries that build them (YAML keys, shapes) are in dlcli.models.layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _double_conv(cin: int, cout: int, batchnorm: bool) -> nn.Sequential:
    """Two 3x3 convolutions with 'same' padding, each followed by batchnorm (optional) and ReLU."""
    parts = []
    for c in (cin, cout):
        parts.append(nn.Conv2d(c, cout, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            parts.append(nn.BatchNorm2d(cout))
        parts.append(nn.ReLU(inplace=True))
    return nn.Sequential(*parts)


class UNet(nn.Module):
    """Ronneberger et al.'s U-Net with 'same' convolutions: `depth` halvings (2x2 max pooling), widths
    width x 2**level, 2x2 transposed convolutions up, each joined with the encoder's map of its size (the skip
    connection) before two more convolutions. Gives the last decoder map, (width, H, W); a 1x1 convolution to the
    classes follows it. Sizes that do not halve evenly are met by resizing the upsampled map to its skip's size."""

    def __init__(self, channels: int, width: int = 16, depth: int = 4, batchnorm: bool = True):
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(channels, widths[0], batchnorm)] +
                                  [_double_conv(widths[i], widths[i + 1], batchnorm) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_double_conv(2 * widths[i], widths[i], batchnorm) for i in reversed(range(depth))])

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for up, merge in zip(self.up, self.merge):
            skip = skips.pop()
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = merge(torch.cat([skip, x], 1))
        return x


class Segmenter(nn.Module):
    """A torchvision segmentation model (its dict output) as a module giving the logits (B, classes, H, W);
    grayscale pictures are repeated to the 3 channels its backbone takes."""

    def __init__(self, net: nn.Module, channels: int):
        super().__init__()
        self.net, self.gray = net, channels == 1

    def forward(self, x):
        if self.gray:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)["out"]


def torchvision_segmenter(arch: str, classes: int, channels: int, weights: str, backbone_weights: str,
                          pretrained: bool = True) -> Segmenter:
    """torchvision's `arch` built for `classes` outputs, nothing downloaded. weights: a file of the whole model's
    weights (torchvision's published ones, say); tensors of another shape (the classifier's last layer, for other
    classes) and the auxiliary head are left as built. backbone_weights: a file of the backbone's classification
    weights (ImageNet's resnet50 or mobilenet_v3_large)."""
    import warnings
    from pathlib import Path

    import torchvision.models as tvm

    from dlcli.models.backbones import read_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = tvm.get_model(arch, weights=None, weights_backbone=None, num_classes=classes)
    if pretrained and backbone_weights.lower() != "none":
        state = read_weights(Path(backbone_weights).expanduser())
        if all(k.startswith("features.") for k in state if not k.startswith("classifier.")):  # MobileNetV3's
            state = {k.removeprefix("features."): v for k, v in state.items()}
        _load_matching(net.backbone, state, backbone_weights, f"{arch}'s backbone")
    if pretrained and weights.lower() != "none":
        state = read_weights(Path(weights).expanduser())
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
        _load_matching(net, state, weights, arch)
    return Segmenter(net, channels)


def _load_matching(module: nn.Module, state: dict, path: str, what: str) -> None:
    """Load the tensors of `state` whose name and shape `module` has; an error when that is under half of them
    (not weights of this architecture)."""
    from dlcli.errors import RUNTIME, DlcliError

    own = module.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wanted = [k for k in own if not k.endswith("num_batches_tracked")]
    if len(fits) < len(wanted) // 2:
        missing = next((k for k in wanted if k not in fits), "")
        raise DlcliError(f"{path}: not weights of {what} (only {len(fits)} of its {len(wanted)} tensors found, "
                         f"e.g. no {missing})", RUNTIME)
    module.load_state_dict(fits, strict=False)
