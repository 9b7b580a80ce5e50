"""The two-tower network on two devices, as Krizhevsky et al. trained it on two GTX 580s (section 3.2).

``split_towers(model, devices)`` takes a two-tower zoo model (``alexnet2012`` or ``alexnet-small``
with ``towers=2``) and returns a :class:`SplitTowers` that holds tower 1 on ``devices[0]`` and tower 2
on ``devices[1]``. Every convolution and every hidden fully connected layer is split by its output
kernels / neurons (conv1 48 + 48, conv2 128 + 128, ..., fc6 and fc7 2048 + 2048 for alexnet2012);
conv2/4/5, the LRNs (each over its own tower's maps), the batch norms of ``norm="batch"`` (per
channel) and the poolings see only their own tower, so
the towers exchange activations only where the paper's Figure 2 crosses between the GPUs:

    before conv3      each device sends its pool2 maps to the other (all-gather of the channels)
    before fc6        each device sends its pool5 vector to the other (all-gather)
    before fc7, fc8   devices[1] sends its half of fc6 / fc7 (after ReLU) to devices[0], which drops
                      out the whole 4096-vector with one mask and sends it back (fc7 only; fc8 lives
                      on devices[0] and needs nothing more)

One dropout mask over the whole vector, drawn on devices[0], is what makes the split compute exactly
what the grouped single-device model computes for the same seed (its dropout layer, either form, on
the same shape with the same generator); in eval mode dropout draws nothing (the paper's form scales
each half by 1 - p on its own device) and the exchange is a plain all-gather.
cuda-convnet2's ``layers-imagenet-2gpu-model.cfg`` has fc8 (``fc1000``) read both towers' fc7.

``state_dict()`` has the grouped model's keys and shapes (each split tensor concatenated on
``devices[0]``) and ``load_state_dict`` takes them, so a checkpoint moves freely between the forms.
Optimizer state does not: its tensors follow the parameters, which are the halves here.
"""

from __future__ import annotations

import copy
import math
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .base import ImageClassifier
from .lrn import LocalResponseNorm
from .summary import summarize

TOWERS = 2


