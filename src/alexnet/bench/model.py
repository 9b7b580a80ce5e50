"""``alexnet bench train|infer|lrn``: our model path against a plain-PyTorch reference, side by side.

Every number is a comparison made in one process: the contenders are warmed up, then timed in
interleaved rounds (see :func:`alexnet.timing.alternate`), and ratios are medians of the
per-round ratios, so a machine whose load changes during the run still gives a fair ratio.

train / infer contenders, on synthetic tensors at the model's input size:
- ours: the zoo model through ``runtime.prepare_model`` / ``runtime.autocast`` with the flags given;
- ours, plain: the same model without flags (only when flags were given), to separate what the
  model path gains from what the flags gain;
- reference: the architecture as stock ``nn.Sequential`` layers (``bench/reference.py``), eager,
  float32, NCHW, ``nn.LocalResponseNorm``;
- torchvision: ``torchvision.models.alexnet`` (for alexnet-owt, when torchvision is importable).
A training step is forward, cross-entropy, backward and an SGD step (momentum 0.9, the same
optimizer for every contender); an inference step is a forward in ``torch.inference_mode``.

Every inference path other than plain float32 is checked on the timed batch against the same
weights run plain (eager, float32): the relative error of the logits (norm of the difference over
the norm) and the fraction of images whose top-1 class is the same, with the bound each precision
is held to (``TOLERANCES``); the weights are random, and when they give every image of the batch
the same float32 class the agreement tests no decision and is reported, not judged.
``--profile`` runs three steps of each eager contender under ``torch.profiler``, every layer in a
``record_function`` range named by its family (convolution, LRN, pooling, ...), and prints where the
time goes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import statistics
import time
from collections import defaultdict
from typing import Callable

import torch
from torch import nn

from .. import runtime
from ..cliargs import format_table
from ..errors import UserError
from ..models import create_model, model_cfg, model_options
from ..models.lrn import LRN_MODES, LocalResponseNorm, fused_kernel, local_response_norm
from ..models.summary import summarize
from ..provenance import environment
from ..timing import PeakMemory, alternate, matmul_tflops, ratio, sync
from .reference import reference_model

AMP_NAMES = {"off": "float32", "bf16": "bfloat16", "fp16": "float16"}
MB = 2**20
# (relative error of the logits at most, top-1 agreement at least) against eager float32, per precision:
# float32 paths reorder sums only; bf16 keeps 8 bits of mantissa (the bounds of tests/test_speed.py);
# int8 rounds every activation to 1 of 256 levels (alexnet2012, batch 64, random images: 1.2-1.4% and
# 100% with the paper's initialization, 2.7% and 91% with He's)
TOLERANCES = {"float32": (1e-4, 1.0), "bfloat16": (2e-2, 0.9), "float16": (2e-2, 0.9), "int8": (5e-2, 0.85)}


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)  # intra-op threads; the same for every contender


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def _state_bytes(model: nn.Module, opt: torch.optim.Optimizer | None) -> int:
    """Parameters, buffers and optimizer state: what a step keeps in memory between steps (an int8
    model's weights are its state dict's 8-bit tensors)."""
    # a quantized layer keeps its weight and bias as one packed entry, a tuple of tensors
    tensors = [t for v in model.state_dict().values() for t in (v if isinstance(v, tuple) else (v,))
               if torch.is_tensor(t)]
    if opt is not None:
        tensors += [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


class _Contender:
    """One model and its optimizer, stepping on fixed synthetic inputs."""

    def __init__(self, label: str, model: nn.Module, device: torch.device, x: torch.Tensor, y: torch.Tensor,
                 *, train: bool, amp: str = "off", channels_last: bool = False, compile: bool = False,
                 cuda_graphs: bool = False, compile_frozen: bool = False, int8: bool = False,
                 calibration: torch.Tensor | None = None):
        self.label, self.model, self.train, self.amp, self.device = label, model, train, amp, device
        channels_last = channels_last or int8  # the quantized engine's kernels are NHWC
        model.train(train)
        self.run = runtime.prepare_model(model, device, channels_last=channels_last, compile=compile,
                                         cuda_graphs=cuda_graphs, compile_frozen=compile_frozen)
        self.x = runtime.prepare_input(x, device, channels_last=channels_last)
        if int8:
            calib = runtime.prepare_input(calibration, device, channels_last=True)
            self.run = self.model = runtime.int8_model(model, [calib])
        self.y = y.to(device)
        self.opt = _sgd(model) if train else None
        self.scaler = runtime.grad_scaler(device, amp) if train else None

    def step(self) -> None:
        if not self.train:
            with torch.inference_mode(), runtime.autocast(self.device, self.amp):
                self.run(self.x)
            return
        self.opt.zero_grad(set_to_none=True)
        with runtime.autocast(self.device, self.amp):
            loss = nn.functional.cross_entropy(self.run(self.x), self.y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()


def _torchvision_alexnet(num_classes: int) -> nn.Module | None:
    try:
        from torchvision.models import alexnet
    except ImportError:  # optional: compared when installed
        return None
    return alexnet(weights=None, num_classes=num_classes)


def _check_int8(args, device: torch.device) -> None:
    if not getattr(args, "int8", False):
        return
    if device.type != "cpu":
        raise UserError(f"--int8 runs in torch's quantized CPU engine, not on {device.type}")
    if args.amp != "off" or args.compile or args.cuda_graphs or args.compile_frozen:
        raise UserError("--int8 is its own path (8-bit weights and activations, eager): leave out --amp, "
                        "--compile, --compile-frozen and --cuda-graphs")
    runtime.int8_engine()


def bench_model(args, *, train: bool) -> int:
    """``alexnet bench train|infer`` with its parsed options: print the table (or JSON)."""
    runtime.check_amp(args.amp)
    device = runtime.pick_device(args.device)
    _check_int8(args, device)
    _set_threads(args.threads)
    num_classes = 10 if model_cfg(args.model).sized_by_data else 1000  # MNIST / CIFAR heads, or ImageNet's
    torch.manual_seed(0)  # the same random weights every run, so that the logits check can be repeated
    ours_model = create_model(args.model, num_classes=num_classes)
    macs = summarize(ours_model).total_macs  # multiply-adds per image, forward
    flops_per_image = 2 * macs * (3 if train else 1)  # backward costs about twice the forward
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, *ours_model.input_size, generator=g)
    y = torch.randint(0, num_classes, (args.batch_size,), generator=g)

    flags = dict(amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                 cuda_graphs=args.cuda_graphs, compile_frozen=getattr(args, "compile_frozen", False),
                 int8=getattr(args, "int8", False))
    # int8's activation ranges are observed on a batch of its own, never the one timed and checked
    calibration = torch.randn(args.batch_size, *ours_model.input_size, generator=g) if flags["int8"] else None
    fast = any(v not in ("off", False) for v in flags.values())
    # the plain float32 logits of our weights, before any flag changes the model
    want = _logits(ours_model, x) if fast and not train else None
    ours = functools.partial(_Contender, device=device, x=x, y=y, train=train, calibration=calibration,
                             **flags)
    contenders = [ours("ours", ours_model)]
    if args.lrn_cost:
        if "lrn" not in model_options(args.model):
            raise UserError(f"--lrn-cost: {args.model} has no LRN to turn off")
        contenders.append(ours("ours, no LRN", create_model(args.model, num_classes=num_classes, lrn=False)))
    check = _check_logits(contenders[0], want, _precision(flags)) if want is not None else None
    if fast:
        contenders.append(_Contender("ours, plain", create_model(args.model, num_classes=num_classes),
                                     device, x, y, train=train))
    contenders.append(_Contender("reference", reference_model(args.model, num_classes), device, x, y,
                                 train=train))
    tv = _torchvision_alexnet(num_classes) if args.model == "alexnet-owt" else None
    if tv is not None:
        contenders.append(_Contender("torchvision", tv, device, x, y, train=train))

    timed = alternate({c.label: c.step for c in contenders}, device, rounds=args.steps, warmup=args.warmup)
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops, "given (--peak-tflops)"
    else:
        peak, peak_source = matmul_tflops(device, runtime.AMP_DTYPES[args.amp] or torch.float32)

    results = {}
    for c in contenders:
        t = timed[c.label]
        images_per_s = args.batch_size / t.median
        kept = _state_bytes(c.model, c.opt)
        results[c.label] = {
            "ms_per_step": 1e3 * t.median, "ms_p25": 1e3 * t.quartiles()[0], "ms_p75": 1e3 * t.quartiles()[2],
            "images_per_s": images_per_s,
            "tflops": flops_per_image * images_per_s / 1e12,
            "peak_memory_mb": None if t.peak_bytes is None else (kept + t.peak_bytes) / MB,
        }
    results["ours"]["mfu"] = results["ours"]["tflops"] / peak
    report = {
        "bench": "train" if train else "infer",
        "model": args.model, "num_classes": num_classes, "input_size": list(ours_model.input_size),
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, **flags,
        "ours": _describe(flags), "reference": "plain PyTorch nn.Sequential, eager, float32, NCHW, "
                                               "nn.LocalResponseNorm",
        "macs_per_image": macs, "model_flops_per_image": flops_per_image,
        "peak_tflops": peak, "peak_dtype": AMP_NAMES[args.amp], "peak_source": peak_source,
        "memory_method": _memory_method(device),
        "results": results,
        "ratio": ratio(timed["reference"], timed["ours"]),
        "ratio_plain": ratio(timed["reference"], timed["ours, plain"]) if "ours, plain" in timed else None,
        "ratio_torchvision": ratio(timed["torchvision"], timed["ours"]) if "torchvision" in timed else None,
        "lrn_cost": ratio(timed["ours"], timed["ours, no LRN"]) if "ours, no LRN" in timed else None,
        "check": check,
        "profile": _profile(contenders, device) if getattr(args, "profile", False) else None,
        "machine": environment(device),
    }
    print(json.dumps(report, indent=2) if args.json else _model_table(report))
    return 0


def _precision(flags: dict) -> str:
    return "int8" if flags["int8"] else AMP_NAMES[flags["amp"]]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model(x).double()


def _check_logits(c: _Contender, want: torch.Tensor, precision: str) -> dict:
    """The contender's logits on its timed batch against ``want`` (the same weights, eager float32)."""
    with torch.inference_mode(), runtime.autocast(c.device, c.amp):
        got = c.run(c.x).double().cpu()
    error = ((got - want).norm() / want.norm()).item()
    agree = (got.argmax(1) == want.argmax(1)).double().mean().item()
    # random weights may give every image the same top-1 class: agreement then tests no decision
    classes = len(want.argmax(1).unique())
    max_error, min_agree = TOLERANCES[precision]
    return {"against": "the same weights, eager float32", "precision": precision, "images": len(want),
            "relative_error": error, "top1_agreement": agree, "float32_top1_classes": classes,
            "tolerance": {"relative_error": max_error, "top1_agreement": min_agree},
            "within": error <= max_error and (agree >= min_agree or classes == 1)}


