"""Detection networks (`model: {type: detector, backbone: ...}`): a body, torchvision's FeaturePyramidNetwork and
one head shared by the pyramid's levels, in the manner of FCOS (Tian et al., 2019): every location of every level
predicts its distances to the four sides of a box, a centre-ness logit and one logit per class.

The network answers one dense tensor in training and in evaluation alike, so the engine's loop runs unchanged:
(B, L, 8 + classes), one row per location over the levels (finest first),

    [px, py, stride, x1, y1, x2, y2, centre-ness logit, class logits ...]

the location's point and stride are constants of the geometry, the box is decoded from the predicted distances
inside the model (exp(s * d) * stride, FCOS's parametrisation, in float32 whatever the autocast) and clipped to the
picture in evaluation mode. The detection task (dlcli.tasks.detection) assigns targets to locations, computes the
loss and turns the rows into boxes (score, NMS).

Bodies: `tiny`, a small network trained from scratch (stride-2 stages of conv + BatchNorm + ReLU), the recipe that
learns on a CPU in minutes; or a torchvision classification network by name (resnet18, resnet50,
mobilenet_v3_large, ...), its weights by name or file as `backbone` layers take them (dlcli.models.backbones),
under `backbone_1.net.` so that `model.init` from a classification run of the `backbone` preset finds its tensors.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from dlcli.errors import DlcliError
from dlcli.models import Row

PRIOR = 0.01  # the class logits start at this probability (RetinaNet's focal-loss initialisation)


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class TinyBody(nn.Module):
    """Stages that halve the picture: each a stride-2 conv and a stride-1 conv (3x3, BatchNorm, ReLU). Returns every
    stage's map (strides 2, 4, 8, ...)."""

    def __init__(self, channels: int, widths: list[int]):
        super().__init__()
        stages, c = [], channels
        for w in widths:
            stages.append(nn.Sequential(conv_bn(c, w, 2), conv_bn(w, w)))
            c = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class NetBody(nn.Module):
    """A torchvision classification network without its pooling and classifier, run child by child (a `features`
    Sequential step by step); returns the last map of each size it passes through, in order."""

    def __init__(self, net, steps: list[str]):
        super().__init__()
        self.net, self.steps = net, list(steps)

    def forward(self, x):
        maps, size = [], x.shape[-2:]
        for name in self.steps:
            x = self.net.get_submodule(name)(x)
            if x.shape[-2:] != size:
                maps.append(x)
                size = x.shape[-2:]
            else:
                if maps:
                    maps[-1] = x
        return maps


def _steps(net) -> list[str]:
    """The modules a stripped network runs in order: its children, a Sequential `features` opened up."""
    steps = []
    for name, child in net.named_children():
        if child is None:
            continue
        if name == "features" and isinstance(child, nn.Sequential):
            steps += [f"features.{n}" for n, _ in child.named_children()]
        else:
            steps.append(name)
    return steps


