"""Weight files and what is known about them.

A registry of published weight files with their metadata (as torchvision's weights enums: the model
and options they fit, parameter count, input size, evaluation preset, class names and published
accuracy), and loading of any weights file without executing pickled code:

- a file in the registry (recognized by its SHA-256) gets the registry's model, preset and classes;
- a ``.safetensors`` file written by ``alexnet export`` and this package's checkpoints carry their
  own model name, options, classes and preset;
- any other state dict is matched to a model by its keys and shapes (with a one-line note, as
  options that leave no trace in the weights, such as ``lrn_mode`` or ``activation``, cannot be
  recovered), and a file that fits no model is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import CheckpointError, check_checkpoint, is_checkpoint, load_torch_file
from ..errors import UserError
from .alexnet import AlexNetOWT
from .base import ModelCfg
from .layers import NORMS
from .registry import ModelError, build_model, list_models, model_cfg, model_options

METADATA_KEY = "alexnet"  # the safetensors metadata entry holding our JSON description


# torchvision's IMAGENET1K_V1 AlexNet weights (torchvision/models/alexnet.py). torchvision names its
# files NAME-<first 8 hex digits of the SHA-256>.pth and torch.hub checks that prefix on download.
KNOWN_WEIGHTS: dict[str, ModelCfg] = {w.weights: w for w in [
    dataclasses.replace(
        AlexNetOWT.default_cfg, weights="alexnet-owt.imagenet1k-v1", file="alexnet-owt-7be5be79.pth",
        sha256="7be5be79", url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        model="alexnet-owt", options={}, num_classes=1000, num_params=61_100_840, preset="torchvision-eval",
        categories="imagenet-1k", metrics={"acc@1": 56.522, "acc@5": 79.066},
        recipe_url="https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
]}


class WeightsError(UserError, ValueError):
    """A weights file that cannot be read or does not fit the model."""


def imagenet_class_names() -> list[str]:
    """The 1,000 ILSVRC-2012 class names in torchvision's order (sorted synsets), shipped in the package."""
    text = resources.files("alexnet").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


CATEGORIES = {"imagenet-1k": imagenet_class_names}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_known(sha256: str) -> ModelCfg | None:
    """The registry entry whose published hash (prefix) the file's SHA-256 starts with."""
    return next((w for w in KNOWN_WEIGHTS.values() if sha256.startswith(w.sha256)), None)


@dataclass
class WeightsFile:
    """A weights file read into memory: its tensors, hash and whatever metadata it carries."""

    path: Path
    state: dict[str, torch.Tensor]
    sha256: str
    meta: dict | None = None  # model, options, num_classes, classes, class_names, preset (our files)