def _describe(flags: dict) -> str:
    if flags["int8"]:
        return (f"int8 (torch.ao static quantization, {runtime.int8_engine()} engine, LRN on 8-bit codes), "
                "channels last, eager")
    on = [f"autocast {AMP_NAMES[flags['amp']]}" if flags["amp"] != "off" else "float32"]
    on += [name.replace("_", " ") for name in ("channels_last", "compile", "cuda_graphs") if flags[name]]
    on += ["compiled with frozen weights"] if flags["compile_frozen"] else []
    compiled = flags["compile"] or flags["cuda_graphs"] or flags["compile_frozen"]
    return ", ".join(on) + ("" if compiled else ", eager")


def _memory_method(device: torch.device) -> str | None:
    method = PeakMemory(device).method
    return None if method is None else f"parameters and buffers + optimizer state + peak of a step ({method})"


def _where(m: dict) -> str:
    if m.get("gpu"):
        return f"{m['gpu']} (CUDA {m['cuda']})"
    return f"{m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} threads)"


def _model_table(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"alexnet bench {r['bench']}: {r['model']}, batch {r['batch_size']}, {r['steps']} steps after "
        f"{r['warmup']} warm-up, {m['device']}: {_where(m)}, torch {m['torch']}, {m['date']}",
        f"  ours: {r['ours']}",
        f"  reference: {r['reference']}",
        "",
    ]
    rows = [[label, f"{v['ms_per_step']:.1f}", f"{v['ms_p25']:.1f}-{v['ms_p75']:.1f}",
             f"{v['images_per_s']:.1f}",
             f"{v['tflops']:.3g}", "-" if v["peak_memory_mb"] is None else f"{v['peak_memory_mb']:.0f}"]
            for label, v in r["results"].items()]
    table = format_table(["", "ms/step", "p25-p75", "images/s", "TFLOP/s", "peak MB"], rows)
    lines += ["  " + line for line in table.splitlines()]
    lines.append("")
    lines.append(f"  ours / reference: {r['ratio']:.2f}x images/s (median of per-round ratios)")
    if r["ratio_plain"] is not None:
        lines.append(f"  ours, plain / reference: {r['ratio_plain']:.2f}x")
    if r["ratio_torchvision"] is not None:
        lines.append(f"  ours / torchvision: {r['ratio_torchvision']:.2f}x")
    if r.get("lrn_cost") is not None:
        lines.append(f"  LRN cost: ours / ours, no LRN = {r['lrn_cost']:.3f}x step time "
                     "(median of per-round ratios)")
    lines.append(f"  model FLOP utilisation (ours): {100 * r['results']['ours']['mfu']:.1f}% of "
                 f"{r['peak_tflops']:.3g} TFLOP/s {r['peak_dtype']} ({r['peak_source']})"
                 + ("; int8 arithmetic is not float32's: above 100% is beyond float32's peak" * r["int8"]))
    lines.append(f"  model FLOPs: {r['model_flops_per_image'] / 1e9:.4g} G per image "
                 f"(2 x {r['macs_per_image'] / 1e9:.4g} G "
                 f"multiply-adds{' x 3 for training' * (r['bench'] == 'train')})")
    if r["memory_method"]:
        lines.append(f"  peak memory: {r['memory_method']}")
    if r.get("check"):
        c, tol = r["check"], r["check"]["tolerance"]
        lines.append(f"  check (ours against {c['against']}, {c['images']} images): relative logit error "
                     f"{c['relative_error']:.2e} (bound {tol['relative_error']:g}), top-1 agreement "
                     f"{100 * c['top1_agreement']:.1f}% (bound {100 * tol['top1_agreement']:g}%"
                     + ("; not judged: float32 gives every image the same class"
                        * (c["float32_top1_classes"] == 1))
                     + f"): {'within' if c['within'] else 'OUTSIDE THE BOUNDS'}")
    if r.get("profile"):
        lines += ["", "  where a step's time goes (torch.profiler, ms per layer family, median of 3 steps):"]
        labels = list(r["profile"])
        families = sorted({f for p in r["profile"].values() for f in p if f != "step"},
                          key=lambda f: -max(p.get(f, 0.0) for p in r["profile"].values()))
        rows = [[f, *(f"{r['profile'][label].get(f, 0.0):.0f}" for label in labels)] for f in families]
        rows.append(["step", *(f"{r['profile'][label]['step']:.0f}" for label in labels)])
        lines += ["  " + line for line in format_table(["", *labels], rows).splitlines()]
    return "\n".join(lines)


