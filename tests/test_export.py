"""``alexnet export``: every model and option to ONNX (checked in onnxruntime), torch.export programs
(checked with ``torch.export.load``) and safetensors (loaded back by ``create_model(weights=...)``)."""

import json

import numpy as np
import pytest
import torch

import alexnet
from alexnet.cli import main
from alexnet.data.transforms import Normalization, Preset, preset_to_json
from alexnet.inference.export import export
from alexnet.inference.load import Loaded

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
safetensors = pytest.importorskip("safetensors")

TOL = 1e-4  # max abs difference of float32 logits, batch 1 and 7


def loaded_model(name, num_classes=5, seed=0, **options):
    torch.manual_seed(seed)
    model = alexnet.create_model(name, num_classes=num_classes, **options).eval()
    c, _, side = model.input_size
    preset = Preset(train=False, crop=side, base_size=side, norm=Normalization.per_channel([10.0] * c,
                                                                                           [50.0] * c))
    classes = [f"c{i}" for i in range(num_classes)]
    return Loaded(model, preset.to_dict(), classes, [n.upper() for n in classes], None, name, options)


def onnxruntime_logits(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def assert_onnx_matches(path, model):
    for batch in (1, 7):
        x = torch.randn(batch, *model.input_size)
        with torch.no_grad():
            want = model(x).numpy()
        got = onnxruntime_logits(path, x)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= TOL


SMALL = {"in_chans": 3, "img_size": 32}
# The paper's ablations on the small network (same layers, fast to export); the paper and
# cuda-convnet LRN readings with two towers are in test_lrn_readings_stay_apart_in_onnx.
OPTIONS = [
    ("alexnet-small", {**SMALL, "lrn_mode": "caffe", "towers": 1}),
    ("alexnet-small", {**SMALL, "activation": "tanh", "lrn": False, "overlap_pool": False}),
    ("lenet5", {}),
]


@pytest.mark.parametrize("name, options", OPTIONS)
def test_onnx_in_onnxruntime_matches_pytorch(name, options, tmp_path):
    item = loaded_model(name, **options)
    path = tmp_path / "m.onnx"
    out = export(item, "onnx", path, check=False)  # checked here, independently of export's own check
    assert out["path"] == str(path) and path.stat().st_size == out["bytes"]
    assert_onnx_matches(path, item.model)
    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    # a dynamic batch dimension
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(item.model.input_size)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["alexnet"])
    assert (meta["model"], meta["options"], meta["class_names"][0]) == (name, options, "C0")


def test_lrn_readings_stay_apart_in_onnx(tmp_path):
    # ONNX's LRN operator divides alpha by the size; the paper's reading must not silently become
    # cuda-convnet's. Same weights, two readings: onnxruntime must reproduce each one's own logits.
    paper = loaded_model("alexnet-small", **SMALL, lrn_mode="paper")
    convnet = loaded_model("alexnet-small", **SMALL, lrn_mode="cuda-convnet")
    convnet.model.load_state_dict(paper.model.state_dict())
    x = torch.rand(3, 3, 32, 32) * 255  # raw pixels: large activations, where the two readings differ
    outs = []
    for item, name in ((paper, "paper.onnx"), (convnet, "convnet.onnx")):
        export(item, "onnx", tmp_path / name, check=False)
        got = onnxruntime_logits(tmp_path / name, x)
        with torch.no_grad():
            np.testing.assert_allclose(got, item.model(x).numpy(), rtol=1e-4, atol=TOL)
        outs.append(got)
    assert np.abs(outs[0] - outs[1]).max() > 100 * TOL


def test_pt2_runs_with_torch_export_load(tmp_path):
    item = loaded_model("alexnet-small", **SMALL, towers=2, activation="tanh")
    path = tmp_path / "m.pt2"
    export(item, "pt2", path, check=False)
    extra = {"alexnet.json": ""}
    program = torch.export.load(str(path), extra_files=extra).module()
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            assert (program(x) - item.model(x)).abs().max().item() <= TOL
    assert json.loads(extra["alexnet.json"])["options"]["activation"] == "tanh"


