"""The model zoo against the paper's numbers and PyTorch's own operators."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alexnet
from alexnet.models import ModelError, create_model, data_options, list_models, model_cfg
from alexnet.models.lrn import LocalResponseNorm
from alexnet.models.summary import summarize
from alexnet.models.weights import WeightsError, load_pretrained

SMALL = [name for name in list_models() if model_cfg(name).sized_by_data]  # the models say it themselves


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def build(name, **kw):
    return create_model(name, num_classes=10 if name in SMALL else 1000, **kw)


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name):
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(2, *model.input_size)
    out = model(x)
    assert out.shape == (2, model.num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"
    model.eval()
    emb = model.embed(x)
    assert emb.shape == (2, model.embed_dim)
    # the embedding is what the output layer sees: logits = fc8(embed) in eval mode
    torch.testing.assert_close(model.classifier[-1](emb), model(x))


@pytest.mark.parametrize("name", list_models())
def test_wrong_input_names_the_expected_size(name):
    model = build(name)
    c, h, w = model.input_size
    with pytest.raises(ValueError, match=rf"\(N, {c}, {h}, {w}\)"):
        model(torch.randn(1, c + 1, h, w))
    if model.min_size is None:
        with pytest.raises(ValueError, match=rf"\(N, {c}, {h}, {w}\)"):
            model(torch.randn(1, c, h + 3, w + 3))
    else:
        with pytest.raises(ValueError, match=rf"{model.min_size}"):
            model(torch.randn(1, c, model.min_size - 1, model.min_size - 1))


def test_published_parameter_counts():
    assert n_params(create_model("alexnet2012")) == 60_965_224  # paper / Caffe bvlc_alexnet
    assert n_params(create_model("alexnet2012", towers=1)) == 62_378_344
    assert n_params(create_model("alexnet-owt")) == 61_100_840  # torchvision
    # LeNet-5 at 32x32 with a fully connected C3: 156 + 2,416 + 48,120 + 10,164 + 850
    assert n_params(create_model("lenet5", num_classes=10, img_size=32)) == 156 + 2416 + 48120 + 10164 + 850


def test_the_papers_one_gpu_comparison_net():
    """towers=1, width=0.5: half the kernels of conv1-conv4, conv5 and the fully connected layers kept
    (Krizhevsky et al. 2012, section 3.2 and footnote 2), counted by hand."""
    m = create_model("alexnet2012", towers=1, width=0.5)
    convs = [(m.features.get_submodule(n).in_channels, m.features.get_submodule(n).out_channels)
             for n in ("conv1", "conv2", "conv3", "conv4", "conv5")]
    assert convs == [(3, 48), (48, 128), (128, 192), (192, 192), (192, 256)]
    by_hand = (3 * 11 * 11 * 48 + 48) + (48 * 5 * 5 * 128 + 128) + (128 * 9 * 192 + 192) \
        + (192 * 9 * 192 + 192) + (192 * 9 * 256 + 256) + (9216 * 4096 + 4096) + (4096 * 4096 + 4096) \
        + (4096 * 1000 + 1000)
    assert n_params(m) == by_hand == 59_798_312  # "bigger than half the size", as the footnote says
    assert m.features.norm1.groups == 1 and m(torch.randn(1, 3, 227, 227)).shape == (1, 1000)
    small = create_model("alexnet-small", towers=1, width=0.5)
    widths = [small.features.get_submodule(f"conv{i}").out_channels for i in range(1, 6)]
    assert widths == [32, 64, 96, 96, 128]
    assert create_model("alexnet-small", width=2).features.conv1.out_channels == 128
    for bad in (0.3, 0, -1, 5):  # 0.3 x 96 = 28.8 kernels; towers must share whole ones
        with pytest.raises(ModelError, match="width"):
            create_model("alexnet2012", width=bad)


def test_alexnet2012_layer_shapes_match_the_paper_table():
    s = summarize(create_model("alexnet2012"))
    shapes = {r.name.split(".")[-1]: r.shape_text for r in s.rows}
    paper = {"conv1": "55x55x96", "pool1": "27x27x96", "conv2": "27x27x256", "pool2": "13x13x256",
             "conv3": "13x13x384", "conv4": "13x13x384", "conv5": "13x13x256", "pool5": "6x6x256",
             "flatten": "9216", "fc6": "4096", "fc7": "4096", "fc8": "1000"}
    assert {k: shapes[k] for k in paper} == paper
    # the kernels of the table: 96 x 11x11x3, 256 x 5x5x48, 384 x 3x3x256, 384 x 3x3x192, 256 x 3x3x192
    f = create_model("alexnet2012").features
    kernels = [tuple(getattr(f, f"conv{i}").weight.shape) for i in range(1, 6)]
    assert kernels == [(96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3), (384, 192, 3, 3), (256, 192, 3, 3)]
    assert s.total_params == 60_965_224


def test_224_input_sizes_fc6_from_the_pooled_map():
    """img_size=224, as reimplementations that crop 224 without padding: conv1 gives (224 - 11) // 4 + 1 = 54
    maps, the pools 26, 12 and 5, so fc6 reads 256 x 5 x 5 = 6,400 values; a towerless net of that layout,
    its shapes written out here, loads strictly. 227 stays the default."""
    with torch.device("meta"):
        assert create_model("alexnet2012").input_size == (3, 227, 227)
        m = create_model("alexnet2012", img_size=224, towers=1)
    assert m.input_size == (3, 224, 224) and m.classifier.fc6.in_features == 6400
    assert n_params(m) == 62_378_344 - (9216 - 6400) * 4096
    shapes = {"conv1": (96, 3, 11, 11), "conv2": (256, 96, 5, 5), "conv3": (384, 256, 3, 3),
              "conv4": (384, 384, 3, 3), "conv5": (256, 384, 3, 3), "fc6": (4096, 6400), "fc7": (4096, 4096),
              "fc8": (1000, 4096)}
    state = {}
    for name, shape in shapes.items():
        part = "features" if name.startswith("conv") else "classifier"
        state[f"{part}.{name}.weight"] = torch.empty(shape)
        state[f"{part}.{name}.bias"] = torch.empty(shape[0])
    m.load_state_dict(state, assign=True)  # strict: every key and shape
    with torch.device("meta"):
        assert m.features.to("meta")(torch.empty(1, 3, 224, 224)).shape == (1, 256, 5, 5)
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        m(torch.rand(1, 3, 227, 227))
    for bad in ({"img_size": 60}, {"kernels": "64,192,384,256"}, {"kernels": "63,192,384,256,256"},
                {"kernels": "64,192,384,256,256", "width": 0.5}):
        with pytest.raises(ModelError):
            create_model("alexnet2012", **bad)


def test_multiply_adds_by_hand():
    owt = summarize(create_model("alexnet-owt"))
    by_hand = (55 * 55 * 64 * 3 * 121 + 27 * 27 * 192 * 64 * 25 + 13 * 13 * 384 * 192 * 9
               + 13 * 13 * 256 * 384 * 9 + 13 * 13 * 256 * 256 * 9 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert owt.total_macs == by_hand
    assert round(owt.total_macs / 1e9, 3) == 0.714
    paper = summarize(create_model("alexnet2012"))
    conv2 = next(r for r in paper.rows if r.name.endswith("conv2"))
    assert conv2.macs == 27 * 27 * 256 * 48 * 25  # each kernel sees its own tower's 48 maps


def test_paper_initialization():
    torch.manual_seed(0)
    model = create_model("alexnet2012")
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            short = name.split(".")[-1]
            assert abs(m.weight.mean().item()) < 1e-3, name
            assert m.weight.std().item() == pytest.approx(0.01, rel=0.05), name
            assert torch.all(m.bias == (1.0 if short in ones else 0.0)), name
    caffe = create_model("alexnet2012", init="caffe")
    assert caffe.classifier.fc6.weight.std().item() == pytest.approx(0.005, rel=0.05)
    assert torch.all(caffe.classifier.fc7.bias == 0.1) and torch.all(caffe.features.conv1.bias == 0)


def test_ablation_options_change_what_the_paper_says():
    def kinds(model):
        return [type(m).__name__ for m in model.features]

    assert kinds(create_model("alexnet2012")).count("LocalResponseNorm") == 2
    assert "LocalResponseNorm" not in kinds(create_model("alexnet2012", lrn=False))
    assert "Tanh" in kinds(create_model("alexnet2012", activation="tanh"))
    pools = [m for m in create_model("alexnet2012", overlap_pool=False).features
             if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    shapes = {r.name.split(".")[-1]: r.shape_text
              for r in summarize(create_model("alexnet2012", overlap_pool=False)).rows}
    assert (shapes["pool1"], shapes["pool2"], shapes["pool5"]) == ("27x27x96", "13x13x256", "6x6x256")
    m = create_model("alexnet2012", dropout=0.0, towers=1)
    assert m.classifier.drop6.p == 0.0 and m.features.conv2.groups == 1
    assert create_model("alexnet2012").features.conv4.groups == 2
    cc = create_model("alexnet2012", lrn_mode="cuda-convnet").features.norm1
    assert (cc.size, cc.alpha, cc.beta, cc.k) == (5, pytest.approx(1e-4 / 5), 0.75, 2.0)
    paper = create_model("alexnet2012").features.norm1
    assert (paper.size, paper.alpha, paper.beta, paper.k) == (5, 1e-4, 0.75, 2.0)


def test_towers_are_independent_at_conv2():
    """With groups=2, the first half of conv2's outputs must not depend on the second tower's maps."""
    conv2 = create_model("alexnet2012").features.conv2
    x = torch.randn(1, 96, 27, 27, requires_grad=True)
    conv2(x)[:, :128].sum().backward()
    assert x.grad[:, 48:].abs().sum() == 0 and x.grad[:, :48].abs().sum() > 0


def test_bad_names_and_options():
    with pytest.raises(ModelError, match="unknown model"):
        create_model("alexnet2013")
    with pytest.raises(ModelError, match="no option"):
        create_model("alexnet2012", widht=2)
    for bad in ({"towers": 3}, {"activation": "gelu"}, {"lrn_mode": "fast"}, {"init": "xavier"}):
        with pytest.raises(ModelError):
            create_model("alexnet2012", **bad)


def test_reset_classifier():
    model = create_model("alexnet2012")
    model.reset_classifier(37)
    assert model(torch.randn(1, 3, 227, 227)).shape == (1, 37)
    assert model.classifier.fc8.weight.std().item() == pytest.approx(0.01, rel=0.1)
    owt = create_model("alexnet-owt")
    owt.reset_classifier(5)
    assert owt.classifier[6].out_features == 5


def test_models_describe_themselves():
    """default_cfg against what the models really do, and the names written out here."""
    assert {"alexnet-small", "lenet5"} <= set(SMALL) and not {"alexnet2012", "alexnet-owt"} & set(SMALL)
    for name in list_models():
        cfg = model_cfg(name)
        model = create_model(name, num_classes=7, **data_options(name, 3, 32))
        assert cfg.input_size == create_model(name).input_size  # the default instance's input
        head = model.get_submodule(cfg.classifier)
        assert isinstance(head, torch.nn.Linear) and head.out_features == 7 and head is model.classifier[-1]
        assert (data_options(name, 3, 32) != {}) == cfg.sized_by_data
        if cfg.sized_by_data:
            assert model.input_size == (3, 32, 32)
    assert {n: model_cfg(n).recipe for n in ("alexnet2012", "alexnet-owt", "alexnet-small", "lenet5")} == {
        "alexnet2012": "paper", "alexnet-owt": "torchvision", "alexnet-small": "small", "lenet5": "small"}


def test_small_models_sizes():
    for size, chans in ((28, 1), (32, 3)):
        for name in SMALL:
            model = create_model(name, num_classes=10, in_chans=chans, img_size=size)
            assert model.input_size == (chans, size, size)
            assert model(torch.randn(2, chans, size, size)).shape == (2, 10)
    small = create_model("alexnet-small", num_classes=10)
    assert small.features.conv2.groups == 2 and small.features.conv5.groups == 2
    assert sum(isinstance(m, LocalResponseNorm) for m in small.features) == 2


# torchvision's AlexNet state dict, key by key, as in its weights file alexnet-owt-7be5be79.pth.
TORCHVISION_SHAPES = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


def torchvision_forward(sd, x):
    """torchvision.models.AlexNet.forward in eval mode, restated with functional ops."""
    x = F.relu(F.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], stride=4, padding=2))
    x = F.max_pool2d(x, 3, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, sd["features.3.weight"], sd["features.3.bias"], padding=2)), 3, 2)
    x = F.relu(F.conv2d(x, sd["features.6.weight"], sd["features.6.bias"], padding=1))
    x = F.relu(F.conv2d(x, sd["features.8.weight"], sd["features.8.bias"], padding=1))
    x = F.relu(F.conv2d(x, sd["features.10.weight"], sd["features.10.bias"], padding=1))
    x = F.adaptive_avg_pool2d(F.max_pool2d(x, 3, 2), (6, 6))
    x = torch.flatten(x, 1)
    x = F.relu(F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"]))
    x = F.relu(F.linear(x, sd["classifier.4.weight"], sd["classifier.4.bias"]))
    return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


def test_torchvision_weights_file_loads_strict_and_gives_the_same_logits(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in TORCHVISION_SHAPES.items()}
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(sd, path)
    model = load_pretrained(alexnet.create_model("alexnet-owt"), path).eval()
    assert set(model.state_dict()) == set(TORCHVISION_SHAPES)
    for size in (224, 256):  # adaptive pooling: larger inputs work as in torchvision
        x = torch.randn(2, 3, size, size, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(model(x), torchvision_forward(sd, x), rtol=1e-5, atol=1e-5)


def test_load_pretrained_refuses_what_does_not_fit(tmp_path):
    model = create_model("alexnet-owt")
    with pytest.raises(WeightsError, match="no such"):
        load_pretrained(model, tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        load_pretrained(model, junk)
    good = tmp_path / "paper.pth"
    torch.save(create_model("alexnet2012").state_dict(), good)
    with pytest.raises(WeightsError, match="does not fit alexnet-owt"):
        load_pretrained(model, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(WeightsError):
        load_pretrained(model, truncated)

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(WeightsError, match="would run code"):
        load_pretrained(model, evil)


def test_summary_cli(cli):
    r = cli("summary", "alexnet2012")
    assert r.returncode == 0, r.stderr
    for shape in ("55x55x96", "27x27x96", "27x27x256", "13x13x256", "13x13x384", "6x6x256", "9216",
                  "60,965,224"):
        assert shape in r.stdout
    r = cli("summary", "alexnet-owt", "--json")
    data = json.loads(r.stdout)
    assert data["total_params"] == 61_100_840 and round(data["total_macs"] / 1e9, 3) == 0.714
    r = cli("summary", "alexnet-small", "--input-size", "3,32,32", "--num-classes", "10", "--json")
    assert json.loads(r.stdout)["input_size"] == [3, 32, 32]
    for bad in (("summary", "alexnet9"), ("summary", "alexnet2012", "--input-size", "3,224,224"),
                ("summary", "alexnet2012", "--opt", "towers=5"),
                ("summary", "alexnet2012", "--input-size", "x")):
        r = cli(*bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("order, steps", [
    ("paper", (("relu", "lrn", "pool"), ("relu", "lrn", "pool"))),          # the paper, sections 3.3-3.4
    ("cuda-convnet2", (("lrn", "relu", "pool"), ("relu", "lrn", "pool"))),  # layers-imagenet-*.cfg
    ("caffenet", (("relu", "pool", "lrn"), ("relu", "pool", "lrn"))),       # bvlc_reference_caffenet
])
def test_lrn_order_against_the_layers_written_out(order, steps):
    from helpers.lrn import paper_loop

    torch.manual_seed(0)
    model = create_model("alexnet2012", lrn_order=order, init="kaiming").eval()
    x = torch.randn(1, 3, 227, 227)
    ops = {"relu": torch.relu, "pool": lambda t: torch.nn.functional.max_pool2d(t, 3, 2),
           "lrn": lambda t: paper_loop(t, 5, 1e-4, 0.75, 2.0, towers=2)}  # per tower, the paper's alpha
    f = model.features
    y = torch.nn.functional.conv2d(x, f.conv1.weight, f.conv1.bias, stride=4)
    for step in steps[0]:
        y = ops[step](y)
    y = torch.nn.functional.conv2d(y, f.conv2.weight, f.conv2.bias, padding=2, groups=2)
    for step in steps[1]:
        y = ops[step](y)
    with torch.no_grad():
        got = f[:list(dict(f.named_children())).index("conv3")](x)
    torch.testing.assert_close(got, y, rtol=1e-4, atol=1e-5)
