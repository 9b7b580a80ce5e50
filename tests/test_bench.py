"""``alexnet bench``: the plain references compute what the zoo models compute, the ratios are what
they say, and the commands run, report and refuse bad input."""

import json

import pytest
import torch

from alexnet.bench.reference import REFERENCES, reference_model
from alexnet.bench.timing import Timed, ratio
from alexnet.models import create_model, list_models, model_options


def test_every_model_has_a_reference():
    assert sorted(REFERENCES) == sorted(list_models())


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_is_the_same_network(name):
    """Our weights, copied in order into the stock-layer reference, give our logits: the benchmark
    compares two implementations of one function, not two networks."""
    torch.manual_seed(0)
    opts = {"init": "kaiming"} if "init" in model_options(name) else {}
    ours = create_model(name, num_classes=10, **opts).eval()
    ref = reference_model(name, 10).eval()
    mine, theirs = list(ours.parameters()), list(ref.parameters())
    assert [p.shape for p in mine] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            b.copy_(a)
        x = torch.rand(3, *ours.input_size) * 2
        want, got = ours(x), ref(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_ratio_is_the_median_of_per_round_ratios():
    slow, fast = Timed("ref", [2.0, 4.0, 6.0, 10.0]), Timed("ours", [1.0, 1.0, 2.0, 2.0])
    assert ratio(slow, fast) == pytest.approx((3.0 + 4.0) / 2)  # per round: 2, 4, 3, 5
    assert Timed("t", [4.0, 1.0, 3.0, 2.0]).quantile(0.25) == pytest.approx(1.75)


def test_bench_train_json(cli):
    r = cli("bench", "train", "--model", "lenet5", "--batch-size", "8", "--steps", "3", "--warmup", "1",
            "--channels-last", "--peak-tflops", "1.0", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report["results"]) == {"ours", "ours, plain", "reference"}
    ours = report["results"]["ours"]
    assert ours["images_per_s"] == pytest.approx(8 / (ours["ms_per_step"] / 1e3))
    # FLOPs from the summary's multiply-adds: 2 per multiply-add, x3 for forward + backward
    assert report["model_flops_per_image"] == 6 * report["macs_per_image"]
    assert ours["mfu"] == pytest.approx(ours["tflops"] / 1.0)
    assert report["ratio"] > 0 and report["ratio_plain"] > 0
    assert report["machine"]["torch"] == torch.__version__


def test_bench_infer_table(cli):
    r = cli("bench", "infer", "--model", "alexnet-small", "--batch-size", "4", "--steps", "2", "--warmup", "0")
    assert r.returncode == 0, r.stderr
    assert "ours / reference:" in r.stdout and "model FLOP utilisation" in r.stdout
    assert "ours, plain" not in r.stdout  # no flags given: ours is the plain path


def test_bench_lrn_json(cli):
    r = cli("bench", "lrn", "--shape", "2,16,7,9", "--layout", "both", "--rounds", "2", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [row["layout"] for row in report["rows"]] == ["NCHW", "channels_last"]
    for row in report["rows"]:
        assert row["max_rel_diff"]["ours"] < 1e-6
        assert row["forward_backward_ratio"]["ours"] > 0


@pytest.mark.parametrize("args, words", [
    (["train", "--model", "resnet50"], "resnet50"),
    (["train", "--model", "lenet5", "--batch-size", "0"], "--batch-size"),
    (["train", "--model", "lenet5", "--cuda-graphs", "--device", "cpu"], "CUDA"),
    (["lrn", "--shape", "1,2"], "--shape"),
])
def test_bench_bad_input(cli, args, words):
    r = cli("bench", *args)
    assert r.returncode == 2
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
