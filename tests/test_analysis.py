"""alexnet.analysis against computations written out here: the trunk run layer by layer, Grad-CAM by
autograd on a split model, brute-force distances, the chroma formula with explicit loops."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alexnet.inference import analysis
from alexnet.inference.analysis import (
    EmbeddingIndex,
    Explainer,
    conv1_stats,
    feature_layers,
    kernel_chroma,
    receptive_box,
    split_report,
    top_classes,
    train_index,
)
from alexnet.data import TensorImageSet
from alexnet.data.transforms import Normalization, Preset
from alexnet.models import create_model
from alexnet.checkpoint import save_checkpoint
from alexnet.inference.load import Loaded, load_trained


def small_loaded(seed=0, num_classes=10):
    torch.manual_seed(seed)
    model = create_model("alexnet-small", num_classes=num_classes).eval()
    mean, std = 40.0, 80.0
    preset = Preset(train=False, crop=28, base_size=28, norm=Normalization.per_channel([mean],
                                                                                       [std])).to_dict()
    names = [f"class {i}" for i in range(num_classes)]
    return Loaded(model, preset, [str(i) for i in range(num_classes)], names, "digits", "test"), mean, std


def digit_images(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 10:18] = torch.rand(n, 1, 16, 8, generator=g) * 255  # a bright blob on black, like a digit
    return x.round().to(torch.uint8)


def test_feature_layers_names_every_layer():
    expect = ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    for name in ("alexnet2012", "alexnet-small"):
        layers = feature_layers(create_model(name))
        assert [layer.name for layer in layers] == expect
        assert [layer.kind for layer in layers] == ["conv", "lrn", "pool", "conv", "lrn", "pool", "conv",
                                                    "conv",
                                                    "conv", "pool"]
        assert all(isinstance(layer.module, torch.nn.ReLU) for layer in layers if layer.kind == "conv")
    owt = feature_layers(create_model("alexnet-owt"))  # torchvision's numbered modules get the paper's names
    assert [layer.name for layer in owt] == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5",
                                             "pool5"]
    assert feature_layers(create_model("alexnet2012", lrn=False))[1].name == "pool1"


def test_explain_matches_layer_by_layer_forward():
    loaded, mean, std = small_loaded()
    ex = Explainer(loaded)
    image = digit_images(1)[0]
    out = ex.explain(image, k=3)
    # the reference: normalize by hand, run every module of the trunk in turn
    x = (image[None].float() - mean) / std
    names = {"conv1": "act1", "norm1": "norm1", "pool1": "pool1", "conv2": "act2", "norm2": "norm2",
             "pool2": "pool2", "conv3": "act3", "conv4": "act4", "conv5": "act5", "pool5": "pool5"}
    recorded = {}
    with torch.no_grad():
        h = x
        for child_name, module in loaded.model.features.named_children():
            h = module(h)
            recorded[child_name] = h.clone()
        logits = loaded.model.classifier(h.flatten(1))
    probs = logits.softmax(-1)[0]
    assert torch.allclose(out.probs, probs, atol=1e-6)
    assert torch.allclose(ex.predict(image[None])[0], probs, atol=1e-6)
    assert [t["index"] for t in out.top] == probs.topk(3).indices.tolist()
    assert [lm.name for lm in out.layers] == list(names)
    for lm in out.layers:
        ref = recorded[names[lm.name]][0]
        assert sorted(lm.order.tolist()) == list(range(ref.shape[0]))
        assert torch.allclose(lm.maps, ref[lm.order], atol=1e-5)
        means = ref.mean((1, 2))[lm.order]
        assert torch.all(means[:-1] >= means[1:])  # strongest first
    assert torch.equal(out.crop, image)
    assert torch.allclose(out.embedding, loaded.model.embed(x)[0], atol=1e-5)


def reference_gradcam(model, x, cls):
    """Grad-CAM written out: the trunk up to conv5's ReLU, then the rest of the network on a leaf."""
    children = list(model.features.children())
    cut = [i for i, m in enumerate(children) if isinstance(m, torch.nn.ReLU)][-1] + 1  # after act5
    a = torch.nn.Sequential(*children[:cut])(x).detach().requires_grad_(True)
    logits = model.classifier(torch.nn.Sequential(*children[cut:])(a).flatten(1))
    (grad,) = torch.autograd.grad(logits[0, cls], a)
    alpha = grad[0].mean((1, 2))
    cam = torch.zeros(a.shape[2:])
    for k in range(a.shape[1]):
        cam += alpha[k] * a[0, k].detach()
    cam = F.interpolate(cam.clamp_min(0)[None, None], size=x.shape[-2:], mode="bilinear",
                        align_corners=False)[0, 0]
    return cam / cam.max()