class Head(nn.Module):
    """FCOS's head, shared by every level: a class tower and a box tower (3x3 conv + GroupNorm + ReLU each), class
    logits from the first, four distances and the centre-ness logit from the second, a learnt scale per level."""

    def __init__(self, width: int, classes: int, convs: int, levels: int):
        super().__init__()

        def tower():
            layers = []
            for _ in range(convs):
                layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(min(32, width // 4) or 1, width),
                           nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.cls_tower, self.box_tower = tower(), tower()
        self.cls = nn.Conv2d(width, classes, 3, padding=1)
        self.box = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr = nn.Conv2d(width, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls.bias, -math.log((1 - PRIOR) / PRIOR))


class Detector(nn.Module):
    """body -> FPN -> shared head -> the dense rows described in the module's docstring."""

    def __init__(self, body: nn.Module, body_name: str, in_channels: list[int], strides: list[int], classes: int,
                 width: int, convs: int, first: int):
        super().__init__()
        self.body_name, self.first = body_name, first  # the body's maps from index `first` on feed the pyramid
        self.add_module(body_name, body)
        from torchvision.ops import FeaturePyramidNetwork

        self.fpn = FeaturePyramidNetwork(in_channels, width)
        self.head = Head(width, classes, convs, len(strides))
        self.strides = list(strides)

    def forward(self, x):
        height, width = x.shape[-2:]
        maps = getattr(self, self.body_name)(x)[self.first:]
        pyramid = self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
        head, rows = self.head, []
        for level, (feature, stride) in enumerate(zip(pyramid.values(), self.strides)):
            cls = head.cls(head.cls_tower(feature))
            box_features = head.box_tower(feature)
            dist, ctr = head.box(box_features), head.ctr(box_features)
            with torch.autocast(x.device.type, enabled=False):
                b, _, h, w = feature.shape
                ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) * stride
                xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) * stride
                py, px = torch.meshgrid(ys, xs, indexing="ij")
                px, py = px.reshape(1, -1, 1).expand(b, -1, 1), py.reshape(1, -1, 1).expand(b, -1, 1)
                d = torch.exp((dist.float() * head.scales[level].float()).clamp(max=12.0)) * stride
                d = d.flatten(2).transpose(1, 2)  # (B, h*w, 4): left, top, right, bottom
                x1, y1, x2, y2 = px - d[..., 0:1], py - d[..., 1:2], px + d[..., 2:3], py + d[..., 3:4]
                if not self.training:  # answers lie in the picture; training keeps the gradient of every side
                    x1, x2 = x1.clamp(0, width), x2.clamp(0, width)
                    y1, y2 = y1.clamp(0, height), y2.clamp(0, height)
                rows.append(torch.cat([px, py, torch.full_like(px, float(stride)), x1, y1, x2, y2,
                                       ctr.float().flatten(2).transpose(1, 2),
                                       cls.float().flatten(2).transpose(1, 2)], dim=2))
        return torch.cat(rows, dim=1)


def _probe_maps(body, shape) -> list[tuple[int, ...]]:
    """The shapes of the body's maps for an input of `shape` (C, H, W), without arithmetic (meta tensors)."""
    from torch.func import functional_call

    tensors = {k: torch.empty_like(v, device="meta") for k, v in [*body.named_parameters(), *body.named_buffers()]}
    was = body.training
    body.eval()
    try:
        maps = functional_call(body, tensors, (torch.empty(1, *shape, device="meta"),))
    finally:
        body.train(was)
    return [tuple(m.shape[1:]) for m in maps]


def build_detector(cfg, shape, classes: int, pretrained: bool = True):
    """(Detector, summary rows) for `cfg` (dlcli.config.DetectorModel) on images of `shape` (C, H, W)."""
    if len(shape) != 3:
        raise DlcliError(f"model (detector preset): needs pictures (channels, height, width), got shape {tuple(shape)}")
    c, h, w = shape
    if cfg.backbone == "tiny":
        body, name = TinyBody(c, list(cfg.channels)), "body"
    else:
        from dlcli.models import backbones
        from dlcli.models.layers import LAYERS

        entry = LAYERS.parse({"backbone": {"arch": cfg.backbone, "weights": cfg.weights, "output": "features"}})
        if c != 3:
            raise DlcliError(f"model (detector preset): backbone {cfg.backbone} takes RGB pictures (3 channels), "
                             f"got {c}")
        try:
            net = backbones._torchvision_net(entry, (h, w), pretrained)
        except backbones.ShapeError as err:
            raise DlcliError(f"model (detector preset): {err}") from None
        body, name = NetBody(net, _steps(net)), "backbone_1"
    maps = _probe_maps(body, shape)
    levels = cfg.levels
    if len(maps) < levels:
        raise DlcliError(f"model (detector preset): the {cfg.backbone} body gives {len(maps)} map sizes for "
                         f"{h}x{w} pictures, fewer than levels: {levels}")
    first = len(maps) - levels
    used = maps[first:]
    if used[-1][1] < 1 or used[-1][2] < 1:
        raise DlcliError(f"model (detector preset): {h}x{w} pictures are too small for {cfg.backbone}'s coarsest "
                         f"level: use larger pictures or fewer levels")
    strides = [max(1, round(h / m[1])) for m in used]
    model = Detector(body, name, [m[0] for m in used], strides, classes, cfg.width, cfg.head_convs, first)
    locations = sum(m[1] * m[2] for m in used)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    rows = [Row(name, used[-1], count(body)), Row("fpn", (cfg.width, *used[0][1:]), count(model.fpn)),
            Row("head", (locations, 8 + classes), count(model.head))]
    return model, rows