# --- where the time goes ---------------------------------------------------------------------------

# a layer's family, by the first class in its type's method resolution order found here
FAMILIES = {
    "Conv2d": "convolution", "_ConvNd": "convolution", "Linear": "linear", "LocalResponseNorm": "LRN",
    "QuantizedLocalResponseNorm": "LRN", "_TowerLRN": "LRN", "MaxPool2d": "pooling", "AvgPool2d": "pooling",
    "AdaptiveAvgPool2d": "pooling", "ReLU": "activation", "Tanh": "activation", "Dropout": "dropout",
    "Flatten": "flatten (a layout copy when channels-last)", "Quantize": "int8 quantize / dequantize",
    "DeQuantize": "int8 quantize / dequantize", "BatchNorm2d": "batch norm",
}


def _family(module: nn.Module) -> str:
    names = [t.__name__ for t in type(module).__mro__]
    return next((FAMILIES[n] for n in names if n in FAMILIES), "other layers")


def _layers(module: nn.Module):
    """The layers of ``module`` to time: those of a known family (not looking inside them) and leaves."""
    for child in module.children():
        if _family(child) != "other layers" or not list(child.children()):
            yield child
        else:
            yield from _layers(child)


def _profile(contenders: list[_Contender], device: torch.device,
             rounds: int = 3) -> dict[str, dict[str, float]]:
    """``rounds`` steps of each eager contender, alternating, each under ``torch.profiler`` with every
    layer in a ``record_function`` range named by its family: the median ms per family and of the whole
    step ("step"); what no layer holds (the loss, the optimizer, the backward, a model's own code) is
    "between layers"."""
    from torch.profiler import profile  # deferred: the profiler only for --profile

    eager = [c for c in contenders if c.run is c.model]  # a compiled model is one graph, no layers to time
    ms = {c.label: defaultdict(list) for c in eager}
    for r in range(rounds):
        for c in eager[r % len(eager):] + eager[:r % len(eager)]:
            with _family_ranges(c.model), profile() as prof:
                t0 = time.perf_counter()
                c.step()
                sync(device)
                step = 1e3 * (time.perf_counter() - t0)
            families = defaultdict(float)
            for e in prof.key_averages():
                if e.key in FAMILIES.values() or e.key == "other layers":
                    families[e.key] += e.cpu_time_total / 1e3
            families["between layers"] = max(0.0, step - sum(families.values()))
            for family, t in {**families, "step": step}.items():
                ms[c.label][family].append(t)
    return {label: {f: statistics.median(ts + [0.0] * (rounds - len(ts))) for f, ts in fam.items()}
            for label, fam in ms.items()}


