"""``alexnet data synth|prepare|check|stats`` and ``alexnet bench data``, run as a user runs them."""

import hashlib
import json
import os

import numpy as np
import pytest
from helpers.clock import install
from helpers.formats import bad_files, jpeg, sample_photos, write_cifar10
from PIL import Image

from alexnet.cli import main


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def jpegs(folder):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".JPEG"))


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    assert main(["data", "synth", str(out), "--classes", "4", "--per-class", "6", "--val-per-class", "2",
                 "--size", "160", "--seed", "1", "--splits", "train,val,test"]) == 0
    return out


def test_synth_writes_a_varied_imagefolder(synth_dir, tmp_path, capsys):
    for split, per_class in (("train", 6), ("val", 2), ("test", 2)):
        classes = sorted(os.listdir(synth_dir / split))
        assert len(classes) == 4
        assert all(len(os.listdir(synth_dir / split / c)) == per_class for c in classes)
    files = jpegs(synth_dir)
    sizes = [Image.open(f).size for f in files]
    assert all(Image.open(f).format == "JPEG" for f in files)
    assert len(set(sizes)) > len(sizes) // 2  # varied sizes ...
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)  # ... and orientations
    assert all(0.85 * 160 - 1 <= max(s) <= 1.15 * 160 + 1 for s in sizes)
    # Deterministic: the same seed writes the same bytes.
    rc, out, _ = run(capsys, "data", "synth", tmp_path / "again", "--classes", "4", "--per-class", "6",
                     "--val-per-class", "2", "--size", "160", "--seed", "1", "--splits", "train,val,test")
    assert rc == 0 and "wrote 40 JPEGs" in out
    digest = [hashlib.sha1(open(f, "rb").read()).hexdigest() for f in jpegs(tmp_path / "again")]
    assert digest == [hashlib.sha1(open(f, "rb").read()).hexdigest() for f in files]
    rc, _, err = run(capsys, "data", "synth", tmp_path / "again", "--classes", "2")
    assert rc == 2 and "not empty" in err and err.count("\n") == 1


def test_synth_classes_are_not_told_apart_by_colour_alone(tmp_path):
    """Twelve classes, six hues: a nearest-mean-colour classifier must fail on many of them."""
    from alexnet.data import build_source

    source = build_source("synthetic:classes=12,per-class=6,val-per-class=6,size=96,seed=2")
    colour = {s: source.split(s).images.float().mean((2, 3)).numpy() for s in ("train", "val")}
    means = np.stack([colour["train"][source.split("train").targets == k].mean(0) for k in range(12)])
    guess = np.argmin(((colour["val"][:, None] - means[None]) ** 2).sum(-1), 1)
    assert (guess == source.split("val").targets).mean() < 0.8


def test_prepare_check_and_errors(synth_dir, tmp_path, capsys):
    first_class = synth_dir / "train" / sorted(os.listdir(synth_dir / "train"))[0]
    bad = bad_files(str(first_class), jpeg(sample_photos()[0]))
    tiny = synth_dir / "val" / sorted(os.listdir(synth_dir / "val"))[1] / "tiny.JPEG"
    Image.new("RGB", (20, 12), (9, 9, 9)).save(tiny, "JPEG")
    try:
        rc, out, _ = run(capsys, "data", "check", synth_dir, "--workers", "1")
        assert rc == 0 and out.strip().endswith("usable")
        for path in bad:
            assert f"undecodable (train): {path}: " in out
        assert f"tiny (val): {tiny}: 20x12" in out
        rc, out, err = run(capsys, "data", "check", synth_dir, "--workers", "0", "--json", "--strict")
        report = json.loads(out)
        assert rc == 2 and err.count("\n") == 1 and "7 undecodable file(s)" in err
        assert sorted(b["path"] for b in report["splits"]["train"]["undecodable"]) == sorted(bad)
        assert report["splits"]["train"]["images"] == 24 and report["splits"]["val"]["images"] == 9

        rc, out, _ = run(capsys, "data", "prepare", synth_dir, tmp_path / "store", "--workers", "1")
        assert rc == 0 and "train: 24 images, 7 skipped" in out and "test: 8 images" in out
        for path in bad:
            assert f"skipped (undecodable): {path}" in out
        rc, out, _ = run(capsys, "data", "check", tmp_path / "store")
        assert rc == 0 and "train" in out
        rc, _, err = run(capsys, "data", "prepare", synth_dir, tmp_path / "store")
        assert rc == 2 and "already exists" in err
    finally:
        for path in bad + [str(tiny)]:
            os.remove(path)


