"""``alexnet bench``: the plain references compute what the zoo models compute; with a fake clock
giving each step a known duration, the reported times, rates, FLOPs and ratios equal numbers worked
out by hand; the commands run, report and refuse bad input."""

import contextlib
import datetime
import itertools
import json

import pytest
import torch
from helpers.clock import install
from helpers.lrn import MODES
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from alexnet.bench.reference import REFERENCES, reference_model
from alexnet.timing import Timed, alternate, ratio
from alexnet.cli import main
from alexnet.models import create_model, list_models, model_options


def test_every_model_has_a_reference():
    assert sorted(REFERENCES) == sorted(list_models())


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_is_the_same_network(name):
    """Our weights, copied in order into the stock-layer reference, give our logits: the benchmark
    compares two implementations of one function, not two networks."""
    torch.manual_seed(0)
    opts = {"init": "kaiming"} if "init" in model_options(name) else {}
    if "dropout_form" in model_options(name):  # the reference's nn.Dropout: same cost, no x0.5 at test time
        opts["dropout_form"] = "inverted"
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
    # quartiles by linear interpolation between order statistics: of 1, 2, 3, 4 -> 1.75, 2.5, 3.25
    assert Timed("t", [4.0, 1.0, 3.0, 2.0]).quartiles() == pytest.approx((1.75, 2.5, 3.25))


# LeNet-5's multiply-adds at 28x28, by hand from its layer shapes: output positions x kernel size.
LENET5_MACS = (28 * 28 * 6 * (1 * 5 * 5)       # C1: 6 maps of 28x28 (the input padded by 2), 5x5x1 kernels
               + 10 * 10 * 16 * (6 * 5 * 5)    # C3: 16 maps of 10x10, 5x5x6 kernels
               + 1 * 1 * 120 * (16 * 5 * 5)    # C5: 120 maps of 1x1, 5x5x16 kernels
               + 120 * 84 + 84 * 10)           # F6, output


