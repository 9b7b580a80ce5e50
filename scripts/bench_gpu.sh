#!/usr/bin/env bash
# The GPU table of docs/benchmarks.md in one command:
#   bash scripts/bench_gpu.sh [OUT_DIR]          (from a clone; PYTHONPATH=src if not installed)
# Each benchmark writes its report as JSON to OUT_DIR (default: bench-gpu/) and prints its key numbers.
# Every row times ours against the plain eager-fp32 reference (and torchvision's AlexNet when
# torchvision imports) in the same process, alternating.
set -euo pipefail
out="${1:-bench-gpu}"
mkdir -p "$out"
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
bench() {  # NAME ARGS...: JSON to OUT/NAME.json, a summary line to the terminal
    local name=$1; shift
    echo "== alexnet bench $*"
    python -m alexnet bench "$@" --json > "$out/$name.json"
    python - "$out/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["bench"] == "lrn":
    for row in r["rows"]:
        print(" ", row["shape"], row["layout"], "fwd+bwd ms", row["forward_backward_ms"],
              "x vs torch", row["forward_backward_ratio"])
elif r["bench"] == "e2e":
    for label, v in r["results"].items():
        print(f"  {label:12s} {v['images_per_s']:10.0f} images/s  waiting for data "
              f"{100 * v['data_wait_fraction']:.1f}%  GPU idle {100 * v['device_idle_fraction']:.1f}%  "
              f"{v['paper_protocol_hours']:.1f} h for {r['paper_protocol']}")
    print(f"  end to end / model only {r['ratio']:.2f}x")
else:
    for label, v in r["results"].items():
        print(f"  {label:12s} {v['images_per_s']:10.0f} images/s  {v['ms_per_step']:8.2f} ms/step")
    print(f"  ours / reference {r['ratio']:.2f}x, ours / torchvision {r['ratio_torchvision']}, "
          f"MFU {100 * r['results']['ours']['mfu']:.1f}% of {r['peak_tflops']:.0f} TFLOP/s")
PY
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
bench lrn-fp32 lrn --device cuda --dtype fp32 --compile
bench lrn-bf16 lrn --device cuda --dtype bf16
for model in alexnet2012 alexnet-owt; do
    bench "train-$model-fp32" train --model "$model" --device cuda --batch-size 256 --steps 20 --warmup 5
    bench "train-$model-bf16" train --model "$model" --device cuda --batch-size 256 --steps 20 --warmup 5 \
        --amp bf16 --channels-last
    bench "train-$model-bf16-compile" train --model "$model" --device cuda --batch-size 256 --steps 20 \
        --warmup 5 --amp bf16 --channels-last --compile
    bench "infer-$model-bf16-compile" infer --model "$model" --device cuda --batch-size 256 --steps 20 \
        --warmup 5 --amp bf16 --channels-last --compile
done
bench train-small-cudagraphs train --model alexnet-small --device cuda --batch-size 128 --steps 50 --warmup 5 \
    --amp bf16 --channels-last --cuda-graphs
# End to end: 50,000 synthetic ImageNet-size photos made here (longer side ~500) and prepared once into a
# store (9.8 GB, kept in OUT/e2e-store and reused by a second run), through the loader, the prefetcher,
# the paper's augmentation on the GPU and the training step, against the model-only step.
cores=$(nproc)
bench e2e-alexnet2012-bf16 e2e --model alexnet2012 --device cuda --images 50000 --classes 100 --size 500 \
    --store "$out/e2e-store" --workers "$cores" --batch-size 256 --steps 40 --repeat 3 --warmup 5 \
    --amp bf16 --channels-last
bench e2e-alexnet2012-bf16-noprefetch e2e --model alexnet2012 --device cuda --data "$out/e2e-store" \
    --batch-size 256 --steps 40 --repeat 3 --warmup 5 --amp bf16 --channels-last --no-prefetch
# torchrun with NCCL: one process on the GPU trains an epoch of alexnet-owt on the same store (195 steps);
# NCCL_DEBUG=VERSION prints the NCCL version when the process group starts. With one process the trainer
# runs no DDP wrapper and no all-reduce: those need --nproc_per_node >= 2 (two GPUs).
echo "== torchrun --nproc_per_node 1 -m alexnet train (NCCL)"
NCCL_DEBUG=VERSION torchrun --standalone --nproc_per_node 1 -m alexnet train --model alexnet-owt \
    --data "$out/e2e-store" --device cuda --amp bf16 --channels-last --epochs 1 --batch-size 256 --quiet \
    --out "$out/runs" --name torchrun-nccl 2>&1 | tee "$out/torchrun-nccl.txt"
echo "reports in $out/"
