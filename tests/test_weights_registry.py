"""The weights registry, the shipped class names, and loading weight files of every origin."""

import dataclasses
import hashlib
import json

import pytest
import torch

import alexnet
from alexnet.cli import main
from alexnet.models import weights as W
from alexnet.models.weights import WeightsError, load_weights, match_architecture
from alexnet.checkpoint import save_checkpoint


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_imagenet_class_names_are_torchvisions():
    names = alexnet.imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    # A few well-known ILSVRC-2012 indices (sorted synsets): n01440764, n02123045, n02124075, n15075141.
    assert (names[0], names[1], names[281], names[285], names[999]) == (
        "tench", "goldfish", "tabby", "Egyptian cat", "toilet tissue")
    # torchvision renamed the two duplicated WordNet names (crane, maillot) to keep names unique.
    assert (names[134], names[517], names[638], names[639]) == ("crane bird", "crane", "maillot",
                                                                "maillot tank suit")


def test_registry_entry_describes_torchvisions_file():
    info = W.KNOWN_WEIGHTS["alexnet-owt.imagenet1k-v1"]
    assert info.file == "alexnet-owt-7be5be79.pth" and info.file.split("-")[-1].startswith(info.sha256)
    assert info.metrics == {"acc@1": 56.522, "acc@5": 79.066}
    model = alexnet.create_model(info.model, num_classes=info.num_classes, **info.options)
    assert sum(p.numel() for p in model.parameters()) == info.num_params == 61_100_840
    assert tuple(model.input_size) == info.input_size
    from alexnet.data.transforms import NAMED_PRESETS

    assert info.preset in NAMED_PRESETS and info.categories in W.CATEGORIES


def test_file_sha256_is_hashlibs(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 5000)  # over one read block
    assert W.file_sha256(path) == sha256(path)


