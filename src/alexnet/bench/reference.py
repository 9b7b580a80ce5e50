"""The plain-PyTorch references the benchmarks measure against: each registered model's default
architecture written out again as one ``nn.Sequential`` of stock layers, with torch's own
``nn.LocalResponseNorm`` (alpha multiplied by the size, since torch divides it by the size).

Nothing here imports the model zoo: these are the independent yardstick. ``tests/test_bench.py``
loads a zoo model's weights into its reference and checks that both compute the same logits.
"""

from __future__ import annotations

import torch
from torch import nn


class _TowerLRN(nn.Module):
    """torch's LRN on each half of the channels: each tower of the two-tower net normalizes its own maps."""

    def __init__(self):
        super().__init__()
        # The paper's alpha=1e-4 multiplies the plain window sum; torch divides its alpha by the size.
        self.lrn = nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)

    def forward(self, x):
        return torch.cat([self.lrn(half) for half in x.chunk(2, 1)], 1)


def _lrn() -> nn.Module:
    return _TowerLRN()


def alexnet2012(num_classes: int = 1000) -> nn.Sequential:
    """Krizhevsky et al. 2012, 227x227 input, two towers as groups=2."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )


def alexnet_owt(num_classes: int = 1000) -> nn.Sequential:
    """torchvision's layout ("One weird trick"), 224x224 input."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )


def alexnet_small(num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> nn.Sequential:
    """The zoo's AlexNet for 28x28 / 32x32 inputs."""
    side = img_size
    for _ in range(3):
        side = (side - 3) // 2 + 1  # three 3x3/2 max-pools
    return nn.Sequential(
        nn.Conv2d(in_chans, 64, 5, padding=2), nn.ReLU(inplace=True), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 128, 5, padding=2, groups=2), nn.ReLU(inplace=True), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(128, 192, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(192, 192, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(192, 128, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(128 * side * side, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(1024, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(1024, num_classes),
    )


def lenet5(num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> nn.Sequential:
    """LeNet-5 with tanh, 2x2 average pools, a 28x28 input padded by 2."""
    pad = max(0, (32 - img_size + 1) // 2)
    side = ((img_size + 2 * pad - 4) // 2 - 4) // 2 - 4
    return nn.Sequential(
        nn.Conv2d(in_chans, 6, 5, padding=pad), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(),
        nn.Flatten(),
        nn.Linear(120 * side * side, 84), nn.Tanh(),
        nn.Linear(84, num_classes),
    )


class _MapNorm(nn.Module):
    """cuda-convnet's within-map ``rnorm`` (size 3, scale 5e-5, power 0.75) as a sum by a ones kernel."""

    def forward(self, x):
        import torch.nn.functional as F

        ones = x.new_ones(x.shape[1], 1, 3, 3)
        window = F.conv2d(x * x, ones, padding=1, groups=x.shape[1])  # zero-padded 3x3 sums
        return x / (1 + 5e-5 / 9 * window) ** 0.75


def convnet18(num_classes: int = 10) -> nn.Sequential:
    """cuda-convnet's layers-18pct.cfg at 3x32x32: pools round up (32 -> 16 -> 8 -> 4)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True), _MapNorm(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True), _MapNorm(),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, num_classes),
    )


def keras_alexnet(num_classes: int = 1000) -> nn.Sequential:
    """A Keras lesson's simplified AlexNet, 224x224 input, one tower, no LRN."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(256 * 5 * 5, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )


def nnott_alexnet(num_classes: int = 10) -> nn.Sequential:
    """The NNOTT lab's AlexNet at 1x28x28: 3x3 convolutions with batch norm, 2x2 pools."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(
        *block(1, 64), nn.MaxPool2d(2), *block(64, 192), nn.MaxPool2d(2),
        *block(192, 384), *block(384, 256), *block(256, 256), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256 * 3 * 3, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(1024, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    )


def nnott_lenet(num_classes: int = 10) -> nn.Sequential:
    """The NNOTT lab's LeNet at 1x28x28: ReLU, max-pools, batch norm after the first two convolutions."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


REFERENCES = {
    "alexnet2012": alexnet2012,
    "alexnet-owt": alexnet_owt,
    "alexnet-small": alexnet_small,
    "lenet5": lenet5,
    "convnet18": convnet18,
    "keras-alexnet": keras_alexnet,
    "nnott-alexnet": nnott_alexnet,
    "nnott-lenet": nnott_lenet,
}


def reference_model(name: str, num_classes: int) -> nn.Sequential:
    """The plain reference for zoo model ``name`` in its default configuration."""
    return REFERENCES[name](num_classes)
