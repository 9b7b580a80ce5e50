"""Learning-rate schedules, written in closed form from a small state so a resumed run lands on
exactly the lr an uninterrupted run would have.

The base learning rate of each parameter group is set once, when the optimizer is built
(:func:`alexnet.training.setup.build_optimizer`: the config's lr times the group's multiplier); the
schedule keeps it as the group's ``initial_lr`` (as ``torch.optim.lr_scheduler`` does) and sets the lr
of every step to ``initial_lr`` times its factor. Nothing else writes a learning rate."""

from __future__ import annotations

import math
import struct

import torch


def dexp_scale(progress: float, factor: float, steps: int) -> float:
    """cuda-convnet2's ``dexp`` schedule as a multiple of the base rate, at ``progress`` (0..1) through
    training: ``DiscreteExpParameterSchedule`` of ``cudaconvnet/src/lr.cu`` (lines 94-113). Its rates
    are the exponential schedule ``base * (1 / factor) ** p`` (lines 85-87) at ``p = i / (steps - 1)`` for
    the first ``steps - 1`` stages and ``base / factor`` for the last (lines 97-102); stage ``i`` holds
    while ``progress <= (i + 1) / steps`` (lines 107-111). ``factor=250, steps=4``: x1, /6.3, /39.7,
    /250, changing after 25%, 50% and 75% of training."""
    rates = [(1.0 / factor) ** (i / (steps - 1)) for i in range(steps - 1)] + [1.0 / factor]
    for i, rate in enumerate(rates):
        if progress <= (i + 1) / len(rates):
            return rate
    return rates[-1]


def convnet2_progress(step: int, total_steps: int) -> float:
    """The training progress cuda-convnet2 gives the schedule of step ``step`` (0-based) of
    ``total_steps``: ``python_util/gpumodel.py``'s ``get_progress`` (lines 293-295), (batches done
    before this one) / (all batches), clamped to [0, 1]; passed on as a C ``float``
    (``Weights::update(float progress)``, ``cudaconvnet/src/weights.cu`` line 325), so rounded to
    single precision."""
    progress = min(1.0, max(0.0, step / total_steps))
    return struct.unpack("f", struct.pack("f", progress))[0]


class Schedule:
    """Sets ``optimizer``'s lr after every step and every epoch.

    - "plateau" (the paper): multiply the lr by ``factor`` when the validation top-1 error has not
      gone below its best by more than ``threshold`` for ``patience`` epochs in a row; at most
      ``max_drops`` times. The count of bad epochs restarts after a drop.
    - "step": multiply by ``factor`` every ``step_size`` epochs.
    - "cosine": per step, linear warm-up over ``warmup_epochs`` then half a cosine down to 0.
    - "dexp" (cuda-convnet2's ``epsW=dexp[base;tgtFactor;numSteps]``): per step, :func:`dexp_scale` at
      :func:`convnet2_progress`; each parameter group by its own ``dexp[role]`` = (factor, steps),
      its role being the group's ``"role"`` ("weights" or "biases", set by
      :func:`alexnet.training.setup.build_optimizer`), as cuda-convnet2 gives ``epsW`` and ``epsB``
      schedules of their own.
    - "constant".
    """

    def __init__(self, kind: str, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                 factor: float, patience: int, max_drops: int, threshold: float, step_size: int,
                 warmup_epochs: int, dexp: dict[str, tuple[float, int]] | None = None):
        self.kind, self.optimizer = kind, optimizer
        if kind == "dexp" and dexp is None:
            raise ValueError("the dexp schedule needs (factor, steps) for the weights and the biases")
        self.dexp = dexp or {}
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.steps_per_epoch = steps_per_epoch
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

    @classmethod
    def from_config(cls, cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> "Schedule":
        """The schedule a resolved :class:`~alexnet.training.config.TrainConfig` names."""
        return cls(cfg.schedule, optimizer, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                   factor=cfg.lr_factor, patience=cfg.patience, max_drops=cfg.max_drops,
                   threshold=cfg.plateau_threshold, step_size=cfg.step_size, warmup_epochs=cfg.warmup_epochs,
                   dexp={"weights": (cfg.dexp_factor, cfg.dexp_steps),
                         "biases": (cfg.bias_dexp_factor, cfg.bias_dexp_steps)})

    @property
    def lr(self) -> float:
        """The weights' learning rate now (the first parameter group's)."""
        return self.optimizer.param_groups[0]["lr"]

    def _dexp_scale(self, group: dict, step: int) -> float:
        factor, steps = self.dexp[group.get("role", "weights")]
        return dexp_scale(convnet2_progress(step, self.total_steps), factor, steps)

    def _apply(self) -> None:
        if self.kind == "dexp":
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * self._dexp_scale(group, self.steps)
            return
        if self.kind == "cosine":
            t = self.steps
            if t < self.warmup_steps:
                scale = (t + 1) / (self.warmup_steps + 1)
            else:
                progress = (t - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
                scale = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        else:
            scale = self.scale
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale

    def after_step(self) -> None:
        self.steps += 1
        if self.kind in ("cosine", "dexp"):
            self._apply()

    def after_epoch(self, epochs_done: int, val_error: float | None) -> bool:
        """Call once per finished epoch with its validation top-1 error (%); True if the lr dropped."""
        dropped = False
        if self.kind == "dexp":  # dropped during this epoch's steps
            group = self.optimizer.param_groups[0]
            start = max(0, self.steps - self.steps_per_epoch)
            dropped = self._dexp_scale(group, self.steps) < self._dexp_scale(group, start)
        elif self.kind == "step" and epochs_done % self.step_size == 0:
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
