"""Several processes (torchrun + DDP, gloo on the CPU): the same run on 1, 2 or 4 processes and on two
nodes, a run that torchrun restarts after a worker is killed, and a run resumed on another number of
processes.

The tolerance. Processes that split a global batch add its gradient up in another order (each process
sums its part, then the all-reduce sums the parts), so float32 results differ in the last bits: 1.5e-8
after one step. SGD at this learning rate amplifies such differences by about 1.5x per step in the first
epochs; after the 10 steps below the weights of 1 and 2 processes differ by at most 1.2e-5 (measured
2026-12-03, 2-core AMD EPYC, torch 2.13.0+cpu), under ``ATOL`` = 1e-4. The metrics follow: losses agree
within 1e-4, and top-1 within one image, since an image whose two highest logits are closer than that
can go either way (measured: 113 vs 112 of the 359 val images right after epoch 2). The same number of
processes repeats itself bit for bit: on one node or two, restarted or not.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import alexnet
from alexnet.training.trainer import Callback

ATOL = 1e-4
TRAIN_IMAGES, VAL_IMAGES = 1078, 359  # digits: the 60% and 20% splits of 1,797
OPTIONS = {"model_opts": {"width": 0.5}, "batch_size": 256, "lr": 0.01, "device": "cpu", "quiet": True,
           "save_every": 2}  # 5 steps an epoch (1,078 training images)


def command(epochs: int = 2) -> list[str]:
    """``alexnet train`` flags of the runs compared here."""
    return ["--model", "alexnet-small", "--opt", "width=0.5", "--data", "digits", "--epochs", str(epochs),
            "--batch-size", "256", "--lr", "0.01", "--device", "cpu", "--quiet", "--save-every", "2"]


RUN = command()
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def torchrun(*args: str, nproc: int = 2, extra: tuple = ("--standalone",), wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra, "--nproc-per-node", str(nproc),
           "-m", "alexnet", "train", *args]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_same_run(run: Path, ref: Path, *, exact: bool) -> None:
    a, b = weights(run), weights(ref)
    if exact:
        assert max_difference(a, b) == 0.0
    else:
        assert max_difference(a, b) < ATOL
    ma, mb = metrics(run), metrics(ref)
    assert len(ma) == len(mb) == 2
    for x, y in zip(ma, mb):
        for key in ("train_loss", "val_loss"):
            assert x[key] == pytest.approx(y[key], abs=0 if exact else 1e-4), key
        for key, images in (("train_top1", TRAIN_IMAGES), ("val_top1", VAL_IMAGES)):
            assert abs(x[key] - y[key]) * images <= (0 if exact else 1) + 1e-9, key


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (this one) and two processes (torchrun), the same command."""
    out = tmp_path_factory.mktemp("runs")
    alexnet.train("alexnet-small", "digits", epochs=2, out=str(out), name="one", **OPTIONS)
    torchrun(*RUN, "--out", str(out), "--name", "two")
    return out


def test_one_and_two_processes_end_with_the_same_weights_and_metrics(runs):
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]
    assert json.loads((runs / "two" / "config.json").read_text())["world_size"] == 2
    assert "x2" in (runs / "two" / "log.txt").read_text().splitlines()[0]
    assert_same_run(runs / "two", runs / "one", exact=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_loopback_are_the_two_process_run(runs, tmp_path):
    """Two torchrun agents, one process each, meeting through c10d rendezvous on 127.0.0.1: the run of two
    processes on one node, bit for bit."""
    nodes = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
             "--rdzv-id", "alexnet-test"]
    agents = [torchrun(*RUN, "--out", str(tmp_path), "--name", "nodes", nproc=1, extra=nodes, wait=False)
              for _ in range(2)]
    for agent in agents:
        out, _ = agent.communicate(timeout=600)
        assert agent.returncode == 0, out[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["nodes"]
    assert json.loads((tmp_path / "nodes" / "config.json").read_text())["world_size"] == 2
    assert_same_run(tmp_path / "nodes", runs / "two", exact=True)


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


@pytest.mark.slow
def test_a_killed_worker_is_restarted_by_torchrun_and_the_run_ends_identical(runs, tmp_path):
    agent = torchrun(*RUN, "--out", str(tmp_path), "--name", "heal",
                     extra=("--standalone", "--max-restarts", "1"), wait=False)
    last = tmp_path / "heal" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.is_file():  # the first save, after step 2
        assert agent.poll() is None and time.monotonic() < deadline, "the run ended before a checkpoint"
        time.sleep(0.1)
    workers = children(agent.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    out, _ = agent.communicate(timeout=600)
    assert agent.returncode == 0, out[-3000:]
    log = (tmp_path / "heal" / "log.txt").read_text()
    assert "torchrun restarted the group: restart 1" in log
    assert json.loads((tmp_path / "heal" / "state.json").read_text())["state"] == "finished"
    assert_same_run(tmp_path / "heal", runs / "two", exact=True)


class StopAt(Callback):
    """Ask the run to stop (as Ctrl-C does) after step ``step`` of epoch ``epoch``."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.step, self.epochs_done = epoch, step, 0

    def on_start(self, epoch, epochs):
        self.epochs_done = epoch

    def on_epoch(self, record):
        self.epochs_done = record["epoch"]

    def on_step(self, step, steps):
        if self.epochs_done + 1 == self.epoch and step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_a_run_resumed_on_another_number_of_processes_is_the_same_run(runs, tmp_path):
    """Epoch 1 on two processes, half of epoch 2 on one (this process, stopped after step 4), the rest on
    four: the one-process run within the tolerance."""
    run = tmp_path / "moved"
    torchrun(*command(epochs=1), "--out", str(tmp_path), "--name", "moved")
    with pytest.raises(alexnet.TrainingStopped):
        alexnet.train(resume=str(run), epochs=2, quiet=True, callbacks=[StopAt(epoch=2, step=4)])
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["state"]["step"]) == (1, 4)
    torchrun("--resume", str(run), nproc=4)
    log = (run / "log.txt").read_text()
    assert "resumed on 1 process(es), trained so far on 2" in log
    assert "resumed on 4 process(es), trained so far on 1" in log
    assert [r["world_size"] for r in json.loads((run / "config.json").read_text())["resumes"]] == [1, 4]
    assert_same_run(run, runs / "one", exact=False)


def test_max_restarts_needs_a_named_run(cli, tmp_path):
    r = cli("train", "--model", "lenet5", "--data", "digits", "--out", tmp_path,
            env={"TORCHELASTIC_MAX_RESTARTS": "2"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--name" in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())

