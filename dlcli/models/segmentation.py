"""Segmentation layers of the model registry (torch-free entries; the networks are in dlcli.models.segnets).

`unet` gives a U-Net's last decoder map (width, H, W), for a 1x1 `conv2d: <classes>` to follow (the `unet` preset
adds it); `segmenter` is torchvision's FCN, DeepLabV3 or LRASPP with its backbone, giving (classes, H, W) logits.
Both keep the input's height and width, as `task: segmentation` wants: one answer per pixel.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from dlcli.models.layers import LAYERS, Layer, ShapeError, _image

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
    weights: str = Field("none", description="none, or a weights file of this architecture (weights-only load)")
    backbone_weights: str = Field("none", description="none, or the backbone's classification weights file")
    loads_weights: ClassVar[bool] = True

    @field_validator("weights", "backbone_weights", mode="before")
    @classmethod
    def _none(cls, v):
        return "none" if v is None else v

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
