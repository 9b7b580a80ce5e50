"""``alexnet features`` and :func:`alexnet.extract_features`: layer names, values against the layers
computed by hand, a whole dataset to .npz (vectors, labels, file names), bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_images

import alexnet
from alexnet.cli import main
from alexnet.data.transforms import torchvision_eval_preset

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_layer_names_follow_the_paper():
    names = alexnet.layer_names(alexnet.create_model("alexnet2012"))
    assert {k: names[k] for k in ("conv1", "conv5", "pool5", "fc6", "fc7", "fc8")} == {
        "conv1": "features.act1", "conv5": "features.act5", "pool5": "pool",
        "fc6": "classifier.act6", "fc7": "classifier.act7", "fc8": "classifier.fc8"}
    owt = alexnet.layer_names(alexnet.create_model("alexnet-owt"))  # torchvision's numbered modules
    assert {k: owt[k] for k in ("conv1", "conv2", "conv5", "fc6", "fc7", "fc8")} == {
        "conv1": "features.1", "conv2": "features.4", "conv5": "features.11",
        "fc6": "classifier.2", "fc7": "classifier.5", "fc8": "classifier.6"}


def test_values_are_the_layers_computed_by_hand():
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet-owt", num_classes=7).eval()
    sd = model.state_dict()
    x = torch.randn(2, 3, 224, 224)
    conv1 = F.relu(F.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], stride=4, padding=2))
    torch.testing.assert_close(alexnet.extract_features(model, x, "conv1"), conv1.flatten(1))
    small = alexnet.create_model("alexnet-small", num_classes=7).eval()
    s = small.state_dict()
    y = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        flat = small.forward_features(y).flatten(1)
    fc6 = F.relu(F.linear(flat, s["classifier.fc6.weight"], s["classifier.fc6.bias"]))
    fc7 = F.relu(F.linear(fc6, s["classifier.fc7.weight"], s["classifier.fc7.bias"]))
    torch.testing.assert_close(alexnet.extract_features(small, y, "pool5"), flat)
    torch.testing.assert_close(alexnet.extract_features(small, y, "fc7"), fc7)
    logits = F.linear(fc7, s["classifier.fc8.weight"], s["classifier.fc8.bias"])
    torch.testing.assert_close(alexnet.extract_features(small, y, "fc8"), logits)
    assert alexnet.extract_features(small, y, "features.conv2").shape == (3, 128 * 13 * 13)  # raw conv output


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Two classes of real photo crops (odd sizes) and one broken file, in the ImageFolder layout."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c, image in enumerate(load_sample_images().images):
        (root / f"class{c}").mkdir()
        for i in range(10):
            h, w = rng.integers(120, 300, size=2)
            t, l_ = rng.integers(0, 427 - h), rng.integers(0, 640 - w)
            Image.fromarray(image[t:t + h, l_:l_ + w]).save(root / f"class{c}" / f"img{i}.png")
    (root / "class0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_cli_writes_a_whole_split(photo_folder, tmp_path, capsys):
    # torchvision-layout weights (not in the registry): read with torchvision's resize and crop.
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet-owt", num_classes=2).eval()
    weights = tmp_path / "owt.pth"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "feats.npz"
    assert main(["features", str(weights), "--data", f"folder:{photo_folder}", "--split", "train", "--layer",
                 "fc6",
                 "--batch-size", "6", "--device", "cpu", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "wrote" in captured.out
    got = np.load(out)
    files = [str(f) for f in got["files"]]
    assert len(files) == len(got["labels"]) == got["features"].shape[0] and got["features"].shape[1] == 4096
    assert len(files) == 16 and all("broken" not in f for f in files) and str(got["layer"]) == "fc6"
    # Each row is fc6 after its ReLU of that very file, normalized here as torchvision does.
    preset = torchvision_eval_preset()
    pixels = torch.stack([preset.load(f) for f in files]).float() / 255
    x = (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    s = model.state_dict()
    with torch.no_grad():
        want = F.relu(F.linear(model.forward_features(x).flatten(1), s["classifier.1.weight"],
                               s["classifier.1.bias"]))
    np.testing.assert_allclose(got["features"], want.numpy(), rtol=1e-4, atol=1e-4)
    assert [int(y) for y in got["labels"]] == [int("class1" in f) for f in files]
    assert list(got["class_names"]) == ["class0", "class1"]  # the dataset's classes, which labels index


def test_unknown_layer_and_bad_target_are_one_line_errors(tmp_path, capsys):
    weights = tmp_path / "small.pth"
    torch.save(alexnet.create_model("alexnet-small", num_classes=10).state_dict(), weights)
    out = tmp_path / "f.npz"
    for args in (["--layer", "fc9", "-o", str(out)], ["--layer", "fc7", "-o",
                                                      str(tmp_path / "nope" / "f.npz")]):
        assert main(["features", str(weights), "--data", "digits", "--device", "cpu", *args]) == 2
        err = [line for line in capsys.readouterr().err.splitlines()
               if line.strip() and not line.startswith("alexnet: note:")]
        assert len(err) == 1 and err[0].startswith("alexnet: error:"), err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["small.pth"]


def test_evaluate_weights_reads_the_folder_as_torchvision(photo_folder, tmp_path, capsys):
    torch.manual_seed(1)
    model = alexnet.create_model("alexnet-owt", num_classes=2).eval()
    with torch.no_grad():  # random weights give near-equal logits for any image: spread them
        model.classifier[6].weight.mul_(3000)
    weights = tmp_path / "owt2.pth"
    torch.save(model.state_dict(), weights)
    assert main(["evaluate", "--weights", str(weights), "--data", f"folder:{photo_folder}", "--split",
                 "train",
                 "--format", "json", "--device", "cpu"]) == 0
    result = __import__("json").loads(capsys.readouterr().out)["results"][0]
    preset = torchvision_eval_preset()
    from alexnet.data import build_source

    split = build_source(f"folder:{photo_folder}").split("train")
    paths = [split.path(i) for i in range(len(split)) if not split.path(i).endswith("broken.jpg")]
    pixels = torch.stack([preset.load(p) for p in paths]).float() / 255
    x = (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    labels = torch.tensor([int("class1" in p) for p in paths])
    with torch.no_grad():
        logits = model(x)
    assert result["count"] == len(paths)
    assert result["top1_accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    # the loss moves with every pixel: the files were read and normalized as torchvision does
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)