def _read_safetensors(path: Path) -> tuple[dict, dict | None]:
    try:
        from safetensors import safe_open
    except ImportError as e:  # pragma: no cover - optional dependency
        raise WeightsError("reading .safetensors needs the safetensors package "
                           "(pip install 'alexnet[export]')") from e
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as e:  # noqa: BLE001 - a broken header can raise almost anything
        raise WeightsError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        return state, (json.loads(raw) if raw else None)
    except ValueError:
        raise WeightsError(f"{path}: its {METADATA_KEY!r} metadata is not valid JSON") from None


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a ``.pth``/``.pt`` state dict, one of our checkpoints, or a ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such weights file: {path}")
    sha = file_sha256(path)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        return WeightsFile(path, state, sha, meta)
    try:
        obj = load_torch_file(path)
    except CheckpointError as e:
        raise WeightsError(str(e)) from None
    meta = None
    if is_checkpoint(obj):
        try:
            ckpt = check_checkpoint(obj, path)
        except CheckpointError as e:
            raise WeightsError(str(e)) from None
        meta = {"model": ckpt["model_name"], "options": ckpt["model_options"],
                "num_classes": ckpt["num_classes"], "classes": ckpt["classes"],
                "class_names": ckpt["class_names"], "preset": ckpt["preset"], "data": ckpt.get("data")}
        obj = ckpt["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return WeightsFile(path, obj, sha, meta)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth``/``.pt`` (plain or one of our checkpoints) or a ``.safetensors``
    file."""
    return read_weights(path).state


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Why ``state`` does not fit ``model`` ("" when every key and shape matches)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            parts.append(f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}")
    return "; ".join(parts)


def load_pretrained(model: nn.Module, path: str | os.PathLike | dict, *, new_head: bool = False,
                    where: str | None = None) -> nn.Module:
    """Load a weights file (or a state dict) into ``model``: every key and shape must match.

    ``load_pretrained(create_model("alexnet-owt"), "alexnet-owt-7be5be79.pth")`` gives torchvision's
    pretrained AlexNet, logit for logit. With ``new_head``, an output layer of another class count in
    the file is skipped and the model's own (freshly initialized) one kept: fine-tuning.
    """
    state = path if isinstance(path, dict) else read_state_dict(path)
    if new_head:
        head = model.default_cfg.classifier
        keys = [f"{head}.weight", f"{head}.bias"]
        own = model.state_dict()
        if all(k in state for k in keys) and state[keys[0]].shape != own[keys[0]].shape:
            state = {**state, **{k: own[k] for k in keys}}
    why = _mismatch(model, state)
    if why:
        name = getattr(model, "name", type(model).__name__)
        where = where or ("the state dict" if isinstance(path, dict) else str(path))
        raise WeightsError(f"{where} does not fit {name}: {why}")
    model.load_state_dict(state, strict=True)
    return model


def _num_classes(state: dict[str, torch.Tensor]) -> int | None:
    heads = [k for k in state if k.startswith("classifier.") and k.endswith(".weight") and state[k].ndim == 2]
    return state[heads[-1]].shape[0] if heads else None  # the output layer comes last


def _mismatch_in(model: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> bool:
    own = model.state_dict()
    return any(own[k].shape != v.shape for k, v in state.items() if k.startswith(prefix) and k in own)


def _layouts(name: str) -> list[dict]:
    """The option values that change model ``name``'s layer names, each once: ``norm="batch"`` adds a
    ``bnK`` after every ``convK``."""
    default = model_options(name).get("norm")
    return [{}] if default is None else [{}] + [{"norm": v} for v in NORMS if v != default]


def _fits(name: str, state: dict[str, torch.Tensor], num_classes: int, base: dict) -> dict | None:
    """Options of model ``name`` (beside ``base``) under which ``state`` fits it exactly, or None. The
    trunk's options (towers, in_chans) are found on the ``features.`` tensors first; then the image side,
    which only the first fc layer shows."""
    accepted = model_options(name)
    first = next(v for k, v in state.items() if k.endswith(".weight") and v.ndim == 4)
    trunk = {"towers": (accepted["towers"], 3 - accepted["towers"])} if "towers" in accepted else {}
    if "in_chans" in accepted:
        trunk["in_chans"] = (first.shape[1],)
    # Several sides give the same shapes (s and s - 1 for s even; 224 and 220 on alexnet2012): the
    # model's own default first, then the common sizes, then even ones.
    common = (accepted.get("img_size"), 227, 224, 28, 32)
    sides = sorted(range(16, 257), key=lambda s: (s not in common, common.index(s) if s in common else 0,
                                                  s % 2, s)) if "img_size" in accepted else [None]
    for values in itertools.product(*trunk.values()):
        options = {**base, **dict(zip(trunk, values))}
        with torch.device("meta"):  # shapes only: nothing is allocated or initialized for real
            probe = build_model(name, num_classes, **options)
        if _mismatch_in(probe, state, "features."):
            continue
        for side in sides:
            sized = options if side is None else {**options, "img_size": side}
            try:
                with torch.device("meta"):
                    probe = build_model(name, num_classes, **sized)
            except ModelError:
                continue
            if not _mismatch(probe, state):
                return sized
    return None


def match_architecture(state: dict[str, torch.Tensor], model_name: str | None = None,
                       where: str = "the weights") -> tuple[str, dict, int]:
    """``(model name, options, num_classes)`` of the registered model whose parameters have exactly
    the keys and shapes of ``state``; raises :class:`WeightsError` when none has (or, with
    ``model_name``, when that model has not)."""
    num_classes = _num_classes(state)
    names = list_models()
    if model_name in names:
        names = [model_name] + [n for n in names if n != model_name]
    if num_classes is not None:
        for name, layout in ((n, layout) for n in names for layout in _layouts(n)):
            try:
                with torch.device("meta"):
                    probe = build_model(name, num_classes, **layout)
            except ModelError:  # a norm this model does not offer
                continue
            if set(probe.state_dict()) != set(state):
                continue  # another model's layer names: no other option changes those
            options = _fits(name, state, num_classes, layout)
            if options is not None and model_name not in (None, name):
                raise WeightsError(f"{where} holds {name} weights, not {model_name}")
            if options is not None:
                return name, options, num_classes
    keys = ", ".join(list(state)[:3])
    target = model_name or "any model (" + ", ".join(list_models()) + ")"
    raise WeightsError(f"{where} ({len(state)} tensors: {keys}, ...) fits no option of {target}")


def _build(wf: WeightsFile, name: str, options: dict, num_classes: int) -> nn.Module:
    model = build_model(name, num_classes, **options)
    why = _mismatch(model, wf.state)
    if why:
        raise WeightsError(f"{wf.path} does not fit {name} {options or ''}: {why}")
    model.load_state_dict(wf.state, strict=True)
    return model


def load_weights(path: str | os.PathLike, model_name: str | None = None, *, quiet: bool = False,
                 **options) -> nn.Module:
    """Build the model a weights file holds and load it; ``model.pretrained_cfg`` (a :class:`ModelCfg`)
    then describes it: its architecture's ``default_cfg`` with the file's ``weights`` (registry name or
    None), ``file``, ``sha256``, ``model``, ``options``, ``classes``, ``class_names``, ``preset`` (a
    preset name or a ``Preset.to_dict()``), ``metrics``, ``data`` and ``note``.

    ``model_name`` and ``options`` must agree with the file (options that leave no trace in the
    weights, e.g. ``lrn_mode``, override what the file says). A file neither in the registry nor
    carrying our metadata is matched by its keys and shapes, with a one-line note on stderr.
    """
    wf = read_weights(path)
    known = find_known(wf.sha256)
    note = None
    if known is not None:
        name, opts, k = known.model, dict(known.options), known.num_classes
        names = CATEGORIES[known.categories]()
        classes, preset, metrics = names, known.preset, dict(known.metrics)
    elif wf.meta is not None:
        m = wf.meta
        try:
            name, opts, k = m["model"], dict(m["options"]), int(m["num_classes"])
            classes, names, preset = list(m["classes"]), list(m["class_names"]), m["preset"]
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{wf.path}: its {METADATA_KEY!r} description is incomplete ({e!r} is "
                               f"missing or malformed)") from None
        metrics = {}
    else:
        name, opts, k = match_architecture(wf.state, model_name, str(wf.path))
        classes = names = imagenet_class_names() if k == 1000 else [str(i) for i in range(k)]
        preset = "torchvision-eval" if name == "alexnet-owt" else None
        metrics = {}
        shown = ", ".join(f"{a}={b}" for a, b in opts.items())
        note = (f"{wf.path.name} (sha256 {wf.sha256[:12]}...) is not a known weights file; loaded by its "
                f"keys and shapes as {name}{' ' + shown if shown else ''}, other options at their defaults")
    if model_name is not None and model_name != name:
        raise WeightsError(f"{wf.path} holds {name} weights, not {model_name}")
    if name not in list_models():
        raise WeightsError(f"{wf.path} holds weights of an unknown model {name!r}; this version knows: "
                           f"{', '.join(list_models())}")
    model = _build(wf, name, {**opts, **options}, k)
    if note and not quiet:
        print(f"alexnet: note: {note}", file=sys.stderr)
    model.pretrained_cfg = dataclasses.replace(
        known or model_cfg(name), weights=known.weights if known else None, file=str(wf.path),
        sha256=wf.sha256, model=name, options={**opts, **options}, num_classes=k, classes=tuple(classes),
        class_names=tuple(names), preset=preset, metrics=metrics, data=(wf.meta or {}).get("data"), note=note)
    return model

