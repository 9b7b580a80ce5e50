"""Synthetic photographs: a stand-in for ImageNet that a CNN can learn, but not from one cue.

A class is a (shape, colour, texture) triple: 6 shapes x 6 hues x 4 textures, at most 144 classes,
ordered so that the first six differ in everything and later ones share a colour or a texture with
earlier ones (colour alone stops telling classes apart after six). Each image draws the object at a
random position (within the central square, so the paper's centre crop keeps it), scale and rotation,
with jittered hue, saturation and brightness, over a random gradient with desaturated clutter and
pixel noise. Image sizes vary around ``size`` (longer side ``size`` +-15%, aspect 1:1 to 16:9,
portrait or landscape), like photos.

Everything is deterministic: image ``i`` of class ``c`` in a split is drawn from
``numpy.random.default_rng([seed, split, c, i])``, independently of every other image.
"""

from __future__ import annotations

import colorsys
import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..runtime import available_memory
from .base import DataError, DataSource, TensorImageSet, parallel_map
from .decode import resize_center_crop

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring")
COLOURS = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0, "magenta": 300.0}  # hues
TEXTURES = ("solid", "stripes", "checks", "dots")
MAX_CLASSES = len(SHAPES) * len(COLOURS) * len(TEXTURES)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Peak memory of render() per pixel of the image it draws: float64 gradient and float32 RGB layers,
# measured with tracemalloc (about 56 bytes) plus Pillow's canvas and mask, rounded up.
RENDER_BYTES_PER_PIXEL = 64


def class_attributes(k: int) -> tuple[str, str, str]:
    """(shape, colour, texture) of class ``k``: a bijection of 0..143 that varies everything first."""
    if not 0 <= k < MAX_CLASSES:
        raise DataError(f"synthetic data has at most {MAX_CLASSES} classes, asked for class {k}")
    a, b = k % 6, k // 6  # b < 24; (a, (a + b) % 6) fixes b % 6 and (a + b // 6) % 4 fixes b // 6
    return SHAPES[a], list(COLOURS)[(a + b) % 6], TEXTURES[(a + b // 6) % 4]


def class_ids(n: int) -> list[str]:
    """Folder names that sort in class order and say what the class is: ``03_cyan_stripes_cross``."""
    width = len(str(n - 1))
    return [f"{k:0{width}d}_{c}_{t}_{s}" for k, (s, c, t) in ((k, class_attributes(k)) for k in range(n))]


def _polygons(shape: str) -> list[tuple[np.ndarray, int]]:
    """Unit-radius outlines as (points (P, 2), fill): fill 0 cuts a hole."""
    def regular(n, r=1.0, phase=0.0):
        t = phase + np.arange(n) * 2 * np.pi / n
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)

    if shape == "circle":
        return [(regular(48), 255)]
    if shape == "ring":
        return [(regular(48), 255), (regular(48, 0.55), 0)]
    if shape == "square":
        return [(regular(4, 1.0, np.pi / 4), 255)]
    if shape == "triangle":
        return [(regular(3, 1.0, -np.pi / 2), 255)]
    if shape == "star":
        pts = regular(10, 1.0, -np.pi / 2)
        pts[1::2] *= 0.45
        return [(pts, 255)]
    w = 0.35  # cross: two bars of half-width w
    return [(np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w],
                       [-1, w], [-1, -w], [-w, -w]], dtype=float), 255)]


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360) / 360, s, v), dtype=np.float32) * 255


