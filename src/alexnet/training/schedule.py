"""Learning-rate schedules, written in closed form from a small state so a resumed run lands on
exactly the lr an uninterrupted run would have."""

from __future__ import annotations

import math

import torch


class Schedule:
    """Sets ``optimizer``'s lr after every step and every epoch.

    - "plateau" (the paper): multiply the lr by ``factor`` when the validation top-1 error has not
      gone below its best by more than ``threshold`` for ``patience`` epochs in a row; at most
      ``max_drops`` times. The count of bad epochs restarts after a drop.
    - "step": multiply by ``factor`` every ``step_size`` epochs.
    - "cosine": per step, linear warm-up over ``warmup_epochs`` then half a cosine down to 0.
    - "constant".
    """

    def __init__(self, kind: str, optimizer: torch.optim.Optimizer, *, base_lr: float, epochs: int,
                 steps_per_epoch: int, factor: float = 0.1, patience: int = 5, max_drops: int = 3,
                 threshold: float = 0.0, step_size: int = 30, warmup_epochs: int = 0):
        self.kind, self.optimizer, self.base_lr = kind, optimizer, base_lr
        self.total_steps = max(1, epochs * steps_per_epoch)
        self.warmup_steps = warmup_epochs * steps_per_epoch
        self.factor, self.patience, self.max_drops = factor, patience, max_drops
        self.threshold, self.step_size = threshold, step_size
        self.best = math.inf  # best validation top-1 error so far, in %
        self.bad_epochs = 0
        self.drops = 0
        self.scale = 1.0
        self.steps = 0
        self._apply()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _apply(self) -> None:
        if self.kind == "cosine":
            t = self.steps
            if t < self.warmup_steps:
                scale = (t + 1) / (self.warmup_steps + 1)
            else:
                progress = (t - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
                scale = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        else:
            scale = self.scale
        for group in self.optimizer.param_groups:  # biases may run at a multiple of the weights' lr
            group["lr"] = self.base_lr * scale * group.get("lr_mult", 1.0)

    def after_step(self) -> None:
        self.steps += 1
        if self.kind == "cosine":
            self._apply()

    def after_epoch(self, epochs_done: int, val_error: float | None) -> bool:
        """Call once per finished epoch with its validation top-1 error (%); True if the lr dropped."""
        dropped = False
        if self.kind == "step" and epochs_done % self.step_size == 0:
            self.scale *= self.factor
            dropped = True
        elif self.kind == "plateau" and val_error is not None:
            if val_error < self.best - self.threshold:
                self.best, self.bad_epochs = val_error, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.patience and self.drops < self.max_drops:
                    self.scale *= self.factor
                    self.drops += 1
                    self.bad_epochs = 0
                    dropped = True
        self._apply()
        return dropped

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "drops": self.drops, "scale": self.scale,
                "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs, self.drops = state["best"], state["bad_epochs"], state["drops"]
        self.scale, self.steps = state["scale"], state["steps"]
        self._apply()
