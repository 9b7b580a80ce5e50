"""What a trained network does with an image: its top-k classes, the activation maps of every layer,
a class-activation heat map, the nearest training images in fc7 space, and what its first-layer
kernels look for. One module for ``alexnet predict``, ``alexnet serve`` and the experiments, so
they can never disagree.

- Layers, described by their own modules (:func:`describe`): a convolution is shown after what
  follows it (batch normalization, activation: what the next layer sees), then normalizations and
  pooling as they come, each with its receptive field. Maps are ordered strongest first (mean
  activation over the map).
- Grad-CAM (Selvaraju et al., ICCV 2017) on the last convolution whose maps are larger than 1x1
  (:attr:`Explainer.cam_layer`): the gradient of the class score (the logit) averaged over each map
  weighs the maps, their weighted sum goes through a ReLU and is resized to the input.
- One value of a map (:meth:`Explainer.unit`): its receptive field and the arithmetic that made it.
- Nearest neighbours: the Euclidean distance between fc7 vectors (the vector before the output
  layer), as the paper's Figure 4 (section 6.1). The training split's vectors are computed once per
  checkpoint and cached in the run folder, with the training images that excite each map most.
- A split's report (:func:`split_report`): answers, confusion, and each image's distance to the
  nearest training vector, whose 99th percentile marks an input as unlike the training data;
  :func:`project` puts the vectors in two dimensions (PCA, t-SNE).
- conv1 chroma: the share of a kernel's variance that differs between colour channels (0: the
  same pattern in R, G and B; 1: no grey component at all). The paper (section 6.1, Figure 3)
  notes that one tower's kernels are largely colour-agnostic and the other's colour-specific.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import Preset
from ..files import atomic_write
from ..models.layers import WithinMapNorm
from ..models.lrn import LocalResponseNorm
from ..models.summary import Summary, summarize

EMBEDDINGS_FILE = "embeddings-fc7.pt"
EMBEDDINGS_FORMAT = "alexnet-embeddings"
MAX_EMBED_IMAGES = 5000  # training images indexed per run (evenly spaced when the split is larger)
MAX_REPORT_IMAGES = 2000  # test images a run's error analysis covers (evenly spaced when there are more)
EXAMPLES = 8  # training images kept per map of each convolution: those that excite it most
OOD_QUANTILE = 0.99  # an input farther from the training data than this share of test images is "unlike" it

_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NORMS = (LocalResponseNorm, nn.LocalResponseNorm)
_BATCH_NORMS = (nn.BatchNorm2d,)
_ACTIVATION_TEXT = {
    nn.ReLU: ("ReLU", "the ReLU sets negative responses to zero"),
    nn.Tanh: ("tanh", "tanh squashes each response into (-1, 1)"),
    nn.Sigmoid: ("sigmoid", "the sigmoid squashes each response into (0, 1)"),
    nn.LeakyReLU: ("leaky ReLU", "the leaky ReLU scales negative responses down"),
    nn.GELU: ("GELU", "the GELU damps negative responses"),
}


def top_classes(probs: torch.Tensor, classes: list[str], class_names: list[str], k: int) -> list[dict]:
    """The ``k`` most probable classes of one (K,) probability vector, best first."""
    top = probs.float().topk(min(k, probs.shape[-1]))
    return [{"rank": i + 1, "index": j, "class": classes[j], "name": class_names[j], "probability": p}
            for i, (p, j) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _size(v) -> str:
    h, w = _pair(v)
    return f"{h}x{w}"


def describe(module: nn.Module) -> str:
    """What one module of a trunk does, in a few words read from the module itself:
    ``"5x5 convolution, stride 1, 6 kernels"``, ``"2x2 average pooling, stride 2"``."""
    if isinstance(module, nn.Conv2d):
        text = f"{_size(module.kernel_size)} convolution, stride {_pair(module.stride)[0]}, " \
               f"{module.out_channels} kernels"
        if module.groups > 1:
            text += f" in {module.groups} towers"
        return text
    if isinstance(module, _BATCH_NORMS):
        return "batch normalization"
    for kind, (name, _) in _ACTIVATION_TEXT.items():
        if isinstance(module, kind):
            return name
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        what = "max-pooling" if isinstance(module, nn.MaxPool2d) else "average pooling"
        text = f"{k[0]}x{k[1]} {what}, stride {s[0]}"
        return text + (" (overlapping windows)" if k[0] > s[0] else "")
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        what = "max" if isinstance(module, nn.AdaptiveMaxPool2d) else "average"
        return f"adaptive {what} pooling to {_size(module.output_size)}"
    if isinstance(module, _NORMS):
        groups = getattr(module, "groups", 1)
        k = getattr(module, "k", None)
        text = f"local response normalization across {module.size} neighbouring maps (k={k:g}, " \
               f"alpha={module.alpha:g}, beta={module.beta:g})"
        return text + (f", within each of {groups} towers" if groups > 1 else "")
    if isinstance(module, WithinMapNorm):
        return f"normalization within each map over {module.size}x{module.size} windows"
    return type(module).__name__


@dataclass
class Layer:
    """One visible layer of the trunk: ``module`` is hooked (a convolution's last part: its activation,
    else its batch normalization, else itself); ``parts`` are the modules it stands for, in order
    (convolution, batch normalization, activation); ``conv`` holds the kernels, if any."""

    name: str
    kind: str  # "conv" (after its activation), "lrn", "norm" (within-map) or "pool"
    module: nn.Module
    conv: nn.Conv2d | None = None
    parts: list[nn.Module] = field(default_factory=list)
    shape: tuple[int, int, int] | None = None  # (C, H, W) at the model's input size (Explainer fills it)
    rf: tuple[int, int, int] = (1, 1, 0)  # receptive field: (size, jump, offset) in input pixels

    @property
    def caption(self) -> str:
        """The layer's modules in words, e.g. ``"5x5 convolution, stride 1, 6 kernels + tanh"``."""
        return " + ".join(describe(m) for m in self.parts)

    @property
    def about(self) -> str:
        """One sentence on what the layer computes, from its own modules."""
        if self.kind == "conv":
            act = next((text for kind, (_, text) in _ACTIVATION_TEXT.items()
                        for m in self.parts if isinstance(m, kind)), None)
            kh, kw = _pair(self.conv.kernel_size)
            text = (f"{self.conv.out_channels} learned {kh}x{kw} kernels slide over the previous layer's "
                    f"{self.conv.in_channels} map(s)")
            text += f" ({self.conv.groups} towers, each over its own half)" if self.conv.groups > 1 else ""
            text += "; each map is one kernel's response"
            if any(isinstance(m, _BATCH_NORMS) for m in self.parts):
                text += ", normalized by batch statistics"
            return text + (f", after its activation: {act}." if act else " (no activation).")
        if self.kind == "lrn":
            return ("Local response normalization (paper, section 3.3): each value is divided by the "
                    "activity "
                    "of the neighbouring maps at the same place, so strong responses damp their neighbours.")
        if self.kind == "norm":
            return ("Each value is divided by the activity around it in its own map (cuda-convnet's rnorm), "
                    "so a response counts relative to its surroundings.")
        module = self.parts[0]
        if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            text = "Max-pooling: each value is the largest in a window of the map before"
        else:
            text = "Average pooling: each value is the mean of a window of the map before"
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s = _pair(module.kernel_size)[0], _pair(module.stride or module.kernel_size)[0]
            text += f" ({k}x{k} windows {s} apart"
            text += ", overlapping: the paper's section 3.4)" if k > s else ")"
        return text + "; it shrinks the maps and tolerates small shifts."


