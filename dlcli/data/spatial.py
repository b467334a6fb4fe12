"""Where in the picture: boxes and masks between a picture's own pixels and the model's input size.

Pictures are resized (stretched) to the run's input size as every image dataset is (dlcli.data.images), so a box
moves by one factor per axis and a mask is resized with nearest-neighbour sampling; answers are mapped back the same
way to each picture's own (height, width). Detection boxes are rows [x1, y1, x2, y2] in pixel edges (x right, y
down); masks hold class indices.
"""

from __future__ import annotations


def scale_boxes(boxes, from_hw, to_hw):
    """Boxes (..., 4) [x1, y1, x2, y2] in a picture of `from_hw` (height, width) -> the same boxes in `to_hw`.
    A tensor or NumPy array in, the same type out (float)."""
    (fh, fw), (th, tw) = from_hw, to_hw
    sx, sy = tw / fw, th / fh
    out = boxes * 1.0  # a float copy, whatever came in
    out[..., 0] *= sx
    out[..., 2] *= sx
    out[..., 1] *= sy
    out[..., 3] *= sy
    return out


def clip_to(boxes, hw):
    """Boxes (..., 4) kept inside a picture of `hw` (height, width), in place; returns them."""
    h, w = hw
    boxes[..., 0::2] = boxes[..., 0::2].clip(0, w)
    boxes[..., 1::2] = boxes[..., 1::2].clip(0, h)
    return boxes


def resize_mask(mask, hw):
    """A mask (H, W) or masks (N, H, W) of class indices -> size `hw` (height, width) by nearest neighbour, as
    torch's interpolate samples it (the same rule for training targets and for answers); the dtype is kept."""
    import torch
    import torch.nn.functional as F

    hw = (int(hw[0]), int(hw[1]))
    if tuple(mask.shape[-2:]) == hw:
        return mask
    single = mask.dim() == 2
    flat = mask[None, None] if single else mask[:, None]
    out = F.interpolate(flat.float(), size=hw, mode="nearest-exact")[:, 0].round().to(mask.dtype)
    return out[0] if single else out
