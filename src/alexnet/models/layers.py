"""Building blocks that several networks of the zoo share: activations, the initialization schemes,
the width multiplier of the paper's one-GPU comparison net, and cuda-convnet's within-map response
normalization. (Cross-map LRN has its own module, :mod:`.lrn`; the two dropout forms :mod:`.dropout`.)"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
INITS = ("paper", "caffe", "kaiming", "torch")
NORMS = ("lrn", "batch", "none")  # what normalizes the trunk of alexnet2012 / alexnet-small: ``norm=``


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](inplace=True) if name == "relu" else ACTIVATIONS[name]()


def check_norm(norm: str, choices: tuple[str, ...] = NORMS) -> str:
    if norm not in choices:
        raise ValueError(f"unknown norm {norm!r}; expected one of {choices}")
    return norm


def with_batch_norm(layers: list[tuple[str, nn.Module | None]]) -> list[tuple[str, nn.Module | None]]:
    """``layers`` (name, module) with an ``nn.BatchNorm2d`` right after every convolution, before its
    activation: ``convK`` is followed by ``bnK``. That is where the batch-normalized AlexNets put it
    (Simon, Rodner & Denzler 2016, cvjena/cnn-models ``AlexNet_cvgj``; MatConvNet's
    ``cnn_imagenet_init_bnorm.m``): conv, BN, ReLU, pool, with no LRN."""
    out = []
    for name, module in layers:
        out.append((name, module))
        if isinstance(module, nn.Conv2d):
            out.append((name.replace("conv", "bn", 1), nn.BatchNorm2d(module.out_channels)))
    return out


def scaled_kernels(counts: tuple[int, ...], width: float, towers: int) -> tuple[int, ...]:
    """The kernel counts of conv1-conv4 times ``width``, each a whole number the towers can share.

    conv5 and the fully connected layers are not scaled: the paper's one-GPU comparison net "has the
    same number of kernels as the two-GPU net in the final convolutional layer" and does not halve
    "the fully-connected layers which follow" (Krizhevsky et al. 2012, section 3.2, footnote 2).
    """
    if not (isinstance(width, (int, float)) and 0 < width <= 4):
        raise ValueError(f"width must be in (0, 4], got {width!r}")
    scaled = tuple(round(c * width) for c in counts)
    for base, got in zip(counts, scaled):
        if got < towers or got % towers or abs(got - base * width) > 1e-9:
            raise ValueError(f"width {width} gives {base * width:g} kernels for a layer of {base}: it must "
                             f"give a whole number divisible by towers={towers}")
    return scaled


def init_weights(model: nn.Module, scheme: str, ones: set[str], std: dict[str, float] | None = None,
                 output: str = "") -> None:
    """Initialize every conv / linear layer of ``model`` (named in its ``named_modules``).

    - "paper": weights N(0, 0.01); biases 1 on the layers in ``ones`` (so their ReLUs start with
      positive inputs, section 5), 0 elsewhere.
    - "caffe": as bvlc_alexnet's prototxt: N(0, 0.01), fc6/fc7 N(0, 0.005), those biases 0.1.
    - "kaiming": He normal weights (fan_in: keeps the forward signal's scale), zero biases; the
      ``output`` layer N(0, 0.01), so the first predictions are near uniform.
    - "torch": leave PyTorch's default initialization (what torchvision's AlexNet uses).
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; expected one of {INITS}")
    if scheme == "torch":
        return
    std = std or {}
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        short = name.rsplit(".", 1)[-1]
        if scheme == "kaiming":
            if short == output:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
            continue
        nn.init.normal_(m.weight, 0.0, std.get(short, 0.01) if scheme == "caffe" else 0.01)
        nn.init.constant_(m.bias, (1.0 if scheme == "paper" else 0.1) if short in ones else 0.0)


class WithinMapNorm(nn.Module):
    """cuda-convnet's ``rnorm``: ``x / (1 + scale * mean of x^2 over a size x size window) ^ power``.

    The window is zero-padded at the borders and its sum divided by ``size^2`` (the file's ``scale``
    is divided by ``size^2`` in cuda-convnet's layer parser), which ``avg_pool2d`` with
    ``count_include_pad=True`` computes.
    """

    def __init__(self, size: int = 3, scale: float = 5e-5, power: float = 0.75):
        super().__init__()
        self.size, self.scale, self.power = size, scale, power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return x / (1 + self.scale * mean_sq).pow(self.power)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, power={self.power}"
