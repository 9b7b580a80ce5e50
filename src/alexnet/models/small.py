"""Networks for small images: AlexNet's recipe scaled to 28x28 / 32x32, and LeNet-5.

``AlexNetSmall`` keeps every ingredient of the 2012 network (five convolutions and three fully
connected layers, ReLU, LRN after the first two convolutions, overlapping 3x3/2 max-pooling,
two towers as groups=2 on conv2/4/5, dropout on fc6/fc7) and shrinks what only made sense for
227x227 photographs: conv1 becomes 5x5 with stride 1 (an 11x11/4 kernel would leave a 5x5 map of
a 28x28 digit), and the widths are about 2/3 of the paper's in the convolutions and 1/4 in the
fully connected layers, so one epoch of MNIST takes seconds, not minutes, on a laptop CPU.

    layer  kernels                  28x28 input   32x32 input   notes
    conv1  64 x 5x5, pad 2          28x28x64      32x32x64      ReLU, LRN, maxpool 3x3/2
                                    13x13x64      15x15x64
    conv2  128 x 5x5 (2 towers)     13x13x128     15x15x128     ReLU, LRN, maxpool 3x3/2
                                    6x6x128       7x7x128
    conv3  192 x 3x3, pad 1         6x6x192       7x7x192       ReLU (towers talk)
    conv4  192 x 3x3 (2 towers)     6x6x192       7x7x192       ReLU
    conv5  128 x 3x3 (2 towers)     6x6x128       7x7x128       ReLU, maxpool 3x3/2
                                    2x2x128       3x3x128
    fc6    512 / 1152 -> 1024                                   ReLU, dropout 0.5
    fc7    1024 -> 1024                                         ReLU, dropout 0.5
    fc8    1024 -> classes

The initialization defaults to He ("kaiming"), not the paper's N(0, 0.01) with unit biases: the
paper's scheme was tuned for 0-255 pixel inputs and 90 epochs; at this size it costs several
epochs before the loss moves. ``init="paper"`` restores it.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import ImageClassifier, ModelCfg
from .dropout import make_dropout
from .layers import check_norm, init_weights, make_activation, scaled_kernels, with_batch_norm
from .lrn import LocalResponseNorm


def _pooled(size: int) -> int:
    return (size - 3) // 2 + 1  # 3x3/2 max-pool without padding


def _check_small_input(in_chans: int, img_size: int, smallest: int) -> None:
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if img_size < smallest:
        raise ValueError(f"img_size must be >= {smallest}, got {img_size}")


class AlexNetSmall(ImageClassifier):
    """AlexNet's five-conv / three-FC network for small images (28x28 MNIST, 32x32 CIFAR).

    Args:
        num_classes: output classes.
        in_chans: 1 for grayscale (MNIST, digits), 3 for colour (CIFAR).
        img_size: square input side; any size >= 16, designed for 28 and 32.
        activation, norm, lrn, lrn_mode, dropout, towers: as for ``alexnet2012`` (``norm="batch"``:
            ``nn.BatchNorm2d`` after every convolution, before its ReLU, instead of LRN).
        init: "kaiming" (default here), "paper", "caffe" or "torch".
        dropout_form: "inverted" (default here, as every small-image recipe and PyTorch) or "paper".
        width: multiplier of the kernels of conv1-conv4 (64, 128, 192, 192; conv5 and the fully
            connected layers keep theirs), as ``alexnet2012``'s.
    """

    name = "alexnet-small"
    default_cfg = ModelCfg(input_size=(1, 28, 28), recipe="small", normalize="standard",
                           classifier="classifier.fc8", sized_by_data=True)

    def __init__(self, num_classes: int = 10, *, in_chans: int = 1, img_size: int = 28,
                 activation: str = "relu", norm: str = "lrn", lrn: bool = True, lrn_mode: str = "paper",
                 overlap_pool: bool = True, dropout: float = 0.5, towers: int = 2,
                 init: str = "kaiming", dropout_form: str = "inverted", width: float = 1.0):
        super().__init__()
        _check_small_input(in_chans, img_size, 16)
        make_dropout(dropout, dropout_form)  # validates dropout_form
        if towers not in (1, 2):
            raise ValueError(f"towers must be 1 or 2, got {towers}")
        check_norm(norm)
        self.input_size = (in_chans, img_size, img_size)
        act = lambda: make_activation(activation)  # noqa: E731
        pool = lambda: nn.MaxPool2d(3, 2) if overlap_pool else nn.MaxPool2d(2, 2)  # noqa: E731
        use_lrn = lrn and norm == "lrn"
        lrn_layer = lambda: LocalResponseNorm.from_mode(lrn_mode, groups=towers) if use_lrn else None  # noqa: E731
        lrn_layer()  # validates lrn_mode
        g = self.towers = towers
        c1, c2, c3, c4 = scaled_kernels((64, 128, 192, 192), width, towers)
        layers = [
            ("conv1", nn.Conv2d(in_chans, c1, 5, padding=2)),         # (N, 64, S, S)
            ("act1", act()), ("norm1", lrn_layer()), ("pool1", pool()),   # (N, 64, S1, S1)
            ("conv2", nn.Conv2d(c1, c2, 5, padding=2, groups=g)),          # (N, 128, S1, S1)
            ("act2", act()), ("norm2", lrn_layer()), ("pool2", pool()),   # (N, 128, S2, S2)
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),               # (N, 192, S2, S2)
            ("act3", act()),
            ("conv4", nn.Conv2d(c3, c4, 3, padding=1, groups=g)),     # (N, 192, S2, S2)
            ("act4", act()),
            ("conv5", nn.Conv2d(c4, 128, 3, padding=1, groups=g)),    # (N, 128, S2, S2)
            ("act5", act()), ("pool5", pool()),                      # (N, 128, S3, S3)
        ]
        if norm == "batch":
            layers = with_batch_norm(layers)  # convK, bnK, actK
        self.features = nn.Sequential(OrderedDict((n, m) for n, m in layers if m is not None))
        side = img_size
        for _ in range(3):
            side = _pooled(side) if overlap_pool else side // 2
        self.pool = nn.Identity()
        self.flatten = nn.Flatten(1)  # (N, 128 * S3 * S3)
        drop = lambda: make_dropout(dropout, dropout_form)  # noqa: E731
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(128 * side * side, 1024)), ("act6", act()), ("drop6", drop()),
            ("fc7", nn.Linear(1024, 1024)), ("act7", act()), ("drop7", drop()),
            ("fc8", nn.Linear(1024, num_classes)),
        ]))
        self.init = init
        init_weights(self, init, ones={"conv2", "conv4", "conv5", "fc6", "fc7"},
                     std={"fc6": 0.005, "fc7": 0.005}, output="fc8")

    def init_output_layer(self, layer: nn.Linear) -> None:
        init_weights(nn.ModuleDict({"fc8": layer}), self.init, ones=set(), output="fc8")


class LeNet5(ImageClassifier):
    """LeNet-5 (LeCun et al. 1998), the classic comparison for small inputs.

    C1 6@5x5 -> S2 2x2 average pool -> C3 16@5x5 -> S4 2x2 average pool -> C5 120@5x5 -> F6 84
    -> output. Two modern simplifications, as in most re-implementations: C3 connects to all six
    S2 maps (the original used a hand-made table of 60 connections) and the output is a linear
    layer trained with softmax cross-entropy, not Euclidean RBF units. A 28x28 input is padded
    by 2 in C1, the usual way to feed MNIST to the 32x32 original. 61,706 parameters at 1x32x32.
    """

    name = "lenet5"
    default_cfg = ModelCfg(input_size=(1, 28, 28), recipe="small", normalize="standard",
                           classifier="classifier.output", sized_by_data=True)

    def __init__(self, num_classes: int = 10, *, in_chans: int = 1, img_size: int = 28,
                 activation: str = "tanh"):
        super().__init__()
        _check_small_input(in_chans, img_size, 28)
        self.input_size = (in_chans, img_size, img_size)
        pad = max(0, (32 - img_size + 1) // 2)
        side = ((img_size + 2 * pad - 4) // 2 - 4) // 2 - 4  # after C1, S2, C3, S4, C5
        self.features = nn.Sequential(OrderedDict([
            ("c1", nn.Conv2d(in_chans, 6, 5, padding=pad)), ("act1", make_activation(activation)),
            ("s2", nn.AvgPool2d(2)),                                      # (N, 6, 14, 14)
            ("c3", nn.Conv2d(6, 16, 5)), ("act3", make_activation(activation)),
            ("s4", nn.AvgPool2d(2)),                                      # (N, 16, 5, 5)
            ("c5", nn.Conv2d(16, 120, 5)), ("act5", make_activation(activation)),  # (N, 120, 1, 1)
        ]))
        self.pool = nn.Identity()
        self.flatten = nn.Flatten(1)  # (N, 120 * side * side)
        self.classifier = nn.Sequential(OrderedDict([
            ("f6", nn.Linear(120 * side * side, 84)), ("act6", make_activation(activation)),
            ("output", nn.Linear(84, num_classes)),
        ]))

    def init_output_layer(self, layer: nn.Linear) -> None:
        layer.reset_parameters()
