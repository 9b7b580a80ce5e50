"""The paper's protocol end to end from one command, scaled down to run in CI.

The run keeps everything of the ``paper`` recipe (alexnet2012 at 227, the paper's initialization and
dropout, its SGD update, the mean image, random crops, mirrors, PCA lighting from the data, the plateau
rule, ten-patch testing) and changes only what the size of the run forces:

- 800 training images of 10 classes (256x256 JPEGs from ``alexnet data synth``) instead of 1.2M, 80 for
  validation, and 6 epochs of 25 steps instead of 90 epochs.
- The learning rate, 0.005 at batch 32. With the paper's N(0, 0.01) weights and biases of 1, fc7's output
  is nearly the same positive vector for every image at first, so fc8 moves every class's logit by about
  lr x |fc7|^2 x (the class's share of the batch - its predicted probability) per step. With 10 classes
  in batches of 32 those shares vary 19 times more from batch to batch than with the paper's 1000
  classes in batches of 128, and at lr 0.01 the logits swing: the training loss climbs to 5-6 (ln 10 =
  2.3) and how long the net then sits at chance is chaotic (26 to over 80 steps measured). Runs at 1
  and 2 threads differ from the first step (fc8's weight gradient, a sum over the batch that the two
  thread counts split differently, differs in the last bit; every other tensor is bit-identical), and
  that last bit decides when such a run leaves chance: the reason this test, with lr 0.01, passed on
  one processor and failed on another. At 0.005 the swing stays under 3.9 and the wait is regular:
  the training loss falls below 2.1 after 51-60 steps in each of 12 runs (seeds 0-8; 400, 800 and 960
  images).
- The plateau rule's patience and threshold: 2 epochs, 30 points of val top-1 error, so that only the
  jump out of chance counts as progress. Epoch 2 ends at or near chance (step 50), epoch 3 has left it
  (step 75, 15 steps after the longest wait measured): the jump is 39-54 points. The slower progress of
  epochs 4 and 5 (at most 24 points) does not count, so the rule divides the lr after epoch 5 and the
  test sees epoch 6 run at the lower lr.
- The reported split is val (the synthetic folder has no test split), so the run reports its last
  weights, not the best-on-val ones.
- channels-last memory layout, which changes the speed, not the result.

Measured on a 2-core AMD EPYC VM (AVX512-BF16), torch 2.13.0+cpu, 2026-12-03, this test's data and
command with ``--seed S`` and OMP_NUM_THREADS=T (val top-1 % after each epoch; ten-patch top-1 error):

    T S  val top-1 after epochs 1-6         lr divided after   ten-patch top-1 error
    1 0  10.0 27.5 63.7 40.0 61.3 73.8      epoch 5            0.263
    1 1  10.0 18.8 62.5 60.0 62.5 63.7      epoch 5            0.338
    1 2  10.0 10.0 51.2 68.8 67.5 75.0      epoch 5            0.250
    2 0  10.0 27.5 63.7 45.0 61.3 67.5      epoch 5            0.313
    2 1  10.0 18.8 62.5 66.2 66.2 72.5      epoch 5            0.288
    2 2  10.0 10.0 48.8 60.0 75.0 75.0      epoch 5            0.250

Margins, observed against the bar: the end error at most 0.338 against MAX_TOP1_ERROR 0.5; val top-1 of
epoch 3 at least 48.8% where a drop at chance needs it under 40% (7 images of 80); the largest gain of
epochs 4-5 over epoch 3, 23.8 points, where the 30 that would restart the wait is 5 images away. (The
1- and 2-thread runs of one seed are not bit-identical: their val curves part at epoch 3 or 4.)
"""

import json
from pathlib import Path

import pytest

CLASSES, PER_CLASS, VAL_PER_CLASS = 10, 80, 8
EPOCHS, PATIENCE, THRESHOLD = 6, 2, 30.0
LR, BATCH = 0.005, 32
MAX_TOP1_ERROR = 0.5  # ten-patch top-1 error on val at the end; chance is 0.9


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_paper_protocol_scaled_down(tmp_path, cli):
    r = cli("data", "synth", tmp_path / "imagenet-like", "--classes", CLASSES, "--per-class", PER_CLASS,
            "--val-per-class", VAL_PER_CLASS, "--size", "256", "--seed", "0")
    assert r.returncode == 0, r.stderr
    r = cli("train", "--model", "alexnet2012", "--recipe", "paper", "--data", tmp_path / "imagenet-like",
            "--batch-size", BATCH, "--lr", LR, "--epochs", EPOCHS, "--patience", PATIENCE,
            "--plateau-threshold", THRESHOLD, "--channels-last", "--out", tmp_path / "runs",
            "--name", "paper", "--quiet")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "runs" / "paper"
    cfg = json.loads((run / "config.json").read_text())
    # the recipe's values, where not scaled down
    assert cfg["config"]["recipe"] == "paper"
    for key, want in {"optimizer": "paper-sgd", "momentum": 0.9, "weight_decay": 5e-4, "schedule": "plateau",
                      "lr_factor": 0.1, "max_drops": 3, "normalize": "paper", "crop": "random",
                      "lighting": "data", "lighting_std": 0.1, "tta": "10crop"}.items():
        assert cfg["config"][key] == want, key
    opts = cfg["config"]["model_opts"]
    assert (opts["init"], opts["dropout_form"], opts["towers"]) == ("paper", "paper", 2)

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
    assert results["test_top1_error"] < MAX_TOP1_ERROR, results
    assert results["test_top5_error"] < results["test_top1_error"]

    # the paper's ensemble line: the members and the average of their softmax
    ckpts = run / "checkpoints"
    # (centre crops here: the ten patches were checked above and would cost two more ten-patch passes)
    r = cli("evaluate", ckpts / "best.pt", ckpts / "last.pt", "--tta", "center", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["results"]
    assert [row["name"].rsplit("/", 1)[-1] for row in rows] == ["best.pt", "last.pt", "ensemble"]
    # val both chose best.pt and is the reported split, so the run reported its last weights
    assert results["test_split"] == "val" and results["weights"].startswith("last")
    assert rows[1]["top1_accuracy"] == pytest.approx(results["views"]["center"]["top1_accuracy"])
    assert 1 - rows[2]["top1_accuracy"] < MAX_TOP1_ERROR