@contextlib.contextmanager
def model_calls_take(clock, seconds_of):
    """Every outermost module call (a whole model, not its layers) advances ``clock`` by
    ``seconds_of(module)``, so each timed step lasts a duration the test chose."""
    depth = 0

    def enter(module, args):
        nonlocal depth
        if depth == 0:
            clock.advance(seconds_of(module))
        depth += 1

    def leave(module, args, output):
        nonlocal depth
        depth -= 1

    handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_main(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_alternate_rotates_the_order_and_times_each_call(monkeypatch):
    clock = install(monkeypatch)
    order = []
    # seconds of each call of each contender: one warm-up call, then three timed rounds
    seconds = {"a": iter([9.0, 0.3, 0.6, 0.9]), "b": iter([9.0, 0.1, 0.1, 0.3]),
               "c": iter([9.0, 0.2, 0.2, 0.2])}

    def call(name):
        def step():
            order.append(name)
            clock.advance(next(seconds[name]))
        return step

    timed = alternate({n: call(n) for n in "abc"}, torch.device("cpu"), rounds=3, warmup=1, memory=False)
    assert order == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, then rotated rounds
    assert timed["a"].times == pytest.approx([0.3, 0.6, 0.9])  # the 9 s warm-up call is not timed
    assert timed["b"].times == pytest.approx([0.1, 0.1, 0.3])
    assert timed["a"].median == pytest.approx(0.6)
    # per round 3, 6 and 3: the median is 3 (the ratio of the medians would be 6)
    assert ratio(timed["a"], timed["b"]) == pytest.approx(3.0)


def is_channels_last(model: nn.Module) -> bool:
    return any(p.dim() == 4 and p.shape[1] > 1 and p.stride(1) == 1 for p in model.parameters())


def test_bench_train_reports_rates_computed_by_hand(monkeypatch, capsys):
    """With steps of known duration, times, images/s, FLOP/s, MFU and the ratios are numbers worked
    out by hand."""
    clock = install(monkeypatch)
    # seconds per step of 8 images, each contender's calls taking these in turn; three timed steps
    # see all three values in some order, whatever the number of warm-up calls before them
    seconds = {"ours": [0.030, 0.040, 0.080], "ours, plain": [0.050], "reference": [0.100]}
    turns = {label: itertools.cycle(s) for label, s in seconds.items()}

    def step_seconds(model):
        if type(model) is nn.Sequential:  # the plain reference is one stock nn.Sequential
            return next(turns["reference"])
        return next(turns["ours" if is_channels_last(model) else "ours, plain"])

    with model_calls_take(clock, step_seconds):
        out = run_main(capsys, "bench", "train", "--model", "lenet5", "--batch-size", 8, "--steps", 3,
                       "--warmup", 1, "--channels-last", "--peak-tflops", 2.0, "--device", "cpu", "--json")
    report = json.loads(out)
    assert (report["model"], report["batch_size"], report["input_size"]) == ("lenet5", 8, [1, 28, 28])
    assert report["macs_per_image"] == LENET5_MACS
    flops = 2 * 3 * LENET5_MACS  # 2 FLOPs per multiply-add; forward + a backward of twice its cost
    assert report["model_flops_per_image"] == flops
    assert set(report["results"]) == set(seconds)
    # median, 25th and 75th percentiles (linear interpolation) of the step times, in ms
    spread = {"ours": (40.0, 35.0, 60.0), "ours, plain": (50.0,) * 3, "reference": (100.0,) * 3}
    for label, (median, p25, p75) in spread.items():
        r = report["results"][label]
        assert (r["ms_per_step"], r["ms_p25"], r["ms_p75"]) == pytest.approx((median, p25, p75)), label
        assert r["images_per_s"] == pytest.approx(8 / (median / 1e3)), label
        assert r["tflops"] == pytest.approx(flops * 8 / (median / 1e3) / 1e12), label
    assert report["results"]["ours"]["mfu"] == pytest.approx(flops * 200 / 1e12 / 2.0)
    assert report["peak_tflops"] == 2.0
    # per round 0.1 s over 0.03, 0.04 and 0.08 s: 3.33, 2.5 and 1.25, median 2.5
    assert report["ratio"] == pytest.approx(2.5)
    assert report["ratio_plain"] == pytest.approx(0.100 / 0.050)
    assert report["ratio_torchvision"] is None  # only alexnet-owt is compared with torchvision
    # the record of where it ran is of this run: today's date (UTC), read from the system clock
    day = datetime.date.fromisoformat(report["machine"]["date"][:10])
    assert abs(day - datetime.datetime.now(datetime.timezone.utc).date()) <= datetime.timedelta(days=1)


def test_bench_infer_table(cli):
    """End to end in a subprocess with the real clock and the peak rate measured by a matmul."""
    r = cli("bench", "infer", "--model", "alexnet-small", "--batch-size", "4", "--steps", "2",
            "--warmup", "0")
    assert r.returncode == 0, r.stderr
    assert "ours / reference:" in r.stdout and "model FLOP utilisation" in r.stdout
    assert "ours, plain" not in r.stdout  # no flags given: ours is the plain path


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # torch.ao's deprecation notice
def test_bench_infer_int8_is_checked_and_profiled(capsys):
    """``--int8`` on the real clock: the report names the path, checks its logits against the same
    weights in eager float32 within the bounds it states, and ``--profile`` times each contender's
    layers by family: the reference's are those of its architecture (bench/reference.py)."""
    torch.manual_seed(0)
    out = run_main(capsys, "bench", "infer", "--model", "nnott-lenet", "--batch-size", 32, "--steps", 1,
                   "--warmup", 0, "--int8", "--profile", "--peak-tflops", 1.0, "--device", "cpu", "--json")
    report = json.loads(out)
    assert report["int8"] and report["ours"].startswith("int8")
    check = report["check"]
    assert (check["precision"], check["images"]) == ("int8", 32)
    assert check["tolerance"] == {"relative_error": 0.05, "top1_agreement": 0.85}
    assert check["relative_error"] < 0.05 and check["top1_agreement"] >= 0.85 and check["within"]
    assert report["ratio"] > 0
    assert set(report["profile"]) == {"ours", "ours, plain", "reference"}
    timed = {family for family, ms in report["profile"]["reference"].items() if ms > 0}
    # conv, batch norm, ReLU, max-pool (twice), conv, ReLU, then linear layers
    assert timed >= {"convolution", "batch norm", "activation", "pooling", "linear", "step"}
    assert report["profile"]["ours"]["int8 quantize / dequantize"] > 0  # only ours converts


def test_bench_lrn_json(monkeypatch, capsys):
    clock = install(monkeypatch)
    seconds = {"ours": 0.002, "torch": 0.005}  # per call
    def call_seconds(module):
        return seconds["torch" if isinstance(module, nn.LocalResponseNorm) else "ours"]

    import alexnet.bench.model as bench_model

    real_lrn = bench_model.local_response_norm

    def eager_ops(*args, **kw):  # the "ours, eager ops" contender is a function, not a module
        clock.advance(0.004)
        return real_lrn(*args, **kw)

    monkeypatch.setattr(bench_model, "local_response_norm", eager_ops)
    with model_calls_take(clock, call_seconds):
        out = run_main(capsys, "bench", "lrn", "--shape", "2,16,7,9", "--layout", "both", "--rounds", 2,
                       "--device", "cpu", "--json")
    report = json.loads(out)
    n, alpha, beta, k, _ = MODES["paper"]  # the paper's constants, printed in section 3.3
    assert (report["size"], report["alpha"], report["beta"], report["k"]) == (n, alpha, beta, k)
    assert [row["layout"] for row in report["rows"]] == ["NCHW", "channels_last"]
    for row in report["rows"]:
        assert row["shape"] == [2, 16, 7, 9]
        assert row["max_rel_diff"]["ours"] < 1e-6  # against nn.LocalResponseNorm, computed for real
        for key in ("forward_ms", "forward_backward_ms"):
            assert row[key] == pytest.approx({"ours": 2.0, "ours, eager ops": 4.0, "torch": 5.0}), key
        for key in ("forward_ratio", "forward_backward_ratio"):
            assert row[key] == pytest.approx({"ours": 2.5, "ours, eager ops": 1.25}), key


@pytest.mark.parametrize("args, words", [
    (["train", "--model", "resnet50"], "resnet50"),
    (["train", "--model", "lenet5", "--batch-size", "0"], "--batch-size"),
    (["train", "--model", "lenet5", "--cuda-graphs", "--device", "cpu"], "CUDA"),
    (["lrn", "--shape", "1,2"], "--shape"),
    (["infer", "--model", "lenet5", "--int8", "--amp", "bf16"], "--int8"),
])
def test_bench_bad_input(cli, args, words):
    r = cli("bench", *args)
    assert r.returncode == 2
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
