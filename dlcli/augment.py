"""Batched augmentations, applied on the training device to a whole normalised batch at once.

They run after normalisation, so padding and cut-out fill with 0, which is the training mean. Every op draws from
torch's global generator, which the engine seeds: the same seed gives the same augmented batches.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, NonNegativeFloat, PositiveInt

from dlcli.registry import Entry, Registry

AUGMENTS = Registry("augmentation")

DEGREES_TEXT = "rotation by an angle drawn uniformly from [-degrees, degrees], in degrees"
SERIES_P_TEXT = "the probability that each series of a batch is changed"


class Augment(Entry):
    def __call__(self, x):
        raise NotImplementedError

    def moves(self, x, y, spatial: str, fill: int = 255):
        """The batch and its targets moved alike (spatial tasks): `spatial` "mask" (y: (B, H, W) class indices,
        `fill` where no pixel of the picture lands) or "boxes" (y: (B, M, 5) [class, x1, y1, x2, y2] in pixels,
        class -1 for padding rows). An op that does not move pixels leaves y as it is."""
        return self(x), y


# Boxes pushed mostly out of the picture by a move are dropped (class -1): what is left of them is under this many
# pixels wide or high, or under this share of the area they had.
MIN_BOX_SIDE = 2.0
MIN_BOX_SHARE = 0.2


def clip_boxes(moved, before, height: int, width: int):
    """Boxes (B, M, 5) after a move, clipped to the picture; those left too small (MIN_BOX_SIDE, MIN_BOX_SHARE of
    their area `before` the move) become padding."""
    import torch

    out = moved.clone()
    out[..., 1].clamp_(0, width)
    out[..., 3].clamp_(0, width)
    out[..., 2].clamp_(0, height)
    out[..., 4].clamp_(0, height)
    w, h = out[..., 3] - out[..., 1], out[..., 4] - out[..., 2]
    area0 = ((before[..., 3] - before[..., 1]) * (before[..., 4] - before[..., 2])).clamp_min(1e-6)
    small = (w < MIN_BOX_SIDE) | (h < MIN_BOX_SIDE) | (w * h < MIN_BOX_SHARE * area0)
    dead = (moved[..., 0] < 0) | small
    out[..., 0] = torch.where(dead, torch.full_like(out[..., 0], -1.0), out[..., 0])
    out[..., 1:] = torch.where(dead.unsqueeze(-1), torch.zeros_like(out[..., 1:]), out[..., 1:])
    return out


def flip_boxes(y, chosen, size: int, axis: int):
    """Mirror boxes along x (axis 0: columns 1, 3) or y (axis 1: columns 2, 4) of a picture `size` pixels across,
    for the pictures `chosen` ((B,) bool); padding rows stay padding."""
    import torch

    lo, hi = (1, 3) if axis == 0 else (2, 4)
    flipped = y.clone()
    flipped[..., lo], flipped[..., hi] = size - y[..., hi], size - y[..., lo]
    keep = (chosen.view(-1, 1) & (y[..., 0] >= 0)).unsqueeze(-1)
    return torch.where(keep, flipped, y)


@AUGMENTS.register("random_crop", positional="padding")
class RandomCrop(Augment):
    """Pad by `padding` pixels, then cut a random window of the original size."""

    padding: PositiveInt = Field(4, description="pixels added on every side (0: the training mean) before the crop: "
                                                "each picture moves by up to this many pixels either way")

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        return self._shifted(x, *self._draw(x))

    def _draw(self, x):
        import torch

        b, p = x.shape[0], self.padding
        dy = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device)
        return dy, dx

    def _shifted(self, x, dy, dx, fill=0.0):
        """Pad by `padding` (with `fill`), then the window at (dy, dx) of each picture: x (B, C, H, W) or (B, H, W)."""
        import torch
        import torch.nn.functional as F

        flat_only = x.dim() == 3
        if flat_only:
            x = x.unsqueeze(1)
        b, c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p), value=fill)
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(b, h, w)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(b, h, w)
        flat = (rows * (w + 2 * p) + cols).view(b, 1, h * w).expand(b, c, h * w)
        out = padded.flatten(2).gather(2, flat).view(b, c, h, w)
        return out[:, 0] if flat_only else out

    def moves(self, x, y, spatial, fill=255):
        dy, dx = self._draw(x)
        moved = self._shifted(x, dy, dx)
        p = self.padding
        if spatial == "mask":
            return moved, self._shifted(y, dy, dx, fill)
        # the content moves by (padding - dy, padding - dx) pixels
        shift = y.new_zeros(y.shape)
        shift[..., 1] = shift[..., 3] = (p - dx.view(-1, 1)).to(y.dtype)
        shift[..., 2] = shift[..., 4] = (p - dy.view(-1, 1)).to(y.dtype)
        return moved, clip_boxes(y + shift, y, x.shape[2], x.shape[3])


@AUGMENTS.register("hflip", positional="p")
class HorizontalFlip(Augment):
    p: float = Field(0.5, ge=0.0, le=1.0, description="the probability that each picture is mirrored")
    axis: ClassVar[int] = 3  # the picture's axis mirrored: columns

    def __call__(self, x):
        import torch

        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(self.axis), x)

    def moves(self, x, y, spatial, fill=255):
        import torch

        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        x = torch.where(flip, x.flip(self.axis), x)
        if spatial == "mask":
            return x, torch.where(flip.view(-1, 1, 1), y.flip(self.axis - 1), y)
        return x, flip_boxes(y, flip.view(-1), x.shape[self.axis], 0 if self.axis == 3 else 1)


@AUGMENTS.register("vflip", positional="p")
class VerticalFlip(HorizontalFlip):
    """Mirror upside down with probability p (aerial and microscope pictures have no up)."""

    axis: ClassVar[int] = 2


@AUGMENTS.register("affine")
class Affine(Augment):
    """Random rotation (degrees), translation (fraction of the size) and scale, one draw per image."""

    degrees: NonNegativeFloat = Field(10.0, description=DEGREES_TEXT)
    translate: float = Field(0.0, ge=0.0, lt=1.0, description="the largest shift, as a fraction of the picture's "
                                                              "width (across) and height (down), drawn per axis")
    scale: tuple[float, float] = Field((1.0, 1.0), description="[low, high]: the zoom drawn uniformly between them "
                                                               "(above 1 enlarges)")

    def __call__(self, x):
        return self._warp(x, self._theta(x), "bilinear")

    def _theta(self, x):
        """Per picture, the map from output to input coordinates (normalised to -1..1), as affine_grid takes it."""
        import math

        import torch

        b = x.shape[0]
        u = lambda lo, hi: torch.rand(b, device=x.device) * (hi - lo) + lo  # noqa: E731
        angle = u(-self.degrees, self.degrees) * (math.pi / 180)
        scale = u(*self.scale)
        tx, ty = u(-self.translate, self.translate) * 2, u(-self.translate, self.translate) * 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)

    @staticmethod
    def _warp(x, theta, mode):
        import torch.nn.functional as F

        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)

    def moves(self, x, y, spatial, fill=255):
        import torch

        theta = self._theta(x)
        moved = self._warp(x, theta, "bilinear")
        h, w = x.shape[2], x.shape[3]
        if spatial == "mask":  # nearest, shifted by one so that 0 marks where no pixel of the picture lands
            labels = self._warp((y.to(x.dtype) + 1).unsqueeze(1), theta, "nearest")[:, 0].round().long() - 1
            return moved, torch.where(labels < 0, torch.full_like(labels, fill), labels).to(y.dtype)
        # a box's corners go where their pixels go (the inverse map), and the box becomes the one around them
        a, t = theta[:, :, :2].to(y.dtype), theta[:, :, 2:].to(y.dtype)
        inverse = torch.linalg.inv(a)
        xs, ys = y[..., [1, 3, 3, 1]], y[..., [2, 2, 4, 4]]  # (B, M, 4)
        corners = torch.stack([xs * (2 / w) - 1, ys * (2 / h) - 1], -1)  # (B, M, 4, 2), normalised
        out = torch.einsum("bij,bmkj->bmki", inverse, corners - t.view(-1, 1, 1, 2))
        px, py = (out[..., 0] + 1) * (w / 2), (out[..., 1] + 1) * (h / 2)
        boxes = torch.stack([y[..., 0], px.amin(-1), py.amin(-1), px.amax(-1), py.amax(-1)], -1)
        return moved, clip_boxes(boxes, y, h, w)


@AUGMENTS.register("rotation", positional="degrees")
class Rotation(Affine):
    degrees: NonNegativeFloat = Field(15.0, description=DEGREES_TEXT)


@AUGMENTS.register("cutout", positional="size")
class Cutout(Augment):
    """Zero a random size x size square in each image (its centre may lie anywhere, as in DeVries & Taylor)."""

    size: PositiveInt = Field(8, description="the square's side in pixels; it is zeroed (the training mean)")
    p: float = Field(1.0, ge=0.0, le=1.0, description="the probability that each picture gets a square")

    def __call__(self, x):
        import torch

        b, _, h, w = x.shape
        cy = torch.randint(0, h, (b, 1, 1), device=x.device)
        cx = torch.randint(0, w, (b, 1, 1), device=x.device)
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        half = self.size // 2
        box = ((ys - cy) >= -half) & ((ys - cy) < self.size - half) & ((xs - cx) >= -half) & ((xs - cx) < self.size - half)
        apply = torch.rand(b, 1, 1, device=x.device) < self.p
        return x.masked_fill((box & apply).unsqueeze(1), 0.0)


# ---------------------------------------------------------------- numeric sequences (N, T, C)
#
# A batch of sequences is float (B, T, C) with NaN after each series' end (dlcli.data.sequences pads so); every op
# keeps those NaN where they are, so the model still finds each series' length. Their own registry keeps image ops
# out of a sequences config and these out of an image one.

SEQUENCE_AUGMENTS = Registry("sequence augmentation")


def _series_lengths(x):
    """Each series' length: its steps up to the last one holding a number (NaN padding after it)."""
    import torch

    valid = ~torch.isnan(x).all(2)  # (B, T)
    steps = torch.arange(1, x.shape[1] + 1, device=x.device)
    return (valid * steps).amax(1)


