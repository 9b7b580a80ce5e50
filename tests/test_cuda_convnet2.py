"""cuda-convnet2's two recipes, cell by cell, against its public files; its ``dexp`` learning-rate schedule
against ``lr.cu``'s formula worked out by hand; and the model options its files need (the files'
initialization, the within-map normalization, the one-GPU net's kernels, its two dropouts).

Files are cuda-convnet2's (github.com/akrizhevsky/cuda-convnet2, commit 3238bf0); each quoted text is the
file's line as it stands there. Where the quote holds the number, the test reads it out of the quote, so a
cell, the number written here and the file's text must all agree.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from alexnet.models import create_model
from alexnet.models.layers import WithinMapNorm
from alexnet.training.config import resolve_config
from alexnet.training.schedule import Schedule
from alexnet.training.setup import build_optimizer

P2 = "layers/layer-params-imagenet-2gpu-model.cfg"
L2 = "layers/layers-imagenet-2gpu-model.cfg"
P1 = "layers/layer-params-imagenet-1gpu.cfg"
L1 = "layers/layers-imagenet-1gpu.cfg"


def number(text: str, key: str) -> float:
    """``key=NUMBER`` in a quoted line: ``number("epsW=dexp[base=0.02;tgtFactor=250]", "base")`` = 0.02."""
    return float(re.search(rf"(?<![A-Za-z]){key}=(-?[0-9.]+)", text).group(1))


def ratio(text: str) -> float:
    """Two quoted lines, ``epsW ... | epsB ...``: the biases' base rate over the weights'."""
    weights, biases = text.split(" | ")
    return number(biases, "base") / number(weights, "base")


def constructor_arg(text: str, index: int) -> float:
    """The ``index``-th argument of ``new Weights(...)`` in a quoted line."""
    inside = text[text.index("Weights(") + len("Weights("):text.rindex(")")]
    return float(inside.split(", ")[index])


# weights.cuh:101-102: Weights(Matrix& hWeights, Matrix& hWeightsInc, ParameterSchedule& lrs, Layer& parent,
#                              float wc, float wball, float mom, bool useGrad);  -> wc is argument 4
BIAS_WC = ("cudaconvnet/src/layer.cu:743",
           "_biases = new Weights(hBiases, hBiasesInc, ParameterSchedule::make(pyEpsB), *this, 0, 0, momB, "
           "true);",
           lambda t: constructor_arg(t, 4))
MINI = ("convnet.py:253",
        'op.add_option("mini", "minibatch_size", IntegerOptionParser, "Minibatch size", default=128)',
        lambda t: int(number(t, "default")))
# inc <- mom inc + eps grad - wc eps w: the learning rate inside the velocity, as PaperSGD
UPDATE = ("cudaconvnet/src/weights.cu:290", "WeightedAdd(_mom, gradScale, -_wc * _lrs->getValue(progress))",
          None)
FILE_DEXP = lambda t: t.split("=", 1)[1].split("[")[0]  # noqa: E731 - "epsW=dexp[...]" -> "dexp"

# What the code decides, whichever layer files it runs (the recipes share these cells).
CODE_CELLS = [
    ("batch_size", 128, *MINI),
    ("optimizer", "paper-sgd", *UPDATE),
    ("bias_decay_mult", 0.0, *BIAS_WC),
    ("normalize", "paper", "convdata.py:192", "self.data[self.d_idx]['data'] -= self.data_mean_crop", None),
    ("mean_crop", "center", "convdata.py:104", "self.data_mean_crop = self.data_mean.reshape(...)"
     "[:,self.border_size:self.border_size+self.inner_size,self.border_size:self.border_size+self.inner_size]",
     None),
    ("crop", "random", "cudaconvnet/src/jpeg.cpp:118",
     "crop_start_x = _test ? (border_size_x / 2) : (rand_r(&_rseed) % (border_size_x + 1));", None),
    ("lighting", "data", "convdata.py:81",
     "self.color_eig = self.batch_meta['color_pca'][1].astype(n.single)", None),
    ("lighting_form", "cuda-convnet2", "convdata.py:183",
     "self.data[self.d_idx]['data'] *= 1.0 / (1.0 + self.color_noise_coeff)", None),
]

# (option, the value written here, where, the quoted text, how the value is read from it (None: a name))
CELLS = {
    "cuda-convnet2": CODE_CELLS + [
        ("lr", 0.02, f"{P2}:2", "epsW=dexp[base=0.02;tgtFactor=250;numSteps=4]", lambda t: number(t, "base")),
        ("momentum", 0.9, f"{P2}:4", "momW=0.9", lambda t: number(t, "momW")),
        ("weight_decay", 0.0005, f"{P2}:6", "wc=0.0005", lambda t: number(t, "wc")),
        ("bias_lr_mult", 2.0, f"{P2}:2-3",
         "epsW=dexp[base=0.02;tgtFactor=250;numSteps=4] | epsB=dexp[base=0.04;tgtFactor=25;numSteps=2]",
         ratio),
        ("schedule", "dexp", f"{P2}:2", "epsW=dexp[base=0.02;tgtFactor=250;numSteps=4]", FILE_DEXP),
        ("dexp_factor", 250.0, f"{P2}:2", "epsW=dexp[base=0.02;tgtFactor=250;numSteps=4]",
         lambda t: number(t, "tgtFactor")),
        ("dexp_steps", 4, f"{P2}:2", "epsW=dexp[base=0.02;tgtFactor=250;numSteps=4]",
         lambda t: int(number(t, "numSteps"))),
        ("bias_dexp_factor", 25.0, f"{P2}:3", "epsB=dexp[base=0.04;tgtFactor=25;numSteps=2]",
         lambda t: number(t, "tgtFactor")),
        ("bias_dexp_steps", 2, f"{P2}:3", "epsB=dexp[base=0.04;tgtFactor=25;numSteps=2]",
         lambda t: int(number(t, "numSteps"))),
        ("--opt towers", 2, f"{L2}:20, :33", "[conv1a] ... gpu=0 | [conv1b] ... gpu=1",
         lambda t: len(re.findall("gpu=", t))),
        ("--opt lrn_per_tower", True, f"{L2}:35-38", "[rnorm1a] type=cmrnorm inputs=conv1a channels=48",
         lambda t: number(t, "channels") == 96 / 2),
        ("--opt lrn_mode", "cuda-convnet", f"{P2}:157, :159", "scale=0.0001 | minDiv=2", None),
        ("--opt lrn_order", "cuda-convnet2", f"{L2}:37, :50, :54",
         "inputs=conv1a | inputs=rnorm1a | neuron=relu", None),
        ("--opt cnorm", True, f"{L2}:107-109", "[cnorm2a] type=rnorm inputs=rnorm2a",
         lambda t: "type=rnorm" in t and "inputs=rnorm2a" in t),
        ("--opt init", "cuda-convnet2", f"{L2}:143", "initW=0.03,0.03", None),
        ("--opt dropout_form", "inverted", f"{L2}:257", "type=dropout", None),
    ],
    "cuda-convnet2-1gpu": CODE_CELLS + [
        ("lr", 0.01, f"{P1}:6", "epsW=dexp[base=0.01;tgtFactor=250;numSteps=4]", lambda t: number(t, "base")),
        ("momentum", 0.9, f"{P1}:2", "momW=0.9", lambda t: number(t, "momW")),
        ("weight_decay", 0.0005, f"{P1}:4", "wc=0.0005", lambda t: number(t, "wc")),
        ("bias_lr_mult", 2.0, f"{P1}:6-7",
         "epsW=dexp[base=0.01;tgtFactor=250;numSteps=4] | epsB=dexp[base=0.02;tgtFactor=10;numSteps=2]",
         ratio),
        ("schedule", "dexp", f"{P1}:6", "epsW=dexp[base=0.01;tgtFactor=250;numSteps=4]", FILE_DEXP),
        ("dexp_factor", 250.0, f"{P1}:6", "epsW=dexp[base=0.01;tgtFactor=250;numSteps=4]",
         lambda t: number(t, "tgtFactor")),
        ("dexp_steps", 4, f"{P1}:6", "epsW=dexp[base=0.01;tgtFactor=250;numSteps=4]",
         lambda t: int(number(t, "numSteps"))),
        ("bias_dexp_factor", 10.0, f"{P1}:7", "epsB=dexp[base=0.02;tgtFactor=10;numSteps=2]",
         lambda t: number(t, "tgtFactor")),
        ("bias_dexp_steps", 2, f"{P1}:7", "epsB=dexp[base=0.02;tgtFactor=10;numSteps=2]",
         lambda t: int(number(t, "numSteps"))),
        ("--opt towers", 1, f"{L1}:20", "[conv1] ... gpu=0", lambda t: len(re.findall("gpu=", t))),
        ("--opt kernels", "64,192,384,256,256", f"{L1}:13, :40, :68, :81, :95",
         "filters=64 | filters=192 | filters=384 | filters=256 | filters=256",
         lambda t: ",".join(re.findall(r"filters=(\d+)", t))),
        ("--opt lrn_mode", "cuda-convnet", f"{P1}:84, :86", "scale=0.0001 | minDiv=2", None),
        ("--opt lrn_order", "cuda-convnet2", f"{L1}:24, :31, :35",
         "inputs=conv1 | inputs=rnorm1 | neuron=relu", None),
        ("--opt init", "cuda-convnet2-1gpu", f"{L1}:73, :144", "initW=0.03 | initB=-7", None),
        ("--opt dropout_form", "paper", f"{L1}:123", "type=dropout2", None),
    ],
}
# What the files leave to the command line (convnet.py's options): the recipes take the paper's values
# (sections 4.1 and 5), not the repository's defaults: no colour noise, 50,000 epochs, one view.
COMMAND_LINE = [
    ("lighting_std", 0.1, 0.0, "convnet.py:263",
     'op.add_option("color-noise", "color_noise", FloatOptionParser, "Add PCA noise ...", default=0.0)'),
    ("epochs", 90, 50000, "convnet.py:273", 'op.options["num_epochs"].default = 50000'),
    ("tta", "10crop", 0, "convnet.py:258",
     'op.add_option("multiview-test", "multiview_test", BooleanOptionParser, "...", default=0)'),
]


@pytest.fixture(scope="module")
def configs():
    from alexnet.data import build_source

    source = build_source("synthetic:classes=2,per-class=2")
    return {r: resolve_config({"model": "alexnet2012", "recipe": r}, source=source)[0] for r in CELLS}


@pytest.fixture(scope="module")
def nets(configs):
    """Each recipe's alexnet2012 as training builds it (seeded), for 67x67 inputs: pool5 is then 1x1, so
    fc6 has 256 inputs instead of 9,216 and the net builds three times faster; every layer is still there."""
    out = {}
    for recipe, cfg in configs.items():
        torch.manual_seed(0)
        out[recipe] = create_model("alexnet2012", num_classes=1000, **{**cfg.model_opts, "img_size": 67})
    return out


@pytest.mark.parametrize("recipe, option, value, where, text, read",
                         [(r, *cell) for r, cells in CELLS.items() for cell in cells],
                         ids=[f"{r}:{c[0]}" for r, cells in CELLS.items() for c in cells])
def test_each_cell_is_the_files(recipe, option, value, where, text, read, configs):
    cfg = configs[recipe]
    got = cfg.model_opts[option[len("--opt "):]] if option.startswith("--opt ") else getattr(cfg, option)
    assert got == value, f"{recipe} {option}: {got!r}, but {where} says {value!r}"
    if read is not None:
        assert read(text) == value, f"{where}: {text!r} does not give {value!r}"


@pytest.mark.parametrize("recipe", list(CELLS))
@pytest.mark.parametrize("option, value, repository_default, where, text", COMMAND_LINE)
def test_what_the_files_leave_to_the_command_line_is_the_papers(recipe, option, value, repository_default,
                                                               where, text, configs):
    assert getattr(configs[recipe], option) == value
    assert float(re.search(r"default\s*=\s*([0-9.]+)", text).group(1)) == repository_default != value


def lr_cu_rates(base: float, tgt_factor: float, num_steps: int) -> list[float]:
    """cudaconvnet/src/lr.cu's DiscreteExpParameterSchedule constructor, by hand:
      82      _powBase = 1.0 / tgtFactor;
      86      return _baseRate * std::pow(_powBase, progress);
      97      double finalRate = baseRate / tgtFactor;
      98      for (int i = 0; i < numSteps - 1; i++) {
      99          double progress = double(i) / (numSteps - 1);
     100          _rates.push_back(elrs.getValue(progress));
     102      _rates.push_back(finalRate);"""
    return [base * math.pow(1.0 / tgt_factor, i / (num_steps - 1)) for i in range(num_steps - 1)] + \
        [base / tgt_factor]


@pytest.mark.parametrize("recipe, weights, biases", [
    # 2 epochs of 4 steps: step t runs at progress t / 8 (python_util/gpumodel.py:295
    # "float(self.get_num_batches_done()-1) / num_batches_total"); lr.cu:107-109 "if (progress <=
    # double(i + 1) / _rates.size()) return _rates[i];": steps 0-2 (0, 1/8, 2/8) the first rate, 3-4 the
    # second, 5-6 the third, 7 the last; the biases' two rates: steps 0-4 (up to 4/8), then 5-7
    ("cuda-convnet2", [0] * 3 + [1] * 2 + [2] * 2 + [3], [0] * 5 + [1] * 3),
    ("cuda-convnet2-1gpu", [0] * 3 + [1] * 2 + [2] * 2 + [3], [0] * 5 + [1] * 3),
])
def test_dexp_follows_lr_cu_step_by_step(recipe, weights, biases, configs):
    cfg = configs[recipe].replace(epochs=2)
    files = {"cuda-convnet2": ((0.02, 250, 4), (0.04, 25, 2)),        # params-2gpu:2-3
             "cuda-convnet2-1gpu": ((0.01, 250, 4), (0.02, 10, 2))}  # params-1gpu:6-7
    w_rates, b_rates = (lr_cu_rates(*args) for args in files[recipe])
    layer = nn.Linear(3, 2)
    opt = build_optimizer(cfg, layer)
    sched = Schedule.from_config(cfg, opt, steps_per_epoch=4)
    seen = []
    for step in range(8):
        seen.append([g["lr"] for g in opt.param_groups])
        sched.after_step()
        if step % 4 == 3:
            sched.after_epoch(step // 4 + 1, None)
    assert seen == [pytest.approx([w_rates[i], b_rates[j]], rel=1e-12) for i, j in zip(weights, biases)]
    # the drops are 250^(1/3) ~ 6.3x each for the weights, 25x (10x) once for the biases
    assert w_rates[0] / w_rates[1] == pytest.approx(6.2996, rel=1e-4)
    # closed form: a schedule restored at step 5 sets the lr of step 5, as an uninterrupted one
    fresh = Schedule.from_config(cfg, build_optimizer(cfg, nn.Linear(3, 2)), steps_per_epoch=4)
    state = Schedule.from_config(cfg, build_optimizer(cfg, nn.Linear(3, 2)), steps_per_epoch=4).state_dict()
    fresh.load_state_dict({**state, "steps": 5})
    assert [g["lr"] for g in fresh.optimizer.param_groups] == pytest.approx(seen[5], rel=1e-12)


def test_dexp_progress_is_a_single_precision_float(configs):
    """weights.cu:325 ``void Weights::update(float progress)``: the progress reaches lr.cu rounded to a C
    float. Step 100,000,001 of 400,000,000 is 0.2500000025 of the run, which is 0.25 in single precision:
    still the first stage (0.25 <= 1/4), where the double would be in the second."""
    cfg = configs["cuda-convnet2"].replace(epochs=400)
    opt = build_optimizer(cfg, nn.Linear(3, 2))
    sched = Schedule.from_config(cfg, opt, steps_per_epoch=1_000_000)
    sched.load_state_dict({**sched.state_dict(), "steps": 100_000_001})
    assert (100_000_001 / 400_000_000) > 0.25 and sched.lr == 0.02


def test_the_one_gpu_net_is_the_files(configs):
    """layers-imagenet-1gpu.cfg: conv1 :13 filters=64 (11x11 :16, stride 4 :15), conv2 :40 filters=192,
    conv3 :68 384, conv4 :81 256, conv5 :95 256, fc4096a/b :116, :129 outputs=4096: the layer shapes of
    torchvision's alexnet (61,100,840 parameters with 1000 classes), without its padding."""
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialized
        m = create_model("alexnet2012", num_classes=1000, **configs["cuda-convnet2-1gpu"].model_opts)
    convs = [(c.in_channels, c.out_channels, c.groups) for c in m.features if isinstance(c, nn.Conv2d)]
    assert convs == [(3, 64, 1), (64, 192, 1), (192, 384, 1), (384, 256, 1), (256, 256, 1)]
    by_hand = (3 * 121 * 64 + 64) + (64 * 25 * 192 + 192) + (192 * 9 * 384 + 384) + (384 * 9 * 256 + 256) \
        + (256 * 9 * 256 + 256) + (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert sum(p.numel() for p in m.parameters()) == by_hand == 61_100_840
    names = list(dict(m.features.named_children()))
    assert names[:4] == ["conv1", "norm1", "act1", "pool1"]  # rnorm1 reads conv1 (layers-1gpu:24)


@pytest.mark.parametrize("recipe, fc8_bias", [("cuda-convnet2", 0.0), ("cuda-convnet2-1gpu", -7.0)])
def test_the_files_initialization(recipe, fc8_bias, nets):
    """Weights N(0, initW) (layer.py:924 ``initW[i] * nr.randn(rows[i], cols[i])``), biases initB (:941), and
    0.01 / 0 where a layer names none (:949-950). Both files: initW=0.03 on conv3-conv5 (layers-2gpu:143,
    :172, :200; layers-1gpu:73, :87, :100), initB=1 on conv2, conv4, conv5, fc6, fc7; the one-GPU file
    initB=-7 on fc1000 (layers-1gpu:144), the two-tower file none (layers-2gpu:290-295)."""
    m = nets[recipe]
    layers = {**dict(m.features.named_children()), **dict(m.classifier.named_children())}
    want = {"conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.03, 0.0), "conv4": (0.03, 1.0),
            "conv5": (0.03, 1.0), "fc6": (0.01, 1.0), "fc7": (0.01, 1.0), "fc8": (0.01, fc8_bias)}
    for name, (std, bias) in want.items():
        assert layers[name].weight.std().item() == pytest.approx(std, rel=0.03), name
        assert torch.all(layers[name].bias == bias), name
    m.reset_classifier(7)  # a new output layer follows the same file
    assert torch.all(m.classifier.fc8.bias == fc8_bias)


def test_within_map_normalization_against_the_kernel(nets):
    """cnorm2 (layers-2gpu:107-117 type=rnorm size=5 after rnorm2a; params-2gpu:177-178 scale=0.001
    pow=0.75) against cudaconv3/src/conv_util.cu's kCNorm_manyfilter written out by hand: the window
    starts at ``-sizeX/2 + pxIdx`` (:966) and is clipped to the image (:985-988), ``minDiv + addScale *
    sum of squares`` (:1009), the output ``x * denom^-pow``; addScale = scale / size^2 (layer.py:1331) and
    minDiv 1 (:1333)."""
    norm = nets["cuda-convnet2"].features.cnorm2
    names = list(dict(nets["cuda-convnet2"].features.named_children()))
    assert names[names.index("norm2") + 1] == "cnorm2" and isinstance(norm, WithinMapNorm)
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 7) * 20
    size, add_scale, power, min_div = 5, 0.001 / 5 ** 2, 0.75, 1.0
    want = torch.empty_like(x)
    for c in range(2):
        for y in range(6):
            for px in range(7):
                y0, x0 = y - size // 2, px - size // 2
                window = x[0, c, max(0, y0):min(6, y0 + size), max(0, x0):min(7, x0 + size)]
                want[0, c, y, px] = x[0, c, y, px] * (min_div + add_scale * (window ** 2).sum()) ** -power
    torch.testing.assert_close(norm(x), want)


def test_the_two_dropouts(nets):
    """The two-tower file's ``type=dropout`` keeps units times 1 / keep (layer.cuh:638 ``_scale(1.0f/keep)``,
    :641 ``return (x < _keep) * _scale;``) and copies at test time (layer.cu:1340); the one-GPU file's
    ``dropout2`` keeps them as they are (layer.cu:1378 ``smallerThanScalar(_keep)``) and scales by keep at
    test time (:1381 ``_inputs[inpIdx]->scale(_keep, getActs());``)."""
    ones = torch.ones(4, 1000)
    for recipe, kept, at_test in (("cuda-convnet2", 2.0, 1.0), ("cuda-convnet2-1gpu", 1.0, 0.5)):
        drop = nets[recipe].classifier.drop6
        drop.train()
        assert set(drop(ones).unique().tolist()) == {0.0, kept}
        drop.eval()
        assert torch.all(drop(ones) == at_test)


def test_the_recipes_table_shows_the_files(cli):
    r = cli("recipes")
    assert r.returncode == 0, r.stderr
    head = r.stdout.splitlines()[0].split()
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()[2:] if line.split()}
    two, one = head.index("cuda-convnet2") - 1, head.index("cuda-convnet2-1gpu") - 1
    assert (rows["lr"][two], rows["lr"][one]) == ("0.02", "0.01")
    assert (rows["schedule"][two], rows["bias_dexp_factor"][two], rows["bias_dexp_factor"][one]) == \
        ("dexp", "25.0", "10.0")


def test_a_model_without_the_files_initialization_is_told_by_the_recipe(cli, tmp_path):
    """The files' initializations are alexnet2012's layers: on another model the recipe's ``init`` is a
    one-line error naming the recipe and the option (before any run folder exists), and ``--opt``
    replaces it."""
    args = ("train", "--model", "alexnet-small", "--data", "digits", "--lighting", "none", "--epochs", "1",
            "--quiet", "--out", tmp_path)
    r = cli(*args, "--recipe", "cuda-convnet2-1gpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "recipe cuda-convnet2-1gpu sets init=cuda-convnet2-1gpu" in lines[0], r.stderr
    assert "unknown init" in lines[0] and not any(tmp_path.iterdir())
    r = cli(*args, "--recipe", "cuda-convnet2-1gpu", "--opt", "init=kaiming")
    assert "recipe cuda-convnet2-1gpu sets" not in r.stderr  # (what stops it next is the mean image)
