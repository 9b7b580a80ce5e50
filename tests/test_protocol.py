"""The paper's protocol end to end from one command, scaled down to run in CI, and the same trainer
under torchrun with two processes.

The scaled-down paper run keeps everything of the ``paper`` recipe (alexnet2012 at 227, the paper's
init and SGD update, the mean image, random crops, mirrors, PCA lighting from the data, the plateau
rule, ten-patch testing) and changes only what the size of the run forces:
- 400 training images of 10 classes (256x256 JPEGs from ``alexnet data synth``) instead of 1.2M;
- batch 32 at the paper's lr, 0.01, unscaled. With the paper's dropout (the default of alexnet2012:
  no rescaling in training, x0.5 at test) fc7 and fc8 see half of what inverted dropout gives them,
  and 0.01 learns; with inverted dropout 0.01 blows up on so small a problem (train loss 11.9 in the
  first epoch, then chance for five epochs), and so does 0.0025, 0.01 scaled linearly to batch 32
  (6.5, then chance for four);
- EPOCHS epochs instead of 90, and a plateau patience of PATIENCE epochs instead of 4. Measured on a
  2-core Intel Xeon VM with torch 2.13.0+cpu (2026-11-23, per-tower LRN, paper dropout), val top-1
  is 10.0, 10.0, 37.5, 47.5, 31.2% after epochs 1-5 (seed 0; seeds 1 and 2 leave chance at epochs 4
  and 3, and end at 61.2% and 67.5% ten-patch top-1) and the lr is divided after epochs 6 and 12
  (docs/models.md has the table); the test replays the plateau rule from the recorded val errors,
  so it checks every drop (and every non-drop), wherever they fall;
- the reported split is val (the synthetic folder has no test split), so the run reports its last
  weights, not the best-on-val ones;
- channels-last memory layout, which changes the speed, not the result.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EPOCHS, PATIENCE, THRESHOLD = 14, 2, 0.0
LR = 0.01  # the paper's


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_paper_protocol_scaled_down(tmp_path, cli):
    r = cli("data", "synth", tmp_path / "imagenet-like", "--classes", "10", "--per-class", "40",
            "--val-per-class", "8", "--size", "256", "--seed", "0")
    assert r.returncode == 0, r.stderr
    r = cli("train", "--model", "alexnet2012", "--recipe", "paper", "--data", tmp_path / "imagenet-like",
            "--batch-size", "32", "--lr", LR, "--epochs", EPOCHS, "--patience", PATIENCE,
            "--plateau-threshold", THRESHOLD, "--channels-last", "--out", tmp_path / "runs",
            "--name", "paper", "--quiet", timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "runs" / "paper"
    cfg = json.loads((run / "config.json").read_text())
    # the recipe's values, where not scaled down
    assert cfg["config"]["recipe"] == "paper"
    for key, want in {"optimizer": "paper-sgd", "momentum": 0.9, "weight_decay": 5e-4, "schedule": "plateau",
                      "lr_factor": 0.1, "max_drops": 3, "normalize": "paper", "crop": "random",
                      "lighting": "data", "lighting_std": 0.1, "tta": "10crop"}.items():
        assert cfg["config"][key] == want, key
    assert cfg["config"]["model_opts"].get("init", "paper") == "paper"

    metrics = read_metrics(run)
    assert len(metrics) == EPOCHS
    # the plateau rule, replayed from the recorded val errors: lr of epoch e+1 follows from epochs <= e
    best, bad, drops, lr = float("inf"), 0, 0, LR
    for m in metrics:
        assert m["lr"] == pytest.approx(lr, rel=1e-9), (m["epoch"], m["lr"], lr)
        err = 100 * (1 - m["val_top1"])  # the schedule works in percentage points
        if err < best - THRESHOLD:
            best, bad = err, 0
        else:
            bad += 1
            if bad >= PATIENCE and drops < 3:
                lr, bad, drops = lr * 0.1, 0, drops + 1
    assert drops >= 1, "the scaled-down run should reach a plateau and drop the lr at least once"
    assert (run / "log.txt").read_text().count("learning rate divided") == drops

    results = json.loads((run / "results.json").read_text())
    assert results["tta"] == "10crop"
    assert results["test_top1_error"] < 0.5, results  # chance is 0.9 with 10 classes
    assert results["test_top5_error"] < results["test_top1_error"]

    # the paper's ensemble line: members and the average of their softmax over the ten patches
    ckpts = run / "checkpoints"
    r = cli("evaluate", ckpts / "best.pt", ckpts / "last.pt", "--tta", "10crop", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["results"]
    assert [row["name"].rsplit("/", 1)[-1] for row in rows] == ["best.pt", "last.pt", "ensemble"]
    # val both chose best.pt and is the reported split, so the run reported its last weights
    assert results["test_split"] == "val" and results["weights"].startswith("last")
    assert rows[1]["top1_accuracy"] == pytest.approx(results["test_top1_accuracy"])
    assert rows[2]["top1_accuracy"] > 0.5


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    """The multi-GPU path (torchrun + DDP), on CPU with gloo: one run directory, sane results."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "alexnet", "train", "--model", "lenet5", "--epochs", "2", "--batch-size", "64",
           "--lr", "0.05", "--device", "cpu", "--quiet", "--out", str(tmp_path), "--name", "ddp"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    run = tmp_path / "ddp"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2
    assert len(read_metrics(run)) == 2
    results = json.loads((run / "results.json").read_text())
    assert results["test_top1_error"] < 0.5, results  # chance is 0.9
