"""Preset batch transforms, shared by training, evaluation and prediction.

Images arrive as uint8 ``(B, C, S, S)`` batches at the source's base size (S=256 for photographs,
already rescaled and centre-cropped as in the paper, section 2) and are turned into float model
inputs on the device, in a handful of batched operations:

- training: random crops at the model's input size (224, or 227 for ``alexnet2012``) and
  horizontal reflections (section 4.1, first form); for small images, zero padding then a random
  crop (shifts of a few pixels); then mean subtraction and "fancy PCA" lighting (second form);
- evaluation: the centre crop, or the paper's ten crops (four corners and centre, and the mirror
  of each), whose softmax outputs the caller averages.

The paper's presets read files as the stored squares of :mod:`alexnet.data.decode`. Weights trained
by torchvision are evaluated with torchvision's own pipeline instead (``resize`` set, the
"torchvision-eval" preset): the file is read as :func:`torchvision_eval_pixels` does, to the pixel.

The pixel values stay in the 0..255 range of the files: the paper subtracts the mean activity and
nothing else (``std=1``); ``std`` can be set per channel (torchvision's normalization, or the
training set's own) for models that expect unit-variance inputs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError
from .decode import MAX_IMAGE_PIXELS, ImageDecodeError, _strict_pillow, load_image, open_image

# Widely used PCA constants of ImageNet's RGB pixels (values in [0, 1]); eigenvectors are columns,
# rows are R, G, B (as in fb.resnet.torch's datasets/imagenet.lua, for the paper's section 4.1).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
LIGHTING_FORMS = ("paper", "cuda-convnet2")
MEAN_CROPS = ("same", "center")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's normalization, of [0, 1] pixels
IMAGENET_STD = (0.229, 0.224, 0.225)


class PresetError(UserError, ValueError):
    """A preprocessing record (a preset name, or :meth:`Preset.to_dict`'s mapping) that cannot be rebuilt."""


@dataclass
class Lighting:
    """PCA colour augmentation: one RGB shift per image per use along the eigenvectors of the training
    pixels' covariance. ``eigval``/``eigvec`` describe that covariance for pixels scaled to [0, 1].

    - ``form="paper"`` (section 4.1 of the paper, and fb.resnet.torch): add ``eigvec @ (alpha * eigval)``,
      ``alpha ~ N(0, std)``, scaled linearly to 0..255 pixels.
    - ``form="cuda-convnet2"`` (Krizhevsky's convdata.py): add ``eigvec @ (z * std * sqrt(eigval))`` in
      0..255 units (``stdevs`` = square roots of the eigenvalues, ``color_noise`` = ``std``), then
      multiply the whole batch by ``1 / (1 + std)``. Per component that is ``1 / sqrt(eigval)`` times
      stronger than the paper's text: about 2x, 7x and 15x for ImageNet's published eigenvalues.
    """

    eigval: torch.Tensor  # (3,)
    eigvec: torch.Tensor  # (3, 3), columns are eigenvectors
    std: float = 0.1
    form: str = "paper"

    def __post_init__(self):
        if self.form not in LIGHTING_FORMS:
            raise ValueError(f"unknown lighting form {self.form!r}; expected {' or '.join(LIGHTING_FORMS)}")

    @classmethod
    def imagenet(cls, std: float = 0.1, form: str = "paper") -> "Lighting":
        return cls(torch.tensor(IMAGENET_EIGVAL), torch.tensor(IMAGENET_EIGVEC), std, form)

    def shifts(self, alpha: torch.Tensor) -> torch.Tensor:
        """(B, 3) alphas (``N(0, std)`` draws) -> (B, 3) RGB shifts in 0..255 pixel units."""
        strength = self.eigval if self.form == "paper" else self.eigval.clamp_min(0).sqrt()
        return (alpha * strength) @ self.eigvec.T * 255.0

    @property
    def batch_scale(self) -> float:
        """What the whole augmented batch is multiplied by (cuda-convnet2: ``1 / (1 + color_noise)``)."""
        return 1.0 if self.form == "paper" else 1.0 / (1.0 + self.std)

    def to_dict(self) -> dict:
        return {"eigval": self.eigval.tolist(), "eigvec": self.eigvec.tolist(), "std": self.std,
                "form": self.form}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Lighting | None":
        if d is None:
            return None
        return cls(torch.tensor(d["eigval"]), torch.tensor(d["eigvec"]), d["std"], d.get("form", "paper"))


@dataclass
class Normalization:
    """``(x - mean) / std`` on 0..255 pixels; ``mean`` is a mean image ``(C, S, S)`` or per channel."""

    mean: torch.Tensor  # (C, S, S) or (C, 1, 1)
    std: torch.Tensor  # (C, 1, 1)

    @classmethod
    def per_channel(cls, mean, std=None) -> "Normalization":
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        if std is None:
            std = torch.ones_like(mean)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        return cls(mean, std)

    @classmethod
    def torchvision(cls) -> "Normalization":
        return cls.per_channel([255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD])

    @property
    def is_image(self) -> bool:
        return self.mean.shape[-1] > 1

    def to_dict(self) -> dict:
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(torch.as_tensor(d["mean"], dtype=torch.float32), torch.as_tensor(d["std"],
                                                                                    dtype=torch.float32))


def crop_batch(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int,
               flip: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image crops (and optional mirrors) of an (B, C, H, W) batch in one gather.

    ``top``/``left``/``flip`` are (B,) tensors; returns (B, C, size, size).
    """
    b = x.shape[0]
    ar = torch.arange(size, device=x.device)
    top, left = top.to(x.device), left.to(x.device)
    rows = top[:, None] + ar  # (B, size)
    cols = left[:, None] + ar
    if flip is not None:
        cols = torch.where(flip.to(x.device)[:, None], left[:, None] + (size - 1) - ar, cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = x[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, size, size, C)
    return out.permute(0, 3, 1, 2)  # (B, C, size, size), channels-last in memory


def ten_crop_offsets(base: int, size: int) -> list[tuple[int, int, bool]]:
    """(top, left, mirrored) of the paper's ten test patches: four corners, centre, their mirrors."""
    m, c = base - size, (base - size) // 2
    five = [(0, 0), (0, m), (m, 0), (m, m), (c, c)]
    return [(t, l_, False) for t, l_ in five] + [(t, l_, True) for t, l_ in five]


def random_boxes(n: int, size: int, generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10):
    """(n, 4) boxes ``top, left, height, width`` of random area and aspect ratio inside a square
    image, as torchvision's RandomResizedCrop draws them (first of ``tries`` that fits, else the
    whole image)."""
    area = size * size * torch.empty(n, tries).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = log_r.exp()
    w = (area * r).sqrt().round().long()
    h = (area / r).sqrt().round().long()
    fits = (w > 0) & (h > 0) & (w <= size) & (h <= size)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    h = torch.where(first >= 0, h[rows, first.clamp_min(0)], torch.full((n,), size))
    w = torch.where(first >= 0, w[rows, first.clamp_min(0)], torch.full((n,), size))
    u = torch.rand(n, 2, generator=generator)
    top = (u[:, 0] * (size - h + 1)).long().clamp_max(size - h)
    left = (u[:, 1] * (size - w + 1)).long().clamp_max(size - w)
    return torch.stack([top, left, h, w], 1)


def resized_crops(images: torch.Tensor, size: int, flip: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crops of a uint8 (B, C, S, S) batch in ``boxes`` (:func:`random_boxes`) resized to ``size``,
    bilinear, as one ``grid_sample``."""
    b, _, s, _ = images.shape
    top, left, h, w = boxes.T.float()
    theta = torch.zeros(b, 2, 3)
    # output [-1, 1] -> the box, in the input's [-1, 1] coordinates (align_corners=False)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) * w / s  # a mirror flips the x axis
    theta[:, 0, 2] = (2 * left + w) / s - 1
    theta[:, 1, 1] = h / s
    theta[:, 1, 2] = (2 * top + h) / s - 1
    theta = theta.to(images.device)
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def torchvision_eval_pixels(img: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
    """torchvision's evaluation resize and crop of a PIL image, as uint8 ``(crop, crop, C)``.

    ``Resize(resize)``: the shorter side becomes ``resize``, the longer ``int(resize * long / short)``
    (truncated), PIL bilinear (antialiased when shrinking); ``CenterCrop(crop)``: top and left are
    ``int(round((side - crop) / 2))`` (Python's round, half to even). No EXIF rotation.
    """
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize * long / short)
    size = (resize, new_long) if w <= h else (new_long, resize)  # (width, height)
    if size != (w, h):
        img = img.resize(size, Image.Resampling.BILINEAR)
    w, h = img.size
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)  # int: round() of a float
    # A box that reaches outside the image is zero-filled by PIL, as CenterCrop pads with zeros.
    return np.array(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def load_image_torchvision(path: str | os.PathLike, resize: int = 256, crop: int = 224,
                           channels: int = 3) -> torch.Tensor:
    """Read ``path`` as torchvision's ImageFolder and eval transforms do (``convert("RGB")``, no
    EXIF rotation, :func:`torchvision_eval_pixels`): a uint8 ``(C, crop, crop)`` tensor."""
    try:
        with _strict_pillow(), open_image(path) as img:
            if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(f"{path}: {img.size[0]}x{img.size[1]} pixels, over the "
                                       f"decompression-bomb limit of {MAX_IMAGE_PIXELS:,} pixels")
            arr = torchvision_eval_pixels(img.convert("L" if channels == 1 else "RGB"), resize, crop)
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken file can make Pillow raise almost anything
        raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1)  # (C, crop, crop)


class Preset:
    """One batch transform: ``preset(uint8 batch on the device, generator)`` -> float model input.

    Args:
        train: random crops / flips / lighting (True) or deterministic test views (False).
        crop: side of the model input.
        base_size: side of the stored images.
        norm: mean (image or per channel) and std, in 0..255 pixel units.
        pad: zero padding before random crops (small images: shifts of ``pad`` pixels).
        flip: random horizontal mirrors in training.
        lighting: PCA lighting in training (3-channel images only), or None.
        tta: test views: "center" (one crop) or "10crop": the paper's four corner and centre patches and
            their mirrors, (B, 10, C, crop, crop); without ``flip`` (a mirror changes the label, as for
            digits) only the five unmirrored patches, (B, 5, C, crop, crop).
        resized: training crops of random area (8%-100%) and aspect ratio (3/4-4/3) resized to
            ``crop`` (torchvision's RandomResizedCrop) instead of the paper's fixed-size crops.
        mean_crop: with a mean image, subtract it cropped (and mirrored) like the image ("same",
            Caffe's data layer) or its centre crop from every crop ("center", cuda-convnet2's convdata.py).
        resize: None (files are read as the paper's ``base_size`` squares), or the shorter side of
            torchvision's evaluation resize: files are read by :func:`load_image_torchvision` into
            ``base_size`` crops (see :meth:`load`).
    """

    def __init__(self, *, train: bool, crop: int, base_size: int, norm: Normalization, pad: int = 0,
                 flip: bool = False, lighting: Lighting | None = None, tta: str = "center",
                 resized: bool = False, mean_crop: str = "same", resize: int | None = None):
        if crop > base_size + 2 * pad:
            raise ValueError(f"crop {crop} is larger than the {base_size}-pixel images (+{pad} padding)")
        if tta not in ("center", "10crop"):
            raise ValueError(f"unknown test-time augmentation {tta!r}; expected 'center' or '10crop'")
        if norm.is_image and norm.mean.shape[-1] != base_size:
            raise ValueError(f"mean image is {norm.mean.shape[-1]} pixels, images are {base_size}")
        if norm.is_image and (pad or resized):
            raise ValueError("a mean image cannot be combined with padding or resized crops; "
                             "use a per-channel mean")
        self.train, self.crop, self.base_size, self.norm = train, crop, base_size, norm
        if mean_crop not in MEAN_CROPS:
            raise ValueError(f"unknown mean_crop {mean_crop!r}; expected {' or '.join(MEAN_CROPS)}")
        self.pad, self.flip, self.lighting, self.tta, self.resized = pad, flip, lighting, tta, resized
        self.mean_crop = mean_crop
        self.resize = resize
        self._cache: dict = {}

    def load(self, path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
        """Read an image file into the uint8 ``(C, base_size, base_size)`` this preset takes."""
        if self.resize is None:
            return load_image(path, self.base_size, channels)
        return load_image_torchvision(path, self.resize, self.base_size, channels)

    def _stats(self, device):
        if device not in self._cache:
            self._cache[device] = (self.norm.mean.to(device), self.norm.std.to(device))
        return self._cache[device]

    def _normalize(self, crops, top, left, flip, device):
        mean, std = self._stats(device)
        x = crops.float()
        if self.norm.is_image and self.mean_crop == "center":  # one centre crop of the mean for all
            c = (self.base_size - self.crop) // 2
            x -= mean[:, c:c + self.crop, c:c + self.crop]
        elif self.norm.is_image:  # the mean image, cropped and mirrored like the images
            x -= crop_batch(mean.expand(x.shape[0], -1, -1, -1), top, left, self.crop, flip)
        else:
            x -= mean
        return x.div_(std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None, *,
                 rows: torch.Tensor | None = None, total: int | None = None) -> torch.Tensor:
        """The model input of ``images``. In training, the random draws are made for a batch of ``total``
        images (default: this batch) and image ``i`` takes draw ``rows[i]``: processes that share a
        global batch draw it whole and each uses its own rows (:class:`~alexnet.data.loader.StepPlan`)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 batch, got {images.dtype}")
        b, device = images.shape[0], images.device
        if not self.train:
            views = [((self.base_size - self.crop) // 2,) * 2 + (False,)]
            if self.tta == "10crop":  # the mirrored five only when training used mirrors
                views = [v for v in ten_crop_offsets(self.base_size, self.crop) if self.flip or not v[2]]
            out = []
            for top, left, mirror in views:
                t, l_ = torch.full((b,), top), torch.full((b,), left)
                f = torch.full((b,), mirror)
                out.append(self._normalize(crop_batch(images, t, l_, self.crop, f), t, l_, f, device))
            return out[0] if len(out) == 1 else torch.stack(out, 1)  # (B, 10 or 5, C, crop, crop)

        # Random numbers are drawn on the CPU from one generator: the same seed gives the same
        # augmentation on every device.
        n = b if total is None else total
        span = self.base_size + 2 * self.pad - self.crop + 1
        top = torch.randint(0, span, (n,), generator=generator)
        left = torch.randint(0, span, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        alpha = torch.randn(n, 3, generator=generator) * self.lighting.std if self.lighting else None
        boxes = random_boxes(n, self.base_size, generator) if self.resized else None
        if rows is not None:
            top, left, flip = top[rows], left[rows], flip[rows]
            alpha = None if alpha is None else alpha[rows]
            boxes = None if boxes is None else boxes[rows]
        if self.resized:
            x = self._normalize(resized_crops(images, self.crop, flip, boxes), None, None, None, device)
        else:
            src = F.pad(images, (self.pad,) * 4) if self.pad else images
            x = self._normalize(crop_batch(src, top, left, self.crop, flip), top, left, flip, device)
        if alpha is not None and x.shape[1] == 3:
            _, std = self._stats(device)
            x += (self.lighting.shifts(alpha).to(device)[:, :, None, None] / std)
            if self.lighting.batch_scale != 1.0:
                x *= self.lighting.batch_scale
        return x

    def to_dict(self) -> dict:
        """Everything needed to rebuild this preset (stored in checkpoints)."""
        return {"crop": self.crop, "base_size": self.base_size, "norm": self.norm.to_dict(), "pad": self.pad,
                "flip": self.flip, "lighting": None if self.lighting is None else self.lighting.to_dict(),
                "resized": self.resized, "mean_crop": self.mean_crop, "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict, *, train: bool, tta: str = "center") -> "Preset":
        """The preset :meth:`to_dict` recorded (in a checkpoint, an exported file); a record that is not
        one, as a damaged or hand-edited file may hold, raises :class:`PresetError`."""
        try:
            return cls(train=train, crop=d["crop"], base_size=d["base_size"],
                       norm=Normalization.from_dict(d["norm"]),
                       pad=d["pad"], flip=d["flip"], lighting=Lighting.from_dict(d["lighting"]), tta=tta,
                       resized=d.get("resized", False), mean_crop=d.get("mean_crop", "same"),
                       resize=d.get("resize"))
        except PresetError:
            raise
        except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as e:
            what = f"no {e}" if isinstance(e, KeyError) else (str(e).splitlines() or [type(e).__name__])[0]
            raise PresetError(f"malformed preset record ({what})") from None


def torchvision_eval_preset(resize: int = 256, crop: int = 224) -> Preset:
    """torchvision's ImageNet evaluation: ``Resize(resize)``, ``CenterCrop(crop)``, ``ToTensor``,
    ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``; the files are read by :meth:`Preset.load`."""
    return Preset(train=False, crop=crop, base_size=crop, norm=Normalization.torchvision(), resize=resize)


# Presets that weights in the registry (alexnet.models.weights.KNOWN_WEIGHTS) name.
NAMED_PRESETS = {"torchvision-eval": torchvision_eval_preset}


def preset_from_spec(spec: str | dict, *, tta: str = "center") -> Preset:
    """An evaluation preset from a preset name or a ``Preset.to_dict()``."""
    if isinstance(spec, str):
        if spec not in NAMED_PRESETS:
            raise PresetError(f"unknown preset {spec!r}; expected one of {', '.join(NAMED_PRESETS)}")
        spec = NAMED_PRESETS[spec]().to_dict()
    return Preset.from_dict(spec, train=False, tta=tta)


def preset_to_json(d: dict) -> dict:
    """``Preset.to_dict()`` with its tensors as nested lists (for JSON metadata)."""
    out = dict(d, norm={k: v.tolist() if torch.is_tensor(v) else v for k, v in d["norm"].items()})
    return out