def test_a_known_file_gets_the_registry_metadata(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "alexnet-owt-mine.pth"
    torch.save(alexnet.create_model("alexnet-owt").state_dict(), path)
    digest = sha256(path)
    entry = dataclasses.replace(W.KNOWN_WEIGHTS["alexnet-owt.imagenet1k-v1"], weights="test-entry",
                                sha256=digest[:8])
    monkeypatch.setattr(W, "KNOWN_WEIGHTS", {"test-entry": entry})
    model = alexnet.create_model("alexnet-owt", weights=path)
    cfg = model.pretrained_cfg
    assert cfg.weights == "test-entry" and cfg.sha256 == digest and cfg.note is None
    assert cfg.preset == "torchvision-eval" and list(cfg.class_names) == alexnet.imagenet_class_names()
    assert cfg.metrics["acc@1"] == 56.522 and cfg.input_size == (3, 224, 224)
    for k, v in torch.load(path, weights_only=True).items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("name, options", [
    ("alexnet2012", {"towers": 1}),
    ("alexnet2012", {"towers": 2}),
    ("alexnet-small", {"towers": 1, "in_chans": 3, "img_size": 32}),
    ("alexnet-small", {"towers": 2, "in_chans": 1, "img_size": 40}),
    ("lenet5", {"in_chans": 3, "img_size": 28}),  # 28 is padded to 32: both sizes fit these shapes
])
def test_unknown_files_are_matched_by_keys_and_shapes(name, options, tmp_path, capsys):
    with torch.device("meta"):
        state = alexnet.create_model(name, num_classes=7, **options).state_dict()
    found, opts, k = match_architecture(state)
    assert (found, k) == (name, 7)
    assert {key: opts[key] for key in options} == options


def test_unknown_file_loads_with_a_one_line_note(tmp_path, capsys):
    path = tmp_path / "small.pth"
    torch.save(alexnet.create_model("alexnet-small", num_classes=4, towers=1, in_chans=3,
                                    img_size=32).state_dict(),
               path)
    model = load_weights(path)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("alexnet: note:")
    assert sha256(path)[:12] in err
    assert (model.name, model.num_classes, model.towers, model.input_size) == ("alexnet-small", 4, 1, (3, 32,
                                                                                                       32))
    # options that leave no trace in the weights can be given
    assert load_weights(path, quiet=True, lrn_mode="caffe").features.norm1.k == 1.0


def test_our_checkpoints_carry_their_own_description(tmp_path):
    model = alexnet.create_model("alexnet-small", num_classes=3, activation="tanh")
    preset = {"crop": 28, "base_size": 28, "norm": {"mean": [[[1.0]]], "std": [[[2.0]]]}, "pad": 2,
              "flip": False,
              "lighting": None, "resized": False}
    path = tmp_path / "best.pt"
    save_checkpoint(path, dict(model=model.state_dict(), model_name="alexnet-small", num_classes=3,
                               model_options={"activation": "tanh"}, classes=["a", "b", "c"],
                               class_names=["A", "B", "C"], preset=preset, data="digits"))
    again = alexnet.create_model("alexnet-small", weights=path)
    assert isinstance(again.features.act1, torch.nn.Tanh)
    assert again.pretrained_cfg.class_names == ("A", "B", "C") and again.pretrained_cfg.note is None


def test_files_that_fit_no_model_or_another_model(tmp_path):
    small = tmp_path / "small.pth"
    torch.save(alexnet.create_model("alexnet-small", num_classes=10).state_dict(), small)
    with pytest.raises(WeightsError, match="holds alexnet-small weights, not lenet5"):
        alexnet.create_model("lenet5", weights=small)
    with pytest.raises(alexnet.models.ModelError, match="10 classes, not 1000"):
        alexnet.create_model("alexnet-small", weights=small, num_classes=1000)
    foreign = tmp_path / "resnet-ish.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, foreign)
    with pytest.raises(WeightsError, match="fits no option of any model"):
        load_weights(foreign)
    bent = alexnet.create_model("alexnet-small", num_classes=10).state_dict()
    bent["classifier.fc7.weight"] = torch.zeros(1024, 100)
    torch.save(bent, tmp_path / "bent.pth")
    with pytest.raises(WeightsError, match="fits no option"):
        load_weights(tmp_path / "bent.pth")


def test_cli_bad_weights_are_one_line_errors(tmp_path, capsys):
    paper = tmp_path / "paper.pth"
    torch.save(alexnet.create_model("alexnet-small", num_classes=10).state_dict(), paper)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    photo = tmp_path / "x.png"
    photo.write_bytes(b"")
    cases = [
        ["predict", "--weights", str(paper), "--model", "alexnet-owt", str(photo)],
        ["predict", "--weights", str(junk), str(photo)],
        ["predict", "--weights", str(tmp_path / "missing.pth"), str(photo)],
        ["predict", "--weights", str(paper)],  # no images
        ["evaluate", "--weights", str(paper)],  # no --data for a plain weights file
        ["evaluate"],
        ["predict"],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("alexnet: note:")]
        assert len(lines) == 1 and lines[0].startswith("alexnet: error:"), (args, err)


def test_evaluate_weights_on_a_dataset(tmp_path, capsys):
    # An exported small model evaluated on the embedded digits through --weights; the accuracy is
    # checked against the model run here on the same test images.
    from alexnet.data import build_source
    from alexnet.data.transforms import Normalization, Preset
    from alexnet.inference.export import export
    from alexnet.inference.load import Loaded

    torch.manual_seed(0)
    model = alexnet.create_model("alexnet-small", num_classes=10).eval()
    source = build_source("digits")
    preset = Preset(train=False, crop=28, base_size=28, norm=Normalization.per_channel([8.0], [30.0]))
    loaded = Loaded(model, preset.to_dict(), source.classes, source.class_names, "digits", "m", {})
    path = tmp_path / "digits.safetensors"
    export(loaded, "safetensors", path)
    assert main(["evaluate", "--weights", str(path), "--format", "json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)["results"][0]
    test = source.split("test")
    images, labels = test.get_batch(torch.arange(len(test)))
    with torch.no_grad():
        top1 = (model(preset(images)).argmax(1) == labels).float().mean().item()
    assert out["count"] == len(test) and out["top1_accuracy"] == pytest.approx(top1)
