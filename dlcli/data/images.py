"""Image files -> uint8 tensors (C, H, W): the one decoder training, evaluate, predict and serving share.

Preprocessing, in order (C, H, W come from the dataset's config, or the run's data.json):
  1. decode with PIL (any format it reads; the first frame of animations), EXIF orientation applied;
     PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) stays in force;
  2. 16-bit and 32-bit images (I;16, I, F) are scaled to 0-255 (65535 -> 255; float images in 0-1 -> 0-255);
  3. transparency (RGBA, LA, P or L/RGB with a transparent colour) is composited onto the background the model
     knows: black, or white with --invert (so transparent pixels end up black after inversion either way);
  4. C = 1: grayscale (ITU-R 601 luma); C = 3: RGB;
  5. resized to W x H (stretched, no crop or padding; bilinear with antialiasing; an image already W x H is
     untouched, so a PNG written from the dataset gives exactly the training tensor);
  6. with --invert, 255 - value (for dark strokes on a light background: MNIST-style models learnt white on black);
  7. uint8 0-255, then the run's normalisation, as in training.
"""

from __future__ import annotations

import os
import struct
import warnings

IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .bmp .dib .gif .webp .tif .tiff .ppm .pgm .pbm .pnm .tga .ico .jp2 .j2k".split()
)


class ImageError(Exception):
    """One input that cannot become a model input; reported on its own line, the others go on."""


class UnreadFormat(ImageError):
    """An image in a format outside the `formats` load_image was given (dlcli serve's allow-list)."""


class ImageTooLarge(ImageError):
    """An image over load_image's `max_pixels`, even decoded at the smallest scale its format allows."""

    def __init__(self, width: int, height: int, limit: int):
        super().__init__(f"{width} x {height} = {width * height:,} pixels, over the limit of {limit:,}")
        self.width, self.height, self.limit = width, height, limit


def _to_8bit(img):
    """16/32-bit integer and float images -> mode L, scaled to 0-255 (PIL's own convert('L') would clip)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        arr = (arr.astype(np.uint32) + 128) // 257
    elif img.mode == "I":
        arr = arr.astype(np.int64)
        arr = (arr.clip(0, 65535) + 128) // 257 if arr.max(initial=0) > 255 else arr.clip(0, 255)
    else:  # F
        arr = np.nan_to_num(arr.astype(np.float64))
        arr = (arr * 255 if arr.max(initial=0) <= 1.0 else arr).round().clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8), "L")


def _has_alpha(img) -> bool:
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def load_image(path: str, input_shape: tuple[int, ...], invert: bool = False, warn=None, formats=None,
               max_pixels: int | None = None, admit=None, sizes: list | None = None):
    """One image file -> a uint8 tensor (C, H, W) in the run's input format; ImageError with a one-line reason.

    For untrusted bytes (dlcli serve), all checked before any pixel is decoded: `formats`, the PIL formats opened
    (others: UnreadFormat naming theirs); `max_pixels`, the most pixels decoded, at a reduced scale where the format
    decodes one (ImageTooLarge beyond); `admit(width, height)`, told the size about to be decoded, may raise.
    Without them, images decode as they always have. `sizes`: a list that receives the picture's own (height,
    width), upright, before resizing (what a spatial task maps its boxes and masks back to)."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = input_shape
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path, formats=formats) as img:
                stored = img.size  # before a reduced-scale decode changes it (reading the header only)
                if img.format == "JPEG":  # decode big JPEGs at a reduced scale, still at least W x H
                    img.draft("L" if channels == 1 else "RGB", (width, height))
                if max_pixels is not None:
                    _reduce_to(img, max_pixels, channels, (width, height))
                if admit is not None:
                    admit(*_decoded_size(img))
                img.load()
                # after load: a PNG's EXIF may follow its pixels, and asking for it first would decode them
                own = upright_size(stored, img) if sizes is not None else None
                img = _oriented_converted(img, channels, invert)
        for w in caught:
            if warn is not None and issubclass(w.category, Image.DecompressionBombWarning):
                warn(f"{path}: {w.message}")
    except Image.DecompressionBombError as err:
        raise ImageError(f"refused: {err}") from None
    except UnidentifiedImageError:
        if isinstance(path, (str, os.PathLike)):
            size = os.path.getsize(path) if os.path.isfile(path) else None
        else:  # an in-memory upload (dlcli serve)
            size = len(path.getbuffer()) if hasattr(path, "getbuffer") else None
        if size and formats is not None:
            found = _sniffed_format(path)
            if found is not None and found not in formats:
                raise UnreadFormat(f"{found} images are not read here (send {', '.join(formats)})") from None
        raise ImageError("empty file, not an image" if size == 0 else "not an image PIL can read") from None
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as err:
        raise _damaged(err) from None
    if sizes is not None:
        sizes.append(own)
    return _sized_tensor(img, input_shape, invert)


def upright_size(stored: tuple[int, int], img) -> tuple[int, int]:
    """(height, width) of a picture of `stored` (width, height) as its file stores it, turned as its EXIF orientation
    shows it (5-8 swap the sides): the pixels a spatial task's answer is given in, whatever scale it decoded at."""
    width, height = stored
    if img.format == "PNG" and "exif" not in img.info and not _png_has_chunk(img.fp, b"eXIf"):
        return height, width  # Pillow's getexif would decode the whole PNG looking for an eXIf after the pixels
    try:
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # a malformed EXIF block: shown as stored, as _oriented_converted does
        turned = False
    return (width, height) if turned else (height, width)


