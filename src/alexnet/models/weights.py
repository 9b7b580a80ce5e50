"""Loading weight files made elsewhere (torchvision's ``alexnet-owt-*.pth``, safetensors files,
this package's checkpoints) without executing pickled code."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

# What torchvision publishes for IMAGENET1K_V1 (alexnet-owt-7be5be79.pth), for reference.
TORCHVISION_ALEXNET = {
    "file": "alexnet-owt-7be5be79.pth",
    "num_params": 61_100_840,
    "acc@1": 56.522,
    "acc@5": 79.066,
    "resize": 256,
    "crop": 224,
    "mean": (0.485, 0.456, 0.406),  # of [0, 1] pixels
    "std": (0.229, 0.224, 0.225),
}


class WeightsError(UserError, ValueError):
    """A weights file that cannot be read or does not fit the model."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth``/``.pt`` (plain or one of our checkpoints) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such weights file: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - optional dependency
            raise WeightsError("reading .safetensors needs the safetensors package "
                               "(pip install 'alexnet[safetensors]')") from e
        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightsError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or a pickle needing arbitrary code
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} is not a readable weights file ({first})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # one of our checkpoints
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a weights file into ``model`` with ``strict=True`` (every key and shape must match).

    ``load_pretrained(create_model("alexnet-owt"), "alexnet-owt-7be5be79.pth")`` gives
    torchvision's pretrained AlexNet, logit for logit.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        name = getattr(model, "name", type(model).__name__)
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                parts.append(f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}")
        raise WeightsError(f"{path} does not fit {name}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model
