"""Decoding one image file into the uint8 square the pipeline works on: the paper's "rescale the
shorter side to S, then take the central S x S patch" (section 2)."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import UserError


class ImageDecodeError(UserError, ValueError):
    """A file that is not a decodable image."""


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike, size: int, channels: int = 3) -> torch.Tensor:
    """Read ``path`` as a uint8 ``(channels, size, size)`` tensor (1 = grayscale, 3 = RGB)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img = img.convert("L" if channels == 1 else "RGB")
            img = resize_center_crop(img, size)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise ImageDecodeError(f"{path}: not a readable image ({e})") from None
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()
