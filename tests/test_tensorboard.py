"""``alexnet train --tensorboard``: the event files, read back with TensorBoard's own reader."""

import json
import sys

import pytest

from alexnet.cli import main


@pytest.mark.slow
def test_event_files_hold_the_epoch_records_and_conv1(tmp_path, cli):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    r = cli("train", "--model", "lenet5", "--epochs", "2", "--quiet", "--tensorboard", "--out", tmp_path,
            "--name", "tb")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "tb"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for tag, key in (("loss/train", "train_loss"), ("top1/val", "val_top1"), ("top5/val", "val_top5"), ("lr", "lr")):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [r["epoch"] for r in records]
        assert [v for _, v in got] == pytest.approx([r[key] for r in records], rel=1e-6)
    images = events.Images("conv1 kernels")
    assert [i.step for i in images] == [1, 2]
    # LeNet-5's six 5x5 kernels in one row, a 1-pixel gap between them
    assert (images[-1].width, images[-1].height) == (6 * 6 - 1, 5)


def test_without_tensorboard_installed_one_line_and_no_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    assert main(["train", "--epochs", "1", "--quiet", "--tensorboard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0]
    assert list(tmp_path.iterdir()) == []
