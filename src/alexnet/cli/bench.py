"""``alexnet bench data|train|infer|lrn|e2e|serve``: the benchmarks' flags; the measurements are in
:mod:`alexnet.bench`."""

from __future__ import annotations

import functools
import json

import torch

from ..bench.data import bench_data
from ..bench.e2e import bench_e2e
from ..bench.model import ALEXNET_LRN_SHAPES, DTYPES, LAYOUTS, bench_lrn, bench_model
from ..bench.serve import BUDGET_MS, measure
from ..cliargs import format_table
from ..models.lrn import LRN_MODES
from .flags import (add_batch_size, add_device, add_json, add_speed_flags, add_threads, add_workers,
                    bounded_int)

MODEL_BATCH = 128  # bench train / infer: the paper's batch
E2E_BATCH = 16  # bench e2e: a step of a few hundred ms on a laptop CPU, so that passes stay short
DATA_BATCH = 128  # bench data: the paper's batch


def _add_model_parsers(bsub) -> None:
    for what, summary in (("train", "training throughput: forward, loss, backward, SGD step"),
                          ("infer", "inference throughput: forward only")):
        p = bsub.add_parser(what, help=f"{summary}, against a plain-PyTorch reference",
                            description=f"{summary.capitalize()} of a zoo model on synthetic tensors, timed "
                                        "in one process alternating with a plain-PyTorch reference of the "
                                        "same architecture (eager, fp32, NCHW, nn.LocalResponseNorm).")
        p.add_argument("--model", required=True, help="model name (`alexnet models` lists them)")
        add_batch_size(p, MODEL_BATCH, what="images per step (the paper's)")
        g = p.add_argument_group("fast paths (ours only; the reference always runs plain)")
        add_speed_flags(g)
        g.add_argument("--cuda-graphs", action="store_true",
                       help="compile and replay as CUDA graphs (CUDA only)")
        if what == "infer":
            g.add_argument("--compile-frozen", action="store_true",
                           help="compile with the weights frozen into the graph (oneDNN prepacking)")
            g.add_argument("--int8", action="store_true",
                           help="8-bit weights and activations (torch.ao static quantization, CPU), ranges "
                                "observed on one synthetic batch of its own; the logits are checked against "
                                "float32")
        add_device(p)
        p.add_argument("--threads", type=bounded_int(1),
                       help="CPU threads for every contender (default: torch's choice)")
        p.add_argument("--steps", type=bounded_int(1), default=10,
                       help="timed steps per contender (default: 10)")
        p.add_argument("--warmup", type=bounded_int(0), default=2,
                       help="untimed steps per contender first; compilation happens here (default: 2)")
        p.add_argument("--peak-tflops", type=float,
                       help="the device's peak rate for the FLOP utilisation (default: measured by a matmul)")
        p.add_argument("--profile", action="store_true",
                       help="also run 3 steps of each eager contender under torch.profiler and print the "
                            "milliseconds per layer family (convolution, LRN, pooling, linear, ...)")
        p.add_argument("--lrn-cost", action="store_true",
                       help="also time the same model with lrn=False (same flags) and print the step-time "
                            "ratio with / without LRN")
        add_json(p, "print one JSON object instead of a table")
        p.set_defaults(func=functools.partial(bench_model, train=what == "train"))


def _add_lrn_parser(bsub) -> None:
    p = bsub.add_parser("lrn", help="LRN forward and forward+backward: ours against nn.LocalResponseNorm",
                        description="Time our LocalResponseNorm against torch's nn.LocalResponseNorm (alpha "
                                    "converted), alternating in one process, forward alone and "
                                    "forward+backward.")
    p.add_argument("--shape", action="append", metavar="N,C,H,W",
                   help=f"input shape, repeatable (default: AlexNet's, {' and '.join(ALEXNET_LRN_SHAPES)})")
    p.add_argument("--layout", default="both", choices=list(LAYOUTS), help="memory layout (default: both)")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="input dtype (default: fp32)")
    p.add_argument("--mode", default="paper", choices=list(LRN_MODES), help="LRN constants (default: paper)")
    add_device(p)
    add_threads(p)
    p.add_argument("--rounds", type=bounded_int(1), default=7,
                   help="timed calls per contender (default: 7)")
    p.add_argument("--warmup", type=bounded_int(0), default=1,
                   help="untimed calls per contender first (default: 1)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of our LRN (fused by Inductor)")
    add_json(p, "print one JSON object instead of a table")
    p.set_defaults(func=bench_lrn)


