"""The AlexNet of a Keras lesson ("DL Lesson 38 - AlexNet", Dataplexa: "AlexNet in Code (Simplified)"),
layer for layer: the lesson's ``Sequential`` of ``Conv2D``, ``MaxPooling2D``, ``Flatten``, ``Dense`` and
``Dropout`` on a 224x224x3 input.

    layer  Keras layer                                  output      params
    conv1  Conv2D(96, (11,11), strides=4), valid, ReLU  54x54x96       34,944
    pool1  MaxPooling2D((3,3), strides=2)               26x26x96
    conv2  Conv2D(256, (5,5), padding="same"), ReLU     26x26x256     614,656
    pool2  MaxPooling2D((3,3), strides=2)               12x12x256
    conv3  Conv2D(384, (3,3), padding="same"), ReLU     12x12x384     885,120
    conv4  Conv2D(384, (3,3), padding="same"), ReLU     12x12x384   1,327,488
    conv5  Conv2D(256, (3,3), padding="same"), ReLU     12x12x256     884,992
    pool5  MaxPooling2D((3,3), strides=2)               5x5x256
    fc6    Flatten -> Dense(4096), ReLU, Dropout(0.5)   4096       26,218,496
    fc7    Dense(4096), ReLU, Dropout(0.5)              4096       16,781,312
    fc8    Dense(1000), softmax (in the loss here)      1000        4,097,000
                                                                   50,844,008

What Keras does and this module does too: every kernel Glorot-uniform (``glorot_uniform``, Keras's
default ``kernel_initializer``; ``nn.init.xavier_uniform_`` computes the same fans), every bias zero,
inverted dropout (Keras's ``Dropout`` scales the kept units by 1 / (1 - rate) while training).
What differs only in layout: Keras holds images as NHWC, so its ``Flatten`` orders fc6's 6,400
inputs (h, w, c) where PyTorch's orders them (c, h, w); :func:`alexnet.load_keras` permutes fc6's
columns when it copies a Keras model's weights (and transposes the kernels: Keras stores a
convolution as (kh, kw, in, out) and a dense layer as (in, out)).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import ImageClassifier, ModelCfg
from .dropout import make_dropout
from .layers import init_weights

INITS = ("keras", "kaiming")


def _init(model: nn.Module, scheme: str) -> None:
    if scheme == "kaiming":
        init_weights(model, "kaiming", ones=set(), output="fc8")
        return
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)  # Keras's glorot_uniform: U(+-sqrt(6 / (fan_in + fan_out)))
            nn.init.zeros_(m.bias)             # Keras's bias_initializer="zeros"


class KerasAlexNet(ImageClassifier):
    """The Keras lesson's simplified AlexNet (see the module docstring for its layers).

    Args:
        num_classes: output units of the last ``Dense`` (the lesson: 1000).
        dropout: rate of the two ``Dropout`` layers (the lesson: 0.5), inverted as Keras's.
        init: "keras" (Glorot uniform, zero biases: what the lesson's model starts from) or "kaiming"
            (He normal, the output layer N(0, 0.01), zero biases).
    """

    name = "keras-alexnet"
    input_size = (3, 224, 224)
    default_cfg = ModelCfg(input_size=(3, 224, 224), recipe="torchvision", normalize="imagenet",
                           classifier="classifier.fc8", eval_resize=256)

    def __init__(self, num_classes: int = 1000, *, dropout: float = 0.5, init: str = "keras"):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, 11, stride=4)), ("act1", relu()),      # (N, 96, 54, 54): valid
            ("pool1", nn.MaxPool2d(3, 2)),                                     # (N, 96, 26, 26)
            ("conv2", nn.Conv2d(96, 256, 5, padding=2)), ("act2", relu()),    # (N, 256, 26, 26): same
            ("pool2", nn.MaxPool2d(3, 2)),                                     # (N, 256, 12, 12)
            ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("act3", relu()),   # (N, 384, 12, 12)
            ("conv4", nn.Conv2d(384, 384, 3, padding=1)), ("act4", relu()),   # (N, 384, 12, 12)
            ("conv5", nn.Conv2d(384, 256, 3, padding=1)), ("act5", relu()),   # (N, 256, 12, 12)
            ("pool5", nn.MaxPool2d(3, 2)),                                     # (N, 256, 5, 5)
        ]))
        self.pool = nn.Identity()
        self.flatten = nn.Flatten(1)  # (N, 6400) in (c, h, w) order; Keras's is (h, w, c)
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 5 * 5, 4096)), ("act6", relu()), ("drop6", make_dropout(dropout)),
            ("fc7", nn.Linear(4096, 4096)), ("act7", relu()), ("drop7", make_dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        self.init = init
        _init(self, init)

    def init_output_layer(self, layer: nn.Linear) -> None:
        _init(nn.ModuleDict({"fc8": layer}), self.init)
