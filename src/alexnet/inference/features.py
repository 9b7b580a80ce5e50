"""Features of a trained network: ``alexnet features RUN_OR_WEIGHTS --data SPEC --layer fc7 -o feats.npz``
and :func:`extract_features` / :func:`dataset_features` in Python.

Layer names, for every model in the zoo:

- ``conv1`` ... ``convN``, then ``fc{N+1}`` ... for the convolutional and fully connected layers in
  order (AlexNet: conv1-conv5, fc6-fc8). A layer followed by its activation gives the activation's
  output, as Caffe's in-place ReLU blobs do: ``fc7`` is fc7 after its ReLU (the usual 4096-d
  descriptor, what ``model.embed`` returns); the output layer gives the logits.
- ``poolN``: the trunk's output (after the last pooling), the input of the first fc layer.
- any module path of the model (``features.conv1``, ``classifier.4``, ``norm1``) for its raw output.

Vectors are flattened (a conv5 map of 256 x 13 x 13 becomes 43,264 numbers).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data import build_source
from ..data.loader import EpochLoader, batch_indices
from ..data.transforms import Preset
from ..errors import UserError
from ..files import atomic_path
from ..runtime import pick_device
from .load import load_trained, split_for

_ACTIVATIONS = (nn.ReLU, nn.Tanh)


class _Stop(Exception):
    """Raised by the hook once the layer's output is in hand: the rest of the network is skipped."""


def layer_names(model: nn.Module) -> dict[str, str]:
    """Friendly layer names -> the module path whose output they mean (see the module docstring)."""
    paths = [(f"{part}.{name}", m) for part in ("features", "classifier")
             for name, m in getattr(model, part).named_children()]
    out: dict[str, str] = {}
    convs = 0
    index = 0
    for i, (path, m) in enumerate(paths):
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        index += 1
        convs += isinstance(m, nn.Conv2d)
        name = f"conv{index}" if isinstance(m, nn.Conv2d) else f"fc{index}"
        follows = paths[i + 1] if i + 1 < len(paths) else None
        out[name] = follows[0] if follows is not None and isinstance(follows[1], _ACTIVATIONS) else path
    out[f"pool{convs}"] = "pool"
    for path, _ in paths:  # short module names, where unambiguous and not already taken
        short = path.split(".", 1)[1]
        if not short.isdigit():
            out.setdefault(short, path)
    return out


def _resolve(model: nn.Module, layer: str) -> nn.Module:
    names = layer_names(model)
    path = names.get(layer, layer)
    modules = dict(model.named_modules())
    if path not in modules or path == "":
        shown = ", ".join(k for k in names if not k.startswith(("features.", "classifier.")))
        raise UserError(f"{getattr(model, 'name', 'the model')} has no layer {layer!r}; choose from: {shown} "
                        "(or a module path such as "
                        f"features.{next(iter(model.features.named_children()))[0]})")
    return modules[path]


def extract_features(model: nn.Module, images: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
    """``(N, D)`` float32 vectors of ``layer`` for preprocessed ``images`` (N, C, H, W); call in eval mode."""
    module = _resolve(model, layer)
    got: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        got.append(output.detach().flatten(1).float().clone())  # clone: a later in-place op cannot touch it
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got[0]


@dataclass
class FeatureSet:
    """Features of a whole split: ``features`` (N, D) float32, ``labels`` (N,) the dataset's labels,
    ``files`` (N names), ``class_names`` the dataset's, in label order."""

    features: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    class_names: list[str]
    layer: str
    skipped: list[str]


def dataset_features(source: str, data: str | None = None, *, layer: str = "fc7", split: str = "test",
                     batch_size: int = 64, device: str = "auto", workers: int = 0,
                     model_name: str | None = None,
                     progress: bool = True) -> FeatureSet:
    """Features of every image of a dataset split, from a run directory, checkpoint or weights file,
    with the model's own evaluation preprocessing (undecodable files are skipped and listed)."""
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    loaded = load_trained(source, model_name=model_name)
    spec = data or loaded.data
    if spec is None:
        raise UserError("--data is needed for a weights file")
    src = build_source(spec)
    images = split_for(loaded, src, split)
    dev = pick_device(device)
    model = loaded.model.eval().to(dev)
    _resolve(model, layer)  # an unknown layer fails before any image is read
    preset = Preset.from_dict(loaded.preset, train=False)
    feats, labels, files, skipped = [], [], [], []
    batches = batch_indices(len(images), batch_size, shuffle=False)
    with tqdm(total=len(images), unit="img", desc=f"{layer} features", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:
        for idx, batch in zip(batches, EpochLoader(images, batches, workers=workers)):
            bad = set(batch.skipped)
            skipped += batch.skipped
            names = [images.describe(i) for i in idx.tolist()]
            files += [n for n in names if n not in bad]
            if len(batch.images):
                x = preset(batch.images.to(dev, non_blocking=True))
                feats.append(extract_features(model, x, layer).cpu())  # sync with the device
                labels.append(batch.labels)
            bar.update(len(idx))
    if not feats:
        raise UserError(f"no readable images in the {split} split of {spec}")
    return FeatureSet(torch.cat(feats), torch.cat(labels), files, src.class_names, layer, skipped)


def save_npz(fs: FeatureSet, path: str | os.PathLike) -> None:
    """Write ``features``, ``labels``, ``files``, ``class_names`` and ``layer`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, features=fs.features.numpy(), labels=fs.labels.numpy(), files=np.array(fs.files),
                 class_names=np.array(fs.class_names), layer=np.array(fs.layer))
