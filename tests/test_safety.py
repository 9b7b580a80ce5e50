"""Safe to run: each case of a hostile probe of the command line, reproduced. A run killed between its two
checkpoint writes, symlink loops and FIFOs in image folders, names that are not UTF-8, two processes on
one run, a run shortened on resume, how a run ended, a full disk, malformed checkpoints, export formats,
``--out`` a file and oversized synthetic data, config sections and one rule for ``--workers``. Every
failure is one line on stderr with exit code 2, and nothing a user made is lost or left half-made."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet.checkpoint import load_checkpoint, save_checkpoint
from alexnet.files import DiskFullError, atomic_write, printable
from alexnet.training.rundir import RunDir, run_state

# the note a command that reads a run prints before its work: which checkpoint and why (data/selection.py)
WEIGHTS_NOTE = re.compile(r"^alexnet: .*: (best|last)\.pt \(epoch \d+\): ")
TINY = ("--model", "lenet5", "--data", "digits:classes=0-2", "--batch-size", "16", "--quiet")


def one_line_error(r, *needles, code=2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip() and not WEIGHTS_NOTE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("alexnet"), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


class Hung(BaseException):
    """Raised in a call that did not return in time: no ``except Exception`` on its way swallows it."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a walk that follows a link loop, an open of a FIFO): SIGALRM after
    ``seconds``, then every second until the block is left."""
    def expire(*_):
        raise Hung(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two epochs of lenet5 on three digits; the second epoch improves on the first (both are best once)."""
    from alexnet.cli import main

    out = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out), "--name", "two"]) == 0
    return out / "two"


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- 6. a kill between the last.pt and best.pt writes

class Killed(BaseException):
    """What SIGKILL does to the process, raised where it lands: nothing after it runs (no handler sees it
    as an error of its own)."""


def test_a_kill_between_last_and_best_then_resume_reports_the_epoch_it_names(tmp_path, cli, monkeypatch):
    import alexnet.training.trainer as trainer

    real = trainer.save_checkpoint

    def save_until_best_of_epoch_2(path, content):
        if Path(path).name == "best.pt" and content["epoch"] == 2:
            raise Killed  # last.pt of epoch 2 is on disk, best.pt still holds epoch 1
        real(path, content)

    with monkeypatch.context() as m:
        m.setattr(trainer, "save_checkpoint", save_until_best_of_epoch_2)
        with pytest.raises(Killed):
            cli("train", *TINY, "--epochs", "2", "--out", tmp_path, "--name", "k")
    run = tmp_path / "k"
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["best_epoch"]) == (2, 2)  # the kill point: epoch 2 improved ...
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 1  # ... and best.pt is behind
    r = cli("train", "--resume", run)
    assert r.returncode == 0, r.stderr
    assert "best.pt rewritten from last.pt" in (run / "log.txt").read_text()
    results = json.loads((run / "results.json").read_text())
    assert results["best_epoch"] == 2 and results["weights"].startswith("best: epoch 2")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["epoch"] == 2 and same_weights(best["model"], last["model"])  # epoch 2's weights ...
    tested = json.loads(cli("evaluate", run / "checkpoints" / "last.pt", "--format", "json").stdout)
    assert tested["results"][0]["top1_accuracy"] == results["test_top1_accuracy"]  # ... are what was tested


def test_checkpoints_that_do_not_belong_together_are_refused_on_resume(run, tmp_path, cli):
    other = copy_run(run, tmp_path / "other")
    last = load_checkpoint(other / "checkpoints" / "last.pt")
    save_checkpoint(other / "checkpoints" / "last.pt", {**last, "best_epoch": 1})  # best.pt holds epoch 2
    before = (other / "checkpoints" / "best.pt").read_bytes()
    one_line_error(cli("train", "--resume", other, "--epochs", "3"), "holds epoch 2", "names epoch 1")
    assert (other / "checkpoints" / "best.pt").read_bytes() == before


# -- 7. symlink loops and FIFOs in image folders

def tiny_pngs(folder: Path, n: int, colour) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (40, 30), tuple(v + 7 * i for v in colour)).save(folder / f"{i}.png")


