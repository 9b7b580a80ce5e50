"""The training doctor: each epoch, the health of every layer (recorded in ``metrics.jsonl`` under
``"health"``), and alerts for the ways AlexNet-style training goes wrong without a NaN: the loss sitting
at chance, activations exploding or vanishing, a layer of dead ReLUs. docs/doctor.md describes the
numbers, the thresholds and why.

The health comes from one fixed probe batch at the end of each epoch: a forward with hooks and one
backward (``torch.autograd.grad``: no ``.grad`` is written, no optimizer step), under
``torch.random.fork_rng`` with a seed of its own, batch-norm buffers put back afterwards. It draws from
none of the trainer's generators and changes no weight, so a run ends bit-identical with the doctor on
or off. The stall detector reads each step's loss from the running sums the loop keeps anyway.

The doctor never stops a run: it says once, in the run log and on stderr, what it saw and what usually
helps (a non-finite loss already stops the run: :class:`alexnet.training.trainer.NonFiniteLoss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataSource
from ..data.loader import EpochLoader, epoch_seed
from ..data.transforms import Preset
from .engine import TrainState, model_input
from .rundir import RunDir

PROBE_IMAGES = 64  # images of the probe batch, spread evenly over the training split
STALL_BAND = 0.02  # the loss "sits at chance" within 2% of ln(classes): 6.77-7.05 at 1000 classes
EXPLODING_GAIN = 1e3  # a layer's output std over 1000x the input's (or not finite): activations explode
EXPLODING_LOSS = 3.0  # ... or the probe's loss over 3 ln(classes): confidently wrong outputs
VANISHING_GAIN = 1e-4  # a layer's output std under 1/10000 of the input's: the signal has vanished
DEAD_LAYER = 0.99  # a ReLU layer with at least this fraction of its units dead is a dead layer
ACTIVATIONS = (nn.ReLU, nn.Tanh)  # the nonlinearities of the zoo (models/layers.py: ACTIVATIONS)

# What usually helps, with what this project measured (docs/models.md, "The paper's dropout, measured":
# alexnet2012, the paper's recipe, 400 synthetic photos of 10 classes, batch 32) and public reports.
HELP = {
    "stall": "What usually helps: a learning rate matched to the dropout form, and weights that pass the "
             "signal on. Measured here (docs/models.md, alexnet2012, 10 classes): the paper's dropout at lr "
             "0.001 stayed at chance (val top-1 10.0% for 7 epochs) where at the paper's 0.01 it left chance "
             "by epoch 3 or 4 (seeds 0-2); inverted dropout wants the smaller lr (0.01 blew up, 0.001 "
             "learns). With the paper's N(0, 0.01) weights and biases of 1 the network sits at chance for "
             "a few epochs in either form; He initialization (--opt init=kaiming) ended such stalls in "
             "BVLC/caffe#3243, biases of 0.1 instead of 1 (--opt init=caffe) in BVLC/caffe#2085",
    "exploding": "What usually helps: a lower --lr. Measured here (docs/models.md, alexnet2012, 10 "
                 "classes): inverted dropout at lr 0.01 blew up (train loss 11.9 in epoch 1, at chance "
                 "after 5 epochs) where at lr 0.001 it learns",
    "vanishing": "What usually helps: weights scaled to each layer's fan-in (--opt init=kaiming, what "
                 "alexnet-small uses: the paper's N(0, 0.01) leaves the signal too small for eight layers "
                 "on standardized inputs, docs/models.md), or batch norm (--opt norm=batch)",
    "dead": "What usually helps: a lower --lr (one large step can push a layer's biases below every "
            "input, and a dead ReLU passes no gradient to bring it back), positive biases (the paper "
            "starts conv2, conv4, conv5, fc6 and fc7 at 1 to keep their ReLUs alive), a new start from a "
            "checkpoint before it died",
}


@dataclass
class Alert:
    kind: str  # stall, exploding, vanishing, dead
    step: int  # the run's optimizer steps done when it was seen
    message: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "step": self.step, "message": self.message}


def _number(x: float) -> float | None:
    """A JSON number for metrics.jsonl (which refuses NaN and infinities): None when not finite."""
    return x if math.isfinite(x) else None


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers the doctor reports on: every module with a weight matrix or kernel (convolutions and
    fully connected layers; batch norm's scale is a vector and counts with its convolution)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.ndim >= 2}


class _Probe:
    """Forward hooks for one probe pass: each weighted layer's output statistics, replaced by those of
    the activation that follows it (before the next weighted layer), which is what the next layer sees;
    a ReLU also counts its dead units: channels (or features) it leaves at exactly 0 for every image
    and position of the probe."""

    def __init__(self, model: nn.Module, layers: dict[str, nn.Module]):
        self.stats: dict[str, dict] = {}
        self.last: str | None = None  # the weighted layer that ran last
        self.handles = [m.register_forward_hook(self._layer(name)) for name, m in layers.items()]
        self.handles += [m.register_forward_hook(self._activation) for m in model.modules()
                         if isinstance(m, ACTIVATIONS)]

    @staticmethod
    def _summary(out: torch.Tensor) -> dict:
        x = out.detach().float()
        return {"act_mean": x.mean().item(), "act_std": x.std(correction=0).item(), "dead_fraction": None}

    def _layer(self, name: str):
        def hook(_module, _inputs, out):
            self.stats[name] = self._summary(out)  # now: an in-place ReLU overwrites ``out`` next
            self.last = name
        return hook

    def _activation(self, module, _inputs, out):
        if self.last is None:  # an activation before any weighted layer, or a second one after it
            return
        stats = self.stats[self.last] = self._summary(out)
        if isinstance(module, nn.ReLU):
            units = out.detach().transpose(0, 1).flatten(1)  # (units, images x positions)
            stats["dead_fraction"] = (units.amax(1) <= 0).float().mean().item()
        self.last = None

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class Probed:
    """One probe pass: each layer's record, the probe's loss and its input's std."""

    layers: list[dict]
    loss: float
    input_std: float