def _add_e2e_parser(bsub) -> None:
    p = bsub.add_parser("e2e", help="training images/s end to end (store, loader, augmentation, step) "
                                    "against the model alone",
                        description="Training throughput the way a user trains: a prepared store through the "
                                    "loader, the prefetcher, the device-side augmentation and the training "
                                    "step, alternating in one process with the same step on one batch "
                                    "already on the device. Prints the ratio, the time spent waiting for "
                                    "data and the hours of the paper's 90 epochs at the measured rate.")
    p.add_argument("--model", default="alexnet2012", help="model name (default: alexnet2012)")
    p.add_argument("--data", help="a prepared store or any dataset spec (default: synthetic photos, made "
                                  "and prepared first; see --store)")
    p.add_argument("--store", help="where the synthetic store is kept: reused when it exists, made otherwise "
                                   "(default: a temporary folder, removed afterwards)")
    p.add_argument("--images", type=bounded_int(1), default=256,
                   help="training images of the synthetic store (default: 256)")
    p.add_argument("--classes", type=bounded_int(1), default=8,
                   help="classes of the synthetic store (default: 8)")
    p.add_argument("--size", type=bounded_int(8), default=300,
                   help="longer side of the synthetic photos before the store's 256 rescale (default: 300)")
    add_batch_size(p, E2E_BATCH, what="images per step")
    p.add_argument("--steps", type=bounded_int(1), default=4, help="timed steps per pass (default: 4)")
    p.add_argument("--repeat", type=bounded_int(1), default=3,
                   help="passes of each, alternating (default: 3)")
    p.add_argument("--warmup", type=bounded_int(0), default=1,
                   help="untimed steps of each first; compilation happens here (default: 1)")
    add_workers(p, what="loader worker processes, and the processes that make the store")
    g = p.add_argument_group("speed (both sides)")
    add_speed_flags(g)
    add_device(p)
    add_threads(p)
    p.add_argument("--no-prefetch", action="store_true",
                   help="read each batch in the loop, without the prefetcher (to see what it gains)")
    add_json(p, "print one JSON object instead of a table")
    p.set_defaults(func=bench_e2e)


def _add_data_parser(bsub) -> None:
    p = bsub.add_parser("data", help="input pipeline throughput against a Pillow reference", description=(
        "Images/s of (a) a plain per-image Pillow pipeline, (b) our folder path and (c) our prepared "
        "store, on the same random training images of --data."))
    p.add_argument("--data", required=True, help="an image folder spec (e.g. made by `alexnet data synth`)")
    p.add_argument("--batches", type=bounded_int(1), default=10, help="batches to time (default: 10)")
    add_batch_size(p, DATA_BATCH)
    add_workers(p, 2, what="loader worker processes for (b)")
    p.add_argument("--store",
                   help="a prepared store of the same data for (c) (default: prepare one, temporarily)")
    p.add_argument("--repeat", type=bounded_int(1), default=1,
                   help="let the paths take turns this many times, keep each one's best (default: 1)")
    add_json(p, "print JSON")
    p.set_defaults(func=bench_data)


def _add_serve_parser(bsub) -> None:
    p = bsub.add_parser("serve", help="explorer latency: one prediction with every layer's maps, over HTTP",
                        description="Latency of one explorer prediction, end to end over HTTP against a "
                                    "real `alexnet serve` process, beside the bare forward pass.")
    p.add_argument("--models", nargs="+", default=list(BUDGET_MS), choices=list(BUDGET_MS))
    p.add_argument("--repeat", type=bounded_int(1), default=20,
                   help="timed requests per model (after 3 warm-up ones)")
    p.add_argument("--threads", type=bounded_int(0), default=0,
                   help="torch threads, for the server and the reference (0: torch's default)")
    add_json(p, "print every number as JSON")
    p.set_defaults(func=_bench_serve)


def _bench_serve(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    found = [measure(name, args.repeat, threads=args.threads) for name in args.models]
    ok = all(r["http_p50"] < r["budget"] for r in found)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                          "repeat": args.repeat, "models": found}, indent=2))
        return 0 if ok else 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeat} requests per model")
    rows = [[r["model"], r["layers"], f"{r['http_p50']:.1f}", f"{r['http_p90']:.1f}", f"{r['budget']:.0f}",
             f"{r['forward_p50']:.1f}", f"{r['http_p50'] / r['forward_p50']:.1f}x",
             "within budget" if r["http_p50"] < r["budget"] else "OVER BUDGET"] for r in found]
    print(format_table(["model", "layers", "p50 ms", "p90 ms", "budget ms", "forward p50", "p50/forward", ""],
                       rows))

    def ms(r: dict, key: str) -> str:
        return f"{r[key]:.0f}" if key in r else "-"  # '-': not measured (no data served)

    print("\nthe page, ms (index and test report: built in the background from the card's request, "
          "timed from it;\nunit and neighbours: p50; '-': not measured, the model is served without data)")
    keys = ("card_ms", "index_ms", "report_ms", "unit_p50", "neighbours_p50")
    heads = ["model", "first card", "index ready", "report ready", "unit", "prediction + 8 neighbours"]
    print(format_table(heads, [[r["model"], *(ms(r, k) for k in keys)] for r in found]))
    return 0 if ok else 1


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: data pipeline, training and inference speed")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    _add_data_parser(bsub)
    _add_model_parsers(bsub)
    _add_lrn_parser(bsub)
    _add_serve_parser(bsub)
    _add_e2e_parser(bsub)