@pytest.mark.parametrize("target", [None, 7])
def test_gradcam_matches_autograd_reference(target):
    loaded, mean, std = small_loaded(seed=3)
    image = digit_images(1, seed=4)[0]
    out = Explainer(loaded).explain(image, target=target, maps=False)
    x = (image[None].float() - mean) / std
    cls = int(loaded.model(x).argmax()) if target is None else target
    assert out.cam_class == cls
    assert out.layers == []
    assert torch.allclose(out.cam, reference_gradcam(loaded.model, x, cls), atol=1e-5)
    assert out.cam.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="out of range"):
        Explainer(loaded).explain(image, target=10)


def test_top_classes_is_sorted_topk():
    probs = torch.tensor([0.1, 0.5, 0.05, 0.3, 0.05])
    top = top_classes(probs, list("abcde"), list("ABCDE"), 3)
    assert [(t["rank"], t["class"], t["name"]) for t in top] == [(1, "b", "B"), (2, "d", "D"), (3, "a", "A")]
    assert [t["probability"] for t in top] == pytest.approx([0.5, 0.3, 0.1])
    assert len(top_classes(probs, list("abcde"), list("ABCDE"), 99)) == 5


def chroma_by_hand(w):
    """The share of a kernel's sum of squares (about its mean) that is not shared by its channels."""
    out = []
    for k in w.double().numpy():
        c, kh, kw = k.shape
        grand = k.sum() / k.size
        num = den = 0.0
        for y in range(kh):
            for x in range(kw):
                grey = sum(k[ch, y, x] for ch in range(c)) / c
                for ch in range(c):
                    num += (k[ch, y, x] - grey) ** 2
                    den += (k[ch, y, x] - grand) ** 2
        out.append(num / den)
    return np.array(out)


def test_kernel_chroma_formula_and_extremes():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, 4, 4, generator=g)
    assert np.allclose(kernel_chroma(w).numpy(), chroma_by_hand(w), atol=1e-6)
    grey = torch.randn(2, 1, 4, 4, generator=g).expand(2, 3, 4, 4)
    assert kernel_chroma(grey).abs().max() < 1e-6
    opponent = torch.randn(2, 1, 4, 4, generator=g) * torch.tensor([1.0, -1.0, 0.0])[None, :, None, None]
    assert torch.allclose(kernel_chroma(opponent), torch.ones(2), atol=1e-6)
    assert kernel_chroma(torch.randn(3, 1, 5, 5)).isnan().all()  # grey input: no colour to speak of


def test_conv1_stats_per_tower():
    model = create_model("alexnet2012", num_classes=10)
    w = model.features.conv1.weight.data
    w[:48] = w[:48, :1].expand(-1, 3, -1, -1).clone()  # tower 1: colour-agnostic kernels
    w[48:] = w[48:, :1] * torch.tensor([1.0, -1.0, 0.0])[None, :, None, None]  # tower 2: no grey part
    stats = conv1_stats(model)
    assert [(s["tower"], s["kernels"], s["first"]) for s in stats] == [(1, 48, 0), (2, 48, 48)]
    assert stats[0]["mean_chroma"] == pytest.approx(0.0, abs=1e-6) and stats[0]["colour_kernels"] == 0
    assert stats[1]["mean_chroma"] == pytest.approx(1.0, abs=1e-6) and stats[1]["colour_kernels"] == 48
    assert stats[0]["mean_norm"] == pytest.approx(float(w[:48].flatten(1).norm(dim=1).mean()), rel=1e-5)
    one = conv1_stats(create_model("alexnet-small"))
    assert len(one) == 2 and one[0]["mean_chroma"] is None


def test_embedding_search_is_brute_force_euclidean():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 16, generator=g)
    index = EmbeddingIndex(feats, torch.arange(100, 150), torch.arange(50) % 3)
    q = torch.randn(16, generator=g)
    d = np.sqrt(((feats.numpy() - q.numpy()) ** 2).sum(1))
    best = np.argsort(d)[:5]
    found = index.search(q, 5)
    assert [n.index for n in found] == (best + 100).tolist()
    assert [n.label for n in found] == (best % 3).tolist()
    assert [n.distance for n in found] == pytest.approx(d[best].tolist(), rel=1e-5)


def test_subset_indices_even_and_complete():
    assert analysis.subset_indices(5, 10).tolist() == [0, 1, 2, 3, 4]
    sub = analysis.subset_indices(1000, 10).tolist()
    assert sub[0] == 0 and sub[-1] == 999 and len(sub) == 10


