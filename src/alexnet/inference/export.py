"""``alexnet export``: a run, checkpoint or weights file to ONNX, a ``torch.export`` program (.pt2)
or safetensors, each carrying the model name, options, classes and evaluation preset.

- ONNX: input ``images`` (N, C, H, W) float32 with a dynamic batch dimension, output ``logits``
  (N, K); the description is in the model's ``metadata_props`` under ``alexnet``. LRN is exported
  as plain operators computing this package's formula, so every reading (``paper`` with alpha as
  printed, ``cuda-convnet``, ``caffe``) gives the numbers PyTorch gives; ONNX's own ``LRN``
  operator divides alpha by the size and would silently turn the paper's reading into cuda-convnet's.
  Before the file is put in place it is run in onnxruntime at batch 1 and 7 against PyTorch.
- pt2: ``torch.export.save`` of the eval-mode model, dynamic batch, the description in the extra
  file ``alexnet.json``; ``torch.export.load(path).module()`` runs it without this package.
- safetensors: the state dict, the description as JSON in the metadata under ``alexnet``;
  ``alexnet.create_model(name, weights=path)`` loads it back with its classes and preset.

Files are written to a temporary name in the target folder and renamed when complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from .._version import __version__
from ..data.transforms import preset_to_json
from ..errors import UserError
from ..files import atomic_path
from ..models.weights import METADATA_KEY, load_weights
from .load import Loaded

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors"}
TOLERANCE = 1e-4  # max abs difference of float32 logits accepted between a runtime and PyTorch
CHECK_BATCHES = (1, 7)


class ExportError(UserError, ValueError):
    """An export that cannot be done (bad target, missing package, a check that failed)."""


def describe(loaded: Loaded) -> dict:
    """The JSON description written into every exported file."""
    m = loaded.model
    return {"model": m.name, "options": loaded.options,
            "num_classes": m.num_classes, "input_size": list(m.input_size), "classes": loaded.classes,
            "class_names": loaded.class_names, "preset": preset_to_json(loaded.preset),
            "data": loaded.data, "alexnet_version": __version__}


def check_target(path: str | os.PathLike) -> Path:
    """A path a file can be written to (its folder exists and is writable, it is not a folder)."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name (e.g. {path / 'model.onnx'})")
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: no such folder {path.parent}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"cannot write {path}: permission denied")
    return path


def output_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of the file ``path`` names: its extension's (``.onnx``, ``.pt2``, ``.safetensors``);
    ``fmt``, when given, must agree with it, so that a file is always what its name says."""
    suffix = Path(path).suffix.lower()
    named = next((f for f, ext in FORMATS.items() if suffix == ext), None)
    if fmt is not None and fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt is None and named is None:
        raise ExportError(f"cannot tell the format from {path}; name it *.onnx, *.pt2 or *.safetensors")
    if fmt is not None and named != fmt:
        raise ExportError(f"--format {fmt} but {path} is named like {named or 'no format'}: a {fmt} file is "
                          f"named *{FORMATS[fmt]} (e.g. {Path(path).with_suffix(FORMATS[fmt]).name})")
    return named


def _example(model, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *model.input_size, generator=g)


def _dynamic_batch():
    return {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}


def _quiet():
    """The exporters' progress lines and warnings (e.g. about torchvision ops) kept off the console."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript"):
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.ERROR)
    return stack


def export_pt2(model, path: Path, meta: dict) -> None:
    """``torch.export`` program with a dynamic batch dimension and ``alexnet.json`` beside it."""
    with _quiet():
        program = torch.export.export(model, (_example(model),), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, path, extra_files={"alexnet.json": json.dumps(meta)})


def export_onnx(model, path: Path, meta: dict, opset: int | None = None) -> None:
    """ONNX through ``torch.onnx.export(dynamo=True)``, with the description in ``metadata_props``."""
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's exporter needs it
    except ImportError as e:
        raise ExportError(f"ONNX export needs {e.name} (pip install 'alexnet[export]')") from None
    with _quiet():
        torch.onnx.export(model, (_example(model),), str(path), dynamo=True, external_data=False,
                          input_names=["images"], output_names=["logits"], opset_version=opset,
                          dynamic_shapes=_dynamic_batch(), verbose=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "alexnet", json.dumps(meta)
    onnx.save(proto, str(path))


def export_safetensors(model, path: Path, meta: dict) -> None:
    """The state dict with the description as JSON metadata."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError("safetensors export needs safetensors (pip install 'alexnet[export]')") from None
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta), "format": "pt"})


def onnx_runner(path: str | os.PathLike):
    """A function running the ONNX file in onnxruntime: float32 images -> logits."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("checking an ONNX file needs onnxruntime (pip install 'alexnet[export]')") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def pt2_runner(path: str | os.PathLike):
    """The ``torch.export`` program in the file, as a callable module."""
    return torch.export.load(str(path)).module()


def safetensors_runner(path: str | os.PathLike):
    """The model the safetensors file describes, loaded back."""
    return load_weights(path, quiet=True).eval()


def max_abs_diff(run, model, batches=CHECK_BATCHES) -> float:
    """Largest absolute difference between ``run``'s and ``model``'s logits over the batch sizes."""
    worst = 0.0
    for b in batches:
        x = _example(model, b)
        with torch.no_grad():
            worst = max(worst, float((run(x) - model(x)).abs().max()))
    return worst


EXPORTERS = {"onnx": (export_onnx, onnx_runner), "pt2": (export_pt2, pt2_runner),
             "safetensors": (export_safetensors, safetensors_runner)}


def export(loaded: Loaded, fmt: str, path: str | os.PathLike, *, opset: int | None = None,
           check: bool = True) -> dict:
    """Write ``loaded`` (a :class:`Loaded` model) as ``fmt`` to ``path``.

    With ``check`` the written file is run (onnxruntime, ``torch.export.load``, or loaded back) at
    batch 1 and 7 before it replaces ``path``; a difference over 1e-4 is an error and leaves no file.
    ``path``'s extension must be the format's (:func:`output_format`). Returns ``{"path", "format",
    "bytes", "max_abs_diff", "replaced"}`` (``replaced``: a file of that name was there before).
    """
    output_format(path, fmt)
    path = check_target(path)
    replaced = path.exists()
    model = loaded.model.cpu().eval()
    meta = describe(loaded)
    write, runner = EXPORTERS[fmt]
    diff = None
    with atomic_path(path, keep_suffix=True) as tmp:
        try:
            if fmt == "onnx":
                write(model, tmp, meta, opset)
            else:
                write(model, tmp, meta)
        except UserError:
            raise
        except OSError as e:
            raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - an exporter failure is reported in one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"{fmt} export of {model.name} failed: {first[:300]}") from None
        if check:
            diff = max_abs_diff(runner(tmp), model)
            if not diff <= TOLERANCE:
                raise ExportError(f"the exported {fmt} file gives logits {diff:.3g} away from PyTorch's "
                                  f"(more than {TOLERANCE:g}); nothing written")
        size = tmp.stat().st_size
    return {"path": str(path), "format": fmt, "bytes": size, "max_abs_diff": diff, "replaced": replaced}
