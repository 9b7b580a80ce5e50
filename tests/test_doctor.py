"""The training doctor: per-layer health against numbers computed here with hooks of our own, each alert
provoked on a small model (a dead layer, exploding and vanishing activations) or a real run (the loss
at chance on labels nothing can learn), and a run bit-identical with the doctor on and off."""

import copy
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet.data import DataSource
from alexnet.data.base import TensorImageSet
from alexnet.distributed import Dist
from alexnet.training.config import resolve_config
from alexnet.training.doctor import Doctor
from alexnet.training.engine import TrainState
from alexnet.training.rundir import RunDir
from alexnet.training.trainer import StopRequest, Trainer

CLASSES = 4
# alexnet-small at a quarter of its width (16-32-48-48-128 kernels) and without LRN (its C kernel is
# compiled on first use, seconds): fast enough for a test
SMALL = {"model": "alexnet-small", "batch_size": 16, "epochs": 2, "quiet": True,
         "model_opts": {"width": 0.25, "lrn": False}}
# each weighted layer of alexnet-small and the activation that follows it (the model's layer table)
ACT = {**{f"features.conv{i}": f"features.act{i}" for i in range(1, 6)},
       "classifier.fc6": "classifier.act6", "classifier.fc7": "classifier.act7",
       "classifier.fc8": "classifier.fc8"}  # fc8: the logits, no activation


