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

from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
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
        return x * keep_mask(x, 1.0 - self.p)


def make_dropout(p: float, form: str = "inverted") -> nn.Dropout:
    """A dropout layer of rate ``p`` in ``form`` ("inverted" or "paper")."""
    if form not in DROPOUT_FORMS:
        raise ValueError(f"unknown dropout_form {form!r}; expected one of {DROPOUT_FORMS}")
    return PaperDropout(p) if form == "paper" else nn.Dropout(p)


# (rows, total) while a forward computes rows ``rows`` of a batch of ``total`` (see batch_shard)
_SHARD: ContextVar[tuple[torch.Tensor, int] | None] = ContextVar("alexnet_dropout_shard", default=None)


@contextmanager
def batch_shard(rows: torch.Tensor, total: int):
    """Inside, dropout masks are drawn for a batch of ``total`` images and image ``i`` of the forward
    takes row ``rows[i]``: processes that share a global batch (and seed) draw the same masks, and
    each uses its own rows, so a sample's mask does not depend on the number of processes."""
    token = _SHARD.set((rows, total))
    try:
        yield
    finally:
        _SHARD.reset(token)


def keep_mask(x: torch.Tensor, keep: float) -> torch.Tensor:
    """1 with probability ``keep``, 0 otherwise, shaped like ``x`` (drawn for the whole global batch
    inside :func:`batch_shard`)."""
    shard = _SHARD.get()
    if shard is None:
        return torch.empty_like(x).bernoulli_(keep)
    rows, total = shard
    return x.new_empty((total, *x.shape[1:])).bernoulli_(keep)[rows.to(x.device)]


class InvertedDropout(nn.Dropout):
    """``nn.Dropout`` whose masks follow :func:`batch_shard`; outside one it is ``nn.Dropout``.

    On the CPU PyTorch's dropout draws its mask as ``empty_like(x).bernoulli_(1 - p)`` and returns
    ``x * (mask / (1 - p))``; this computes the same, so a one-process run is unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _SHARD.get() is None or self.p == 0.0:
            return F.dropout(x, self.p, self.training, self.inplace)
        keep = 1.0 - self.p
        return x * keep_mask(x, keep).div_(keep) if keep > 0 else x * 0.0


def shardable_dropout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` of ``model`` (in place) by :class:`InvertedDropout` (the same rate;
    no parameters, so the state dict is unchanged): dropout masks that follow :func:`batch_shard`."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, InvertedDropout(child.p, child.inplace))
    return model