def test_safetensors_metadata_and_create_model(tmp_path):
    from safetensors import safe_open

    item = loaded_model("alexnet-small", **SMALL, towers=1, lrn_mode="caffe")
    path = tmp_path / "m.safetensors"
    export(item, "safetensors", path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["alexnet"])
        assert set(f.keys()) == set(item.model.state_dict())
    assert meta["model"] == "alexnet-small" and meta["options"]["lrn_mode"] == "caffe"
    assert meta["classes"] == item.classes and meta["preset"] == preset_to_json(item.preset)
    again = alexnet.create_model("alexnet-small", weights=path)
    assert again.features.norm1.k == 1.0 and again.towers == 1  # caffe's k, one tower
    assert list(again.pretrained_cfg.class_names) == item.class_names
    for k, v in item.model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


@pytest.mark.slow
def test_cli_exports_alexnet2012_from_a_weights_file(tmp_path, cli):
    # The full network (paper LRN, two towers) through the command line, once.
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet2012", num_classes=10, init="kaiming").eval()
    weights = tmp_path / "paper.pth"
    torch.save(model.state_dict(), weights)
    r = cli("export", weights, "-o", tmp_path / "paper.onnx", "--no-check", timeout=300)  # checked here
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {tmp_path / 'paper.onnx'} (onnx, ")
    assert_onnx_matches(tmp_path / "paper.onnx", model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paper.onnx", "paper.pth"]  # no temporary left


def test_bad_exports_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    item = loaded_model("lenet5")
    weights = tmp_path / "lenet.safetensors"
    export(item, "safetensors", weights)
    foreign = tmp_path / "foreign.pt"
    torch.save({"backbone.weight": torch.zeros(3, 3)}, foreign)
    kept = tmp_path / "kept.onnx"
    kept.write_bytes(b"an older file")
    (tmp_path / "folder.onnx").mkdir()
    cases = [
        ["export", str(weights), "-o", str(tmp_path / "no" / "such" / "m.onnx")],  # missing folder
        ["export", str(weights), "-o", str(tmp_path / "folder.onnx")],  # a folder
        ["export", str(weights), "-o", str(tmp_path / "m.bin")],  # unknown format
        ["export", str(foreign), "-o", str(kept)],  # a checkpoint from elsewhere
        ["export", str(weights), "--model", "alexnet2012", "-o", str(kept)],  # another model
        ["export", str(tmp_path / "missing.pt"), "-o", str(kept)],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("alexnet: error:"), (args, err)
    assert kept.read_bytes() == b"an older file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.onnx", "foreign.pt", "kept.onnx",
                                                          "lenet.safetensors"]


def test_export_from_a_run_directory_keeps_its_description(tmp_path, capsys):
    from alexnet.checkpoint import save_checkpoint

    item = loaded_model("lenet5", num_classes=3, activation="relu")
    run = tmp_path / "runs" / "r1"
    save_checkpoint(run / "checkpoints" / "best.pt", dict(
        model=item.model.state_dict(), model_name="lenet5", num_classes=3,
        model_options={"activation": "relu"},
        classes=item.classes, class_names=item.class_names, preset=item.preset, data="digits"))
    out = tmp_path / "r1.pt2"
    assert main(["export", str(run), "-o", str(out)]) == 0
    assert "torch.export.load vs PyTorch" in capsys.readouterr().out
    extra = {"alexnet.json": ""}
    program = torch.export.load(str(out), extra_files=extra).module()
    meta = json.loads(extra["alexnet.json"])
    assert (meta["options"], meta["data"], meta["class_names"]) == ({"activation": "relu"}, "digits",
                                                                    item.class_names)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert (program(x) - item.model(x)).abs().max().item() <= TOL
