"""Recipes: named, documented sets of training defaults that flags and config files override.

- ``paper``: the 2012 protocol (spec section 3): batch 128, the paper's SGD update with momentum
  0.9 and weight decay 5e-4, lr 0.01 divided by 10 when the validation error stops improving (at
  most three times), about 90 epochs, random 227 crops + mirrors + PCA lighting from the training
  set's own RGB covariance, the mean image subtracted, and the ten-patch test at the end.
- ``torchvision``: torchvision's reference script for AlexNet (references/classification):
  batch 256 in total, lr 0.01, momentum 0.9, weight decay 1e-4, lr x0.1 every 30 epochs, 90 epochs,
  random-resized crops and flips, torchvision's fixed ImageNet mean/std, centre-crop test.
- ``small``: what trains the small-input models well on digits / MNIST / CIFAR-10 in minutes:
  batch 32, SGD momentum 0.9, lr 0.02 with one warm-up epoch and a cosine decay, weight decay 5e-4,
  20 epochs, shifts
  by zero-pad-and-crop, flips only where they keep the label, per-channel standardization.

``auto`` picks ``paper`` for alexnet2012, ``torchvision`` for alexnet-owt, ``small`` otherwise.
"""

from __future__ import annotations

from ..errors import UserError

RECIPES: dict[str, dict] = {
    "paper": {
        "batch_size": 128,           # images per step
        "optimizer": "paper-sgd",    # v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "plateau",       # /10 when val error stalls
        "patience": 4,               # epochs without improvement before a drop
        "max_drops": 3,              # "reduced three times prior to termination"
        "lr_factor": 0.1,
        "epochs": 90,                # "roughly 90 cycles through the training set"
        "normalize": "paper",        # subtract the mean image, pixels stay 0..255
        "crop": "random",
        "lighting": "data",          # PCA of the training set's RGB pixels
        "lighting_std": 0.1,
        "tta": "10crop",             # four corners + centre, and their mirrors
    },
    "torchvision": {
        "batch_size": 256,           # 8 GPUs x 32 in the reference script
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "step",
        "step_size": 30,             # epochs
        "lr_factor": 0.1,
        "epochs": 90,
        "normalize": "imagenet",     # mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
        "crop": "random-resized",    # scale (0.08, 1), ratio (3/4, 4/3)
        "lighting": "none",
        "tta": "center",
    },
    "small": {
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.02,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 1,          # linear from lr/35 over the first epoch
        "epochs": 20,
        "normalize": "standard",     # per-channel mean and std of the training split
        "crop": "random",            # zero-pad then crop: shifts of a few pixels
        "lighting": "none",
        "tta": "center",
    },
}

AUTO = {"alexnet2012": "paper", "alexnet-owt": "torchvision"}


def pick_recipe(recipe: str, model: str) -> str:
    if recipe == "auto":
        return AUTO.get(model, "small")
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; expected auto or one of {', '.join(RECIPES)}")
    return recipe


def recipe_defaults(recipe: str, model: str) -> dict:
    """The values ``recipe`` sets (with ``recipe`` itself resolved from "auto")."""
    name = pick_recipe(recipe, model)
    return {**RECIPES[name], "recipe": name}
