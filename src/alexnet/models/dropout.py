"""Dropout in the paper's form beside PyTorch's inverted form (Krizhevsky et al. 2012, section 4.2).

- "inverted" (``nn.Dropout``; the default of the small-image nets): at training time zero each unit
  with probability p and multiply the kept ones by 1 / (1 - p); at test time do nothing. So do Caffe
  and cuda-convnet2's ``type=dropout`` layer, the one of its two-tower files
  (``layers-imagenet-2gpu-model.cfg``; ``DropoutSmallerThanOperator`` in ``cudaconvnet/include/layer.cuh``
  keeps a unit times 1 / keep, and the layer copies its input at test time).
- "paper": at training time zero each unit with probability p and leave the kept ones as they are;
  at test time multiply every output by 1 - p ("At test time, we use all the neurons but multiply
  their outputs by 0.5"), as cuda-convnet2's ``type=dropout2`` layer does, the one of its one-GPU
  files (``layers-imagenet-1gpu.cfg``; ``Dropout2Layer`` in ``cudaconvnet/src/layer.cu``); the default
  of ``alexnet2012``.

For given weights the two compute the same function at test time only if the weights after the
dropout layer differ by the factor 1 - p; trained from the same start they follow different paths
(the weight decay and the initialization act on differently scaled weights).
"""

from __future__ import annotations

import torch
from torch import nn

DROPOUT_FORMS = ("inverted", "paper")


class PaperDropout(nn.Dropout):
    """Dropout without rescaling at training time and x(1 - p) at test time (the paper's form, and
    cuda-convnet2's ``dropout2``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1.0 - self.p)
        if self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p)  # 1 with probability 1 - p
        return x * keep


def make_dropout(p: float, form: str = "inverted") -> nn.Dropout:
    """A dropout layer of rate ``p`` in ``form`` ("inverted" or "paper")."""
    if form not in DROPOUT_FORMS:
        raise ValueError(f"unknown dropout_form {form!r}; expected one of {DROPOUT_FORMS}")
    return PaperDropout(p) if form == "paper" else nn.Dropout(p)
