"""The four-layer CIFAR-10 network of the paper's Figure 1 (ReLU vs tanh).

The paper (section 3.1) trains "a four-layer convolutional neural network" on CIFAR-10 without
printing its layers. Krizhevsky's cuda-convnet ships one four-weight-layer CIFAR-10 net,
``example-layers/layers-18pct.cfg`` with ``layer-params-18pct.cfg`` ("18% error on CIFAR-10 in 20
minutes"); this is that net:

    layer   kernels                 32x32 input   28x28 input   notes
    conv1   32 x 5x5, pad 2         32x32x32      28x28x32      activation, maxpool 3x3/2
    rnorm1  within-map, 3x3         16x16x32      14x14x32      scale 5e-5, power 0.75
    conv2   32 x 5x5, pad 2         16x16x32      14x14x32      activation, avgpool 3x3/2
    rnorm2  within-map, 3x3         8x8x32        7x7x32
    conv3   64 x 5x5, pad 2         8x8x64        7x7x64        activation, avgpool 3x3/2
    fc10    1024 / 576 -> classes   (4x4x64 / 3x3x64)           softmax (in the loss)

cuda-convnet's pools round their output size up (``outputsX=0``: ceil((S - 3) / 2) + 1), as
``ceil_mode=True`` does; an average over a window that overhangs the border divides by the pixels
it covers.

The file puts conv1's ReLU on pool1; a max-pool commutes with any increasing function (ReLU, tanh),
so the activation directly after each convolution computes the same thing. The within-map response
normalization (cuda-convnet's ``rnorm``) divides each activation by
``(1 + scale / size^2 * sum of squares over its size x size neighbourhood) ^ power``.

Our choices: the activation is an option (``relu`` as the file, or ``tanh`` for Figure 1); the
sizes and channels follow the data (the file is for 32x32 RGB; 28x28 grayscale works the same);
He initialization by default (the file's N(0, 1e-4) for conv1 and N(0, 0.01) elsewhere, tuned for
0..255 pixels, is ``init="cuda-convnet"``); ``rnorm=False`` removes both normalizations.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import ImageClassifier, ModelCfg
from .layers import WithinMapNorm, make_activation

INITS = ("kaiming", "cuda-convnet")


def _pooled(size: int) -> int:
    return -(-(size - 3) // 2) + 1  # cuda-convnet's pools (outputsX=0) round up: ceil((size - 3) / 2) + 1


class ConvNet18(ImageClassifier):
    """cuda-convnet's four-weight-layer CIFAR-10 net (``layers-18pct.cfg``), the net of Figure 1.

    Args:
        num_classes: output classes.
        in_chans: 3 for CIFAR-10, 1 for digits / MNIST.
        img_size: square input side, >= 20 (designed for 32).
        activation: "relu" (the file) or "tanh" (Figure 1's saturating baseline).
        rnorm: the within-map response normalizations after pool1 and pool2 (the file: on).
        init: "kaiming" (He normal, zero biases) or "cuda-convnet" (the file's initW values).
    """

    name = "convnet18"
    default_cfg = ModelCfg(
        input_size=(3, 32, 32),
        recipe="small",
        normalize="standard",
        classifier="classifier.fc10",
        sized_by_data=True,
    )

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_chans: int = 3,
        img_size: int = 32,
        activation: str = "relu",
        rnorm: bool = True,
        init: str = "kaiming",
    ):
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if img_size < 20:
            raise ValueError(f"img_size must be >= 20, got {img_size}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        self.input_size = (in_chans, img_size, img_size)
        norm = lambda: WithinMapNorm(3, 5e-5, 0.75) if rnorm else None  # noqa: E731
        layers = [
            ("conv1", nn.Conv2d(in_chans, 32, 5, padding=2)),  # (N, 32, S, S)
            ("act1", make_activation(activation)),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),  # (N, 32, S1, S1)
            ("rnorm1", norm()),
            ("conv2", nn.Conv2d(32, 32, 5, padding=2)),  # (N, 32, S1, S1)
            ("act2", make_activation(activation)),
            ("pool2", nn.AvgPool2d(3, 2, ceil_mode=True)),  # (N, 32, S2, S2)
            ("rnorm2", norm()),
            ("conv3", nn.Conv2d(32, 64, 5, padding=2)),  # (N, 64, S2, S2)
            ("act3", make_activation(activation)),
            ("pool3", nn.AvgPool2d(3, 2, ceil_mode=True)),  # (N, 64, S3, S3)
        ]
        self.features = nn.Sequential(OrderedDict((n, m) for n, m in layers if m is not None))
        side = _pooled(_pooled(_pooled(img_size)))
        self.pool = nn.Identity()
        self.flatten = nn.Flatten(1)  # (N, 64 * S3 * S3)
        self.classifier = nn.Sequential(OrderedDict([("fc10", nn.Linear(64 * side * side, num_classes))]))
        self.init = init
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                self._init_layer(name.rsplit(".", 1)[-1], m)

    def _init_layer(self, short: str, m: nn.Module) -> None:
        if self.init == "cuda-convnet":
            nn.init.normal_(m.weight, 0.0, 1e-4 if short == "conv1" else 0.01)  # initW in the file
        elif short == "fc10":
            nn.init.normal_(m.weight, 0.0, 0.01)  # near-uniform first predictions
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(m.bias)

    def init_output_layer(self, layer: nn.Linear) -> None:
        self._init_layer("fc10", layer)
