"""The paper's optimizer (section 5):

    v <- 0.9 v - 0.0005 * lr * w - lr * grad
    w <- w + v

The learning rate sits inside the velocity. ``torch.optim.SGD`` keeps ``b <- 0.9 b + grad + wd w``
and steps ``w <- w - lr * b``, scaling the whole accumulated velocity by the *current* lr: the
two are the same while the lr is constant and differ for the steps right after a change (with
the paper's rule, a lr drop takes effect gradually as the old velocity decays).
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import required


class PaperSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay in the update form of Krizhevsky et al. (2012).

    Args:
        params: parameters or parameter groups (each group may carry its own ``lr``).
        lr: learning rate of the groups that carry none (the paper's 0.01 at the start).
        momentum: the paper's 0.9.
        weight_decay: the paper's 0.0005, applied to every parameter as in its update rule.
    """

    def __init__(self, params, lr: float = required, momentum: float = 0.9, weight_decay: float = 5e-4):
        if (lr is not required and lr <= 0) or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"invalid PaperSGD settings lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            velocity = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocity.append(state["velocity"])
            grads = [p.grad for p in params]
            torch._foreach_mul_(velocity, mu)                      # 0.9 v
            if wd:
                torch._foreach_add_(velocity, params, alpha=-wd * lr)  # - 0.0005 lr w
            torch._foreach_add_(velocity, grads, alpha=-lr)         # - lr grad
            torch._foreach_add_(params, velocity)                   # w <- w + v
        return loss