def test_symlink_loops_are_walked_once_and_a_fifo_is_no_image(tmp_path):
    from alexnet.data import build_source
    from alexnet.data.check import check_dataset

    data = tmp_path / "data"
    tiny_pngs(data / "cat", 10, (200, 30, 30))
    tiny_pngs(data / "dog", 10, (30, 30, 200))
    for cls in ("cat", "dog"):  # two links to their own folder in each class: 2^depth paths without care
        (data / cls / "a").symlink_to(".")
        (data / cls / "b").symlink_to(".")
    (data / "cat" / "up").symlink_to("..")
    (data / "loop").symlink_to(".")  # a class folder that is the dataset itself
    (data / "dog" / "also.png").symlink_to(data / "cat" / "0.png")  # one file, two paths
    os.mkfifo(data / "dog" / "pipe.jpg")  # opening it to read would wait for a writer forever
    with deadline(60):
        source = build_source(f"folder:{data}")
        report = check_dataset(f"folder:{data}")
    assert source.classes == ["cat", "dog"]
    counts = {s: len(ds) for s, ds in source.splits.items()}
    assert sum(counts.values()) == 20, counts  # the 20 files on disk, each once
    files = [f for s in source.splits.values() for f in map(os.path.realpath, map(s.path, range(len(s))))]
    assert len(set(files)) == 20
    assert report["usable"] and sum(s["files"] for s in report["splits"].values()) == 20
    assert "1 image name(s) that are not regular files" in report["notes"]["walk"]


def test_a_fifo_given_to_predict_is_an_error_not_a_hang(run, tmp_path, cli):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with deadline(60):
        r = cli("predict", run, fifo)
    one_line_error(r, "pipe.png", "not a regular file")


# -- 8. names that are not UTF-8

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # a Latin-1 name, as a file system hands it to Python (PEP 383)


def test_printable_shows_the_bytes_of_a_name_that_is_not_utf8():
    assert printable(NOT_UTF8) == "caf\\xe9"
    assert printable("café ünïcode") == "café ünïcode"
    assert printable("\ud800") == "\\ud800"  # a surrogate that no file name made


def test_non_utf8_class_folders_and_files_train_log_and_plot(tmp_path, cli):
    data = tmp_path / "data"
    tiny_pngs(data / NOT_UTF8, 10, (200, 30, 30))
    tiny_pngs(data / "plain", 10, (30, 30, 200))
    (data / "plain" / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")  # undecodable, odd name
    r = cli("train", "--model", "lenet5", "--opt", "img_size=32", "--data", f"folder:{data}", "--epochs", "1",
            "--quiet", "--batch-size", "4", "--out", tmp_path, "--name", "r")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "r"
    log = (run / "log.txt").read_bytes().decode("utf-8")  # valid UTF-8 throughout
    assert "skipped undecodable file" in log and "bad\\xff.png" in log
    results = json.loads((run / "results.json").read_text())
    assert set(results["per_class_accuracy"]) == {"caf\\xe9", "plain"}
    assert (run / "plots" / "confusion.png").stat().st_size > 0


def test_a_non_utf8_run_name_is_one_line_and_makes_no_folder(tmp_path, cli):
    r = cli("train", *TINY, "--epochs", "1", "--out", tmp_path / "runs", "--name", os.fsdecode(b"run\xff"))
    one_line_error(r, "--name", "run\\xff", "UTF-8")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# -- 9. one process per run; unnamed runs of the same second; 11. how a run ended

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_run_held_by_a_live_process_is_refused_and_a_dead_ones_lock_is_free(run, tmp_path, cli):
    target = copy_run(run, tmp_path / "busy")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target / ".lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        RunDir(target).set_state("training")  # what the trainer records when its epochs start
        assert run_state(target) == "training"
        before = sorted(p.name for p in target.rglob("*"))
        one_line_error(cli("train", "--resume", target, "--epochs", "3"), "being trained by another process",
                       f"pid {os.getpid()}")
        assert sorted(p.name for p in target.rglob("*")) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_state(target) == "killed"  # the record says training, and nobody holds the lock
    rundir = RunDir(target)
    rundir.lock()  # the dead process's lock is gone with it
    rundir.unlock()


def test_unnamed_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, cli, monkeypatch):
    import alexnet.training.config as config

    monkeypatch.setattr(config, "auto_name", lambda: "20250101-000000")  # both start in this second
    for _ in range(2):
        r = cli("train", *TINY, "--epochs", "1", "--out", tmp_path)
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20250101-000000", "20250101-000000-2"]
    for folder in tmp_path.iterdir():
        assert json.loads((folder / "config.json").read_text())["config"]["name"] == folder.name
        assert run_state(folder) == "finished"