def test_train_index_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    loaded, mean, std = small_loaded()
    ex = Explainer(loaded)
    images = digit_images(12, seed=5)
    split = TensorImageSet(images, np.arange(12) % 4)
    ckpt = tmp_path / "checkpoints" / "best.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"stand-in checkpoint")
    index = train_index(ex, split, ckpt, tmp_path, limit=10)
    with torch.no_grad():
        ref = loaded.model.embed((images.float() - mean) / std)
    wanted = analysis.subset_indices(12, 10)
    assert torch.equal(index.indices, wanted)
    assert torch.allclose(index.features, ref[wanted], atol=1e-5)
    assert index.labels.tolist() == (wanted % 4).tolist()
    assert (tmp_path / analysis.EMBEDDINGS_FILE).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left

    def refuse(*_a, **_k):
        raise AssertionError("embedded again although the checkpoint did not change")

    monkeypatch.setattr(ex, "embed", refuse)
    again = train_index(ex, split, ckpt, tmp_path, limit=10)
    assert torch.equal(again.features, index.features)
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new checkpoint: the cache is stale
    with pytest.raises(AssertionError, match="embedded again"):
        train_index(ex, split, ckpt, tmp_path, limit=10)
    monkeypatch.undo()
    (tmp_path / analysis.EMBEDDINGS_FILE).write_bytes(b"garbage")  # a damaged cache is rebuilt
    assert torch.allclose(train_index(ex, split, ckpt, tmp_path, limit=10).features, index.features)


def test_predict_cli_uses_the_same_top_k(tmp_path, capsys):
    """``alexnet predict`` and the explorer report the same classes and probabilities."""
    from alexnet.cli import main

    loaded, _, _ = small_loaded(seed=2)
    save_checkpoint(tmp_path / "m.pt", dict(model_name="alexnet-small", num_classes=10, model_options={},
                                            model=loaded.model.state_dict(), preset=loaded.preset,
                                            classes=loaded.classes, class_names=loaded.class_names,
                                            data="digits"))
    image = digit_images(1, seed=9)[0]
    Image.fromarray(image[0].numpy(), "L").save(tmp_path / "d.png")
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "d.png"), "--json", "--device",
                 "cpu"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]["top"]
    page = Explainer(load_trained(str(tmp_path / "m.pt"))).explain(image, maps=False, cam=False).top
    assert [t["class"] for t in cli] == [t["class"] for t in page]
    assert [t["probability"] for t in cli] == pytest.approx([t["probability"] for t in page], abs=1e-6)


def test_layers_are_described_from_the_model_itself():
    """LeNet-5 has tanh and 2x2 average pooling, and its last convolution is 1x1: its captions say so and
    Grad-CAM reads the last convolution that still has a spatial map; batch normalization joins its block."""
    lenet = create_model("lenet5", num_classes=10).eval()
    norm = Normalization.per_channel([40.0], [80.0])
    preset = Preset(train=False, crop=28, base_size=28, norm=norm).to_dict()
    ex = Explainer(Loaded(lenet, preset, list("0123456789"), list("0123456789"), None, "lenet"))
    assert [(la.name, la.caption) for la in ex.layers] == [
        ("c1", "5x5 convolution, stride 1, 6 kernels + tanh"), ("s2", "2x2 average pooling, stride 2"),
        ("c3", "5x5 convolution, stride 1, 16 kernels + tanh"), ("s4", "2x2 average pooling, stride 2"),
        ("c5", "5x5 convolution, stride 1, 120 kernels + tanh")]
    assert [la.shape for la in ex.layers] == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]
    assert ex.cam_layer.name == "c3"  # c5's maps are 1x1
    assert "tanh squashes" in ex.layers[0].about and "ReLU" not in ex.layers[0].about
    out = ex.explain(digit_images(1)[0])
    assert out.cam_layer == "c3" and out.cam.max() == pytest.approx(1.0) and out.cam.min() < 1.0
    assert analysis.embedding_name(lenet) == "f6"
    assert analysis.embedding_name(create_model("alexnet-owt")) == "fc7"  # torchvision's numbered classifier
    assert analysis.embedding_name(create_model("convnet18")) == "the flattened trunk"
    nnott = feature_layers(create_model("nnott-lenet"))
    assert nnott[0].caption == "5x5 convolution, stride 1, 6 kernels + batch normalization + ReLU"
    assert isinstance(nnott[0].module, torch.nn.ReLU)  # maps after the block, as the next layer sees them
    small = feature_layers(create_model("alexnet-small"))
    assert small[2].caption == "3x3 max-pooling, stride 2 (overlapping windows)"
    assert small[3].caption == "5x5 convolution, stride 1, 128 kernels in 2 towers + ReLU"


