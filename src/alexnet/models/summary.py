"""Per-layer table of a model: output shape, parameters and multiply-adds.

Multiply-adds count what the convolutions and linear layers do (one per weight per output
position, ``out_elems * in_channels/groups * kh * kw`` for a convolution); activations, LRN and
pooling are listed with none, the convention behind the "0.714 G" quoted for torchvision's AlexNet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..cliargs import format_table


@dataclass
class LayerRow:
    name: str
    kind: str
    output: list[int]  # per-sample shape, (C, H, W) or (F,)
    params: int
    macs: int

    @property
    def shape_text(self) -> str:
        """Paper style: ``55x55x96`` for feature maps (H x W x C), ``9216`` for vectors."""
        if len(self.output) == 3:
            c, h, w = self.output
            return f"{h}x{w}x{c}"
        return "x".join(str(d) for d in self.output)


@dataclass
class Summary:
    model: str
    input_size: list[int]
    rows: list[LayerRow] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input_size": self.input_size,
            "layers": [asdict(r) | {"output_text": r.shape_text} for r in self.rows],
            "total_params": self.total_params,
            "total_macs": self.total_macs,
        }

    def table(self) -> str:
        head = ("layer", "type", "output", "params", "mult-adds")
        body = [(r.name, r.kind, r.shape_text, f"{r.params:,}" if r.params else "-",
                 f"{r.macs:,}" if r.macs else "-") for r in self.rows]
        c, h, w = self.input_size
        foot = [("total", "", f"input {h}x{w}x{c}", f"{self.total_params:,}",
                 f"{self.total_macs:,}"), ("", "", "", "", f"{self.total_macs / 1e9:.3f} G")]
        return f"{self.model}\n" + format_table(head, body, footer=foot, align="lllrr")


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    per_sample = out[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


@torch.no_grad()
def summarize(model: nn.Module, input_size: tuple[int, int, int] | None = None, name: str = "") -> Summary:
    """Run one sample through ``model`` (in eval mode) and record every leaf module it calls."""
    input_size = tuple(input_size or model.input_size)
    summary = Summary(name or getattr(model, "name", type(model).__name__), list(input_size))
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(module, _inputs, out):
        params = sum(p.numel() for p in module.parameters(recurse=False))
        summary.rows.append(LayerRow(names[module], type(module).__name__, list(out.shape[1:]),
                                     params, _macs(module, out)))

    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        model(torch.zeros(1, *input_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return summary