def test_a_diverged_run_says_so_in_its_log_and_state(tmp_path, cli):
    r = cli("train", *TINY, "--epochs", "1", "--lr", "1e9", "--out", tmp_path, "--name", "boom")
    line = one_line_error(r, "diverged")
    run = tmp_path / "boom"
    assert run_state(run) == "diverged"
    assert line.removeprefix("alexnet: error: ") in (run / "log.txt").read_text()
    assert json.loads((run / "state.json").read_text())["reason"] == line.removeprefix("alexnet: error: ")


def test_run_states_of_a_finished_a_stopped_and_an_old_run(run, tmp_path):
    assert run_state(run) == "finished"
    stopped = copy_run(run, tmp_path / "stopped")
    RunDir(stopped).set_state("stopped", "stopped by SIGTERM")
    assert run_state(stopped) == "stopped"
    old = copy_run(run, tmp_path / "old")  # a run of an earlier version: no state.json
    (old / "state.json").unlink()
    assert run_state(old) == "finished"
    (old / "results.json").unlink()
    assert run_state(old) == "stopped"


# -- 10. a resume never shortens a run

def test_a_resume_with_fewer_epochs_than_trained_is_refused(run, tmp_path, cli):
    target = copy_run(run, tmp_path / "r")
    config = (target / "config.json").read_text()
    one_line_error(cli("train", "--resume", target, "--epochs", "1"), "--epochs 1", "2 epoch(s)",
                   "--epochs 2 or more")
    assert (target / "config.json").read_text() == config


# -- 12. a full disk

def test_a_full_disk_is_one_line_naming_the_folder_and_the_space(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_text("old")

    def full(f):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DiskFullError) as e:
        atomic_write(kept, full)
    assert str(tmp_path) in str(e.value) and "more than 1.0 kB" in str(e.value) and "\n" not in str(e.value)
    assert kept.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.json"]


def test_a_checkpoint_on_a_full_disk_ends_the_run_in_one_line_and_keeps_the_last(tmp_path, cli, monkeypatch):
    import alexnet.files as files

    real_save, real_usage = torch.save, shutil.disk_usage

    def save(obj, path, *a, **kw):
        if Path(path).name.startswith(".best.pt") and obj["epoch"] == 2:
            Path(path).write_bytes(b"PK" * 100)  # what torch.save managed before the disk filled up
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        real_save(obj, path, *a, **kw)

    def usage(path):  # the device is full: a few hundred bytes free
        return real_usage(path)._replace(free=512)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(files.shutil, "disk_usage", usage)
    r = cli("train", *TINY, "--epochs", "2", "--out", tmp_path, "--name", "full")
    run = tmp_path / "full"
    line = one_line_error(r, "no space left", str(run / "checkpoints"), "best.pt", "needs about")
    assert "inline_container" not in line
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2  # written before: intact
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary left
    assert run_state(run) == "failed" and "no space left" in (run / "log.txt").read_text()


# -- 13. malformed checkpoints of our own format

def test_malformed_checkpoints_are_one_line(run, tmp_path, cli):
    from safetensors.torch import save_file

    best = load_checkpoint(run / "checkpoints" / "best.pt")
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)

    def variant(name, **changes):
        path = tmp_path / name
        save_checkpoint(path, {k: v for k, v in {**best, **changes}.items() if v is not None})
        return path

    extra = variant("extra.pt", model={**best["model"], "extra.weight": torch.zeros(1)})
    nameless = variant("nameless.pt", model_name=None)
    no_preset = variant("no-preset.pt", preset={"crop": 28})
    named_preset = variant("named-preset.pt", preset="nosuch")
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in best["model"].items()}, str(bare),
              metadata={"alexnet": json.dumps({"options": {}})})
    for args, needle in [
        (("predict", extra, image), "unexpected: extra.weight"),
        (("evaluate", extra), "unexpected: extra.weight"),
        (("export", extra, "-o", tmp_path / "e.safetensors"), "unexpected: extra.weight"),
        (("evaluate", nameless), "model_name"),
        (("evaluate", no_preset), "malformed preset"),
        (("predict", named_preset, image), "unknown preset 'nosuch'"),
        (("evaluate", bare), "incomplete"),
    ]:
        one_line_error(cli(*args), needle)
    assert not (tmp_path / "e.safetensors").exists()

    copied = copy_run(run, tmp_path / "copied")  # best.pt copied over last.pt, then --resume
    shutil.copy(copied / "checkpoints" / "best.pt", copied / "checkpoints" / "last.pt")
    one_line_error(cli("train", "--resume", copied, "--epochs", "3"), "no optimizer state", "--pretrained")