@contextlib.contextmanager
def _family_ranges(model: nn.Module):
    """Every layer of ``_layers(model)`` runs inside a ``record_function`` range named by its family."""
    from torch.profiler import record_function  # deferred: the profiler only for --profile

    ranges, handles = {}, []

    def enter(module, args):
        ranges[id(module)] = record_function(_family(module))
        ranges[id(module)].__enter__()

    def leave(module, args, output):
        ranges.pop(id(module)).__exit__(None, None, None)

    try:
        for m in _layers(model):
            handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
        yield
    finally:
        for h in handles:
            h.remove()


# --- alexnet bench lrn ------------------------------------------------------------------------

ALEXNET_LRN_SHAPES = ["64,96,55,55", "64,256,27,27"]  # after conv1 and conv2 at batch 64
LAYOUTS = {"nchw": [False], "channels-last": [True], "both": [False, True]}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise UserError(f"--shape takes N,C,H,W with positive sizes (e.g. 64,96,55,55), got {text!r}")
    return shape


def _lrn_contenders(mode: str, device: torch.device, compile: bool) -> dict[str, Callable[[torch.Tensor],
                                                                                          torch.Tensor]]:
    size, alpha, beta, k = LRN_MODES[mode]
    ours = LocalResponseNorm.from_mode(mode)
    out = {"ours": ours}
    if fused_kernel(device) is not None:
        # what the same function costs as eager tensor ops, to show what the fused kernel gains
        out["ours, eager ops"] = functools.partial(local_response_norm, size=size, alpha=alpha, beta=beta,
                                                   k=k, impl="eager")
    if compile:
        out["ours, compiled"] = torch.compile(ours)
    out["torch"] = nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)  # torch divides by size
    return out