@pytest.mark.parametrize("name", ["lenet5", "alexnet-small"])
def test_receptive_field_is_where_the_gradient_reaches(name):
    """The box :func:`receptive_box` gives holds every input pixel whose gradient is not zero; with
    tanh and average pooling everywhere (LeNet-5) the gradient reaches every pixel of the box."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).double().eval()
    x = torch.randn(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    record = {}
    for layer in feature_layers(model):
        hook = layer.module.register_forward_hook(lambda _m, _i, o: record.__setitem__("out", o))
        model(x)
        hook.remove()
        out = record["out"]
        y, xx = out.shape[2] // 2, out.shape[3] // 3
        channel = int(out[0, :, y, xx].argmax())  # a unit that fires (a ReLU at zero passes no gradient)
        (grad,) = torch.autograd.grad(out[0, channel, y, xx], x)
        rows, cols = grad[0, 0].abs().gt(0).nonzero(as_tuple=True)
        top, left, bottom, right = receptive_box(layer, y, xx, 28)
        assert len(rows) and rows.min() >= top and rows.max() <= bottom, layer.name
        assert cols.min() >= left and cols.max() <= right, layer.name
        if name == "lenet5":
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == (top, bottom, left, right), layer.name


def test_a_units_arithmetic_matches_the_network():
    """nnott-alexnet's conv2 (batch normalization, ReLU): the sum of input x kernel + bias, and each step
    after it, against the trunk run module by module."""
    torch.manual_seed(1)
    model = create_model("nnott-alexnet", num_classes=10).eval()
    for m in model.modules():  # batch statistics of a trained net, not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    preset = Preset(train=False, crop=28, base_size=28, norm=Normalization.per_channel([40.0], [80.0]))
    ex = Explainer(Loaded(model, preset.to_dict(), list("0123456789"), list("0123456789"), None, "n"))
    image = digit_images(1, seed=3)[0]
    unit = ex.unit(image, "conv2", 7, 4, 9)
    f = model.features
    with torch.no_grad():
        h = f.pool1(f.act1(f.bn1(f.conv1((image[None].float() - 40.0) / 80.0))))
        z = f.conv2(h)
        bn = f.bn2(z)
        act = torch.relu(bn)
    assert unit["sum"] == pytest.approx(float(z[0, 7, 4, 9]), abs=1e-4)
    assert [s["op"] for s in unit["steps"]] == ["batch normalization", "ReLU"]
    assert unit["steps"][0]["value"] == pytest.approx(float(bn[0, 7, 4, 9]), abs=1e-4)
    assert unit["value"] == pytest.approx(float(act[0, 7, 4, 9]), abs=1e-5)
    total = sum(t["sum"] for t in unit["terms"]) + unit["rest"] + unit["bias"]
    assert total == pytest.approx(unit["sum"], abs=1e-4)
    assert unit["box"] == list(receptive_box(ex.layer("conv2"), 4, 9, 28))
    with pytest.raises(ValueError, match="no unit"):
        ex.unit(image, "conv2", 7, 14, 0)


def test_index_keeps_the_images_that_excite_each_map_most():
    loaded, mean, std = small_loaded()
    ex = Explainer(loaded)
    images = digit_images(30, seed=6)
    index = train_index(ex, TensorImageSet(images, np.arange(30) % 10), None, examples=4, batch_size=8)
    f = loaded.model.features
    with torch.no_grad():
        conv3 = f[:10]((images.float() - mean) / std)  # through act3: conv1 ... conv3 + ReLU
    assert isinstance(f[9], torch.nn.ReLU)
    peak = conv3.flatten(2).max(2)  # (N, C)
    best = peak.values.topk(4, dim=0)
    got = index.examples["conv3"]
    assert torch.allclose(got["values"], best.values.t(), atol=1e-5)
    assert torch.equal(got["images"], best.indices.t())
    assert torch.equal(got["positions"], peak.indices.gather(0, best.indices).t())


def test_split_report_counts_and_threshold():
    loaded, mean, std = small_loaded(seed=4)
    ex = Explainer(loaded)
    images = digit_images(20, seed=7)
    labels = np.arange(20) % 10
    index = EmbeddingIndex(torch.randn(15, loaded.model.embed_dim), torch.arange(15), torch.arange(15) % 10)
    report = split_report(ex, TensorImageSet(images, labels), index, batch_size=6)
    with torch.no_grad():
        logits = loaded.model((images.float() - mean) / std)
        emb = loaded.model.embed((images.float() - mean) / std)
    predicted = logits.argmax(1)
    assert report.predicted.tolist() == predicted.tolist()
    confusion = np.zeros((10, 10), int)
    for y, p in zip(labels, predicted.tolist()):
        confusion[y, p] += 1
    assert report.confusion(10).tolist() == confusion.tolist()
    nearest = [min(float(((e - f) ** 2).sum().sqrt()) for f in index.features) for e in emb]
    assert report.nearest.tolist() == pytest.approx(nearest, rel=1e-4)
    assert report.unlike() == pytest.approx(float(np.quantile(nearest, 0.99)), rel=1e-4)