def _half(layer: nn.Module, tower: int, split_input: bool) -> nn.Module:
    """Tower ``tower``'s share of a conv / linear layer: its half of the output kernels or neurons;
    with ``split_input`` (a grouped conv) also only its own half of the input channels."""
    rows = slice(tower * layer.weight.shape[0] // TOWERS, (tower + 1) * layer.weight.shape[0] // TOWERS)
    if isinstance(layer, nn.Linear):
        half = nn.Linear(layer.in_features, layer.out_features // TOWERS, device="meta")
    else:
        half = nn.Conv2d(layer.in_channels // TOWERS if split_input else layer.in_channels,
                         layer.out_channels // TOWERS, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, device="meta")
    half.weight = nn.Parameter(layer.weight.detach()[rows].clone())
    half.bias = nn.Parameter(layer.bias.detach()[rows].clone())
    return half


def _tower_layer(name: str, layer: nn.Module, tower: int) -> tuple[nn.Module, bool]:
    """(the tower's copy of a trunk layer, whether it reads both towers' maps)."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups not in (1, TOWERS):
            raise ValueError(f"split_towers: {name} has groups={layer.groups}; expected 1 or {TOWERS}")
        return _half(layer, tower, split_input=layer.groups == TOWERS), layer.groups == 1
    if isinstance(layer, LocalResponseNorm):
        if layer.groups != TOWERS:
            raise ValueError(f"split_towers: {name} normalizes across the towers (groups={layer.groups})")
        return LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k), False
    if isinstance(layer, nn.BatchNorm2d):  # per channel, over the whole batch each device reads
        width = layer.num_features // TOWERS
        rows = slice(tower * width, (tower + 1) * width)
        half = nn.BatchNorm2d(width, eps=layer.eps, momentum=layer.momentum)
        with torch.no_grad():
            for key, value in layer.state_dict().items():
                getattr(half, key).copy_(value if value.ndim == 0 else value[rows])
        return half, False
    if any(True for _ in layer.parameters()):
        raise ValueError(f"split_towers: does not know how to split {name} ({type(layer).__name__})")
    return copy.deepcopy(layer), False  # activations, poolings: per channel / per element


class SplitTowers(ImageClassifier):
    """A two-tower model with tower 1 on ``devices[0]`` and tower 2 on ``devices[1]``; see the module
    docstring. Logits (and :meth:`embed`'s fc7) come back on ``devices[0]``. ``forward_features``
    returns the two towers' maps, one per device, and ``forward_head`` takes them."""

    exchange_before: tuple[str, ...]  # the layers that read both towers' activations

    def __init__(self, model: ImageClassifier, devices: Sequence[str | torch.device]):
        super().__init__()
        if getattr(model, "towers", 1) != TOWERS:
            name = getattr(model, "name", type(model).__name__)
            raise ValueError(f"split_towers needs a two-tower model (towers=2), got {name}")
        if len(devices) != TOWERS:
            raise ValueError(f"split_towers takes {TOWERS} devices, got {len(devices)}")
        self.devices = tuple(torch.device(d) for d in devices)
        self.name, self.input_size = model.name, model.input_size
        self.min_size, self.towers = model.min_size, TOWERS
        self._grouped = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        *hidden, out = model.classifier.named_children()
        exchange, halves = [], []
        for tower, device in enumerate(self.devices):
            features = []
            for name, layer in model.features.named_children():
                part, reads_both = _tower_layer(f"features.{name}", layer, tower)
                features.append((name, part))
                if reads_both and features[0][0] != name:  # conv1 reads the image, not the towers
                    exchange.append(name)
            classifier = []
            for name, layer in hidden:
                if isinstance(layer, nn.Linear):
                    classifier.append((name, _half(layer, tower, split_input=False)))
                    exchange.append(name)
                else:
                    classifier.append((name, _tower_layer(f"classifier.{name}", layer, tower)[0]))
            half = nn.Module()
            half.features = nn.Sequential(OrderedDict(features))
            half.pool, half.flatten = copy.deepcopy(model.pool), copy.deepcopy(model.flatten)
            half.classifier = nn.Sequential(OrderedDict(classifier))
            halves.append(half.to(device))
        self.halves = nn.ModuleList(halves)
        self.output = copy.deepcopy(out[1]).to(self.devices[0])
        self.exchange_before = tuple(dict.fromkeys(exchange)) + (out[0],)
        self.output_name, self._output_prefix = out[0], f"classifier.{out[0]}."
        self.register_state_dict_post_hook(SplitTowers._grouped_state_dict)
        self.register_load_state_dict_pre_hook(SplitTowers._split_state_dict)
        self.register_load_state_dict_post_hook(SplitTowers._grouped_key_names)

    # --- forward ------------------------------------------------------------------------------

    def _all_gather(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every device gets both towers' activations, tower 1's channels / neurons first."""
        return [torch.cat([p.to(d) for p in parts], 1) for d in self.devices]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images -> each tower's pooled maps, on its own device: (N, C / 2, H, W) twice."""
        self.check_input(x)
        parts = [x.to(d) for d in self.devices]  # each GPU reads the whole image
        for name, _ in self.halves[0].features.named_children():
            if name in self.exchange_before:
                parts = self._all_gather(parts)
            parts = [getattr(half.features, name)(p) for half, p in zip(self.halves, parts)]
        return [half.pool(p) for half, p in zip(self.halves, parts)]

    def forward_head(self, parts: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """Each tower's maps -> logits (or fc7 after its ReLU and dropout), on ``devices[0]``."""
        parts = [half.flatten(p) for half, p in zip(self.halves, parts)]  # (N, C / 2 * H * W) each
        whole = False  # whether each part is the whole vector (after a dropout) or a tower's half
        for name, layer in self.halves[0].classifier.named_children():
            if isinstance(layer, nn.Linear):
                parts = parts if whole else self._all_gather(parts)
                whole = False
            elif isinstance(layer, nn.Dropout) and layer.training:
                # one mask over the whole vector, drawn where the grouped model would draw it
                full = layer(parts[0] if whole else torch.cat([p.to(self.devices[0]) for p in parts], 1))
                parts, whole = [full.to(d) for d in self.devices], True
                continue
            parts = [getattr(half.classifier, name)(p) for half, p in zip(self.halves, parts)]
        x = parts[0] if whole else torch.cat([p.to(self.devices[0]) for p in parts], 1)  # (N, fc7 width)
        return x if pre_logits else self.output(x)

    @property
    def num_classes(self) -> int:
        return self.output.out_features

    @property
    def embed_dim(self) -> int:
        return self.output.in_features

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError("reset the classifier of the grouped model, then split it")

    # --- the grouped model's state dict -------------------------------------------------------

    def _local_key(self, key: str, tower: int) -> str:
        """Where a grouped model's key lives here: the output layer's, or tower ``tower``'s half."""
        if key.startswith(self._output_prefix):
            return "output." + key[len(self._output_prefix):]
        return f"halves.{tower}.{key}"

    def _grouped_state_dict(self, state: dict, prefix: str, _metadata) -> None:
        for key, _shape in self._grouped:
            if key.startswith(self._output_prefix):
                state[prefix + key] = state.pop(prefix + self._local_key(key, 0))
                continue
            a, b = (state.pop(prefix + self._local_key(key, t)) for t in range(TOWERS))
            # tower 1's rows first; a count (batch norm's num_batches_tracked) is the same in both
            state[prefix + key] = a if a.ndim == 0 else torch.cat([a, b.to(a.device)])

    def _split_state_dict(self, state: dict, prefix: str, _metadata, _strict, _missing, _unexpected,
                          errors: list[str]) -> None:
        for key, shape in self._grouped:
            if prefix + key not in state:
                continue  # reported as missing, under this key, by _grouped_key_names
            full = state.pop(prefix + key)
            if tuple(full.shape) != shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {tuple(full.shape)} from "
                              f"checkpoint, the shape in current model is {torch.Size(shape)}.")
            elif key.startswith(self._output_prefix):
                state[prefix + self._local_key(key, 0)] = full
            else:
                halves = [full] * TOWERS if full.ndim == 0 else full.chunk(TOWERS)
                for tower, half in enumerate(halves):
                    state[prefix + self._local_key(key, tower)] = half

    def _grouped_key_names(self, incompatible) -> None:
        """Report missing keys under the grouped model's names, once each."""
        def grouped(key: str) -> str:
            key = re.sub(r"(^|\.)halves\.[01]\.", r"\1", key)
            return re.sub(r"(^|\.)output\.", lambda m: m.group(1) + self._output_prefix, key)

        incompatible.missing_keys[:] = list(dict.fromkeys(map(grouped, incompatible.missing_keys)))


def split_towers(model: ImageClassifier,
                 devices: Sequence[str | torch.device] = ("cuda:0", "cuda:1")) -> SplitTowers:
    """``model``'s two towers on two devices, exchanging activations only where the paper's GPUs did
    (before conv3, fc6, fc7 and fc8); same function, same state-dict keys as ``model``, which is left
    as it was. See :mod:`alexnet.models.split`."""
    return SplitTowers(model, devices)


_STORED = ("Conv2d", "Linear", "LocalResponseNorm", "BatchNorm2d", "MaxPool2d")  # outputs a new tensor


def memory_per_device(split: SplitTowers) -> list[dict[str, int]]:
    """Per device, from :func:`~alexnet.models.summary.summarize` of ``split``: its parameters, and the
    elements per image of the activations it makes (the outputs of its convolutions, linear layers,
    LRNs and poolings; ReLU works in place, flatten is a view) plus the other tower's half of every
    exchanged input it receives."""
    out = [{"params": 0, "activations": 0} for _ in split.devices]
    previous: dict[int, int] = {}  # per device: the size of the last output, what an exchange doubles
    for r in summarize(split).rows:
        tower = int(r.name.split(".")[1]) if r.name.startswith("halves.") else 0
        name = split.output_name if r.name == "output" else r.name.rsplit(".", 1)[-1]
        size = math.prod(r.output)
        out[tower]["params"] += r.params
        if name in split.exchange_before:
            out[tower]["activations"] += previous[tower]  # received from the other device
        if r.kind in _STORED:
            out[tower]["activations"] += size
        previous[tower] = size
    return out