def bench_lrn(args) -> int:
    """``alexnet bench lrn`` with its parsed options."""
    device = runtime.pick_device(args.device)
    _set_threads(args.threads)
    shapes = [_parse_shape(s) for s in args.shape or ALEXNET_LRN_SHAPES]
    contenders = _lrn_contenders(args.mode, device, args.compile)
    rows = []
    for shape in shapes:
        for channels_last in LAYOUTS[args.layout]:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=g).relu_().to(device, DTYPES[args.dtype])  # ReLU outputs
            x = x.contiguous(memory_format=runtime.memory_format(channels_last))
            grad = torch.randn(shape, generator=g).to(device, DTYPES[args.dtype])
            with torch.no_grad():
                try:
                    want = contenders["torch"](x).float()
                except (NotImplementedError, RuntimeError) as e:  # e.g. no bf16 avg_pool3d on CPU
                    raise UserError(f"nn.LocalResponseNorm cannot run {args.dtype} on {device.type} "
                                    f"here ({str(e).splitlines()[0]}); try --dtype fp32") from None
                diff = {name: ((f(x).float() - want).abs().max() / want.abs().max()).item()
                        for name, f in contenders.items() if name != "torch"}
            xg = x.detach().requires_grad_(True)
            fwd = alternate({n: functools.partial(_forward, f, x) for n, f in contenders.items()}, device,
                            rounds=args.rounds, warmup=args.warmup, memory=False)
            both = alternate({n: functools.partial(_forward_backward, f, xg, grad) for n,
                              f in contenders.items()},
                             device, rounds=args.rounds, warmup=args.warmup, memory=False)
            rows.append({
                "shape": list(shape), "layout": "channels_last" if channels_last else "NCHW",
                "forward_ms": {n: 1e3 * t.median for n, t in fwd.items()},
                "forward_backward_ms": {n: 1e3 * t.median for n, t in both.items()},
                "forward_ratio": {n: ratio(fwd["torch"], t) for n, t in fwd.items() if n != "torch"},
                "forward_backward_ratio": {n: ratio(both["torch"], t) for n,
                                           t in both.items() if n != "torch"},
                "max_rel_diff": diff,
            })
    size, alpha, beta, k = LRN_MODES[args.mode]
    report = {"bench": "lrn", "mode": args.mode, "size": size, "alpha": alpha, "beta": beta, "k": k,
              "dtype": args.dtype, "rounds": args.rounds, "warmup": args.warmup, "rows": rows,
              "machine": environment(device)}
    print(json.dumps(report, indent=2) if args.json else _lrn_table(report))
    return 0


