"""AlexNet as published (Krizhevsky, Sutskever & Hinton, NIPS 2012), and torchvision's layout.

``AlexNet2012`` follows the paper's Figure 2 and sections 3-5 layer by layer:

    layer  kernels                        stride/pad  output        notes
    input                                             227x227x3     paper says 224; see below
    conv1  96 x 11x11x3                   4 / 0       55x55x96      ReLU, LRN, maxpool 3x3/2 -> 27x27x96
    conv2  256 x 5x5x48   (two towers)    1 / 2       27x27x256     ReLU, LRN, maxpool 3x3/2 -> 13x13x256
    conv3  384 x 3x3x256  (towers talk)   1 / 1       13x13x384     ReLU
    conv4  384 x 3x3x192  (two towers)    1 / 1       13x13x384     ReLU
    conv5  256 x 3x3x192  (two towers)    1 / 1       13x13x256     ReLU, maxpool 3x3/2 -> 6x6x256
    fc6    9216 -> 4096                                             ReLU, dropout 0.5
    fc7    4096 -> 4096                                             ReLU, dropout 0.5
    fc8    4096 -> 1000                                             softmax (in the loss)

60,965,224 parameters with 1000 classes. The input is 227x227: an 11x11 stride-4 convolution
without padding maps 224 to 54.25, not 55; (227 - 11) / 4 + 1 = 55 exactly, which is what Caffe
uses. (cuda-convnet2 crops 224 and counts its output positions as ``1 + ceil((224 - 11) / 4)`` = 55,
``layer.py`` line 1097: its last windows read 3 zero pixels past the crop's right and bottom edge, a
227 input whose last 3 rows and columns are zero.) ``img_size=224`` takes 224 inputs as many
reimplementations do: conv1 then gives 54x54 maps, pool5 5x5, and fc6 reads 6,400 values.

The paper split every layer across two GTX 580 GPUs ("towers"); each GPU held half the kernels and
the towers exchanged activations only at conv3 and the fully connected layers. On one device that
is exactly ``groups=2`` on conv2, conv4 and conv5: each half of the output channels sees only the
half of the input channels its own tower computed.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import ImageClassifier, ModelCfg
from .dropout import make_dropout
from .layers import (INITS, WithinMapNorm, check_norm, init_weights, make_activation, scaled_kernels,
                     with_batch_norm)
from .lrn import LocalResponseNorm

# What follows conv1 and conv2, in order: activation, normalization (LRN) and max-pooling.
LRN_ORDERS = {
    "paper": (("act", "norm", "pool"), ("act", "norm", "pool")),          # sections 3.3 and 3.4
    # cuda-convnet2's layers-imagenet-*.cfg: rnorm1 reads conv1 directly and the ReLU sits on pool1
    # (ReLU and max-pooling commute); conv2 as in the paper
    "cuda-convnet2": (("norm", "act", "pool"), ("act", "norm", "pool")),
    # Caffe's models/bvlc_reference_caffenet: pool1 / pool2 come before norm1 / norm2
    "caffenet": (("act", "pool", "norm"), ("act", "pool", "norm")),
}

# cuda-convnet2's initialization as its layer files give it (github.com/akrizhevsky/cuda-convnet2): each
# layer's weights N(0, initW), its biases initB (layer.py:924, :941; initW 0.01 and initB 0 when a layer
# names none, layer.py:949-950), as (initW, initB).
FILE_INITS = {
    # layers/layers-imagenet-2gpu-model.cfg: conv1a :17; conv2a :73-74; conv3a :143; conv4a :172-173;
    # conv5a :200-201; fc2048a :242-243; fc2048ba :268-269; fc1000 :294 (no initB)
    "cuda-convnet2": {"conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.03, 0.0), "conv4": (0.03, 1.0),
                      "conv5": (0.03, 1.0), "fc6": (0.01, 1.0), "fc7": (0.01, 1.0), "fc8": (0.01, 0.0)},
    # layers/layers-imagenet-1gpu.cfg: conv1 :17; conv2 :45-46; conv3 :73; conv4 :87-88; conv5 :100-101;
    # fc4096a :117-118; fc4096b :130-131; fc1000 :143-144 (initB=-7: the same bias on every class leaves
    # the softmax unchanged, and biases carry no weight decay, so it changes no prediction)
    "cuda-convnet2-1gpu": {"conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.03, 0.0),
                           "conv4": (0.03, 1.0), "conv5": (0.03, 1.0), "fc6": (0.01, 1.0), "fc7": (0.01, 1.0),
                           "fc8": (0.01, -7.0)},
}
# cuda-convnet2's within-map response normalization after conv2's LRN (cnorm2a / cnorm2b of
# layers-imagenet-2gpu-model.cfg:107-117, type=rnorm, size=5; layer-params-imagenet-2gpu-model.cfg:176-182,
# scale=0.001, pow=0.75; minDiv 1 and scale / size^2, layer.py:1331-1333).
CNORM = {"size": 5, "scale": 0.001, "power": 0.75}


def pooled_side(img_size: int, overlap_pool: bool = True) -> int:
    """The side of pool5's maps for ``img_size`` inputs: conv1 (11x11, stride 4, no padding), then three
    max-pools (3x3 or 2x2, stride 2); conv2-conv5 keep the size."""
    side = (img_size - 11) // 4 + 1
    for _ in range(3):
        side = (side - (3 if overlap_pool else 2)) // 2 + 1
    return side


def parse_kernels(kernels: str, towers: int) -> tuple[int, ...]:
    """``"64,192,384,256,256"`` -> the kernel counts of conv1-conv5, each divisible by ``towers``."""
    try:
        counts = tuple(int(k) for k in kernels.split(","))
    except ValueError:
        counts = ()
    if len(counts) != 5 or any(k < towers or k % towers for k in counts):
        raise ValueError(f"kernels must be five counts for conv1-conv5, each a multiple of towers={towers}, "
                         f"e.g. 64,192,384,256,256; got {kernels!r}")
    return counts


class AlexNet2012(ImageClassifier):
    """The paper's network; every option is one of the paper's ablations.

    Args:
        num_classes: output classes (1000 for ILSVRC).
        activation: "relu" (paper) or "tanh" (the saturating baseline of Figure 1).
        norm: what normalizes the convolutional trunk: "lrn" (the paper's local response
            normalization after conv1 and conv2), "batch" (``nn.BatchNorm2d`` after every
            convolution, before its ReLU, and no LRN: the batch-normalized AlexNet of later papers,
            "AlexNet-BN") or "none".
        lrn: with ``norm="lrn"``, local response normalization after the ReLUs of conv1 and conv2
            (paper: on; -1.4% top-1 / -1.2% top-5 error); ``lrn=False`` is ``norm="none"``.
        lrn_mode: "paper" (alpha as printed), "cuda-convnet" (alpha / n) or "caffe" (alpha / n, k=1).
        overlap_pool: 3x3 windows with stride 2 (paper) instead of 2x2/2 (-0.4% top-1 / -0.3% top-5).
            Both give the same map sizes, 55 -> 27 -> 13 -> 6.
        dropout: rate after the ReLUs of fc6 and fc7 (paper: 0.5; 0 turns it off).
        towers: 2 = the two-GPU connectivity as groups=2 on conv2/4/5 (paper); 1 = every kernel sees
            every channel (62,378,344 parameters). The paper's -1.7% / -1.2% compares with a one-tower
            net that also had half the kernels.
        init: "paper", "caffe", "kaiming" or "torch" (see :func:`init_weights`), or cuda-convnet2's
            files (:data:`FILE_INITS`): "cuda-convnet2" (the paper's but N(0, 0.03) for conv3-conv5) and
            "cuda-convnet2-1gpu" (the same and fc8's biases -7).
        lrn_per_tower: with two towers, each LRN window stays inside its tower's maps (cuda-convnet2's
            two-GPU layer files); False normalizes across all maps, as Caffe's bvlc_alexnet does.
        width: multiplier of the kernels of conv1-conv4 (conv5 and the fully connected layers keep
            theirs); ``towers=1, width=0.5`` is the paper's one-GPU comparison net (section 3.2 and
            its footnote 2: 48, 128, 192, 192, 256 kernels).
        lrn_order: where LRN sits after conv1 and conv2: "paper" (ReLU, LRN, pool), "cuda-convnet2"
            (conv1: LRN before the ReLU, as Krizhevsky's layer files) or "caffenet" (ReLU, pool, LRN).
        dropout_form: "paper" (section 4.2 and cuda-convnet2's ``dropout2``: no rescaling at training
            time, x(1-p) at test time; the default) or "inverted" (PyTorch's, Caffe's and cuda-convnet2's
            ``dropout``: x1/(1-p) at training time); see :mod:`alexnet.models.dropout` and
            docs/models.md for the two measured.
        img_size: the input's side: 227 (the default, 55x55 after conv1) or e.g. 224 (54x54, fc6 sized
            from pool5's 5x5 maps, as reimplementations that take 224 crops without padding).
        cnorm: cuda-convnet2's within-map response normalization after conv2's LRN (:data:`CNORM`, the
            two-tower files' ``cnorm2a`` / ``cnorm2b``).
        kernels: conv1-conv5's kernel counts, e.g. "64,192,384,256,256" (cuda-convnet2's one-GPU
            files, with ``towers=1``); empty: the paper's 96-256-384-384-256 times ``width``.
    """

    name = "alexnet2012"
    input_size = (3, 227, 227)
    default_cfg = ModelCfg(input_size=(3, 227, 227), recipe="paper", normalize="paper",
                           classifier="classifier.fc8", eval_resize=256)

    def __init__(self, num_classes: int = 1000, *, activation: str = "relu", norm: str = "lrn",
                 lrn: bool = True, lrn_mode: str = "paper", overlap_pool: bool = True,
                 dropout: float = 0.5, towers: int = 2, init: str = "paper", dropout_form: str = "paper",
                 lrn_order: str = "paper", lrn_per_tower: bool = True, width: float = 1.0,
                 img_size: int = 227, cnorm: bool = False, kernels: str = ""):
        super().__init__()
        if lrn_order not in LRN_ORDERS:
            raise ValueError(f"lrn_order must be one of {', '.join(LRN_ORDERS)}, got {lrn_order!r}")
        make_dropout(dropout, dropout_form)  # validates dropout_form
        if towers not in (1, 2):
            raise ValueError(f"towers must be 1 or 2, got {towers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        check_norm(norm)
        if init not in INITS + tuple(FILE_INITS):
            raise ValueError(f"unknown init {init!r}; expected one of {INITS + tuple(FILE_INITS)}")
        side = pooled_side(img_size, overlap_pool)
        if side < 1:
            raise ValueError(f"img_size {img_size} is too small: pool5 would have no map")
        if kernels and width != 1.0:
            raise ValueError("give kernels or width, not both")
        act = lambda: make_activation(activation)  # noqa: E731
        pool = lambda: nn.MaxPool2d(3, 2) if overlap_pool else nn.MaxPool2d(2, 2)  # noqa: E731
        lrn_groups = towers if lrn_per_tower else 1
        use_lrn = lrn and norm == "lrn"
        lrn_layer = lambda: LocalResponseNorm.from_mode(lrn_mode, groups=lrn_groups) if use_lrn else None  # noqa: E731
        lrn_layer()  # validates lrn_mode
        g = self.towers = towers
        self.input_size = (3, img_size, img_size)
        c1, c2, c3, c4, c5 = (parse_kernels(kernels, towers) if kernels
                              else (*scaled_kernels((96, 256, 384, 384), width, towers), 256))
        make = {"act": act, "norm": lrn_layer, "pool": pool}
        after1, after2 = ([(f"{step}{i}", make[step]()) for step in order]
                          for i, order in ((1, LRN_ORDERS[lrn_order][0]), (2, LRN_ORDERS[lrn_order][1])))
        if cnorm:  # right after conv2's LRN, as cnorm2a reads rnorm2a
            at = [name for name, _ in after2].index("norm2") + 1
            after2.insert(at, ("cnorm2", WithinMapNorm(**CNORM)))
        layers = [
            ("conv1", nn.Conv2d(3, c1, 11, stride=4)),               # (N, 96, 55, 55)
            *after1,                                                  # (N, 96, 27, 27) after pool1
            ("conv2", nn.Conv2d(c1, c2, 5, padding=2, groups=g)),    # (N, 256, 27, 27) 48 in per kernel
            *after2,                                                  # (N, 256, 13, 13) after pool2
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),              # (N, 384, 13, 13) towers talk
            ("act3", act()),
            ("conv4", nn.Conv2d(c3, c4, 3, padding=1, groups=g)),    # (N, 384, 13, 13) 192 in
            ("act4", act()),
            ("conv5", nn.Conv2d(c4, c5, 3, padding=1, groups=g)),    # (N, 256, 13, 13) 192 in
            ("act5", act()), ("pool5", pool()),                     # (N, 256, 6, 6)
        ]
        if norm == "batch":
            layers = with_batch_norm(layers)  # convK, bnK, actK
        self.features = nn.Sequential(OrderedDict((n, m) for n, m in layers if m is not None))
        self.pool = nn.Identity()
        self.flatten = nn.Flatten(1)  # (N, 9216) at 227; (N, 6400) at 224
        drop = lambda: make_dropout(dropout, dropout_form)  # noqa: E731
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(c5 * side * side, 4096)), ("act6", act()), ("drop6", drop()),
            ("fc7", nn.Linear(4096, 4096)), ("act7", act()), ("drop7", drop()),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        self.init = init
        self._init(self)

    def _init(self, module: nn.Module) -> None:
        if self.init in FILE_INITS:
            for name, m in module.named_modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    std, bias = FILE_INITS[self.init][name.rsplit(".", 1)[-1]]
                    nn.init.normal_(m.weight, 0.0, std)
                    nn.init.constant_(m.bias, bias)
            return
        init_weights(module, self.init, ones={"conv2", "conv4", "conv5", "fc6", "fc7"},
                     std={"fc6": 0.005, "fc7": 0.005}, output="fc8")

    def init_output_layer(self, layer: nn.Linear) -> None:
        self._init(nn.ModuleDict({"fc8": layer}))


class AlexNetOWT(ImageClassifier):
    """torchvision's ``alexnet``: the single-tower layout of Krizhevsky's "One weird trick" (2014).

    Widths 64-192-384-256-256, conv1 padded by 2 for a 224 input, no LRN, no groups, adaptive
    average pooling to 6x6 (so any input >= 63x63 runs), dropout *before* fc6 and fc7.
    61,100,840 parameters, 0.714 G multiply-adds at 224. The module indices give torchvision's
    state-dict keys (``features.{0,3,6,8,10}``, ``classifier.{1,4,6}``), so its weight files load
    unchanged with ``strict=True``.
    """

    name = "alexnet-owt"
    input_size = (3, 224, 224)
    default_cfg = ModelCfg(input_size=(3, 224, 224), recipe="torchvision", normalize="imagenet",
                           classifier="classifier.6", eval_resize=256)
    min_size = 63

    def __init__(self, num_classes: int = 1000, *, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True),   # 0: 55x55x64
            nn.MaxPool2d(3, 2),                                                # 27x27x64
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True),           # 3: 27x27x192
            nn.MaxPool2d(3, 2),                                                # 13x13x192
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),          # 6: 13x13x384
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),          # 8: 13x13x256
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),          # 10: 13x13x256
            nn.MaxPool2d(3, 2),                                                # 6x6x256
        )
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten(1)  # (N, 9216)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),  # 1: fc6
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),         # 4: fc7
            nn.Linear(4096, num_classes),                                              # 6: fc8
        )
        # PyTorch's default initialization, as torchvision.

    def init_output_layer(self, layer: nn.Linear) -> None:
        layer.reset_parameters()