def _chosen(p: float, x):
    import torch

    return torch.rand(x.shape[0], 1, 1, device=x.device) < p


@SEQUENCE_AUGMENTS.register("jitter", positional="sigma")
class Jitter(Augment):
    """Add Gaussian noise of standard deviation `sigma` (in normalised units) to every step (Um et al. 2017)."""

    sigma: NonNegativeFloat = Field(0.03, description="the noise's standard deviation, in normalised units")
    p: float = Field(1.0, ge=0.0, le=1.0, description=SERIES_P_TEXT)

    def __call__(self, x):
        import torch

        return torch.where(_chosen(self.p, x), x + torch.randn_like(x) * self.sigma, x)


@SEQUENCE_AUGMENTS.register("scaling", positional="sigma")
class Scaling(Augment):
    """Multiply each channel of each series by one factor drawn from N(1, sigma) (Um et al. 2017)."""

    sigma: NonNegativeFloat = Field(0.1, description="the standard deviation of the factors, drawn around 1")
    p: float = Field(1.0, ge=0.0, le=1.0, description=SERIES_P_TEXT)

    def __call__(self, x):
        import torch

        factor = 1.0 + torch.randn(x.shape[0], 1, x.shape[2], device=x.device, dtype=x.dtype) * self.sigma
        return torch.where(_chosen(self.p, x), x * factor, x)


