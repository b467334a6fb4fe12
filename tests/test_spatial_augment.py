"""Boxes and masks move with the pixels (dlcli.augment's `moves`), and predict learns each picture's own size.

Each augmentation moves one bright rectangle; the box must land where the rectangle's pixels land (to within the
resampling of a pixel) and the mask must cover the same pixels. The image alone must change exactly as without targets,
so runs of other tasks draw and augment as before.
"""

import numpy as np
import pytest
import torch

from dlcli.augment import Affine, HorizontalFlip, RandomCrop, Rotation, VerticalFlip, apply_all, clip_boxes
from dlcli.data.spatial import clip_to, resize_mask, scale_boxes

H, W = 24, 32


def scene():
    x = torch.zeros(3, 1, H, W)
    boxes = [(2, 5, 8, 10), (20, 3, 29, 9), (10, 12, 18, 22)]  # x1, y1, x2, y2 (pixel edges)
    y = torch.full((3, 2, 5), -1.0)
    y[:, 1, 1:] = 0
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        x[i, 0, y1:y2, x1:x2] = 1.0
        y[i, 0] = torch.tensor([i, x1, y1, x2, y2], dtype=torch.float32)
    return x, y, (x[:, 0] > 0).to(torch.uint8)


def pixel_box(img):
    rows, cols = torch.nonzero(img > 0.5, as_tuple=True)
    return [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]


OPS = [HorizontalFlip(p=1.0), VerticalFlip(p=1.0), RandomCrop(padding=6),
       Affine(degrees=0, translate=0.15, scale=(0.7, 1.3)), Rotation(degrees=25)]


@pytest.mark.parametrize("aug", OPS, ids=lambda a: type(a).__name__)
def test_boxes_and_masks_move_with_the_pixels(aug):
    x, y, mask = scene()
    torch.manual_seed(3)
    xb, yb = aug.moves(x, y, "boxes")
    torch.manual_seed(3)
    xm, ym = aug.moves(x, mask, "mask", fill=255)
    torch.manual_seed(3)
    alone = aug(x)
    assert torch.equal(xb, alone) and torch.equal(xm, alone)  # the same draws, the same pixels
    assert torch.equal(yb[:, 1], y[:, 1])  # padding stays padding
    rotated = isinstance(aug, Affine) and aug.degrees > 0
    for i in range(3):
        if yb[i, 0, 0] < 0:  # moved out of the picture: then its pixels are (nearly) gone too
            assert (xb[i, 0] > 0.5).sum() < 6
            continue
        assert yb[i, 0, 0] == i
        found = pixel_box(xb[i, 0])
        if rotated:  # the box around the turned corners holds the turned rectangle
            assert yb[i, 0, 1] <= found[0] + 1 and yb[i, 0, 2] <= found[1] + 1
            assert yb[i, 0, 3] >= found[2] - 1 and yb[i, 0, 4] >= found[3] - 1
        else:
            assert yb[i, 0, 1:].tolist() == pytest.approx(found, abs=1.01)
        inside = ym[i] == 1
        assert (inside == (xm[i, 0] > 0.5)).float().mean() > 0.97
        assert set(ym[i].unique().tolist()) <= {0, 1, 255}


def test_hand_computed_moves():
    x, y, mask = scene()
    _, flipped = HorizontalFlip(p=1.0).moves(x, y, "boxes")
    assert flipped[0, 0].tolist() == [0, W - 8, 5, W - 2, 10]
    _, flipped = VerticalFlip(p=1.0).moves(x, y, "boxes")
    assert flipped[2, 0].tolist() == [2, 10, H - 22, 18, H - 12]
    _, none = HorizontalFlip(p=0.0).moves(x, y, "boxes")
    assert torch.equal(none, y)
    _, m = HorizontalFlip(p=1.0).moves(x, mask, "mask")
    assert torch.equal(m, mask.flip(2))