class Doctor:
    """Watches one run: :meth:`after_step` after every optimizer step, :meth:`examine` at every epoch's
    end (before the learning rate changes for the next). Messages go to ``rundir``'s log and stderr."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, source: DataSource,
                 preset: Preset, device: torch.device, rundir: RunDir, *, seed: int, steps: int,
                 channels_last: bool = False, history: Sequence[dict] = ()):
        self.model, self.optimizer, self.source, self.preset = model, optimizer, source, preset
        self.device, self.rundir, self.seed, self.steps = device, rundir, seed, steps
        self.channels_last = channels_last
        self.layers = weighted_layers(model)
        self.chance = math.log(max(source.num_classes, 2))  # the loss of a uniform guess
        self.said = {a["kind"] for r in history for a in (r.get("health") or {}).get("alerts", [])}
        self.pending: list[Alert] = []  # alerts of the epoch in progress
        self.stall: list[tuple[int, float]] = []  # (step, loss) of the current run of steps at chance
        self._last: tuple[TrainState, float, int] | None = None  # the state and its sums after a step
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- checkpoints

    def state_dict(self) -> dict:
        """What a checkpoint keeps, so that a resumed run counts and says what an uninterrupted one
        would: the run of steps at chance so far, the alerts of the epoch in progress, the kinds said."""
        return {"stall": [[step, loss] for step, loss in self.stall], "said": sorted(self.said),
                "pending": [a.to_dict() for a in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.stall = [(int(step), float(loss)) for step, loss in state["stall"]]
        self.said |= set(state["said"])
        self.pending = [Alert(**a) for a in state["pending"]]

    # -- every step

    def sums_replaced(self) -> None:
        """The running sums were replaced (gathered over processes for a checkpoint): the next step's loss
        cannot be told from them, and is skipped."""
        self._last = None

    def after_step(self, state: TrainState, step: int) -> None:
        """Step ``step`` of the run is done; ``state`` holds the epoch's running sums."""
        last, self._last = self._last, (state, state.loss_sum, state.count)
        if last is not None and last[0] is state:
            loss_sum, count = last[1], last[2]
        elif state.step == 1:  # a new epoch's first step
            loss_sum, count = 0.0, 0
        else:  # resumed inside an epoch: this step's own loss is not known
            return
        if state.count == count:  # every image of the batch was skipped
            return
        loss = (state.loss_sum - loss_sum) / (state.count - count)
        band = STALL_BAND * self.chance
        if abs(loss - self.chance) > band:
            self.stall.clear()
            return
        self.stall.append((step, loss))
        if len(self.stall) >= self.steps:  # (a resume may have lowered --doctor-steps)
            mean = sum(x for _, x in self.stall) / len(self.stall)
            self._say("stall", step, (
                f"the training loss has sat within {band:.3f} of {self._chance_text()} for {self.steps} "
                f"steps (steps {self.stall[0][0]}-{step}: mean {mean:.4f}, last {loss:.4f}): the network "
                f"predicts no better than chance. This is AlexNet's best-known failure: in BVLC/caffe#401 "
                f"Caffe's ImageNet example sat at 6.9 = ln 1000 for 40k iterations, and stalled in 3 of 8 "
                f"runs of one user. {HELP['stall']}"))

    def _chance_text(self) -> str:
        return f"ln({self.source.num_classes}) = {self.chance:.3f}"

    # -- every epoch

    def examine(self, epoch: int, step: int) -> dict:
        """``{"health": ...}`` for the epoch's record: the health of every layer on the probe batch, and
        the alerts raised since the last call. ``epoch`` (0-based, the one ending) seeds the probe's
        dropout; ``step`` is the run's optimizer steps done."""
        probed = self.measure(epoch)
        self._check(probed, step)
        alerts, self.pending = [a.to_dict() for a in self.pending], []
        return {"health": {"layers": probed.layers, "alerts": alerts}}

    def probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe: :data:`PROBE_IMAGES` training images, evenly spaced over the split (so every class
        of a folder sorted by class), uint8 on the device, and their labels; loaded once."""
        if self._probe is None:
            data = self.source.split("train")
            n = min(PROBE_IMAGES, len(data))
            idx = torch.linspace(0, len(data) - 1, n).round().long().unique()
            batch = next(iter(EpochLoader(data, [idx])))
            self._probe = batch.images.to(self.device), batch.labels.to(self.device)
        return self._probe

    def measure(self, epoch: int) -> Probed:
        """One forward of the probe (the test view: the centre crop) through the training network
        (dropout on, batch norm on the batch's statistics) and one backward, changing nothing."""
        images, labels = self.probe_batch()
        model, training = self.model, self.model.training
        buffers = {k: v.clone() for k, v in model.named_buffers()}  # batch norm's running statistics
        weights = [(name, m.weight) for name, m in self.layers.items()]
        trained = [w for _, w in weights if w.requires_grad]
        lr = {id(p): g["lr"] for g in self.optimizer.param_groups for p in g["params"]}
        grads: dict[int, torch.Tensor | None] = {}
        probe = _Probe(model, self.layers)
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(epoch_seed(self.seed, epoch))  # the probe's own dropout masks
                model.train()
                x = model_input(self.preset, images, None, self.channels_last)
                loss = F.cross_entropy(model(x), labels)
                if trained:  # (none when every weight is frozen)
                    grads = dict(zip(map(id, trained), torch.autograd.grad(loss, trained, allow_unused=True)))
        finally:
            probe.close()
            model.train(training)
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
        layers = []
        for name, w in weights:
            g = grads.get(id(w))
            grad_norm = g.norm().item() if g is not None else 0.0
            weight_norm = w.detach().norm().item()
            stats = probe.stats.get(name, {"act_mean": math.nan, "act_std": math.nan, "dead_fraction": None})
            ratio = lr.get(id(w), 0.0) * grad_norm / weight_norm if weight_norm else 0.0
            layers.append({"name": name, "act_mean": _number(stats["act_mean"]),
                           "act_std": _number(stats["act_std"]), "dead_fraction": stats["dead_fraction"],
                           "grad_norm": _number(grad_norm), "weight_norm": _number(weight_norm),
                           "update_ratio": _number(ratio)})
        return Probed(layers, loss.item(), x.float().std(correction=0).item())

    def _check(self, probed: Probed, step: int) -> None:
        scale = max(probed.input_std, 1e-12)
        gain = {r["name"]: math.inf if r["act_std"] is None else r["act_std"] / scale for r in probed.layers}
        dead = [r for r in probed.layers if (r["dead_fraction"] or 0.0) >= DEAD_LAYER]
        exploding = [r for r in probed.layers if gain[r["name"]] > EXPLODING_GAIN]
        # (after a dead layer every later one sees only biases: the dead layer is the news, said below)
        vanishing = [r for r in probed.layers if gain[r["name"]] < VANISHING_GAIN] if not dead else []
        saw = f"on the probe batch (input std {probed.input_std:.3g})"
        if exploding:
            self._say("exploding", step, (
                f"activations explode: output std {_listing(exploding, gain)} {saw}; over "
                f"{EXPLODING_GAIN:g}x the input's counts as exploding. {HELP['exploding']}"))
        elif not probed.loss <= EXPLODING_LOSS * self.chance:  # (also when not finite)
            last = probed.layers[-1]
            self._say("exploding", step, (
                f"the outputs explode: the probe batch's loss is {probed.loss:.3g}, "
                f"{probed.loss / self.chance:.1f}x chance ({self._chance_text()}; over {EXPLODING_LOSS:g}x "
                f"counts as exploding): confidently wrong; output std {_listing([last], gain)}. "
                f"{HELP['exploding']}"))
        if vanishing:
            self._say("vanishing", step, (
                f"activations vanish: output std {_listing(vanishing, gain)} {saw}; under "
                f"{VANISHING_GAIN:g}x the input's counts as vanishing: the layers after them see almost "
                f"nothing. {HELP['vanishing']}"))
        if dead:
            shares = ", ".join(f"{r['name']} {r['dead_fraction']:.1%}" for r in dead)
            self._say("dead", step, (
                f"dead layer: units that output 0 for every image and position of the probe batch: "
                f"{shares}; at least {DEAD_LAYER:.0%} counts as dead: no gradient flows through them, and "
                f"the layers after them see only their own biases. {HELP['dead']}"))

    def _say(self, kind: str, step: int, message: str) -> None:
        if kind in self.said:
            return
        self.said.add(kind)
        self.pending.append(Alert(kind, step, message))
        self.rundir.log(f"doctor, step {step}: {message} (the doctor never stops a run; --doctor off "
                        f"silences it)", err=True)


def _listing(rows: list[dict], gain: dict[str, float]) -> str:
    """``features.conv1 1.2e+03 (2.4e+03x)``: each layer's output std and its ratio to the input's."""
    return ", ".join(f"{r['name']} not finite" if r["act_std"] is None else
                     f"{r['name']} {r['act_std']:.3g} ({gain[r['name']]:.3g}x)" for r in rows)


class NoDoctor:
    """``--doctor off``: nothing measured, nothing said, no ``"health"`` in the records."""

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

    def sums_replaced(self) -> None:
        pass

    def after_step(self, state: TrainState, step: int) -> None:
        pass

    def examine(self, epoch: int, step: int) -> dict:
        return {}