@SEQUENCE_AUGMENTS.register("window_slice", positional="ratio")
class WindowSlice(Augment):
    """Cut a random window of `ratio` of each series' own length and stretch it back over that length by linear
    interpolation (Le Guennec et al. 2016). Padding stays padding: a short series is sliced within its own steps."""

    ratio: float = Field(0.9, gt=0.0, le=1.0, description="the window's length, as a fraction of each series' own "
                                                          "length")
    p: float = Field(1.0, ge=0.0, le=1.0, description=SERIES_P_TEXT)

    def __call__(self, x):
        import torch

        b, t, c = x.shape
        length = _series_lengths(x).to(x.dtype).clamp_min(1)  # (B,)
        window = (length * self.ratio).round().clamp(min=1.0).minimum(length)
        start = torch.floor(torch.rand(b, device=x.device, dtype=x.dtype) * (length - window + 1))
        steps = torch.arange(t, device=x.device, dtype=x.dtype).view(1, t)
        # step i of the output reads position start + i * (window - 1) / (length - 1) of the input
        stretch = ((window - 1) / (length - 1).clamp_min(1)).view(b, 1)
        pos = (start.view(b, 1) + steps * stretch).clamp(max=t - 1)
        lo = pos.floor().long()
        hi = (lo + 1).minimum((start + window - 1).long().view(b, 1))
        frac = (pos - lo.to(x.dtype)).unsqueeze(2)
        gather = lambda idx: x.gather(1, idx.unsqueeze(2).expand(b, t, c))  # noqa: E731
        sliced = gather(lo) * (1 - frac) + gather(hi) * frac
        inside = (steps < length.view(b, 1)).unsqueeze(2)
        sliced = torch.where(inside, sliced, x)  # the padding after the series' end, unchanged
        return torch.where(_chosen(self.p, x), sliced, x)


def apply_all(augments, x, y=None, spatial: str | None = None, fill: int = 255):
    """The augmentations in order. With `spatial` ("mask" or "boxes"), returns (x, y) with the targets moved with
    the pixels (Augment.moves); `fill` is the mask value where no pixel of the picture lands."""
    if spatial is None:
        for aug in augments:
            x = aug(x)
        return x
    for aug in augments:
        x, y = aug.moves(x, y, spatial, fill)
    return x, y
