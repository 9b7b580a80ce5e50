"""Every input checked, every failure recoverable: bad numbers and options, broken files, killed runs
and writers, and the feedback a long phase owes its user. Each case is one line on stderr with exit
code 2 (or a warning), and nothing a user made is lost or left half-written."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.data.transforms import Normalization, Preset
from alexnet.checkpoint import load_checkpoint

QUICK = ("--epochs", "1", "--quiet")


def one_line_error(r, *needles, code=2):
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("alexnet: error:", "alexnet train: error:")), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch default run (alexnet-small on digits)."""
    from alexnet.cli import main

    out = tmp_path_factory.mktemp("runs")
    assert main(["train", *QUICK, "--out", str(out), "--name", "one"]) == 0
    return out / "one"


@pytest.mark.parametrize("flags, needle", [
    (("--lr", "nan"), "lr must be a finite number"),
    (("--lr", "inf"), "lr must be a finite number"),
    (("--momentum", "nan"), "momentum must be a finite number"),
    (("--lr", "0"), "lr must be > 0"),
    (("--weight-decay", "-1"), "weight_decay must be >= 0"),
    (("--momentum", "-1"), "momentum must be in [0, 1)"),
    (("--momentum", "1.5"), "momentum must be in [0, 1)"),
    (("--lr-factor", "2"), "lr_factor must be in (0, 1)"),
    (("--warmup-epochs", "-1"), "argument --warmup-epochs: must be >= 0"),  # integer ranges: the flag's own
    (("--max-drops", "-1"), "argument --max-drops: must be >= 0"),
    (("--batch-size", "0"), "argument --batch-size: must be >= 1"),
    (("--workers", "-1"), "argument --workers: must be >= 0"),  # as every command's --workers
    (("--lighting-std", "-0.1"), "lighting_std must be >= 0"),
    (("--name", "../escape"), "not a path"),
    (("--name", "/tmp/abs"), "not a path"),
    (("--opt", "dropout=abc"), "dropout must be a number"),
    (("--opt", "lrn=maybe"), "lrn must be true or false"),
    (("--opt", "num_classes=10"), "--num-classes"),
    (("--opt", "towers"), "KEY=VALUE"),
    (("--device", "cuda:9"), "cuda"),
])
def test_impossible_values_are_refused_before_anything_is_written(flags, needle, tmp_path, cli):
    one_line_error(cli("train", *QUICK, "--out", tmp_path / "runs", *flags), needle)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("args, needle", [
    (("--opt", "num_classes=10"), "--num-classes"),
    (("--opt", "dropout=abc"), "dropout must be a number"),
    (("--opt", "lrn=maybe"), "lrn must be true or false"),
    (("--num-classes", "0"), "num_classes must be a positive integer"),
    (("--input-size", "3,0,32"), "positive"),
])
def test_summary_options_are_typed_from_the_model_signature(args, needle, cli):
    one_line_error(cli("summary", "alexnet-small", *args), needle)


def test_a_diverging_run_stops_with_its_last_good_checkpoint(tmp_path, cli):
    r = cli("train", "--epochs", "2", "--quiet", "--lr", "50", "--out", tmp_path, "--name", "nan")
    line = one_line_error(r, "training loss became", "diverged")
    assert "lower" in line and "--lr" in line
    run = tmp_path / "nan"
    assert not (run / "results.json").exists()  # no result with NaN in it
    for name in ("config.json",):
        json.loads((run / name).read_text())  # strict JSON: would fail on NaN
    if (run / "checkpoints" / "last.pt").exists():  # an epoch that ended before the blow-up
        state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
        assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("content, needle", [
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a PyTorch checkpoint (it is a PNG image)"),
    (b"these are not weights\n", "not a PyTorch checkpoint (it is a text file)"),
    (b"", "empty file"),
])
def test_unreadable_files_say_what_they_are(content, needle, tmp_path, cli):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    line = one_line_error(cli("evaluate", path), needle)
    assert "weights_only" not in line


def test_truncated_and_code_carrying_checkpoints(run, tmp_path, cli):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "checkpoints" / "best.pt").read_bytes()[:5000])
    line = one_line_error(cli("evaluate", truncated), "truncated or damaged")
    assert "weights_only" not in line

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil)
    line = one_line_error(cli("evaluate", evil), "would run code")
    assert not (tmp_path / "pwned").exists() and "weights_only" not in line


def test_a_run_killed_before_its_first_checkpoint_resumes_from_its_config(run, tmp_path, cli):
    # What a kill before the first save leaves: the folder, config.json and the log, no checkpoint.
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.json").write_text((run / "config.json").read_text())
    (killed / "log.txt").write_text("run started\n")
    again = cli("train", "--out", tmp_path, "--name", "killed")
    one_line_error(again, "already exists", "--resume")  # the name is taken ...
    r = cli("train", "--resume", killed)  # ... and --resume starts it from its recorded config
    assert r.returncode == 0, r.stderr
    assert "restarting" in r.stdout
    metrics = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    drop = ("seconds", "images_per_second")
    assert [{k: v for k, v in m.items() if k not in drop} for m in metrics] == \
        [{k: v for k, v in m.items() if k not in drop} for m in expected]