# -- 14. export: the extension and the format agree

def test_export_extension_and_format_agree_and_replacing_is_said(run, tmp_path, cli):
    one_line_error(cli("export", run, "-o", tmp_path / "m.onnx", "--format", "safetensors"), "m.safetensors")
    one_line_error(cli("export", run, "-o", tmp_path / "m.safetensors", "--format", "onnx"), "m.onnx")
    one_line_error(cli("export", run, "-o", tmp_path / "m", "--format", "pt2"), "m.pt2")
    assert list(tmp_path.iterdir()) == []
    first = cli("export", run, "-o", tmp_path / "m.safetensors")
    assert first.returncode == 0 and "replacing" not in first.stdout, first.stderr
    again = cli("export", run, "-o", tmp_path / "m.safetensors")
    assert again.returncode == 0 and "replacing the file that was there" in again.stdout


# -- 15. --out a file; synthetic data bounded by memory

def test_out_that_is_a_file_is_one_line(tmp_path, cli):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    one_line_error(cli("train", *TINY, "--epochs", "1", "--out", taken), str(taken), "not a folder")
    one_line_error(cli("train", *TINY, "--epochs", "1", "--out", taken / "runs"), "not a folder")
    assert taken.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_synthetic_sizes_are_bounded_by_available_memory(cli, monkeypatch):
    import alexnet.data.synth as synth

    monkeypatch.setattr(synth, "available_memory", lambda: 2 * 10**9)  # a machine with 2 GB to spare
    # 60,000-pixel images: one of 69,000 x 69,000 pixels at most, 64 bytes per pixel while it is drawn,
    # beside the 10 classes x (50 + 10 + 10) images of 3 x 256 x 256 bytes kept
    need = 69000 ** 2 * 64 + 10 * 70 * 3 * 256 * 256
    one_line_error(cli("train", "--data", "synthetic:size=60000", "--epochs", "1"), "synthetic",
                   f"{need / 1e9:.1f} GB needed", "2.0 GB")
    # 10 classes x (10^8 + 2 x 2*10^7) images of 3 x 256 x 256 bytes
    kept = 10 * (10**8 + 2 * 2 * 10**7) * 3 * 256 * 256
    one_line_error(cli("train", "--data", "synthetic:per-class=100000000", "--epochs", "1"),
                   f"{kept / 1e9:.1f} GB of images kept")
    synth.check_memory(10 * 70 * 3 * 256 * 256, 300)  # the default set fits


# -- 16. config sections, --model checked, one rule for --workers

def test_config_sections_named_like_options_work(tmp_path):
    from alexnet.errors import UserError
    from alexnet.training.config import read_config_file

    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nmodel = "lenet5"\nmodel_opts = { activation = "relu" }\n'
                    '[data]\ndata = "digits:classes=0-2"\nbatch-size = 16\n[optim]\nepochs = 1\n')
    assert read_config_file(str(toml)) == {"model": "lenet5", "model_opts": {"activation": "relu"},
                                           "data": "digits:classes=0-2", "batch_size": 16, "epochs": 1}
    toml.write_text('epochs = 2\n[optim]\nepochs = 1\n')
    with pytest.raises(UserError, match="epochs is given twice"):
        read_config_file(str(toml))


def test_predict_with_another_model_than_the_run_is_refused(run, tmp_path, cli):
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    one_line_error(cli("predict", run, image, "--model", "nosuch"), "lenet5", "not nosuch")
    one_line_error(cli("evaluate", run, "--model", "alexnet2012"), "lenet5", "not alexnet2012")


def test_every_workers_flag_has_one_rule():
    import argparse

    from alexnet.cli import build_parser
    from alexnet.data.base import DataError
    from alexnet.data.loader import EpochLoader

    found = []

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    walk(p, f"{name} {sub}")
            elif "--workers" in action.option_strings:
                found.append((name, action))

    walk(build_parser(), "alexnet")
    assert {"alexnet train", "alexnet evaluate", "alexnet features", "alexnet data check"} <= {
        name for name, _ in found}
    for name, action in found:
        with pytest.raises(argparse.ArgumentTypeError, match="must be >= 0, got -1"):
            action.type("-1")
        assert action.type("0") == 0, name
    with pytest.raises(DataError, match="workers must be an integer >= 0"):
        EpochLoader(None, [], workers=-1)  # the Python API: the same rule