def tiny_source(*, learnable: bool = True, size: int = 16, seed: int = 0) -> DataSource:
    """Grey images of CLASSES classes in memory: 32 training images (all of them the probe), 16 val, 16
    test. Learnable: each class a bright square in its own corner. Not learnable: noise with labels
    drawn apart from it, so no network can beat chance."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        images = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.uint8)
        labels = np.arange(n) % CLASSES
        if learnable:
            half = size // 2
            for i, c in enumerate(labels):
                r, k = divmod(int(c), 2)
                images[i, 0, half * r:half * r + half - 2, half * k:half * k + half - 2] = 220
        else:
            labels = torch.randperm(n, generator=g).numpy() % CLASSES
        return TensorImageSet(images, labels)

    names = [f"c{i}" for i in range(CLASSES)]
    return DataSource(name=f"tiny-{learnable}-{size}-{seed}", imagery="small", channels=1, base_size=size,
                      classes=names, class_names=names,
                      splits={"train": split(32), "val": split(16), "test": split(16)}, flip=False)


def make_trainer(tmp_path, name: str, source: DataSource | None = None, **values) -> Trainer:
    source = source or tiny_source()
    cfg, source = resolve_config({**SMALL, **values, "out": str(tmp_path), "name": name}, source=source)
    rundir = RunDir(tmp_path / name)
    rundir.create()
    return Trainer(cfg, source, rundir, Dist(), torch.device("cpu"))


def reference(trainer: Trainer) -> dict:
    """What the doctor should report, computed here: the probe (the whole 32-image training split) through
    the test preset, a training-mode forward with hooks on each layer's activation, and the gradient of
    the mean cross-entropy from loss.backward() on a copy of the model."""
    model = copy.deepcopy(trainer.model)
    data = trainer.source.split("train")
    x = trainer.test_preset(data.images)
    seen = {}
    for layer, act in ACT.items():
        model.get_submodule(act).register_forward_hook(
            lambda _m, _i, out, layer=layer: seen.__setitem__(layer, out.detach().clone()))
    model.train()
    F.cross_entropy(model(x), torch.from_numpy(data.targets)).backward()
    by_id = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    lr = {name: by_id[id(p)] for name, p in trainer.model.named_parameters()}
    out = {}
    for layer, a in seen.items():
        w = model.get_submodule(layer).weight
        per_unit_max = a.transpose(0, 1).reshape(a.shape[1], -1).max(1).values  # (units,)
        out[layer] = {"act_mean": a.mean().item(), "act_std": a.std(unbiased=False).item(),
                      "dead_fraction": (per_unit_max == 0).float().mean().item() if layer != "classifier.fc8"
                      else None, "grad_norm": w.grad.norm().item(), "weight_norm": w.norm().item(),
                      "update_ratio": lr[layer + ".weight"] * w.grad.norm().item() / w.norm().item()}
    out["input_std"] = x.std(unbiased=False).item()
    return out


def health(trainer: Trainer) -> dict:
    record = trainer.doctor.examine(0, 7)["health"]
    return {"layers": {r.pop("name"): r for r in record["layers"]}, "alerts": record["alerts"]}


def test_health_matches_an_independent_computation_and_changes_nothing(tmp_path):
    # batch norm (buffers the probe must put back), no dropout (so the reference needs no masks)
    trainer = make_trainer(tmp_path, "h", model_opts={"width": 0.25, "norm": "batch", "dropout": 0.0})
    want = reference(trainer)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    got = health(trainer)
    assert list(got["layers"]) == list(ACT)
    for layer, values in got["layers"].items():
        for key, value in values.items():
            expected = want[layer][key]
            assert value == (None if expected is None else pytest.approx(expected, rel=1e-4, abs=1e-7)), \
                (layer, key)
    assert got["alerts"] == []  # a freshly initialized net is healthy
    # nothing changed: weights, batch-norm statistics, gradients, the global generator
    assert all(torch.equal(v, state[k]) for k, v in trainer.model.state_dict().items())
    assert all(p.grad is None for p in trainer.model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_dead_layer_is_named_with_its_fraction(tmp_path, capsys):
    trainer = make_trainer(tmp_path, "dead", lr=1e-6)
    with torch.no_grad():
        trainer.model.features.conv3.bias.fill_(-1e4)  # below every input: conv3's ReLU outputs 0
    trainer.fit(StopRequest())  # a real run: 2 epochs of 2 steps, the doctor at each epoch's end
    first = trainer.history[0]["health"]
    want = reference(trainer)  # the weights the last probe saw
    dead = [name for name, r in want.items() if name != "input_std" and r["dead_fraction"] is not None
            and r["dead_fraction"] >= 0.99]
    assert "features.conv3" in dead  # conv3 and every layer it feeds nothing but its own biases
    layers = {r["name"]: r for r in trainer.history[-1]["health"]["layers"]}
    assert layers["features.conv3"]["dead_fraction"] == 1.0
    assert [a["kind"] for a in first["alerts"]] == ["dead"]  # said once, at the end of epoch 1 (step 2)
    assert first["alerts"][0]["step"] == 2 and trainer.history[1]["health"]["alerts"] == []
    message = first["alerts"][0]["message"]
    assert re.findall(r"(\S+) 100\.0%", message) == dead
    err = capsys.readouterr().err
    assert "doctor, step 2: dead layer: units that output 0 for every image and position of the probe " \
           "batch: features.conv3 100.0%" in err
    assert (tmp_path / "dead" / "log.txt").read_text().count("dead layer") == 1
    saved = [json.loads(line) for line in (tmp_path / "dead" / "metrics.jsonl").read_text().splitlines()]
    assert saved[0]["health"]["alerts"] == first["alerts"]


@pytest.mark.parametrize("scale, kind", [(20.0, "exploding"), (0.05, "vanishing")])
def test_exploding_and_vanishing_activations(tmp_path, scale, kind):
    # no LRN (it would saturate large inputs) and no biases: each layer multiplies the signal by ``scale``
    trainer = make_trainer(tmp_path, kind, model_opts={**SMALL["model_opts"], "dropout": 0.0})
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            p.mul_(scale) if name.endswith("weight") else p.zero_()
    want = reference(trainer)
    gain = {name: r["act_std"] / want["input_std"] for name, r in want.items() if name != "input_std"}
    named = [n for n, g in gain.items() if (g > 1e3 if kind == "exploding" else g < 1e-4)]
    assert named and len(named) < len(gain)  # the signal crosses the threshold on the way through
    got = health(trainer)
    assert [a["kind"] for a in got["alerts"]] == [kind] and got["alerts"][0]["step"] == 7
    message = got["alerts"][0]["message"]
    listed = re.findall(r"(\S+) (\S+) \((\S+)x\)", message)
    assert [n for n, _, _ in listed] == named
    for name, std, ratio in listed:
        assert (std, ratio) == (f"{want[name]['act_std']:.3g}", f"{gain[name]:.3g}")
    assert f"input std {want['input_std']:.3g}" in message


def test_loss_at_chance_for_n_steps_on_labels_nothing_can_learn(tmp_path, capsys):
    # LeNet-5 whose output layer starts at zero (uniform predictions: what a net that learned nothing
    # predicts); labels drawn apart from the images keep it at chance
    trainer = make_trainer(tmp_path, "stall", tiny_source(learnable=False, size=28), model="lenet5",
                           model_opts={}, doctor_steps=3, batch_size=8, epochs=1)  # 4 steps
    with torch.no_grad():
        trainer.model.classifier.output.weight.zero_()
    trainer.fit(StopRequest())
    chance, band = math.log(CLASSES), 0.02 * math.log(CLASSES)
    assert abs(trainer.history[0]["train_loss"] - chance) < band
    alerts = trainer.history[0]["health"]["alerts"]
    assert [(a["kind"], a["step"]) for a in alerts] == [("stall", 3)]
    m = re.search(r"within (\S+) of ln\(4\) = (\S+) for 3 steps \(steps 1-3: mean (\S+), last (\S+)\)",
                  alerts[0]["message"])
    assert m and (m[1], m[2]) == (f"{band:.3f}", f"{chance:.3f}")
    assert abs(float(m[3]) - chance) <= band and abs(float(m[4]) - chance) <= band
    assert "BVLC/caffe#401" in alerts[0]["message"] and "lr 0.001 stayed at chance" in alerts[0]["message"]
    assert "doctor, step 3: the training loss has sat" in capsys.readouterr().err


def stall_parts(tmp_path):
    """What a bare Doctor needs for the stall tests, which feed it losses by hand: a model, its
    optimizer, a source (for ln C) and a run folder for its messages."""
    rundir = RunDir(tmp_path / "r")
    rundir.create()
    model = torch.nn.Linear(2, CLASSES)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), tiny_source(), rundir


def test_the_stall_count_restarts_when_the_loss_leaves_chance(tmp_path):
    """Each step's loss from the running sums: a step away from ln(C) starts the count again, the alert
    comes once, and a resumed run that already raised it does not raise it again."""
    model, optimizer, source, rundir = stall_parts(tmp_path)
    chance = math.log(CLASSES)
    doctor = Doctor(model, optimizer, source, None, torch.device("cpu"), rundir, seed=0, steps=3)
    losses = [chance, chance, 2 * chance, chance, chance * 1.01, chance, chance, chance]
    state = TrainState()
    for step, loss in enumerate(losses, 1):
        state.step, state.count, state.loss_sum = step, state.count + 10, state.loss_sum + 10 * loss
        doctor.after_step(state, step)
    assert [(a.kind, a.step) for a in doctor.pending] == [("stall", 6)]  # steps 4-6; not again at 7, 8
    assert f"steps 4-6: mean {(2 * chance + chance * 1.01) / 3:.4f}" in doctor.pending[0].message
    resumed = Doctor(model, optimizer, source, None, torch.device("cpu"), rundir, seed=0, steps=3,
                     history=[{"health": {"alerts": [doctor.pending[0].to_dict()]}}])
    for step in range(1, 5):
        state = TrainState(step=step, count=10 * step, loss_sum=10 * step * chance)
        resumed.after_step(state, step)  # a new state each step: as after a resume, no loss is known
    assert resumed.pending == []


def test_doctor_on_or_off_gives_bit_identical_runs(tmp_path):
    # dropout and batch norm: the probe's masks come from a forked generator, its statistics are put back
    opts = {"model_opts": {"width": 0.25, "norm": "batch"}}
    runs = {}
    for doctor in ("on", "off"):
        trainer = make_trainer(tmp_path, doctor, doctor=doctor, **opts)
        trainer.fit(StopRequest())
        runs[doctor] = trainer
    on, off = runs["on"], runs["off"]
    assert all("health" in r for r in on.history) and not any("health" in r for r in off.history)
    a, b = on.model.state_dict(), off.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in on.history] == [r["train_loss"] for r in off.history]


def test_doctor_flags(cli, tmp_path):
    r = cli("train", "--doctor-steps", "0", "--out", tmp_path)
    assert r.returncode == 2 and "--doctor-steps: must be >= 1" in r.stderr
    r = cli("train", "--doctor", "maybe", "--out", tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_a_resumed_run_counts_and_says_what_an_uninterrupted_one_does(tmp_path):
    """The stall count, the kinds said and the alerts of the epoch in progress are in the checkpoint
    (through the file format's weights-only load): a stall that spans a resume is said at the step an
    uninterrupted run says it. The step after a mid-epoch save is skipped by both runs: the save
    gathers the running sums (sums_replaced), and a resumed run cannot tell that step's loss."""
    model, optimizer, source, rundir = stall_parts(tmp_path)
    chance = math.log(CLASSES)

    def doctor(steps=3):
        return Doctor(model, optimizer, source, None, torch.device("cpu"), rundir, seed=0, steps=steps)

    losses = [2 * chance, chance, chance, chance, chance, chance, chance]  # steps 1-7; saved after step 3

    def steps(d, state, first, last):
        for step in range(first, last + 1):
            state.step, state.count = step, state.count + 10
            state.loss_sum += 10 * losses[step - 1]
            d.after_step(state, step)

    whole, state = doctor(), TrainState()
    steps(whole, state, 1, 3)
    whole.sums_replaced()  # the mid-epoch save
    steps(whole, state, 4, 7)
    assert [(a.kind, a.step) for a in whole.pending] == [("stall", 5)]  # steps 2, 3 and 5

    before, state = doctor(), TrainState()
    steps(before, state, 1, 3)
    saved = tmp_path / "doctor.pt"
    torch.save({"doctor": before.state_dict()}, saved)
    after = doctor()
    after.load_state_dict(torch.load(saved, weights_only=True)["doctor"])
    resumed = TrainState(step=3, count=state.count, loss_sum=state.loss_sum)  # a new object, as after a load
    steps(after, resumed, 4, 7)
    assert [a.to_dict() for a in after.pending] == [a.to_dict() for a in whole.pending]
    assert after.stall == whole.stall

    fewer = doctor(steps=2)  # resumed with a lower --doctor-steps than the count already reached
    fewer.load_state_dict(before.state_dict())
    steps(fewer, TrainState(step=3, count=state.count, loss_sum=state.loss_sum), 4, 5)
    assert [(a.kind, a.step) for a in fewer.pending] == [("stall", 5)]


def test_the_trainer_checkpoint_holds_the_doctor(tmp_path):
    trainer = make_trainer(tmp_path, "held")
    trainer.doctor.stall = [(1, 1.386), (2, 1.385)]
    ckpt = trainer.state_dict()
    assert ckpt["doctor"]["stall"] == [[1, 1.386], [2, 1.385]]
    again = Trainer(trainer.cfg, trainer.source, trainer.rundir, Dist(), torch.device("cpu"), checkpoint=ckpt)
    assert again.doctor.stall == [(1, 1.386), (2, 1.385)]
    off = make_trainer(tmp_path, "off", doctor="off")
    assert off.state_dict()["doctor"] is None