def test_pixels_off_the_picture_are_filled_and_lost_boxes_dropped():
    x, y, mask = scene()
    torch.manual_seed(0)
    _, m = RandomCrop(padding=6).moves(x, mask, "mask", fill=7)
    assert (m == 7).any()  # where the padding came in
    # a box pushed almost entirely out of the picture becomes padding; one half out is clipped
    moved = y.clone()
    moved[0, 0, 1:] = torch.tensor([-7.0, 5, -1, 10])  # 1 of its 6 columns left
    moved[1, 0, 1:] = torch.tensor([28.0, 3, 37, 9])  # 4 of 9 left
    out = clip_boxes(moved, y, H, W)
    assert out[0, 0, 0] == -1
    assert out[1, 0].tolist() == [1, 28, 3, 32, 9]


def test_apply_all_without_targets_is_unchanged():
    x, y, _ = scene()
    ops = [HorizontalFlip(p=0.5), RandomCrop(padding=2)]
    torch.manual_seed(5)
    a = apply_all(ops, x)
    torch.manual_seed(5)
    b, _ = apply_all(ops, x, y, "boxes")
    assert torch.equal(a, b)


def test_scale_and_resize_helpers():
    boxes = np.array([[10.0, 20, 30, 40]])
    assert scale_boxes(boxes, (100, 200), (50, 50)).tolist() == [[2.5, 10, 7.5, 20]]
    assert clip_to(np.array([[-3.0, 2, 60, 80]]), (50, 40)).tolist() == [[0, 2, 40, 50]]
    m = torch.zeros(4, 6, dtype=torch.uint8)
    m[1:3, 2:5] = 2
    big = resize_mask(m, (8, 12))
    assert big.dtype == torch.uint8 and big.shape == (8, 12)
    assert torch.equal(resize_mask(big, (4, 6)), m)  # a 2x nearest resize goes back exactly


def test_image_inputs_report_each_pictures_own_size(tmp_path):
    from PIL import Image

    from dlcli.inputs import image_inputs

    Image.new("RGB", (50, 20)).save(tmp_path / "wide.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 x 10, shown turned: 10 wide, 40 high
    Image.new("RGB", (40, 10)).save(tmp_path / "turned.jpg", exif=exif)
    sizes = []
    x, names, problems = image_inputs([str(tmp_path / "wide.png"), str(tmp_path / "turned.jpg"),
                                       Image.new("L", (7, 9)), np.zeros((2, 11, 13, 3), np.uint8)],
                                      (3, 16, 16), sizes=sizes)
    assert not problems and x.shape == (5, 3, 16, 16)
    assert sizes == [(20, 50), (40, 10), (9, 7), (11, 13), (11, 13)]


def _png_chunks(data: bytes) -> list[bytes]:
    import struct
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        chunks.append(data[at:at + 12 + length])
        at += 12 + length
    return chunks


def test_picture_size_reads_a_pngs_orientation_without_decoding_it(tmp_path, monkeypatch):
    """A mask dataset's listing asks every picture for its upright size: a PNG with no eXIf chunk is answered from
    its header (Pillow's getexif alone would inflate the whole picture looking for one after the pixels), and an
    eXIf chunk before or after the pixels still turns it."""
    from PIL import Image, PngImagePlugin

    from dlcli.data.segmentation import picture_size

    Image.new("RGB", (40, 10)).save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 10)).save(tmp_path / "before.png", exif=exif)
    data = (tmp_path / "before.png").read_bytes()
    chunks = _png_chunks(data)
    kinds = [c[4:8] for c in chunks]
    assert kinds.index(b"eXIf") < kinds.index(b"IDAT")
    moved = [c for c in chunks if c[4:8] not in (b"eXIf", b"IEND")] + [chunks[kinds.index(b"eXIf")], chunks[-1]]
    (tmp_path / "after.png").write_bytes(data[:8] + b"".join(moved))

    assert picture_size(tmp_path / "before.png") == (10, 40)
    assert picture_size(tmp_path / "after.png") == (10, 40)
    with Image.open(tmp_path / "after.png") as img:  # the exif after the pixels is one only a decode finds
        assert "exif" not in img.info
    decoded = []
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: decoded.append(self.filename))
    assert picture_size(tmp_path / "plain.png") == (40, 10)
    assert decoded == []
