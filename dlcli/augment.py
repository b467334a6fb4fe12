"""Batched augmentations, applied on the training device to a whole normalised batch at once.

They run after normalisation, so padding and cut-out fill with 0, which is the training mean. Every op draws from
torch's global generator, which the engine seeds: the same seed gives the same augmented batches.
"""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveInt

from dlcli.registry import Entry, Registry

AUGMENTS = Registry("augmentation")


class Augment(Entry):
    def __call__(self, x):
        raise NotImplementedError


@AUGMENTS.register("random_crop", positional="padding")
class RandomCrop(Augment):
    """Pad by `padding` pixels, then cut a random window of the original size."""

    padding: PositiveInt = 4

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        b, c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device)
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(b, h, w)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(b, h, w)
        flat = (rows * (w + 2 * p) + cols).view(b, 1, h * w).expand(b, c, h * w)
        return padded.flatten(2).gather(2, flat).view(b, c, h, w)


@AUGMENTS.register("hflip", positional="p")
class HorizontalFlip(Augment):
    p: float = Field(0.5, ge=0.0, le=1.0)

    def __call__(self, x):
        import torch

        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(3), x)


@AUGMENTS.register("affine")
class Affine(Augment):
    """Random rotation (degrees), translation (fraction of the size) and scale, one draw per image."""

    degrees: NonNegativeFloat = 10.0
    translate: float = Field(0.0, ge=0.0, lt=1.0)
    scale: tuple[float, float] = (1.0, 1.0)

    def __call__(self, x):
        import math

        import torch
        import torch.nn.functional as F

        b = x.shape[0]
        u = lambda lo, hi: torch.rand(b, device=x.device) * (hi - lo) + lo  # noqa: E731
        angle = u(-self.degrees, self.degrees) * (math.pi / 180)
        scale = u(*self.scale)
        tx, ty = u(-self.translate, self.translate) * 2, u(-self.translate, self.translate) * 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@AUGMENTS.register("rotation", positional="degrees")
class Rotation(Affine):
    degrees: NonNegativeFloat = 15.0


@AUGMENTS.register("cutout", positional="size")
class Cutout(Augment):
    """Zero a random size x size square in each image (its centre may lie anywhere, as in DeVries & Taylor)."""

    size: PositiveInt = 8
    p: float = Field(1.0, ge=0.0, le=1.0)

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

    sigma: NonNegativeFloat = 0.03
    p: float = Field(1.0, ge=0.0, le=1.0)

    def __call__(self, x):
        import torch

        return torch.where(_chosen(self.p, x), x + torch.randn_like(x) * self.sigma, x)


@SEQUENCE_AUGMENTS.register("scaling", positional="sigma")
class Scaling(Augment):
    """Multiply each channel of each series by one factor drawn from N(1, sigma) (Um et al. 2017)."""

    sigma: NonNegativeFloat = 0.1
    p: float = Field(1.0, ge=0.0, le=1.0)

    def __call__(self, x):
        import torch

        factor = 1.0 + torch.randn(x.shape[0], 1, x.shape[2], device=x.device, dtype=x.dtype) * self.sigma
        return torch.where(_chosen(self.p, x), x * factor, x)


@SEQUENCE_AUGMENTS.register("window_slice", positional="ratio")
class WindowSlice(Augment):
    """Cut a random window of `ratio` of each series' own length and stretch it back over that length by linear
    interpolation (Le Guennec et al. 2016). Padding stays padding: a short series is sliced within its own steps."""

    ratio: float = Field(0.9, gt=0.0, le=1.0)
    p: float = Field(1.0, ge=0.0, le=1.0)

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


def apply_all(augments, x):
    for aug in augments:
        x = aug(x)
    return x
