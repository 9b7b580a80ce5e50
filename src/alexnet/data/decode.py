"""Decoding one image file into the uint8 square the pipeline works on: the paper's "rescale the
shorter side to S, then take the central S x S patch" (section 2).

What can be decoded is decoded correctly: grayscale, CMYK and YCCK JPEGs, palette and RGBA PNGs
(transparency is composited on white), 16-bit PNGs (scaled to 8 bits, not clipped), any format under
any extension (a PNG named ``.JPEG``), EXIF-rotated photos, images smaller than S (upscaled).
What cannot raises :class:`ImageDecodeError`: empty files, text, truncated or corrupt data, and
decompression bombs (more than :data:`MAX_IMAGE_PIXELS` pixels).
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings

import numpy as np
import torch
from PIL import Image, ImageFile

from ..errors import UserError

# Images with more pixels than this are refused before their pixels are decoded. It is Pillow's
# own warning threshold (~89.5 megapixels: 256 MiB at 24 bits per pixel, e.g. 10,000 x 8,948),
# made a hard limit: the largest ILSVRC-2012 photos are far below it, and a file that claims more
# is almost surely broken or hostile.
MAX_IMAGE_PIXELS = 89_478_485

# EXIF orientation (tag 274) -> the transpose that shows the photo upright.
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


class ImageDecodeError(UserError, ValueError):
    """A file that is not a decodable image."""


@contextlib.contextmanager
def _strict_pillow():
    """Pillow with its lenient switches off, whatever another library set: a truncated file is an
    error (not silently grey-filled), and the decompression-bomb *warning* is an error too."""
    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated


def open_image(path) -> Image.Image:
    """``Image.open(path)`` (a path or a file object), refusing a path that is not a regular file: a FIFO
    or a device named ``.jpg`` would block the reader forever."""
    if isinstance(path, (str, bytes, os.PathLike)):
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise ImageDecodeError(f"{os.fsdecode(path)}: cannot read ({e.strerror})") from None
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(f"{os.fsdecode(path)}: not a regular file")
    return Image.open(path)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central square of side ``min(w, h)``, resized to ``size`` (antialiased bilinear).

    Same as resizing the shorter side to ``size`` and cropping the centre, but only the pixels that
    survive the crop are resampled (the crop box is exact, not rounded to whole pixels).
    """
    w, h = img.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert to "RGB" or "L", with the cases Pillow's ``convert`` gets wrong done by hand."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit grayscale: convert("L") would clip everything above 255; scale 0..65535 to 0..255.
        scale = 1.0 if img.mode == "F" else 257.0
        v = np.asarray(img, dtype=np.float64) / scale
        img = Image.fromarray(np.clip(np.rint(v), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        # Composite on white: what a viewer shows for most transparent photos and product shots,
        # while dropping alpha would expose whatever colour the transparent pixels happen to hold.
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return img if img.mode == mode else img.convert(mode)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(274, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels unreadable
        return 1


def decode_file(path: str | os.PathLike, size: int, channels: int = 3, *,
                draft: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` into a uint8 ``(size, size, channels)`` array; also return the file's own
    ``(width, height)``. ``draft`` lets JPEGs decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the
    shorter side stays >= ``size``. Raises :class:`ImageDecodeError` for anything unreadable."""
    mode = "L" if channels == 1 else "RGB"
    try:
        with _strict_pillow(), open_image(path) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(f"{path}: {w}x{h} pixels, over the decompression-bomb limit "
                                       f"of {MAX_IMAGE_PIXELS:,} pixels")
            orientation = _orientation(img)
            if draft and img.format == "JPEG":
                # Pillow picks the largest of 1/8, 1/4, 1/2 that keeps both sides >= size.
                img.draft(mode, (size, size))
            out = resize_center_crop(_to_mode(img, mode), size)
            # The centre square maps onto itself under every EXIF rotation or flip, so turning the
            # small result upright is the same as turning the full photo, and much cheaper.
            if orientation in _ORIENTATION:
                out = out.transpose(_ORIENTATION[orientation])
            arr = np.array(out, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # raised by Image.open
        raise ImageDecodeError(f"{path}: over the decompression-bomb limit of {MAX_IMAGE_PIXELS:,} pixels "
                               f"({e})") from None
    except Exception as e:  # noqa: BLE001 - a broken file can make Pillow raise almost anything
        raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return (arr[:, :, None] if arr.ndim == 2 else arr), (w, h)


def load_image(path: str | os.PathLike, size: int, channels: int = 3, *, draft: bool = True) -> torch.Tensor:
    """Read ``path`` as a uint8 ``(channels, size, size)`` tensor (1 = grayscale, 3 = RGB)."""
    arr, _ = decode_file(path, size, channels, draft=draft)
    return torch.from_numpy(arr).permute(2, 0, 1)  # (C, S, S), a view: stacking copies it anyway