def image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(width, height) of a photo-like image whose longer side is ``size`` +-15%."""
    long = size * rng.uniform(0.85, 1.15)
    short = long / rng.uniform(1.0, 16 / 9)
    w, h = (long, short) if rng.random() < 0.7 else (short, long)
    return max(8, round(w)), max(8, round(h))


def render(k: int, rng: np.random.Generator, size: int) -> Image.Image:
    """One RGB image of class ``k`` (see the module docstring)."""
    shape, colour, texture = class_attributes(k)
    w, h = image_size(rng, size)
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]  # broadcast to (H, W)

    # Background: a gradient between two desaturated colours, in a random direction.
    c1, c2 = (_hsv(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.3, 0.9)) for _ in range(2))
    theta = rng.uniform(0, 2 * np.pi)
    ramp = xs * np.cos(theta) + ys * np.sin(theta)  # (H, W)
    ramp = (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    canvas = Image.fromarray((c1 + (c2 - c1) * ramp[..., None]).astype(np.uint8))

    # Clutter: desaturated lines, outlines and blobs, so the object is not the only thing there.
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 10)):
        fill = tuple(int(v) for v in _hsv(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.2, 1.0)))
        x0, x1 = sorted(rng.uniform(0, w, 2))
        y0, y1 = sorted(rng.uniform(0, h, 2))
        kind = rng.integers(3)
        if kind == 0:
            draw.line([(x0, y0), (x1, y1)], fill=fill, width=int(rng.integers(1, 6)))
        elif kind == 1:
            draw.ellipse([x0, y0, x1, y1], outline=fill, width=int(rng.integers(1, 4)))
        else:
            draw.rectangle([x0, y0, x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3], fill=fill)

    # The object: its outline as a mask, placed inside the central square of the image.
    short = min(w, h)
    radius = short * rng.uniform(0.18, 0.34)
    cx = w / 2 + rng.uniform(-0.5, 0.5) * (short / 2 - radius)
    cy = h / 2 + rng.uniform(-0.5, 0.5) * (short / 2 - radius)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mask = Image.new("L", (w, h), 0)
    mdraw = ImageDraw.Draw(mask)
    for pts, fill in _polygons(shape):
        xy = pts @ rot.T * radius + (cx, cy)
        mdraw.polygon([tuple(p) for p in xy], fill=fill)

    # Texture in the object's own frame: two tones of the class colour. Only the object's bounding
    # box is painted.
    x0, x1 = max(0, int(cx - radius) - 1), min(w, int(cx + radius) + 2)
    y0, y1 = max(0, int(cy - radius) - 1), min(h, int(cy + radius) + 2)
    base = _hsv(COLOURS[colour] + rng.uniform(-12, 12), rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0))
    t_angle = rng.uniform(0, np.pi)
    dx, dy = xs[x0:x1] - cx, ys[y0:y1] - cy
    u = dx * np.cos(t_angle) + dy * np.sin(t_angle)  # (h', w')
    v = -dx * np.sin(t_angle) + dy * np.cos(t_angle)
    period = radius * rng.uniform(0.35, 0.5)
    if texture == "stripes":
        on = np.floor(u / period) % 2 == 0
    elif texture == "checks":
        on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif texture == "dots":
        on = ((u / period + 0.5) % 1 - 0.5) ** 2 + ((v / period + 0.5) % 1 - 0.5) ** 2 > 0.3 ** 2
    else:
        on = np.ones(u.shape, dtype=bool)
    img = np.asarray(canvas, dtype=np.float32)  # (H, W, 3)
    m = np.asarray(mask, dtype=np.float32)[y0:y1, x0:x1, None] / 255
    tone = np.where(on[..., None], base, base * 0.35)
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - m) + tone * m
    img += rng.standard_normal(img.shape, dtype=np.float32) * 6  # sensor noise
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def check_memory(stored: int, size: int, drawing: int = 1) -> None:
    """Refuse, before anything is allocated, what would not fit in memory: ``stored`` bytes kept, plus
    ``drawing`` images of longer side ``size`` (+15%) being drawn at once."""
    side = math.ceil(1.15 * size)
    need = stored + drawing * side * side * RENDER_BYTES_PER_PIXEL
    free = available_memory()
    if free is not None and need > free:
        raise DataError(f"synthetic: {need / 1e9:.1f} GB needed ({stored / 1e9:.1f} GB of images kept, "
                        f"{drawing} x {side}x{side} drawn at once) but {free / 1e9:.1f} GB of memory is "
                        f"available; ask for fewer images (per-class) or a smaller size")


def _check_classes(n: int) -> None:
    if not 1 <= n <= MAX_CLASSES:
        raise DataError(f"synthetic data has 1 to at most {MAX_CLASSES} classes, asked for {n}")


def image_rng(seed: int, split: str, k: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], k, i])


def _write_one(job: tuple) -> str:
    path, k, seed, split, i, size = job
    rng = image_rng(seed, split, k, i)
    img = render(k, rng, size)
    img.save(path, "JPEG", quality=int(rng.integers(75, 96)))
    return path


def write_folder(out: str, *, classes: int, per_class: dict[str, int], size: int, seed: int = 0,
                 workers: int = 0) -> dict[str, int]:
    """Write ``out/<split>/<class>/<class>_<i>.JPEG`` for each split in ``per_class``; returns counts."""
    _check_classes(classes)
    if os.path.exists(out) and os.listdir(out):
        raise DataError(f"{out} exists and is not empty; synthetic data goes into a new folder")
    check_memory(0, size, max(1, workers))
    ids = class_ids(classes)
    jobs = []
    for split, n in per_class.items():
        for k, cid in enumerate(ids):
            os.makedirs(os.path.join(out, split, cid), exist_ok=True)
            jobs += [(os.path.join(out, split, cid, f"{cid}_{i:05d}.JPEG"), k, seed, split, i, size)
                     for i in range(n)]
    for _ in parallel_map(_write_one, jobs, workers):
        pass
    return {split: n * classes for split, n in per_class.items()}


def synthetic_source(*, classes: int = 10, per_class: int = 50, val_per_class: int | None = None,
                     test_per_class: int | None = None, size: int = 300, seed: int = 0,
                     base_size: int = 256) -> DataSource:
    """The same images, made in memory and brought to ``base_size`` like decoded photos."""
    _check_classes(classes)
    default = max(1, per_class // 5)
    counts = {"train": per_class, "val": default if val_per_class is None else val_per_class,
              "test": default if test_per_class is None else test_per_class}
    check_memory(classes * sum(counts.values()) * 3 * base_size * base_size, size)
    splits = {}
    for split, n in counts.items():
        if n <= 0:
            continue
        images = torch.empty(classes * n, 3, base_size, base_size, dtype=torch.uint8)
        for k in range(classes):
            for i in range(n):
                img = resize_center_crop(render(k, image_rng(seed, split, k, i), size), base_size)
                images[k * n + i] = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        splits[split] = TensorImageSet(images, np.repeat(np.arange(classes), n))
    ids = class_ids(classes)
    return DataSource(
        name=f"synthetic:classes={classes},per-class={per_class},seed={seed}", imagery="photo", channels=3,
        base_size=base_size, classes=ids, class_names=[c.split("_", 1)[1].replace("_", " ") for c in ids],
        splits=splits, flip=True,
        notes={"source": "alexnet.data.synth (generated in memory)", "size": size, "seed": seed,
               "per_class": counts})
