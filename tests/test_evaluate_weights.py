"""Which of a run's two checkpoints evaluation, ensembles, prediction and export use: the rule training
reports by (best.pt where it was chosen on another split than the one reported, last.pt where the
reported split is val, the split that chose best.pt), and each says which and why.

One run (lenet5 on the digits, one epoch) is made for the module; its best.pt is then given other weights
(fc output weights zeroed), so that the numbers tell which checkpoint was evaluated."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from alexnet.checkpoint import load_checkpoint, save_checkpoint
from alexnet.data.selection import reported_weights
from alexnet.inference.load import load_trained, run_weights

OUTPUT = "classifier.output.weight"  # lenet5's output layer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from alexnet.cli import main

    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--model", "lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "64",
                 "--quiet", "--out", str(out), "--name", "r"]) == 0
    run = out / "r"
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    best["model"][OUTPUT] = torch.zeros_like(best["model"][OUTPUT])
    save_checkpoint(run / "checkpoints" / "best.pt", best)
    return run


def as_val_only(run, tmp_path):
    """A copy of ``run`` as a run on data without a test split (ILSVRC-2012) records itself: it reported
    on val."""
    copy = shutil.copytree(run, tmp_path / "val-only")
    results = json.loads((copy / "results.json").read_text())
    (copy / "results.json").write_text(json.dumps({**results, "test_split": "val"}))
    return copy


def evaluate(cli, *args):
    r = cli("evaluate", *args, "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_rule():
    on_val = reported_weights("val")
    assert on_val.which == "last" and "best.pt was chosen on it" in on_val.why
    assert str(reported_weights("test")) == "best: chosen on val, reported on test"
    assert reported_weights("train").which == "best"
    assert reported_weights("test", has_best=False).which == "last"
    assert "no results.json" in reported_weights(None).why


def test_evaluate_on_val_reports_the_last_weights_and_says_why(run, cli, tmp_path):
    """The reported split chose best.pt: each run directory of an ensemble is evaluated with its last.pt,
    whose numbers are those of last.pt given by name, not best.pt's; the table says which and why."""
    other = shutil.copytree(run, tmp_path / "other")
    ckpts = run / "checkpoints"
    got = evaluate(cli, run, other, ckpts / "last.pt", ckpts / "best.pt", "--split", "val")
    rows = [row["loss"] for row in got["results"]]  # run, other, last.pt, best.pt, their ensemble
    assert rows[0] == rows[1] == rows[2] != rows[3]
    assert list(got["weights"]) == [str(run), str(other)]  # files given by name are used as given
    for why in got["weights"].values():
        assert why.startswith("last.pt (epoch 1): val is the split reported, and best.pt was chosen on it")
    table = cli("evaluate", run, "--split", "val")
    assert f"weights of {run}: last.pt (epoch 1): val is the split reported" in table.stdout


def test_evaluate_on_test_reports_best(run, cli):
    got = evaluate(cli, run, run / "checkpoints" / "best.pt")
    assert got["split"] == "test" and got["results"][0]["loss"] == got["results"][1]["loss"]
    assert got["weights"][str(run)] == "best.pt (epoch 1): chosen on val, reported on test"


def test_predict_export_and_loading_default_to_what_the_run_reported(run, cli, tmp_path):
    """Without a split, a run directory stands for the weights it reported: best.pt on the digits (it
    reported on test), last.pt where it reported on val; before it reports, its latest weights."""
    val_only = as_val_only(run, tmp_path)
    last_w = load_checkpoint(run / "checkpoints" / "last.pt")["model"][OUTPUT]
    assert torch.equal(load_trained(str(val_only)).model.state_dict()[OUTPUT], last_w)
    assert not load_trained(str(run)).model.state_dict()[OUTPUT].any()  # best.pt, zeroed above
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (28, 28), 128).save(image)
    assert "best.pt (epoch 1): chosen on val, reported on test" in cli("predict", run, image).stderr
    assert "last.pt (epoch 1): val is the split reported" in cli("predict", val_only, image).stderr
    r = cli("export", val_only, "-o", tmp_path / "m.safetensors")
    assert r.returncode == 0 and "last.pt (epoch 1)" in r.stderr, r.stderr
    exported = load_trained(str(tmp_path / "m.safetensors")).model.state_dict()[OUTPUT]
    assert torch.equal(exported, last_w)
    (val_only / "results.json").unlink()  # a run that has not finished
    path, choice = run_weights(val_only)
    assert path.name == "last.pt" and "no results.json" in choice.why


def test_no_last_weights_where_only_they_may_be_reported(run, cli, tmp_path):
    val_only = as_val_only(run, tmp_path)
    (val_only / "checkpoints" / "last.pt").unlink()
    r = cli("evaluate", val_only, "--split", "val")
    assert r.returncode == 2 and "no checkpoints/last.pt" in r.stderr and "best.pt" in r.stderr
    assert "Traceback" not in r.stderr
    (val_only / "results.json").unlink()  # reported on nothing yet: the weights it has stand for it
    path, choice = run_weights(val_only)
    assert path.name == "best.pt" and "no last.pt" in choice.why
