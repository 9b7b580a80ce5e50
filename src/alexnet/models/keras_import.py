"""A Keras 3 model's weights in a model of the zoo: :func:`load_keras`.

``alexnet.load_keras(alexnet.create_model("keras-alexnet"), keras_model)`` copies the lesson's Keras
``Sequential`` (or a saved ``.keras`` file of it) into ``keras-alexnet``, and any chain of ``Conv2D`` and
``Dense`` layers into a zoo model whose convolutions and linear layers have the same shapes, in order.
What changes on the way is layout only:

- a ``Conv2D`` kernel is stored (kh, kw, in / groups, out), PyTorch's (out, in / groups, kh, kw);
- a ``Dense`` kernel is stored (in, out), PyTorch's (out, in);
- Keras's ``Flatten`` orders a feature map (h, w, c) (images are NHWC; a ``channels_first`` map is
  transposed to channels-last before it is flattened), PyTorch's ``nn.Flatten`` of NCHW (c, h, w): the
  inputs of the first fully connected layer are put in PyTorch's order.

Every layer's stride and padding are compared with Keras's, and then (``check=True``) both models run
on the same random images: logits further apart than 1e-4 of their scale are an error. The Keras
logits are the last ``Dense`` layer before its activation (the lesson's ends in a softmax; the zoo's
models leave it to the loss). Keras runs on whatever backend it was imported with; when this module
imports it, on PyTorch (``KERAS_BACKEND=torch`` unless set).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import ImageClassifier
from .weights import WeightsError

HWIO_TO_OIHW = (3, 2, 0, 1)  # Keras's Conv2D kernel (kh, kw, in, out) -> PyTorch's (out, in, kh, kw)
TOLERANCE = 1e-4  # largest difference of the two models' logits, relative to their largest magnitude


def conv_weight(kernel: np.ndarray) -> torch.Tensor:
    """A Keras ``Conv2D`` kernel as a PyTorch ``nn.Conv2d`` weight."""
    return torch.from_numpy(np.asarray(kernel)).permute(*HWIO_TO_OIHW).contiguous()


def dense_weight(kernel: np.ndarray, chw: tuple[int, int, int] | None = None) -> torch.Tensor:
    """A Keras ``Dense`` kernel (in, out) as an ``nn.Linear`` weight (out, in); with ``chw``, the
    (C, H, W) map its inputs were flattened from, reordered from Keras's (h, w, c) to (c, h, w)."""
    k = torch.from_numpy(np.asarray(kernel))  # (in, out)
    if chw is None:
        return k.T.contiguous()
    c, h, wd = chw
    return k.reshape(h, wd, c, -1).permute(3, 2, 0, 1).reshape(-1, c * h * wd)  # (out, C*H*W): one copy


@contextlib.contextmanager
def _quiet_keras():
    """Keras 3 on NumPy 2 warns from inside its own code on every array it hands out (``__array__``
    without ``copy=``); not the user's to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"keras\.")
        yield


def _import_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")  # torch is installed; TensorFlow or JAX need not be
    try:
        import keras  # deferred: an optional dependency (alexnet[keras]) that takes seconds to import
    except ImportError:
        raise WeightsError("reading Keras models needs keras (pip install 'alexnet[keras]')") from None
    return keras


def read_keras_file(path: str | os.PathLike):
    """A saved Keras 3 model (``.keras``), read with ``safe_mode=True`` (no lambda layers' code runs)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such Keras file: {path}")
    if path.suffix != ".keras":
        raise WeightsError(f"{path}: expected a Keras 3 model file (.keras)")
    keras = _import_keras()
    try:
        with _quiet_keras():
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - whatever Keras raises for a bad file is one line here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{path}: not a Keras model Keras can read safely ({first[:200]})") from None


def _weighted_layers(keras_model, where: str) -> list:
    layers = [layer for layer in keras_model.layers if layer.weights]
    for layer in layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "Dense"):
            raise WeightsError(f"{where}: layer {layer.name} is a {kind}; only Conv2D and Dense weights "
                               "are imported")
        if not getattr(layer, "use_bias", True):
            raise WeightsError(f"{where}: layer {layer.name} has no bias; the zoo's layers all have one")
        if kind == "Conv2D" and layer.data_format != "channels_last":
            raise WeightsError(f"{where}: layer {layer.name} is channels_first; only channels_last "
                               "(Keras's default) is imported")
    return layers