def _png_has_chunk(fp, kind: bytes) -> bool:
    """Whether a PNG file holds a chunk of this type anywhere, walking the chunk headers (seeking past their data, so
    nothing is inflated); the file's position is kept. Unsure (no seekable file, a cut or damaged chunk list): True."""
    try:
        start = fp.tell()
    except (AttributeError, OSError):
        return True
    try:
        fp.seek(8)  # the signature
        while True:
            head = fp.read(8)
            if len(head) < 8:
                return True
            length, found = struct.unpack(">I4s", head)
            if found == kind:
                return True
            if found == b"IEND":
                return False
            fp.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    except (OSError, ValueError, struct.error):
        return True
    finally:
        fp.seek(start)


def _decoded_size(img) -> tuple[int, int]:
    """The size img.load() will decode at: JPEG 2000's `reduce` shrinks it only when loading."""
    reduce = getattr(img, "_reduce", 0) if img.format == "JPEG2000" else 0
    if not reduce:
        return img.size
    power = 1 << reduce
    return tuple((side + (power >> 1)) // power for side in img.size)


def _reduce_to(img, max_pixels: int, channels: int, size: tuple[int, int]) -> None:
    """Where the format decodes at a reduced scale (the JPEG frames of an MPO: draft, as JPEGs always are; JPEG 2000:
    its resolution levels), ask for the scale that fits max_pixels; ImageTooLarge if none does. A big image of
    another format (a PNG) is refused: decoding it costs its full size in memory and time."""
    w, h = img.size
    if w * h <= max_pixels:
        return
    if img.format == "MPO":
        img.draft("L" if channels == 1 else "RGB", size)
    elif img.format == "JPEG2000":
        for reduce in range(1, 6):  # 5 levels: what encoders write by default; more can be absent from the file
            img.reduce = reduce
            dw, dh = _decoded_size(img)
            if dw * dh <= max_pixels:
                break
    dw, dh = _decoded_size(img)
    if dw * dh > max_pixels:
        raise ImageTooLarge(w, h, max_pixels)


def _sniffed_format(path) -> str | None:
    """The format PIL would recognise these bytes as, from their first bytes only (nothing decoded)."""
    from PIL import Image

    try:
        if hasattr(path, "getbuffer"):
            prefix = bytes(path.getbuffer()[:16])
        else:
            with open(path, "rb") as f:
                prefix = f.read(16)
    except OSError:
        return None
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(prefix):
                return fmt
        except Exception:  # a plugin's check on too few bytes
            continue
    return None


def _damaged(err: Exception) -> ImageError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ImageError(f"damaged or truncated image ({reason[:160]})")


def image_tensor(img, input_shape: tuple[int, ...], invert: bool = False, sizes: list | None = None):
    """A PIL image already in memory -> the uint8 tensor (C, H, W) load_image gives for a file holding it (steps 1-7
    after decoding; a lazily opened image is read now, and a JPEG is decoded at full size); ImageError if it cannot."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as err:
        raise _damaged(err) from None
    img = _oriented_converted(img, input_shape[0], invert)
    if sizes is not None:
        sizes.append((img.size[1], img.size[0]))
    return _sized_tensor(img, input_shape, invert)


def _oriented_converted(img, channels: int, invert: bool):
    """Steps 1-4 on a decoded image: EXIF orientation, bit depth, transparency, channels (a new image)."""
    from PIL import ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block: keep the image as stored
        pass
    try:
        return _convert(img, channels, invert)
    except ValueError as err:  # e.g. LAB or HSV, which PIL cannot turn into RGB or grayscale
        raise ImageError(f"cannot convert a mode {img.mode} image to "
                         f"{'grayscale' if channels == 1 else 'RGB'} ({err})") from None


def _sized_tensor(img, input_shape: tuple[int, ...], invert: bool):
    """Steps 5-7: resized to W x H, inverted if asked, as a uint8 tensor (C, H, W)."""
    import torch
    from PIL import Image, ImageOps

    channels, height, width = input_shape
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if invert:
        img = ImageOps.invert(img)
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(height, width, channels).permute(2, 0, 1).contiguous()


def image_files(paths) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given, directories expanded to their image files (by extension, sorted by name, not recursive):
    (files, [(path, problem)]), so one missing path does not stop the others. As `dlcli predict` reads its arguments."""
    from pathlib import Path

    files, problems = [], []
    for raw in map(str, paths):
        path = Path(raw)
        if path.is_dir():
            found = sorted((p for p in path.iterdir()
                            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
                           key=lambda p: p.name)
            if not found:
                problems.append((raw, f"no image files in this directory ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
            files += [str(p) for p in found]
        elif path.exists():
            files.append(raw)
        else:
            problems.append((raw, "no such file or directory"))
    return files, problems


def _convert(img, channels: int, invert: bool):
    from PIL import Image

    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if invert else (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def decode_all(files, shape: tuple[int, int, int], name_error):
    """Every file as one uint8 tensor (N, C, H, W), written in place (no second copy); `name_error(path, err)` turns
    a bad file into the exception to raise."""
    import torch

    out = torch.empty((len(files), *shape), dtype=torch.uint8)
    for i, path in enumerate(files):
        try:
            out[i] = load_image(str(path), shape)
        except ImageError as err:
            raise name_error(path, err) from None
    return out
