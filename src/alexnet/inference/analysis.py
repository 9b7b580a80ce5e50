"""What a trained network does with an image: its top-k classes, the activation maps of every layer,
a class-activation heat map, the nearest training images in fc7 space, and what its first-layer
kernels look for. One module for ``alexnet predict``, ``alexnet serve`` and the experiments, so
they can never disagree.

- Activation maps: forward hooks on every module of the convolutional trunk. A convolution is
  shown after its ReLU (what the next layer sees), then LRN and pooling as they come. Maps are
  ordered strongest first (mean activation over the map).
- Grad-CAM (Selvaraju et al., ICCV 2017) on the last convolutional layer (after its ReLU): the
  gradient of the class score (the logit) averaged over each map weighs the maps, their weighted
  sum goes through a ReLU and is resized to the input.
- Nearest neighbours: the Euclidean distance between fc7 vectors (the 4096-d vector before the
  output layer), as the paper's Figure 4 (section 6.1). The training split's vectors are computed
  once per checkpoint and cached in the run folder.
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
from ..models.lrn import LocalResponseNorm

EMBEDDINGS_FILE = "embeddings-fc7.pt"
EMBEDDINGS_FORMAT = "alexnet-embeddings"
MAX_EMBED_IMAGES = 5000  # training images indexed per run (evenly spaced when the split is larger)

_ACTIVATIONS = (nn.ReLU, nn.Tanh)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NORMS = (LocalResponseNorm, nn.LocalResponseNorm)


def top_classes(probs: torch.Tensor, classes: list[str], class_names: list[str], k: int) -> list[dict]:
    """The ``k`` most probable classes of one (K,) probability vector, best first."""
    top = probs.float().topk(min(k, probs.shape[-1]))
    return [{"rank": i + 1, "index": j, "class": classes[j], "name": class_names[j], "probability": p}
            for i, (p, j) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]


@dataclass
class Layer:
    """One visible layer of the trunk: ``module`` is hooked; ``conv`` holds the kernels, if any."""

    name: str
    kind: str  # "conv" (after its activation), "lrn" or "pool"
    module: nn.Module
    conv: nn.Conv2d | None = None


def feature_layers(model: nn.Module) -> list[Layer]:
    """The layers of ``model.features`` worth showing, in order: conv (after its ReLU), LRN, pools.

    Unnamed modules (torchvision's numbered ``features``) get the paper's names: conv1..conv5, and
    ``normN`` / ``poolN`` after the N-th convolution.
    """
    children = list(model.features.named_children())
    layers, convs = [], 0
    for i, (name, m) in enumerate(children):
        plain = name.isdigit()
        if isinstance(m, nn.Conv2d):
            convs += 1
            nxt = children[i + 1][1] if i + 1 < len(children) else None
            label = f"conv{convs}" if plain else name
            if not isinstance(nxt, _ACTIVATIONS):
                layers.append(Layer(label, "conv", m, m))
        elif isinstance(m, _ACTIVATIONS) and i and isinstance(children[i - 1][1], nn.Conv2d):
            prev_name, prev = children[i - 1]
            layers.append(Layer(f"conv{convs}" if prev_name.isdigit() else prev_name, "conv", m, prev))
        elif isinstance(m, _NORMS):
            layers.append(Layer(f"norm{convs}" if plain else name, "lrn", m))
        elif isinstance(m, _POOLS):
            layers.append(Layer(f"pool{convs}" if plain else name, "pool", m))
    return layers


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
        self._lock = threading.Lock()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax of uint8 (B, C, S, S) images at the base size, centre crop: (B, K)."""
        with self._lock, torch.no_grad():
            return self.model(self.preset(images.to(self.device))).float().softmax(-1).cpu()

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The centre crop the preset feeds the network, as uint8 pixels."""
        o, c = (self.base_size - self.preset.crop) // 2, self.preset.crop
        return image[..., o:o + c, o:o + c]

    def explain(self, image: torch.Tensor, *, k: int = 5, target: int | None = None, maps: bool = True,
                cam: bool = True) -> Explanation:
        """Top-``k`` classes of a uint8 (C, S, S) image, with every layer's maps (``maps``), Grad-CAM
        for ``target`` (default: the top class) on the last conv layer (``cam``) and the fc7 vector."""
        num_classes = self.model.num_classes
        if target is not None and not 0 <= target < num_classes:
            raise ValueError(f"class index {target} is out of range 0..{num_classes - 1}")
        record: dict[nn.Module, torch.Tensor] = {}
        last_conv = next((layer.module for layer in reversed(self.layers) if layer.kind == "conv"), None)

        def keep(module, _inputs, out):
            record[module] = out

        def keep_fc7(_module, inputs):
            record["fc7"] = inputs[0]

        with self._lock:
            hooks = [layer.module.register_forward_hook(keep) for layer in self.layers]
            hooks.append(self.model.classifier[-1].register_forward_pre_hook(keep_fc7))
            try:
                with torch.set_grad_enabled(cam and last_conv is not None):
                    x = self.preset(image[None].to(self.device))
                    logits = self.model(x).float()
                    probs = logits.softmax(-1)[0].detach()
                    cls = int(probs.argmax()) if target is None else target
                    heat = None
                    if cam and last_conv is not None:
                        a = record[last_conv]
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
                          embedding=record["fc7"][0].detach().float().cpu())
        if maps:
            for layer in self.layers:
                m = record[layer.module][0].detach().float().cpu()
                strength = m.mean((1, 2))
                order = strength.argsort(descending=True, stable=True)
                out.layers.append(LayerMaps(layer.name, layer.kind, m[order], order, strength[order]))
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
    def embed(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """fc7 vectors of uint8 (N, C, S, S) images, centre crop: (N, D) float32."""
        out = []
        with self._lock:
            for i in range(0, len(images), batch_size):
                x = self.preset(images[i:i + batch_size].to(self.device))
                out.append(self.model.embed(x).float().cpu())
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
    """fc7 vectors of (a subset of) a run's training images, searched by Euclidean distance."""

    def __init__(self, features: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor):
        self.features, self.indices, self.labels = features.float(), indices.long(), labels.long()

    def __len__(self) -> int:
        return len(self.indices)

    def search(self, query: torch.Tensor, k: int = 8) -> list[Neighbour]:
        """The ``k`` nearest training images to one (D,) vector, nearest first."""
        d = torch.cdist(query.float()[None], self.features)[0]
        best = d.topk(min(k, len(d)), largest=False)
        return [Neighbour(int(self.indices[j]), int(self.labels[j]), float(v))
                for v, j in zip(best.values.tolist(), best.indices.tolist())]


def subset_indices(n: int, limit: int) -> torch.Tensor:
    """All of ``range(n)``, or ``limit`` evenly spaced indices when ``n`` is larger."""
    if n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long().unique()


def _fingerprint(checkpoint: Path) -> dict:
    st = checkpoint.stat()
    return {"checkpoint": checkpoint.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def train_index(explainer: Explainer, split, checkpoint: str | os.PathLike | None, cache_dir=None, *,
                limit: int = MAX_EMBED_IMAGES, batch_size: int = 64) -> EmbeddingIndex:
    """The fc7 index of a training split (an :class:`alexnet.data.ImageSet`).

    With ``cache_dir`` and ``checkpoint``, read ``cache_dir/embeddings-fc7.pt`` when it was built
    from this very checkpoint file (same name, size and modification time), else build it and
    write it atomically. Images the split cannot decode are left out.
    """
    path = Path(cache_dir) / EMBEDDINGS_FILE if cache_dir is not None and checkpoint is not None else None
    key = _fingerprint(Path(checkpoint)) if path is not None else None
    if path is not None and path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            cached = None
        if isinstance(cached,
                      dict) and cached.get("format") == EMBEDDINGS_FORMAT and cached.get("key") == key \
                and cached.get("limit") == limit:
            return EmbeddingIndex(cached["features"], cached["indices"], cached["labels"])
    wanted = subset_indices(len(split), limit)
    feats, kept, labels = [], [], []
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
        feats.append(explainer.embed(images, batch_size))
        kept.append(chunk[good])
        labels.append(torch.as_tensor(targets))
    index = EmbeddingIndex(torch.cat(feats), torch.cat(kept), torch.cat(labels))
    if path is not None:
        cache = {"format": EMBEDDINGS_FORMAT, "key": key, "limit": limit, "features": index.features,
                 "indices": index.indices, "labels": index.labels}
        atomic_write(path, lambda f: torch.save(cache, f))
    return index
