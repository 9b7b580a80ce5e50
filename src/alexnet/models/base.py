"""What every model in the zoo shares: a ``features`` trunk, a ``classifier`` head, and the
methods the rest of the package relies on (``forward_features``, ``forward_head``, ``embed``,
``reset_classifier``) and a clear error for an input of the wrong shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelCfg:
    """What a model says about itself (timm's ``default_cfg``, torchvision's weights metadata).

    Everything outside ``models/`` asks a model's ``default_cfg`` instead of keeping lists of names.
    """

    input_size: tuple[int, int, int]  # (C, H, W) that the model takes with its default options
    recipe: str                       # the training recipe that ``--recipe auto`` picks for it
    normalize: str                    # input normalization its recipe uses: paper, standard, imagenet
    classifier: str                   # dotted name of the output layer (fine-tuning replaces it)
    sized_by_data: bool = False       # its ``in_chans`` / ``img_size`` options follow the data
    eval_resize: int | None = None    # photographs: side of the centre square cropped at evaluation


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