def test_resume_cleans_leftovers_and_records_a_longer_schedule(run, tmp_path, cli):
    copy = tmp_path / "longer"
    copy.mkdir()
    for p in run.rglob("*"):
        if p.is_file():
            (copy / p.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
            (copy / p.relative_to(run)).write_bytes(p.read_bytes())
    leftover = copy / "checkpoints" / ".last.pt.tmp-12345"
    leftover.write_bytes(b"half a checkpoint")
    r = cli("train", "--resume", copy, "--epochs", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert not leftover.exists()
    record = json.loads((copy / "config.json").read_text())
    assert record["config"]["epochs"] == 2
    assert record["resumes"][0]["changed"] == {"epochs": [1, 2]}
    log = (copy / "log.txt").read_text()
    assert "epochs 1 -> 2" in log and "cosine" in log and "removed .last.pt.tmp-12345" in log
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == 2


def test_pretrained_accepts_a_run_directory(run, tmp_path, cli):
    r = cli("train", *QUICK, "--pretrained", run, "--out", tmp_path, "--name", "ft")
    assert r.returncode == 0, r.stderr


def test_prepare_cleans_a_killed_prepare_and_uses_normal_permissions(tmp_path, cli):
    stale = tmp_path / ".store.partial-999999999"
    stale.mkdir()
    (stale / "train-images.npy").write_bytes(bytes(1000))
    old = os.umask(0o022)
    try:
        r = cli("data", "prepare", "digits", tmp_path / "store")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o755
    for f in (tmp_path / "store").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_ten_patches_follow_the_flip_setting():
    """Five views (corners + centre) without mirrors, ten with; each view is the crop written out."""
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.uint8).reshape(2, 1, 8, 8)
    norm = Normalization.per_channel(torch.zeros(1), torch.ones(1))
    five = Preset(train=False, crop=6, base_size=8, norm=norm, flip=False, tta="10crop")(images)
    ten = Preset(train=False, crop=6, base_size=8, norm=norm, flip=True, tta="10crop")(images)
    assert five.shape == (2, 5, 1, 6, 6) and ten.shape == (2, 10, 1, 6, 6)
    x = images.float()
    corners = [x[..., :6, :6], x[..., :6, 2:], x[..., 2:, :6], x[..., 2:, 2:], x[..., 1:7, 1:7]]
    for view in corners:
        assert any(torch.equal(five[:, i], view) for i in range(5))
        assert any(torch.equal(ten[:, i], view.flip(-1)) for i in range(10))


def test_feedback_for_long_phases_and_slow_settings(run, cli):
    r = cli("evaluate", run, "--amp", "fp16")
    assert r.returncode == 0, r.stderr
    assert "fp16 on the CPU" in r.stderr
    stats = cli("data", "stats", "digits")
    assert stats.returncode == 0 and "statistics of the training images" in stats.stderr
    help_text = cli("train", "--help").stdout
    assert "few minutes" not in help_text and "small 20" in help_text  # epochs: the recipe's default


def test_csv_has_unix_line_ends_and_paper_rows_carry_a_caveat(run, cli):
    r = cli("evaluate", run, "--format", "csv")
    assert r.returncode == 0 and "\r" not in r.stdout
    table = cli("evaluate", run, "--paper").stdout
    assert "not comparable with digits" in table


def test_sigint_exit_code_is_kept_by_the_python_entry_point(tmp_path):
    """alexnet.train raises TrainingStopped (not a silent return) when a signal stopped the run."""
    import alexnet
    from alexnet.training import launch

    class Stop(launch.StopRequest):
        def __enter__(self):
            self.signum = signal.SIGINT
            return self

    original = launch.StopRequest
    launch.StopRequest = Stop
    try:
        with pytest.raises(alexnet.TrainingStopped) as e:
            alexnet.train(epochs=1, quiet=True, out=str(tmp_path), name="stopped")
    finally:
        launch.StopRequest = original
    assert e.value.signum == signal.SIGINT and Path(e.value.run_dir).name == "stopped"
    assert (tmp_path / "stopped" / "checkpoints" / "last.pt").is_file()
    np.testing.assert_equal(load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["epoch"], 0)


def test_a_tiny_picture_is_predicted_with_a_warning(run, tmp_path, cli):
    from PIL import Image

    Image.new("L", (1, 1), 255).save(tmp_path / "dot.png")
    r = cli("predict", run, tmp_path / "dot.png")
    assert r.returncode == 0, r.stderr
    assert "1x1 pixels" in r.stderr and "upscaled to 28x28" in r.stderr


def test_a_preset_that_does_not_fit_the_model_is_named(run, tmp_path, cli):
    from alexnet.checkpoint import save_checkpoint

    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    norm = {"mean": torch.zeros(3, 1, 1), "std": torch.ones(3, 1, 1)}  # an RGB normalization
    save_checkpoint(tmp_path / "odd.pt", {**ckpt, "preset": {**ckpt["preset"], "norm": norm}})
    one_line_error(cli("evaluate", tmp_path / "odd.pt"), "1-channel images", "normalizes 3 channel(s)")
