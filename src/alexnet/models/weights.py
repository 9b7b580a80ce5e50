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

import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

METADATA_KEY = "alexnet"  # the safetensors metadata entry holding our JSON description


@dataclass(frozen=True)
class WeightsInfo:
    """What is known about one published weights file."""

    name: str
    file: str
    sha256_prefix: str  # as many leading hex digits of the file's SHA-256 as the publisher gives
    url: str
    model: str
    options: dict
    num_classes: int
    num_params: int
    input_size: tuple[int, int, int]
    preset: str  # a named evaluation preset (alexnet.data.transforms.NAMED_PRESETS)
    categories: str  # "imagenet-1k": the class names shipped in the package
    metrics: dict = field(default_factory=dict)  # published accuracy, %
    recipe: str = ""


# torchvision's IMAGENET1K_V1 AlexNet weights (torchvision/models/alexnet.py). torchvision names its
# files NAME-<first 8 hex digits of the SHA-256>.pth and torch.hub checks that prefix on download.
KNOWN_WEIGHTS: dict[str, WeightsInfo] = {w.name: w for w in [
    WeightsInfo(
        name="alexnet-owt.imagenet1k-v1", file="alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        model="alexnet-owt", options={}, num_classes=1000, num_params=61_100_840, input_size=(3, 224, 224),
        preset="torchvision-eval", categories="imagenet-1k", metrics={"acc@1": 56.522, "acc@5": 79.066},
        recipe="https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
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


def find_known(sha256: str) -> WeightsInfo | None:
    """The registry entry whose published hash (prefix) the file's SHA-256 starts with."""
    return next((w for w in KNOWN_WEIGHTS.values() if sha256.startswith(w.sha256_prefix)), None)


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
    obj = load_torch_file(path)
    meta = None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        if obj.get("format") == "alexnet-checkpoint":
            meta = {"model": obj["model_name"], "options": obj["model_options"],
                    "num_classes": obj["num_classes"],
                    "classes": obj["classes"], "class_names": obj["class_names"], "preset": obj["preset"],
                    "data": obj.get("data")}
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


def load_pretrained(model: nn.Module, path: str | os.PathLike | dict, *, new_head: bool = False) -> nn.Module:
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
        where = "the state dict" if isinstance(path, dict) else str(path)
        raise WeightsError(f"{where} does not fit {name}: {why}")
    model.load_state_dict(state, strict=True)
    return model


def _num_classes(state: dict[str, torch.Tensor]) -> int | None:
    heads = [k for k in state if k.startswith("classifier.") and k.endswith(".weight") and state[k].ndim == 2]
    return state[heads[-1]].shape[0] if heads else None  # the output layer comes last


def _mismatch_in(model: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> bool:
    own = model.state_dict()
    return any(own[k].shape != v.shape for k, v in state.items() if k.startswith(prefix) and k in own)


def _fits(name: str, state: dict[str, torch.Tensor], num_classes: int) -> dict | None:
    """Options of model ``name`` under which ``state`` fits it exactly, or None. The trunk's options
    (towers, in_chans) are found on the ``features.`` tensors first; then the image side, which only
    the first fc layer shows."""
    from . import ModelError, create_model, model_options

    accepted = model_options(name)
    first = next(v for k, v in state.items() if k.endswith(".weight") and v.ndim == 4)
    trunk = {"towers": (accepted["towers"], 3 - accepted["towers"])} if "towers" in accepted else {}
    if "in_chans" in accepted:
        trunk["in_chans"] = (first.shape[1],)
    # Sides s and s - 1 (s even) can give the same shapes: the common sizes first, then even ones.
    sides = sorted(range(16, 257), key=lambda s: (s not in (28, 32), s % 2,
                                                  s)) if "img_size" in accepted else [None]
    for values in itertools.product(*trunk.values()):
        options = dict(zip(trunk, values))
        with torch.device("meta"):  # shapes only: nothing is allocated or initialized for real
            probe = create_model(name, num_classes=num_classes, **options)
        if _mismatch_in(probe, state, "features."):
            continue
        for side in sides:
            sized = options if side is None else {**options, "img_size": side}
            try:
                with torch.device("meta"):
                    probe = create_model(name, num_classes=num_classes, **sized)
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
    from . import create_model, list_models

    num_classes = _num_classes(state)
    names = list_models()
    if model_name in names:
        names = [model_name] + [n for n in names if n != model_name]
    if num_classes is not None:
        for name in names:
            with torch.device("meta"):
                probe = create_model(name, num_classes=num_classes)
            if set(probe.state_dict()) != set(state):
                continue  # another model's layer names: no option changes those
            options = _fits(name, state, num_classes)
            if options is not None and model_name not in (None, name):
                raise WeightsError(f"{where} holds {name} weights, not {model_name}")
            if options is not None:
                return name, options, num_classes
    keys = ", ".join(list(state)[:3])
    target = model_name or "any model (" + ", ".join(list_models()) + ")"
    raise WeightsError(f"{where} ({len(state)} tensors: {keys}, ...) fits no option of {target}")


def _build(wf: WeightsFile, name: str, options: dict, num_classes: int) -> nn.Module:
    from . import create_model

    model = create_model(name, num_classes=num_classes, **options)
    why = _mismatch(model, wf.state)
    if why:
        raise WeightsError(f"{wf.path} does not fit {name} {options or ''}: {why}")
    model.load_state_dict(wf.state, strict=True)
    return model


def load_weights(path: str | os.PathLike, model_name: str | None = None, *, quiet: bool = False,
                 **options) -> nn.Module:
    """Build the model a weights file holds and load it; ``model.pretrained_cfg`` then describes it:
    ``weights`` (registry name or None), ``sha256``, ``model``, ``options``, ``classes``,
    ``class_names``, ``preset`` (a preset name or a ``Preset.to_dict()``), ``metrics``.

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
        name, opts, k = m["model"], dict(m["options"]), int(m["num_classes"])
        classes, names, preset, metrics = list(m["classes"]), list(m["class_names"]), m["preset"], {}
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
    model = _build(wf, name, {**opts, **options}, k)
    if note and not quiet:
        print(f"alexnet: note: {note}", file=sys.stderr)
    model.pretrained_cfg = {"weights": known.name if known else None, "file": str(wf.path),
                            "sha256": wf.sha256,
                            "model": name, "options": {**opts, **options}, "num_classes": k,
                            "classes": classes, "class_names": names, "preset": preset, "metrics": metrics,
                            "data": (wf.meta or {}).get("data"), "note": note}
    return model


_MAGIC = [(b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip file"),
          (b"ONNX", "an ONNX model"), (b"\x08", "an ONNX model (protobuf)")]


def load_torch_file(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU; a file it cannot read raises
    :class:`WeightsError` saying what the file is, never suggesting an unsafe load."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: {_unreadable(head, e)}") from None


def _unreadable(head: bytes, error: Exception) -> str:
    message = str(error)
    if not head:
        return "empty file, not a PyTorch checkpoint"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or its legacy pickle
        if "Unsupported global" in message or "GLOBAL" in message:
            return ("a PyTorch file holding objects other than tensors and plain values; not loaded, because "
                    "loading it would run code from the file")
        return "a truncated or damaged PyTorch file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"not a PyTorch checkpoint (it is {what})"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "not a PyTorch checkpoint (it is a text file)"
    return "not a PyTorch checkpoint"