def _window(module: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of a convolution or pooling along one side (the first)."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)[0]
        s = _pair(module.stride or module.kernel_size)[0]
        p = _pair(module.padding)[0] if not isinstance(module.padding, str) else (k - 1) // 2
        d = _pair(getattr(module, "dilation", 1))[0]
        return d * (k - 1) + 1, s, p
    return None


def feature_layers(model: nn.Module) -> list[Layer]:
    """The layers of ``model.features`` worth showing, in order: each convolution after what follows it
    (batch normalization, activation), normalizations, pools; with each layer's receptive field.

    Unnamed modules (torchvision's numbered ``features``) get the paper's names: conv1..conv5, and
    ``normN`` / ``poolN`` after the N-th convolution.
    """
    layers: list[Layer] = []
    convs, block = 0, None
    size, jump, offset = 1, 1, 0  # receptive field of one unit: size, distance between units, first pixel
    for name, m in model.features.named_children():
        window = _window(m)
        if window is not None:
            k, s, p = window
            size, offset, jump = size + (k - 1) * jump, offset - p * jump, jump * s
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size, jump, offset = 10**6, 10**6, 0  # each unit may see the whole input
        plain = name.isdigit()
        if isinstance(m, nn.Conv2d):
            convs += 1
            block = Layer(f"conv{convs}" if plain else name, "conv", m, m, [m])
            layers.append(block)
        elif block is not None and isinstance(m, _ACTIVATIONS + _BATCH_NORMS):
            block.parts.append(m)
            block.module = m
        elif isinstance(m, _NORMS + (WithinMapNorm,)):
            kind = "norm" if isinstance(m, WithinMapNorm) else "lrn"
            layers.append(Layer(f"norm{convs}" if plain else name, kind, m, parts=[m]))
            block = None
        elif isinstance(m, _POOLS):
            layers.append(Layer(f"pool{convs}" if plain else name, "pool", m, parts=[m]))
            block = None
        else:
            block = None
        if layers:
            layers[-1].rf = (size, jump, offset)
    return layers


def receptive_box(layer: Layer, y: int, x: int, side: int) -> tuple[int, int, int, int]:
    """The input pixels (top, left, bottom, right; inclusive, clipped to a ``side``-pixel input) that
    unit (``y``, ``x``) of ``layer`` depends on."""
    size, jump, offset = layer.rf
    if size >= 10**6:
        return 0, 0, side - 1, side - 1
    top, left = offset + y * jump, offset + x * jump
    return max(0, top), max(0, left), min(side - 1, top + size - 1), min(side - 1, left + size - 1)


def embedding_name(model: nn.Module) -> str:
    """What the model's embedding (the input of its output layer) is called: the paper's ``fc7`` for
    AlexNet, ``f6`` for LeNet-5, or the flattened trunk when the output layer follows it directly."""
    linears = [(n, m) for n, m in model.classifier.named_children() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        return "the flattened trunk"
    name = linears[-2][0]
    if name.isdigit():  # torchvision's numbered classifier: the paper's numbering after five convolutions
        convs = sum(isinstance(m, nn.Conv2d) for m in model.features.modules())
        name = f"fc{convs + len(linears) - 1}"
    return name


@dataclass
class LayerMaps:
    """One layer's maps for one image, strongest first: ``maps[i]`` is channel ``order[i]``."""

    name: str
    kind: str
    maps: torch.Tensor  # (C, H, W) float32
    order: torch.Tensor  # (C,) int64
    strength: torch.Tensor  # (C,) mean activation of each map, descending


@dataclass
class Explanation:
    """Everything :meth:`Explainer.explain` found out about one image."""

    crop: torch.Tensor  # uint8 (C, h, w): the pixels the network saw (the centre crop)
    probs: torch.Tensor  # (K,)
    top: list[dict]
    layers: list[LayerMaps] = field(default_factory=list)
    cam: torch.Tensor | None = None  # (h, w) in [0, 1]
    cam_class: int | None = None
    cam_layer: str | None = None  # the layer Grad-CAM ran on
    embedding: torch.Tensor | None = None  # (D,) fc7


class Explainer:
    """A trained model (:class:`alexnet.inference.load.Loaded`) ready to explain images.

    Thread-safe: calls on one explainer take turns (the hooks record into the call's own state,
    and two images at once would only compete for the same CPU cores).
    """

    def __init__(self, loaded, device: str | torch.device = "cpu"):
        self.loaded = loaded
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.preset = Preset.from_dict(loaded.preset, train=False)
        self.layers = feature_layers(self.model)
        self.channels = self.model.input_size[0]
        self.base_size = self.preset.base_size
        self.side = self.preset.crop
        self._lock = threading.Lock()
        self._summary: Summary | None = None
        shapes = self._shapes()
        for layer in self.layers:
            layer.shape = shapes[layer.module]
        # Grad-CAM's layer: the last convolution whose maps are larger than 1x1 (a 1x1 map has no "where"),
        # else the last layer of any kind that is; None when every map is 1x1
        spatial = [layer for layer in self.layers if layer.shape[1] * layer.shape[2] > 1]
        self.cam_layer = next((la for la in reversed(spatial) if la.kind == "conv"),
                              spatial[-1] if spatial else None)

    @torch.no_grad()
    def _shapes(self) -> dict[nn.Module, tuple[int, int, int]]:
        """Each hooked module's output shape (C, H, W) for one input of the preset's crop size."""
        shapes = {}
        hooks = [layer.module.register_forward_hook(
            lambda m, _i, out: shapes.__setitem__(m, tuple(out.shape[1:]))) for layer in self.layers]
        try:
            self.model(torch.zeros(1, self.channels, self.side, self.side, device=self.device))
        finally:
            for h in hooks:
                h.remove()
        return shapes

    def summary(self) -> Summary:
        """The model's layer table (:func:`summarize`), made once, under the lock: another thread's
        forward pass would otherwise run through the hooks that count the layers."""
        with self._lock:
            if self._summary is None:
                self._summary = summarize(self.model)
            return self._summary

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax of uint8 (B, C, S, S) images at the base size, centre crop: (B, K)."""
        with self._lock, torch.no_grad():
            return self.model(self.preset(images.to(self.device))).float().softmax(-1).cpu()

    def answers(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax (B, K) and fc7 vectors (B, D) of uint8 (B, C, S, S) images, in one forward pass."""
        with self._lock, torch.no_grad():
            emb = self.model.embed(self.preset(images.to(self.device)))
            return self.model.classifier[-1](emb).float().softmax(-1).cpu(), emb.float().cpu()

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The centre crop the preset feeds the network, as uint8 pixels."""
        o, c = (self.base_size - self.preset.crop) // 2, self.preset.crop
        return image[..., o:o + c, o:o + c]

    def explain(self, image: torch.Tensor, *, k: int = 5, target: int | None = None, maps: bool = True,
                cam: bool = True) -> Explanation:
        """Top-``k`` classes of a uint8 (C, S, S) image, with every layer's maps (``maps``), Grad-CAM
        for ``target`` (default: the top class) on :attr:`cam_layer` (``cam``) and the fc7 vector."""
        num_classes = self.model.num_classes
        if target is not None and not 0 <= target < num_classes:
            raise ValueError(f"class index {target} is out of range 0..{num_classes - 1}")
        record: dict[nn.Module, torch.Tensor] = {}
        cam_module = self.cam_layer.module if cam and self.cam_layer is not None else None

        def keep(module, _inputs, out):
            record[module] = out

        def keep_fc7(_module, inputs):
            record["fc7"] = inputs[0]

        with self._lock:
            hooks = [layer.module.register_forward_hook(keep) for layer in self.layers]
            hooks.append(self.model.classifier[-1].register_forward_pre_hook(keep_fc7))
            try:
                with torch.set_grad_enabled(cam_module is not None):
                    x = self.preset(image[None].to(self.device))
                    logits = self.model(x).float()
                    probs = logits.softmax(-1)[0].detach()
                    cls = int(probs.argmax()) if target is None else target
                    heat = None
                    if cam_module is not None:
                        a = record[cam_module]
                        (grad,) = torch.autograd.grad(logits[0, cls], a)
                        weights = grad[0].mean((1, 2))  # (C,)
                        heat = torch.relu((weights[:, None, None] * a[0].detach()).sum(0))
                        heat = nn.functional.interpolate(heat[None, None], size=x.shape[-2:], mode="bilinear",
                                                         align_corners=False)[0, 0]
                        heat = heat / heat.max() if heat.max() > 0 else heat  # all zero: no evidence
            finally:
                for h in hooks:
                    h.remove()
        out = Explanation(self.crop(image), probs.cpu(),
                          top_classes(probs.cpu(), self.loaded.classes, self.loaded.class_names, k),
                          cam=None if heat is None else heat.cpu(),
                          cam_class=cls if heat is not None else None,
                          cam_layer=None if heat is None else self.cam_layer.name,
                          embedding=record["fc7"][0].detach().float().cpu())
        if maps:
            for layer in self.layers:
                m = record[layer.module][0].detach().float().cpu()
                strength = m.mean((1, 2))
                order = strength.argsort(descending=True, stable=True)
                out.layers.append(LayerMaps(layer.name, layer.kind, m[order], order, strength[order]))
        return out

    @torch.no_grad()
    def unit(self, image: torch.Tensor, layer_name: str, channel: int, y: int, x: int) -> dict:
        """How one value of a layer's map came about, for a uint8 (C, S, S) image: the input pixels it
        depends on (its receptive field, in the crop), and for a convolution the arithmetic: each input
        map's share of the sum (input patch times kernel), the bias, then batch normalization, the
        activation and a local response normalization that follows, each with the value it gives."""
        layer = self.layer(layer_name)
        c, h, w = layer.shape
        if not (0 <= channel < c and 0 <= y < h and 0 <= x < w):
            raise ValueError(f"{layer_name} has {c} maps of {h}x{w}: no unit ({channel}, {y}, {x})")
        index = self.layers.index(layer)
        after = self.layers[index + 1] if index + 1 < len(self.layers) else None
        lrn = after if after is not None and after.kind == "lrn" else None
        record: dict = {}
        watched = list(layer.parts) + ([lrn.module] if lrn is not None else [])

        def keep(module, _inputs, out):
            record[module] = out.detach().clone()  # before an in-place activation changes it

        def keep_input(_module, inputs):
            record["input"] = inputs[0].detach().clone()

        with self._lock:
            hooks = [m.register_forward_hook(keep) for m in watched]
            hooks.append(layer.parts[0].register_forward_pre_hook(keep_input))
            try:
                self.model(self.preset(image[None].to(self.device)))
            finally:
                for hk in hooks:
                    hk.remove()
        top, left, bottom, right = receptive_box(layer, y, x, self.side)
        out = {"layer": layer.name, "kind": layer.kind, "caption": layer.caption, "channel": channel, "y": y,
               "x": x, "box": [top, left, bottom, right], "side": self.side,
               "value": float(record[layer.module][0, channel, y, x]), "steps": []}
        if layer.conv is None:
            return out
        conv = layer.conv
        (kh, kw), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
        ph, pw = _pair(conv.padding) if not isinstance(conv.padding, str) else ((kh - 1) // 2, (kw - 1) // 2)
        per_group = conv.in_channels // conv.groups
        group = channel // (conv.out_channels // conv.groups)
        inputs = nn.functional.pad(record["input"][0].float(), (pw, pw, ph, ph))
        patch = inputs[group * per_group:(group + 1) * per_group,
                       y * sh:y * sh + (kh - 1) * dh + 1:dh, x * sw:x * sw + (kw - 1) * dw + 1:dw]
        weight = conv.weight[channel].detach().float().cpu()  # (in / groups, kh, kw)
        patch = patch.cpu()
        shares = (patch * weight).sum((1, 2))  # each input map's part of the sum
        bias = float(conv.bias[channel].detach()) if conv.bias is not None else 0.0
        z = float(shares.double().sum()) + bias
        order = shares.abs().argsort(descending=True)
        shown = order[:8]
        out.update({"inputs": per_group, "first_input": group * per_group, "kernel": [kh, kw],
                    "terms": [{"input": group * per_group + int(i), "sum": float(shares[i])} for i in shown],
                    "rest": float(shares[order[8:]].double().sum()), "bias": bias, "sum": z,
                    "conv_value": float(record[conv][0, channel, y, x])})
        if per_group <= 3:  # a grey or colour input: show the pixels and the kernel themselves
            out["patch"] = patch.tolist()
            out["weights"] = weight.tolist()
        value = torch.tensor([z], dtype=torch.float64)
        for m in layer.parts[1:]:
            if isinstance(m, _BATCH_NORMS):
                scale = m.weight[channel].double() if m.weight is not None else 1.0
                shift = m.bias[channel].double() if m.bias is not None else 0.0
                value = (value - m.running_mean[channel].double()) / torch.sqrt(
                    m.running_var[channel].double() + m.eps) * scale + shift
            else:
                value = m(value.clone())
            out["steps"].append({"op": describe(m), "value": float(value)})
        if lrn is not None:
            normed = float(record[lrn.module][0, channel, y, x])
            out["steps"].append({"op": describe(lrn.module), "value": normed,
                                 "divisor": float(value) / normed if normed else None})
        return out

    def kernel(self, layer_name: str, index: int) -> torch.Tensor:
        """The kernel (in_channels / groups, kh, kw) of output channel ``index`` of a conv layer."""
        for layer in self.layers:
            if layer.name == layer_name and layer.conv is not None:
                w = layer.conv.weight
                if not 0 <= index < w.shape[0]:
                    raise ValueError(f"{layer_name} has {w.shape[0]} kernels, not {index + 1}")
                return w[index].detach().float().cpu()
        raise ValueError(f"no conv layer named {layer_name!r}")

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 64, peaks: dict | None = None) -> torch.Tensor:
        """fc7 vectors of uint8 (N, C, S, S) images, centre crop: (N, D) float32. With ``peaks`` (a dict),
        also each convolution's strongest response per map and image: ``peaks[name]`` gains
        (values (N, C), flat positions (N, C)) per batch."""
        out = []
        record = {}
        convs = [layer for layer in self.layers if layer.kind == "conv"] if peaks is not None else []
        with self._lock:
            hooks = [layer.module.register_forward_hook(
                lambda m, _i, o: record.__setitem__(m, o.flatten(2).max(2))) for layer in convs]
            try:
                for i in range(0, len(images), batch_size):
                    x = self.preset(images[i:i + batch_size].to(self.device))
                    out.append(self.model.embed(x).float().cpu())
                    for layer in convs:
                        best = record[layer.module]
                        peaks.setdefault(layer.name, []).append((best.values.float().cpu(),
                                                                 best.indices.cpu()))
            finally:
                for hk in hooks:
                    hk.remove()
        return torch.cat(out) if out else torch.zeros(0, self.model.embed_dim)


def kernel_chroma(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, kh, kw) kernels -> (O,) share of each kernel's variance that differs between channels:
    ``sum (w - mean over channels)^2 / sum (w - mean of w)^2``. 0 for grey kernels, 1 for kernels
    with no grey part. NaN for single-channel kernels."""
    w = weight.detach().double()
    if w.shape[1] < 2:
        return torch.full((w.shape[0],), float("nan"))
    chroma = (w - w.mean(1, keepdim=True)).pow(2).sum((1, 2, 3))
    total = (w - w.mean((1, 2, 3), keepdim=True)).pow(2).sum((1, 2, 3))
    return (chroma / total.clamp_min(1e-30)).float()


def conv1_stats(model: nn.Module) -> list[dict]:
    """Per tower of the first conv layer: kernel count, mean chroma, share of colour kernels
    (chroma > 0.5), and the mean weight norm. A one-tower model has one entry."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    towers = getattr(model, "towers", 1)
    out = []
    for i, w in enumerate(conv.weight.detach().chunk(towers)):
        chroma = kernel_chroma(w)
        colour = not bool(chroma.isnan().any())
        out.append({"tower": i + 1, "kernels": w.shape[0], "first": i * w.shape[0],
                    "mean_chroma": float(chroma.mean()) if colour else None,
                    "colour_kernels": int((chroma > 0.5).sum()) if colour else None,
                    "mean_norm": float(w.flatten(1).norm(dim=1).mean())})
    return out


@dataclass
class Neighbour:
    index: int  # position in the training split
    label: int
    distance: float


class EmbeddingIndex:
    """fc7 vectors of (a subset of) a run's training images, searched by Euclidean distance; and, per map
    of each convolution, the training images that excite it most (:attr:`examples`)."""

    def __init__(self, features: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor,
                 examples: dict | None = None):
        self.features, self.indices, self.labels = features.float(), indices.long(), labels.long()
        # per conv layer: "values", "images" (training split indices) and "positions" (flat y * W + x),
        # each (C, k), strongest first
        self.examples = examples or {}

    def __len__(self) -> int:
        return len(self.indices)

    def search(self, query: torch.Tensor, k: int = 8) -> list[Neighbour]:
        """The ``k`` nearest training images to one (D,) vector, nearest first."""
        d = torch.cdist(query.float()[None], self.features)[0]
        best = d.topk(min(k, len(d)), largest=False)
        return [Neighbour(int(self.indices[j]), int(self.labels[j]), float(v))
                for v, j in zip(best.values.tolist(), best.indices.tolist())]

    def nearest(self, queries: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """The distance from each (N, D) vector to its nearest training vector: (N,)."""
        if len(queries) == 0:
            return torch.zeros(0)
        return torch.cat([torch.cdist(queries[i:i + batch].float(), self.features).min(1).values
                          for i in range(0, len(queries), batch)])


def subset_indices(n: int, limit: int) -> torch.Tensor:
    """All of ``range(n)``, or ``limit`` evenly spaced indices when ``n`` is larger."""
    if n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long().unique()


def _fingerprint(checkpoint: Path) -> dict:
    st = checkpoint.stat()
    return {"checkpoint": checkpoint.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def train_index(explainer: Explainer, split, checkpoint: str | os.PathLike | None, cache_dir=None, *,
                limit: int = MAX_EMBED_IMAGES, batch_size: int = 64, examples: int = EXAMPLES,
                progress=None) -> EmbeddingIndex:
    """The fc7 index of a training split (an :class:`alexnet.data.ImageSet`), with the ``examples``
    training images that excite each map of each convolution most (its strongest value anywhere).

    With ``cache_dir`` and ``checkpoint``, read ``cache_dir/embeddings-fc7.pt`` when it was built
    from this very checkpoint file (same name, size and modification time), else build it and
    write it atomically. Images the split cannot decode are left out. ``progress(done, total)`` is
    called after each batch.
    """
    path = Path(cache_dir) / EMBEDDINGS_FILE if cache_dir is not None and checkpoint is not None else None
    key = _fingerprint(Path(checkpoint)) if path is not None else None
    if path is not None and path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            cached = None
        if isinstance(cached, dict) and cached.get("format") == EMBEDDINGS_FORMAT \
                and cached.get("key") == key and cached.get("limit") == limit \
                and isinstance(cached.get("examples"), dict):
            return EmbeddingIndex(cached["features"], cached["indices"], cached["labels"], cached["examples"])
    wanted = subset_indices(len(split), limit)
    feats, kept, labels = [], [], []
    peaks: dict[str, list] = {}
    for i in range(0, len(wanted), batch_size):
        chunk = wanted[i:i + batch_size]
        if hasattr(split, "get_batch"):
            images, targets = split.get_batch(chunk)
            good = list(range(len(chunk)))
        else:
            items = [split[int(j)] for j in chunk]
            good = [n for n, (img, _) in enumerate(items) if img is not None]
            if not good:
                continue
            images = torch.stack([items[n][0] for n in good])
            targets = torch.tensor([items[n][1] for n in good])
        feats.append(explainer.embed(images, batch_size, peaks=peaks))
        kept.append(chunk[good])
        labels.append(torch.as_tensor(targets))
        if progress is not None:
            progress(min(i + batch_size, len(wanted)), len(wanted))
    kept_all = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
    index = EmbeddingIndex(torch.cat(feats) if feats else torch.zeros(0, explainer.model.embed_dim), kept_all,
                           torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
                           _strongest(peaks, kept_all, examples))
    if path is not None:
        cache = {"format": EMBEDDINGS_FORMAT, "key": key, "limit": limit, "features": index.features,
                 "indices": index.indices, "labels": index.labels, "examples": index.examples}
        atomic_write(path, lambda f: torch.save(cache, f))
    return index


def _strongest(peaks: dict[str, list], images: torch.Tensor, k: int) -> dict:
    """Per layer, the ``k`` images (of ``images``) whose strongest response is largest, per map."""
    out = {}
    for name, parts in peaks.items():
        values = torch.cat([v for v, _ in parts])  # (N, C)
        positions = torch.cat([p for _, p in parts])
        best = values.topk(min(k, len(values)), dim=0)  # (k, C)
        out[name] = {"values": best.values.t().contiguous(), "images": images[best.indices].t().contiguous(),
                     "positions": positions.gather(0, best.indices).t().contiguous()}
    return out


@dataclass
class SplitReport:
    """A model's answers on (a subset of) a split: what the confusion matrix, the error lists, the
    out-of-distribution range and the fc7 projection are made of. All tensors are (N, ...) in order."""

    indices: torch.Tensor  # positions in the split
    labels: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor  # the probability of the predicted class
    true_probability: torch.Tensor
    embeddings: torch.Tensor  # (N, D) fc7
    nearest: torch.Tensor | None  # distance to the nearest training vector (None without an index)

    def confusion(self, num_classes: int) -> torch.Tensor:
        """(K, K) counts: row = true class, column = predicted class."""
        flat = self.labels * num_classes + self.predicted
        return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)

    def unlike(self, quantile: float = OOD_QUANTILE) -> float | None:
        """The fc7 distance to the nearest training image beyond which an input is farther from the
        training data than ``quantile`` of this split's images: the out-of-distribution threshold."""
        if self.nearest is None or len(self.nearest) == 0:
            return None
        return float(torch.quantile(self.nearest.double(), quantile))


def split_report(explainer: Explainer, split, index: EmbeddingIndex | None = None, *,
                 limit: int = MAX_REPORT_IMAGES, batch_size: int = 64, progress=None) -> SplitReport:
    """Predict (a subset of, evenly spaced) ``split``: labels, answers, fc7 vectors and, with ``index``,
    each image's distance to its nearest training vector. Images the split cannot decode are left out.
    ``progress(done, total)`` is called after each batch."""
    wanted = subset_indices(len(split), limit)
    kept, labels, probs, feats = [], [], [], []
    for i in range(0, len(wanted), batch_size):
        chunk = wanted[i:i + batch_size]
        items = [split[int(j)] for j in chunk]
        good = [n for n, (img, _) in enumerate(items) if img is not None]
        if not good:
            continue
        p, emb = explainer.answers(torch.stack([items[n][0] for n in good]))
        feats.append(emb)
        probs.append(p)
        kept.append(chunk[good])
        labels.append(torch.tensor([int(items[n][1]) for n in good]))
        if progress is not None:
            progress(min(i + batch_size, len(wanted)), len(wanted))
    if not kept:
        empty = torch.zeros(0, dtype=torch.long)
        return SplitReport(empty, empty, empty, torch.zeros(0), torch.zeros(0),
                           torch.zeros(0, explainer.model.embed_dim), None)
    probs_all, labels_all = torch.cat(probs), torch.cat(labels)
    conf, pred = probs_all.max(1)
    feats_all = torch.cat(feats)
    return SplitReport(torch.cat(kept), labels_all, pred, conf,
                       probs_all.gather(1, labels_all[:, None])[:, 0],
                       feats_all, index.nearest(feats_all) if index is not None and len(index) else None)


def project(vectors: torch.Tensor, method: str = "pca", seed: int = 0) -> torch.Tensor:
    """(N, D) vectors in two dimensions: ``"pca"`` (the two leading principal components, by SVD) or
    ``"tsne"`` (scikit-learn's t-SNE, initialized from the PCA, perplexity at most 30). (N, 2)."""
    x = vectors.double()
    x = x - x.mean(0)
    if len(x) < 2:
        return torch.zeros(len(x), 2)
    if method == "pca":
        u, s, _ = torch.linalg.svd(x, full_matrices=False)
        out = u[:, :2] * s[:2]
        if out.shape[1] < 2:
            out = torch.cat([out, torch.zeros(len(out), 2 - out.shape[1], dtype=out.dtype)], 1)
        return out.float()
    if method == "tsne":
        from sklearn.manifold import TSNE  # scikit-learn's import costs a second: only when asked

        perplexity = float(max(2, min(30, (len(x) - 1) // 3)))
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500)
        return torch.from_numpy(tsne.fit_transform(x.numpy())).float()
    raise ValueError(f"unknown projection {method!r}: pca or tsne")
