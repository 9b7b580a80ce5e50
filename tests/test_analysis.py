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