def test_check_lists_every_structural_problem(tmp_path, capsys):
    for c in ("a", "b"):
        os.makedirs(tmp_path / "train" / c)
        Image.new("RGB", (50, 50)).save(tmp_path / "train" / c / "x.JPEG")
    os.makedirs(tmp_path / "train" / "empty")
    os.makedirs(tmp_path / "val" / "stranger")
    Image.new("RGB", (50, 50)).save(tmp_path / "val" / "stranger" / "y.JPEG")
    rc, out, err = run(capsys, "data", "check", tmp_path, "--workers", "0")
    assert rc == 2 and err.count("\n") == 1 and "not usable: empty class folder" in err and "1 more" in err
    assert "problem: empty class folder: train/empty" in out
    assert "problem: val/ has 1 class folder(s) that train/ lacks, e.g. val/stranger" in out


def test_missing_dataset_is_one_line_and_exit_2(cli, tmp_path):
    r = cli("data", "check", tmp_path / "nowhere")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith("alexnet: error: --data") and "no such file or folder" in r.stderr


def test_stats_command_equals_numpy_eigh(tmp_path, capsys):
    _, _, test_x, _ = write_cifar10(str(tmp_path), per_class_per_batch=3)
    rc, out, _ = run(capsys, "data", "stats", f"cifar10:{tmp_path}", "--split", "test", "--json",
                     "--no-cache")
    assert rc == 0
    got = json.loads(out)
    flat = test_x.transpose(1, 0, 2, 3).reshape(3, -1) / 255.0  # (3, pixels) of the test batch as written
    eigval, eigvec = np.linalg.eigh(np.cov(flat, bias=True))
    assert got["count"] == len(test_x) and got["cache"] is None
    np.testing.assert_allclose(got["eigval"], eigval[::-1], rtol=1e-4)
    v, ref = np.array(got["eigvec"]), eigvec[:, ::-1]
    np.testing.assert_allclose(v * np.sign((v * ref).sum(0)), ref, atol=1e-4)
    np.testing.assert_allclose(got["mean"], flat.mean(1) * 255, rtol=1e-5)
    rc, out, _ = run(capsys, "data", "stats", f"cifar10:{tmp_path}", "--split", "test")
    assert rc == 0 and "eigenvalues:" in out and f"{eigval[-1]:9.4f}" in out


def test_bench_data_runs_all_three_paths(synth_dir, tmp_path, capsys, monkeypatch):
    import alexnet.bench.data as bench_data

    # The reference decode is made to take a known time on top of its real one (a few ms): 2 s per
    # image in the first and third of three turns, 1 s in the second. So the reference runs at
    # 8 / 16, 8 / 8 and 8 / 16 images/s, reports its best (1.0), and every ratio to it is the path's
    # own images/s.
    clock = install(monkeypatch, real=True)
    decode, decoded = bench_data.reference_decode, []

    def slow_decode(path, *args, **kw):
        decoded.append(path)
        clock.advance(1.0 if 8 < len(decoded) <= 16 else 2.0)
        return decode(path, *args, **kw)

    monkeypatch.setattr(bench_data, "reference_decode", slow_decode)
    rc, out, _ = run(capsys, "bench", "data", "--data", synth_dir, "--batches", "2", "--batch-size", "4",
                     "--workers", "1", "--repeat", "3", "--json")
    assert rc == 0 and len(decoded) == 24
    got = json.loads(out)
    assert set(got["results"]) == {"reference", "folder_1process", "folder", "store"}
    assert got["images"] == 8 and got["batch_size"] == 4 and got["repeat"] == 3
    ref = got["results"]["reference"]
    assert ref["images"] == 8 and ref["seconds"] == pytest.approx(8.0, abs=0.3)
    assert ref["runs"] == pytest.approx([0.5, 1.0, 0.5], abs=0.1)
    assert ref["images_per_s"] == pytest.approx(1.0)  # the best run
    assert got["ratios"]["reference"] == 1.0
    assert got["results"]["folder"]["images"] == 8 and got["results"]["store"]["images"] % 8 == 0
    for k, r in got["results"].items():
        assert len(r["runs"]) == 3
        assert got["ratios"][k] == pytest.approx(r["images_per_s"], abs=0.006)  # rounded to two decimals
    assert main(["data", "prepare", str(synth_dir), str(tmp_path / "store"), "--workers", "0"]) == 0
    rc, out, _ = run(capsys, "bench", "data", "--data", synth_dir, "--batches", "1", "--batch-size", "4",
                     "--workers", "0", "--store", tmp_path / "store")
    assert rc == 0 and "(c) prepared store" in out and "images/s" in out and "prepare:" not in out
    rc, _, err = run(capsys, "bench", "data", "--data", "digits")
    assert rc == 2 and "needs an image folder" in err
