"""The AlexNet and LeNet of the NNOTT lab ("Neural Networks Optimization and Training Tutorial", Polla
Fattah; public repository polla-fattah/nnott: ``convolutional/architectures/alexnet.py`` and
``lenet.py``, built from the NumPy layers of ``convolutional/modules.py``), layer for layer in PyTorch.

``nnott-alexnet`` (nnott's ``AlexNet().build()``), for 28x28x1 digits:

    layer  nnott layers                                      output      params
    conv1  Conv2D(1, 64, 3, pad 1), BatchNorm2D, ReLU        28x28x64     640 + 128
           MaxPool2D(2, 2)                                   14x14x64
    conv2  Conv2D(64, 192, 3, pad 1), BatchNorm2D, ReLU      14x14x192    110,784 + 384
           MaxPool2D(2, 2)                                   7x7x192
    conv3  Conv2D(192, 384, 3, pad 1), BatchNorm2D, ReLU     7x7x384      663,936 + 768
    conv4  Conv2D(384, 256, 3, pad 1), BatchNorm2D, ReLU     7x7x256      884,992 + 512
    conv5  Conv2D(256, 256, 3, pad 1), BatchNorm2D, ReLU     7x7x256      590,080 + 512
           MaxPool2D(2, 2), Flatten                          3x3x256 = 2304
    fc6    Dense(2304, 1024), ReLU, Dropout(0.5)             1024       2,360,320
    fc7    Dense(1024, 512), ReLU, Dropout(0.5)              512          524,800
    fc8    Dense(512, classes)                               10             5,130
                                                                        5,142,986

``nnott-lenet`` (nnott's ``LeNet().build()``: ``use_batchnorm=True``, ``dropout_p=0.0``):

    conv1  Conv2D(1, 6, 5, pad 2), BatchNorm2D, ReLU, MaxPool2D(2, 2)    14x14x6      156 + 12
    conv2  Conv2D(6, 16, 5), BatchNorm2D, ReLU, MaxPool2D(2, 2)          5x5x16     2,416 + 32
    conv3  Conv2D(16, 120, 5), ReLU, Flatten                             120       48,120
    fc4    Dense(120, 84), ReLU (Dropout(dropout_p) when dropout_p > 0)  84        10,164
    fc5    Dense(84, classes)                                            10           850
                                                                                   61,750

What nnott's code does and these modules do too: convolutions He-normal (``sqrt(2 / fan_in)``) with
zero biases; dense layers before a ReLU (``activation_hint="relu"``) He-normal, the output layer
N(0, 0.01), zero biases: ``init_weights(..., "kaiming")``. BatchNorm2D with momentum 0.1 and eps 1e-5,
gamma 1 and beta 0 (PyTorch's defaults); inverted dropout; flattening in (c, h, w) order, as NumPy's
``reshape`` of an NCHW array. One difference nobody sees at test time: nnott's running variance
averages the biased batch variance, PyTorch's the unbiased one (n / (n - 1) larger).

The options follow the data (``in_chans``, ``img_size``; nnott builds for 1x28x28 only) and nnott's
own build arguments: ``norm`` ("batch" or "none": nnott's ``use_batchnorm``) and ``dropout``
(``dropout_p`` of its LeNet; its AlexNet's fixed 0.5).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import ImageClassifier, ModelCfg
from .layers import check_norm, init_weights, with_batch_norm

NORMS = ("batch", "none")


def _check(in_chans: int, img_size: int, smallest: int, dropout: float, norm: str) -> None:
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if img_size < smallest:
        raise ValueError(f"img_size must be >= {smallest}, got {img_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    check_norm(norm, NORMS)


class NnottAlexNet(ImageClassifier):
    """nnott's AlexNet for small images: five 3x3 convolutions (64-192-384-256-256) with batch
    normalization, 2x2 max-pooling after conv1, conv2 and conv5, and fc 1024-512-classes.

    Args:
        num_classes: output classes.
        in_chans, img_size: the input (nnott: 1, 28); any side >= 8.
        norm: "batch" (nnott's) or "none".
        dropout: rate after the ReLUs of fc6 and fc7 (nnott: 0.5).
    """

    name = "nnott-alexnet"
    default_cfg = ModelCfg(input_size=(1, 28, 28), recipe="nnott", normalize="standard",
                           classifier="classifier.fc8", sized_by_data=True)

    def __init__(self, num_classes: int = 10, *, in_chans: int = 1, img_size: int = 28,
                 norm: str = "batch", dropout: float = 0.5):
        super().__init__()
        _check(in_chans, img_size, 8, dropout, norm)
        self.input_size = (in_chans, img_size, img_size)
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        layers = [
            ("conv1", nn.Conv2d(in_chans, 64, 3, padding=1)), ("act1", relu()),   # (N, 64, S, S)
            ("pool1", nn.MaxPool2d(2, 2)),                                          # (N, 64, S/2, S/2)
            ("conv2", nn.Conv2d(64, 192, 3, padding=1)), ("act2", relu()),
            ("pool2", nn.MaxPool2d(2, 2)),                                          # (N, 192, S/4, S/4)
            ("conv3", nn.Conv2d(192, 384, 3, padding=1)), ("act3", relu()),
            ("conv4", nn.Conv2d(384, 256, 3, padding=1)), ("act4", relu()),
            ("conv5", nn.Conv2d(256, 256, 3, padding=1)), ("act5", relu()),
            ("pool5", nn.MaxPool2d(2, 2)),                                          # (N, 256, S/8, S/8)
        ]
        if norm == "batch":
            layers = with_batch_norm(layers)  # convK, bnK, actK
        self.features = nn.Sequential(OrderedDict(layers))
        side = img_size // 2 // 2 // 2  # 28 -> 14 -> 7 -> 3
        self.pool = nn.Identity()
        self.flatten = nn.Flatten(1)  # (N, 256 * side * side): 2304 at 28x28
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * side * side, 1024)), ("act6", relu()), ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(1024, 512)), ("act7", relu()), ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(512, num_classes)),
        ]))
        init_weights(self, "kaiming", ones=set(), output="fc8")

    def init_output_layer(self, layer: nn.Linear) -> None:
        init_weights(nn.ModuleDict({"fc8": layer}), "kaiming", ones=set(), output="fc8")


class NnottLeNet(ImageClassifier):
    """nnott's LeNet: LeNet-5's layout with ReLU, max-pooling and batch normalization after the first
    two convolutions.

    Args:
        num_classes: output classes.
        in_chans, img_size: the input (nnott: 1, 28); any side >= 28.
        norm: "batch" (nnott's ``use_batchnorm=True``) or "none".
        dropout: rate after fc4's ReLU (nnott's ``dropout_p``: 0, no layer).
    """

    name = "nnott-lenet"
    default_cfg = ModelCfg(input_size=(1, 28, 28), recipe="nnott", normalize="standard",
                           classifier="classifier.fc5", sized_by_data=True)

    def __init__(self, num_classes: int = 10, *, in_chans: int = 1, img_size: int = 28,
                 norm: str = "batch", dropout: float = 0.0):
        super().__init__()
        _check(in_chans, img_size, 28, dropout, norm)
        self.input_size = (in_chans, img_size, img_size)
        bn = lambda c: nn.BatchNorm2d(c) if norm == "batch" else None  # noqa: E731
        layers = [
            ("conv1", nn.Conv2d(in_chans, 6, 5, padding=2)), ("bn1", bn(6)),     # (N, 6, S, S)
            ("act1", nn.ReLU(inplace=True)), ("pool1", nn.MaxPool2d(2, 2)),       # (N, 6, 14, 14)
            ("conv2", nn.Conv2d(6, 16, 5)), ("bn2", bn(16)),                       # (N, 16, 10, 10)
            ("act2", nn.ReLU(inplace=True)), ("pool2", nn.MaxPool2d(2, 2)),       # (N, 16, 5, 5)
            ("conv3", nn.Conv2d(16, 120, 5)), ("act3", nn.ReLU(inplace=True)),    # (N, 120, 1, 1)
        ]
        self.features = nn.Sequential(OrderedDict((n, m) for n, m in layers if m is not None))
        side = (img_size // 2 - 4) // 2 - 4  # 1 at 28x28
        self.pool = nn.Identity()
        self.flatten = nn.Flatten(1)  # (N, 120 * side * side)
        head = [("fc4", nn.Linear(120 * side * side, 84)), ("act4", nn.ReLU(inplace=True)),
                ("drop4", nn.Dropout(dropout) if dropout > 0 else None), ("fc5", nn.Linear(84, num_classes))]
        self.classifier = nn.Sequential(OrderedDict((n, m) for n, m in head if m is not None))
        init_weights(self, "kaiming", ones=set(), output="fc5")

    def init_output_layer(self, layer: nn.Linear) -> None:
        init_weights(nn.ModuleDict({"fc5": layer}), "kaiming", ones=set(), output="fc5")