def _check_conv(name: str, conv: nn.Conv2d, layer, where: str) -> None:
    kh, kw = conv.kernel_size
    pad = {"valid": (0, 0), "same": ((kh - 1) // 2, (kw - 1) // 2)}[layer.padding]
    same = layer.padding == "same"
    if tuple(layer.strides) != conv.stride or (same and conv.stride != (1, 1)) or conv.padding != pad \
            or (same and (kh % 2 == 0 or kw % 2 == 0)):
        raise WeightsError(f"{where}: layer {layer.name} (strides {tuple(layer.strides)}, padding "
                           f"{layer.padding!r}) does not do what {name} (stride {conv.stride}, padding "
                           f"{conv.padding}) does")


@torch.no_grad()
def _flattened_map(model: ImageClassifier) -> tuple[int, ...]:
    """The per-image shape of what the model flattens before its first fully connected layer."""
    p = next(model.parameters())
    was_training = model.training
    try:
        return tuple(model.eval().forward_features(torch.zeros(1, *model.input_size, device=p.device,
                                                               dtype=p.dtype)).shape[1:])
    finally:
        model.train(was_training)


def keras_input_output(keras_model) -> tuple[tuple[int, ...], int]:
    """((H, W, C) of one input image, units of the last ``Dense``) of a built Keras model."""
    dense = [layer for layer in keras_model.layers if type(layer).__name__ == "Dense"]
    if not dense or not getattr(keras_model, "inputs", None):
        raise WeightsError(f"Keras model {keras_model.name!r} has no Dense output layer or no known "
                           "input shape")
    return tuple(keras_model.inputs[0].shape[1:]), int(dense[-1].units)


@torch.no_grad()
def keras_logits(keras_model, images_nhwc: np.ndarray) -> np.ndarray:
    """The Keras model's logits: every layer up to the last ``Dense`` in inference mode, and that
    layer's ``x @ kernel + bias`` without its activation."""
    keras = _import_keras()
    layers = list(keras_model.layers)
    last = max(i for i, layer in enumerate(layers) if type(layer).__name__ == "Dense")
    x = images_nhwc
    with _quiet_keras():
        for layer in layers[:last]:
            if type(layer).__name__ != "InputLayer":  # a functional model lists its input
                x = layer(x, training=False)
        kernel, bias = layers[last].get_weights()
        return keras.ops.convert_to_numpy(x) @ kernel + bias


def load_keras(model: ImageClassifier, source, *, check: bool = True) -> ImageClassifier:
    """Copy a Keras 3 model's ``Conv2D`` and ``Dense`` weights into ``model``, layer for layer.

    ``source`` is a Keras model or the path of a saved ``.keras`` file. Kernels are transposed to
    PyTorch's layouts and the first fully connected layer's inputs reordered from NHWC to NCHW (see the
    module docstring). With ``check`` both models run on two random images and logits further apart
    than 1e-4 of their scale raise :class:`WeightsError`. Returns ``model``.
    """
    if isinstance(source, (str, os.PathLike)):
        where, keras_model = str(source), read_keras_file(source)
    elif hasattr(source, "layers") and hasattr(source, "get_weights"):
        where, keras_model = f"Keras model {source.name!r}", source
    else:
        raise WeightsError(f"expected a Keras model or the path of a .keras file, got "
                           f"{type(source).__name__}")
    theirs = _weighted_layers(keras_model, where)
    ours = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    other = [n for n, m in model.named_modules() if not list(m.children()) and list(m.parameters(False))
             and not isinstance(m, (nn.Conv2d, nn.Linear))]
    if other:
        raise WeightsError(f"{model.name} has layers Keras's Conv2D / Dense cannot fill: {', '.join(other)}")
    kinds = [type(m).__name__ for _, m in ours]
    wanted = ["Conv2D" if k == "Conv2d" else "Dense" for k in kinds]
    found = [type(layer).__name__ for layer in theirs]
    if found != wanted:
        raise WeightsError(f"{where} has weighted layers {', '.join(found) or 'none'}; {model.name} needs "
                           f"{', '.join(wanted)}")
    chw = _flattened_map(model)
    flatten = chw if len(chw) == 3 and chw[1] * chw[2] > 1 else None  # a map, not a vector, is flattened
    state = {}
    for (name, module), layer in zip(ours, theirs):
        with _quiet_keras():
            kernel, bias = layer.get_weights()
        if isinstance(module, nn.Conv2d):
            _check_conv(name, module, layer, where)
            weight = conv_weight(kernel)
        else:
            weight, flatten = dense_weight(kernel, flatten), None  # only the first one reads the map
        bias = torch.from_numpy(bias)
        for key, value, own in (("weight", weight, module.weight), ("bias", bias, module.bias)):
            if tuple(value.shape) != tuple(own.shape):
                raise WeightsError(f"{where}: layer {layer.name}'s {key} gives {tuple(value.shape)}, "
                                   f"{name}.{key} of {model.name} is {tuple(own.shape)}")
            state[f"{name}.{key}"] = value
    before = {k: v.detach().clone() for k, v in model.state_dict().items() if k in state} if check else {}
    _copy(model, state)
    if check:
        diff, scale = _compare(model, keras_model)
        if not diff <= TOLERANCE * max(1.0, scale):
            _copy(model, before)  # the model as it was
            raise WeightsError(f"{where}: with its weights copied, {model.name} gives logits {diff:.3g} away "
                               f"from the Keras model's (largest {scale:.3g}): the two do not compute the "
                               "same function")
    return model


@torch.no_grad()
def _copy(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for key, value in state.items():
        model.get_parameter(key).copy_(value)


@torch.no_grad()
def _compare(model: ImageClassifier, keras_model, batch: int = 2) -> tuple[float, float]:
    """(largest absolute difference of the logits, largest absolute Keras logit) on random images."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *model.input_size, generator=g)  # images in [0, 1)
    theirs = torch.from_numpy(np.asarray(keras_logits(keras_model, x.permute(0, 2, 3, 1).numpy())))
    p = next(model.parameters())
    was_training = model.training
    try:
        ours = model.eval()(x.to(p.device, p.dtype)).float().cpu()
    finally:
        model.train(was_training)
    return float((ours - theirs).abs().max()), float(theirs.abs().max())