def _forward(f, x: torch.Tensor) -> None:
    with torch.no_grad():
        f(x)


def _forward_backward(f, x: torch.Tensor, grad: torch.Tensor) -> None:
    f(x).backward(grad)
    x.grad = None


def _lrn_table(r: dict) -> str:
    m = r["machine"]
    names = list(r["rows"][0]["forward_ms"])
    ours = [n for n in names if n != "torch"]
    lines = [f"alexnet bench lrn: mode {r['mode']} (n={r['size']}, alpha={r['alpha']:g} on the window sum, "
             f"beta={r['beta']}, k={r['k']}), {r['dtype']}, {m['device']}: {_where(m)}, torch {m['torch']}, "
             f"{m['date']}",
             f"  median of {r['rounds']} alternating calls; ratio = torch time / ours, median of per-round "
             "ratios",
             ""]
    rows = []
    for row in r["rows"]:
        shape = "x".join(map(str, row["shape"]))
        for label, key in (("fwd", "forward"), ("fwd+bwd", "forward_backward")):
            rows.append([shape, row["layout"], label, *(f"{row[key + '_ms'][n]:.1f}" for n in names),
                         *(f"{row[key + '_ratio'][n]:.2f}x" for n in ours)])
    headers = ["shape", "layout", "pass", *(f"{n} ms" for n in names), *(f"x vs torch ({n})" for n in ours)]
    table = format_table(headers, rows, align="lll" + "r" * (len(names) + len(ours)))
    lines += ["  " + line for line in table.splitlines()]
    worst = max(d for row in r["rows"] for d in row["max_rel_diff"].values())
    lines.append(f"\n  largest difference from torch's output: {worst:.1e} of its largest value")
    return "\n".join(lines)

