"""What a run is built from, given its resolved config: the model, the statistics, the presets, the
optimizer. Each function reads the config and returns one object; none of them writes anything."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import find_checkpoint
from ..data import DataSource
from ..data.stats import load_or_compute_stats
from ..data.transforms import Lighting, Normalization, Preset
from ..errors import UserError
from ..models import create_model
from ..models.base import ImageClassifier
from ..models.weights import load_pretrained
from ..distributed import Dist
from ..optim import PaperSGD
from .config import TrainConfig


def build_model(cfg: TrainConfig, source: DataSource) -> ImageClassifier:
    """The model with its initial weights: seeded by ``cfg.seed``, or ``cfg.pretrained``."""
    torch.manual_seed(cfg.seed)  # the same initial weights for the same seed
    model = create_model(cfg.model, num_classes=source.num_classes, **cfg.model_opts)
    c = model.input_size[0]
    if c != source.channels:
        raise UserError(f"{cfg.model} takes {c}-channel images and {source.name} has {source.channels}")
    if cfg.pretrained:
        path = Path(cfg.pretrained)
        load_pretrained(model, find_checkpoint(path) if path.is_dir() else path, new_head=True)
    if cfg.freeze == "features":  # fine-tuning: the trunk stays as loaded; only the classifier learns
        model.features.requires_grad_(False)
    return model


def needs_stats(cfg: TrainConfig) -> bool:
    return cfg.normalize != "imagenet" or cfg.lighting == "data"


def load_stats(cfg: TrainConfig, source: DataSource, dist: Dist) -> dict | None:
    """Mean image / per-channel statistics / PCA of the training split, computed once and cached:
    rank 0 first, then the others read its cache."""
    if not needs_stats(cfg):
        return None
    stats = None
    for turn in (True, False):
        if dist.primary == turn:
            stats = load_or_compute_stats(source, max_images=cfg.stats_images or None, workers=cfg.workers,
                                          progress=not cfg.quiet)
        if turn:
            dist.barrier()
    return stats


def build_presets(cfg: TrainConfig, source: DataSource, model: ImageClassifier,
                  stats: dict | None) -> tuple[Preset, Preset]:
    """The training preset and the centre-crop evaluation preset for this data and model."""
    if cfg.normalize == "paper":
        norm = Normalization(stats["mean_image"], torch.ones(source.channels, 1, 1))
    elif cfg.normalize == "channel":
        norm = Normalization.per_channel(stats["mean"])
    elif cfg.normalize == "standard":
        norm = Normalization.per_channel(stats["mean"], stats["std"].clamp_min(1.0))
    else:
        if source.channels != 3:
            raise UserError("--normalize imagenet needs RGB images")
        norm = Normalization.torchvision()
    lighting = None
    if cfg.lighting != "none":
        if source.channels != 3:
            raise UserError(f"PCA lighting needs RGB images; {source.name} has {source.channels} channel(s)")
        lighting = (Lighting.imagenet(cfg.lighting_std, cfg.lighting_form) if cfg.lighting == "imagenet"
                    else Lighting(stats["eigval"], stats["eigvec"], cfg.lighting_std, cfg.lighting_form))
    crop, base = model.input_size[-1], source.base_size
    try:
        train = Preset(train=True, crop=crop, base_size=base, norm=norm, pad=cfg.pad, flip=cfg.flip == "on",
                       lighting=lighting, resized=cfg.crop == "random-resized", mean_crop=cfg.mean_crop)
        test = Preset(train=False, crop=crop, base_size=base, norm=norm, mean_crop=cfg.mean_crop)
    except ValueError as e:
        raise UserError(f"{cfg.model} on {source.name}: {e}") from None
    return train, test


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Two parameter groups, weights and biases, each with its base learning rate and weight decay: the
    biases' are the weights' times ``bias_lr_mult`` and ``bias_decay_mult`` (Caffe: 2 and 0; the paper:
    1 and 1). This is the one place a learning rate comes from the config; the schedule
    (:class:`.schedule.Schedule`) scales these bases, each group by the schedule of its ``role``.
    Frozen parameters are left out."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trainable if not n.endswith("bias")], "role": "weights",
               "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in trainable if n.endswith("bias")], "role": "biases",
               "lr": cfg.lr * cfg.bias_lr_mult, "weight_decay": cfg.weight_decay * cfg.bias_decay_mult}]
    kind = PaperSGD if cfg.optimizer == "paper-sgd" else torch.optim.SGD
    return kind([g for g in groups if g["params"]], momentum=cfg.momentum)


def tower_devices(spec: str, local_rank: int = 0) -> tuple[torch.device, torch.device]:
    """``"cuda:0,cuda:1"`` -> the two devices of this process: under torchrun, process ``r`` (local
    rank) takes the CUDA devices ``2r`` and ``2r + 1`` places further, so each process owns a pair."""
    devices = []
    for name in spec.split(","):
        d = torch.device(name.strip())
        if d.type == "cuda" and local_rank:
            d = torch.device("cuda", (d.index or 0) + 2 * local_rank)
        devices.append(d)
    return devices[0], devices[1]
