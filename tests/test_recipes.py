"""The recipes against the published files' numbers, the bias parameter groups against a hand-written
step, the two lighting forms and mean-image crops against their formulas, and the honest choice of
the weights a run reports."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from torch import nn

from alexnet.data.transforms import IMAGENET_EIGVAL, IMAGENET_EIGVEC, Lighting, Normalization, Preset
from alexnet.training.config import resolve_config
from alexnet.training.schedule import Schedule
from alexnet.training.setup import build_optimizer

# Each published constant, with the file it is read from.
PUBLISHED = {
    # Krizhevsky et al. 2012, sections 4.1 and 5
    "paper": {"batch_size": 128, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "max_drops": 3,
              "epochs": 90, "lighting_std": 0.1, "tta": "10crop", "bias_lr_mult": 1.0,
              "bias_decay_mult": 1.0},
    # Caffe models/bvlc_alexnet/solver.prototxt: base_lr 0.01, momentum 0.9, weight_decay 0.0005,
    # gamma 0.1, stepsize 100000 and max_iter 450000 (at batch 256: 19.98 and 89.9 epochs of 1,281,167);
    # train_val.prototxt: batch_size 256, crop_size 227, mirror, mean file, lr_mult 2 / decay_mult 0 on biases
    "caffe": {"batch_size": 256, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "lr_factor": 0.1,
              "schedule": "step", "step_size": round(100_000 * 256 / 1_281_167),
              "epochs": round(450_000 * 256 / 1_281_167), "bias_lr_mult": 2.0, "bias_decay_mult": 0.0,
              "normalize": "paper", "mean_crop": "same", "lighting": "none", "tta": "center"},
    # torchvision references/classification (README, AlexNet): --lr 1e-2, 90 epochs, step 30 x0.1,
    # weight decay 1e-4, batch 32 x 8 GPUs
    "torchvision": {"batch_size": 256, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "step_size": 30,
                    "lr_factor": 0.1, "epochs": 90, "crop": "random-resized", "normalize": "imagenet"},
}
# Caffe's src/caffe/layers/dropout_layer.cpp scales the kept units by 1 / (1 - p) in training and copies
# in testing (inverted); the paper (section 4.2) drops without rescaling and halves at test time;
# torchvision's AlexNet uses nn.Dropout (inverted). (cuda-convnet2's two recipes, cell by cell against its
# files: tests/test_cuda_convnet2.py.)
MODEL_OPTIONS = {"paper": {"dropout_form": "paper"},
                 "caffe": {"init": "caffe", "lrn_mode": "caffe", "lrn_per_tower": False,
                           "dropout_form": "inverted"},
                 "torchvision": {"dropout_form": "inverted"}}


@pytest.fixture(scope="module")
def synthetic():
    from alexnet.data import build_source

    return build_source("synthetic:classes=2,per-class=2")


@pytest.mark.parametrize("recipe", list(PUBLISHED))
def test_recipes_resolve_to_the_published_constants(recipe, synthetic):
    cfg, _ = resolve_config({"model": "alexnet2012", "recipe": recipe, "data": "synthetic"}, source=synthetic)
    got = {k: getattr(cfg, k) for k in PUBLISHED[recipe]}
    assert got == PUBLISHED[recipe]
    for key, value in MODEL_OPTIONS.get(recipe, {}).items():
        assert cfg.model_opts[key] == value
    # an explicit --opt wins over the recipe's model option
    mine, _ = resolve_config({"model": "alexnet2012", "recipe": recipe, "model_opts": {"lrn_mode": "paper"}},
                             source=synthetic)
    assert mine.model_opts["lrn_mode"] == "paper"


def test_the_model_picks_its_recipe(synthetic):
    assert resolve_config({"model": "alexnet2012"}, source=synthetic)[0].recipe == "paper"
    assert resolve_config({"model": "alexnet-owt"}, source=synthetic)[0].recipe == "torchvision"


@pytest.mark.parametrize("optimizer", ["paper-sgd", "sgd"])
def test_bias_groups_take_their_own_lr_and_decay(optimizer, synthetic):
    cfg, _ = resolve_config({"model": "alexnet2012", "recipe": "caffe", "optimizer": optimizer, "lr": 0.1,
                             "weight_decay": 0.01}, source=synthetic)
    layer = nn.Linear(3, 2)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    opt = build_optimizer(cfg, layer)
    sched = Schedule.from_config(cfg.replace(schedule="step", epochs=40, step_size=20), opt,
                                 steps_per_epoch=1)
    layer.weight.grad = torch.full_like(layer.weight, 0.5)
    layer.bias.grad = torch.full_like(layer.bias, 0.5)
    opt.step()
    # first step, zero velocity, both rules: w <- w - lr (grad + wd w); biases: lr x2, no decay
    torch.testing.assert_close(layer.weight.detach(), w0 - 0.1 * (0.5 + 0.01 * w0))
    torch.testing.assert_close(layer.bias.detach(), b0 - 0.2 * 0.5)
    # a schedule keeps the ratio: after a x0.1 step both groups are divided by 10
    for epoch in range(1, 21):
        sched.after_epoch(epoch, None)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.02])


def test_the_two_lighting_forms_against_their_formulas():
    eigval, eigvec = torch.tensor(IMAGENET_EIGVAL), torch.tensor(IMAGENET_EIGVEC)
    alpha = torch.tensor([[0.1, -0.2, 0.3]])
    paper = Lighting(eigval, eigvec, 0.1, "paper").shifts(alpha)[0]
    convnet = Lighting(eigval, eigvec, 0.1, "cuda-convnet2").shifts(alpha)[0]
    for c in range(3):  # one RGB channel at a time, the sums written out
        want_paper = 255 * sum(eigvec[c, i] * alpha[0, i] * eigval[i] for i in range(3))
        want_convnet = 255 * sum(eigvec[c, i] * alpha[0, i] * math.sqrt(eigval[i]) for i in range(3))
        assert paper[c].item() == pytest.approx(want_paper.item(), rel=1e-5)
        assert convnet[c].item() == pytest.approx(want_convnet.item(), rel=1e-5)
    # per component the code's form is 1/sqrt(eigval) times stronger: about 2x, 7x and 15x here
    ratios = [1 / math.sqrt(v) for v in IMAGENET_EIGVAL]
    assert [round(r) for r in ratios] == [2, 7, 15]


def test_cuda_convnet2_lighting_scales_the_batch():
    """A constant grey image: every output pixel is (pixel - mean + shift) / (1 + 0.1)."""
    images = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    norm = Normalization.per_channel(torch.tensor([90.0, 90.0, 90.0]))
    light = Lighting(torch.tensor(IMAGENET_EIGVAL), torch.tensor(IMAGENET_EIGVEC), 0.1, "cuda-convnet2")
    g = torch.Generator().manual_seed(3)
    out = Preset(train=True, crop=8, base_size=8, norm=norm, lighting=light)(images, g)
    g = torch.Generator().manual_seed(3)  # replay the preset's draws: top, left, flip, then alpha
    torch.randint(0, 1, (1,), generator=g), torch.randint(0, 1, (1,), generator=g)
    alpha = torch.randn(1, 3, generator=g) * 0.1
    shift = light.shifts(alpha)[0]
    want = (10.0 + shift)[:, None, None].expand(3, 8, 8) / 1.1
    torch.testing.assert_close(out[0], want)


def test_mean_image_same_place_or_centre_crop():
    torch.manual_seed(0)
    images = torch.randint(0, 255, (4, 3, 10, 10), dtype=torch.uint8)
    mean = torch.rand(3, 10, 10) * 255
    norm = Normalization(mean, torch.ones(3, 1, 1))
    for mean_crop in ("same", "center"):
        g = torch.Generator().manual_seed(1)
        out = Preset(train=True, crop=6, base_size=10, norm=norm, flip=True, mean_crop=mean_crop)(images, g)
        g = torch.Generator().manual_seed(1)
        top = torch.randint(0, 5, (4,), generator=g)
        left = torch.randint(0, 5, (4,), generator=g)
        flip = torch.rand(4, generator=g) < 0.5
        for i in range(4):
            t, lf = int(top[i]), int(left[i])
            img = images[i, :, t:t + 6, lf:lf + 6].float()
            m = mean[:, t:t + 6, lf:lf + 6] if mean_crop == "same" else mean[:, 2:8, 2:8]
            want = img - m
            if flip[i]:
                want = img.flip(-1) - (m.flip(-1) if mean_crop == "same" else m)
            torch.testing.assert_close(out[i], want)


def test_without_a_test_split_the_last_weights_are_reported(tmp_path, cli):
    """ILSVRC-2012 has train and val only: val both chooses `best` and is reported, so the run
    reports its last weights, and results.json says so."""
    for split, n in (("train", 4), ("val", 2)):
        for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            (tmp_path / "data" / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), tuple(v + 7 * i for v in colour)).save(
                    tmp_path / "data" / split / f"class{c}" / f"{i}.png")
    r = cli("train", "--model", "lenet5", "--opt", "img_size=32", "--data", f"folder:{tmp_path / 'data'}",
            "--epochs", "2", "--quiet", "--batch-size", "4", "--out", tmp_path, "--name", "r")
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["test_split"] == "val" and results["weights"].startswith("last")
    last = cli("evaluate", tmp_path / "r" / "checkpoints" / "last.pt", "--split", "val", "--format", "json")
    assert json.loads(last.stdout)["results"][0]["top1_accuracy"] == results["test_top1_accuracy"]
