"""What every model in the zoo shares: a ``features`` trunk, a ``classifier`` head, and the
methods the rest of the package relies on (``forward_features``, ``forward_head``, ``embed``,
``reset_classifier``) and a clear error for an input of the wrong shape."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ModelCfg:
    """What is known about a model: the one metadata record of the zoo (timm's ``PretrainedCfg``,
    torchvision's weights enums).

    Every architecture carries one as ``default_cfg`` (the first block of fields). A model loaded from
    a weights file carries one as ``pretrained_cfg``: its architecture's, completed with what the file
    says (the second block), and the registry of published weights
    (:data:`alexnet.models.weights.KNOWN_WEIGHTS`) holds one per file. Everything outside ``models/``
    asks these records instead of keeping lists of names.
    """

    # the architecture
    input_size: tuple[int, int, int]  # (C, H, W) that the model takes with its default options
    recipe: str                       # the training recipe that ``--recipe auto`` picks for it
    normalize: str                    # input normalization its recipe uses: paper, standard, imagenet
    classifier: str                   # dotted name of the output layer (fine-tuning replaces it)
    sized_by_data: bool = False       # its ``in_chans`` / ``img_size`` options follow the data
    eval_resize: int | None = None    # photographs: side of the centre square cropped at evaluation
    # a weights file (empty for a model built from scratch)
    model: str = ""                   # the registered model name the weights fit
    options: dict = field(default_factory=dict)  # the model options they fit (create_model keywords)
    num_classes: int | None = None
    classes: tuple[str, ...] = ()     # class ids, in output order
    class_names: tuple[str, ...] = ()  # readable names, in output order
    preset: str | dict | None = None  # evaluation preset: a named one (data.transforms) or Preset.to_dict()
    metrics: dict = field(default_factory=dict)  # published accuracy, %
    weights: str | None = None        # the registry's name for the file, when it is a published one
    file: str = ""                    # the file's name (registry) or path (loaded)
    url: str = ""                     # where the published file is downloaded from
    sha256: str = ""                  # registry: the hash prefix the publisher gives; loaded: the whole hash
    num_params: int | None = None
    categories: str = ""              # registry: the named class list ("imagenet-1k")
    recipe_url: str = ""              # registry: how the published weights were trained
    data: str | None = None           # the dataset spec the weights were trained on, when recorded
    note: str | None = None           # how the file was recognized, when it carried no description


class ImageClassifier(nn.Module):
    """Base class: subclasses build ``features``, ``pool``, ``flatten`` and ``classifier``.

    The last module of ``classifier`` must be the output ``nn.Linear`` layer, and everything
    before it yields the penultimate vector (fc7 for AlexNet) returned by :meth:`embed`.
    """

    name: str = ""
    default_cfg: ModelCfg
    input_size: tuple[int, int, int] = (3, 224, 224)
    min_size: int | None = None  # accept any H, W >= min_size (adaptive pooling); None: exact size
    towers: int = 1  # 2: the paper's two-GPU connectivity (conv1's kernels split in two halves)

    features: nn.Module
    pool: nn.Module
    flatten: nn.Module
    classifier: nn.Sequential

    def check_input(self, x: torch.Tensor) -> None:
        c, h, w = self.input_size
        ok = x.ndim == 4 and x.shape[1] == c
        if ok and self.min_size is None:
            ok = tuple(x.shape[-2:]) == (h, w)
        elif ok:
            ok = min(x.shape[-2:]) >= self.min_size
        if not ok:
            what = f"(N, {c}, {h}, {w})"
            if self.min_size is not None:
                what += f" (H, W >= {self.min_size})"
            raise ValueError(f"{self.name} expects input of shape {what}, got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional trunk: (N, C, H, W) images -> last pooled feature map."""
        self.check_input(x)
        return self.pool(self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits, or the penultimate vector when ``pre_logits``."""
        x = self.flatten(x)
        if pre_logits:
            return self.classifier[:-1](x)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate vector (fc7 after its ReLU for AlexNet): call in ``eval()`` mode."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    @property
    def num_classes(self) -> int:
        return self.classifier[-1].out_features

    @property
    def embed_dim(self) -> int:
        return self.classifier[-1].in_features

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the output layer with a freshly initialized one for ``num_classes`` classes."""
        old = self.classifier[-1]
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        self.init_output_layer(new)
        self.classifier[-1] = new

    def init_output_layer(self, layer: nn.Linear) -> None:
        """How a new output layer is initialized; subclasses follow their own scheme."""
        nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)
