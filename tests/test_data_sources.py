"""Sources on small files the tests write in the real formats: folders and ILSVRC label files, CIFAR-10,
MNIST, synthetic, the prepared store; bad files through a real loader; statistics and their cache."""

import os
import pickle

import numpy as np
import pytest
import torch
from helpers.formats import bad_files, jpeg, sample_photos, write_cifar10, write_meta_mat, write_mnist
from PIL import Image

from alexnet.data import DataError, EpochLoader, batch_indices, build_source, parse_spec
from alexnet.data.splits import holdout

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: the class order
WORDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark, white shark"}
DEVKIT_IDS = {1: "n01484850", 2: "n01440764", 3: "n01443537"}  # not in sorted order, as in the real devkit
COLOURS = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 230]], dtype=np.uint8)  # one per class


def solid(path, k, size=(40, 30)):
    """A JPEG-named file of class ``k``'s colour (PNG inside: exact pixels, and a real-world oddity)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, tuple(int(c) for c in COLOURS[k])).save(path, "PNG")


def colour_class(image: torch.Tensor) -> int:
    """Which class colour an image is (the tests' own label, read back from the pixels)."""
    mean = image.float().mean((1, 2)).numpy()
    return int(np.argmin(np.abs(COLOURS - mean).sum(1)))


def make_imagenet(root, *, val="csv", per_class=4):
    """``root/train/<wnid>/`` plus a validation set of 2 images per class: flat + LOC_val_solution.csv,
    flat + devkit ground truth, or class folders. Returns {val file name: wnid}."""
    for k, w in enumerate(WNIDS):
        for i in range(per_class):
            solid(os.path.join(root, "train", w, f"{w}_{i}.JPEG"), k)
    val_wnids = [WNIDS[i % 3] for i in (2, 0, 1, 1, 0, 2)]
    names = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": w for i, w in enumerate(val_wnids)}
    for name, w in names.items():
        folder = os.path.join(root, "val", w) if val == "folders" else os.path.join(root, "val")
        solid(os.path.join(folder, name), WNIDS.index(w))
    if val == "csv":
        rows = [f"{n[:-5]},{w} 10 20 30 40 {w} 1 2 3 4" for n, w in reversed(list(names.items()))]
        with open(os.path.join(root, "LOC_val_solution.csv"), "w") as f:
            f.write("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
        with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as f:
            f.writelines(f"{w} {WORDS[w]}\n" for w in WNIDS)
    elif val == "devkit":
        data = os.path.join(root, "ILSVRC2012_devkit_t12", "data")
        os.makedirs(data)
        write_meta_mat(os.path.join(data, "meta.mat"), [(i, w, WORDS[w]) for i, w in DEVKIT_IDS.items()])
        ids = {w: i for i, w in DEVKIT_IDS.items()}
        with open(os.path.join(data, "ILSVRC2012_validation_ground_truth.txt"), "w") as f:
            f.writelines(f"{ids[w]}\n" for _, w in sorted(names.items()))
    return names


def check_labels(ds):
    """Every item's label is the class its pixels were painted with."""
    assert len(ds) > 0
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 256, 256) and image.dtype == torch.uint8
        assert colour_class(image) == label, ds.describe(i)


@pytest.mark.parametrize("val", ["csv", "devkit", "folders"])
def test_imagenet_layouts(tmp_path, val):
    names = make_imagenet(str(tmp_path), val=val)
    source = build_source(str(tmp_path))
    assert source.classes == WNIDS and source.imagery == "photo" and source.base_size == 256
    assert source.class_names == ([WORDS[w] for w in WNIDS] if val != "folders" else WNIDS)
    assert len(source.split("train")) == 12
    check_labels(source.split("train"))
    v = source.split("val")
    assert sorted(os.path.basename(v.describe(i)) for i in range(len(v))) == sorted(names)
    for i in range(len(v)):
        assert source.classes[v.targets[i]] == names[os.path.basename(v.describe(i))]
    check_labels(v)
    assert source.split("test") is v  # no test/: evaluation falls back to val


def test_kaggle_download_layout(tmp_path):
    top = tmp_path / "imagenet-object-localization-challenge"
    make_imagenet(str(top / "ILSVRC" / "Data" / "CLS-LOC"), val="folders")
    rows = ["ILSVRC2012_val_00000001,n01484850 1 2 3 4"]
    os.rename(top / "ILSVRC/Data/CLS-LOC/val", tmp_path / "val_folders")
    os.makedirs(top / "ILSVRC/Data/CLS-LOC/val")
    solid(str(top / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG"), 2)
    (top / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    (top / "LOC_synset_mapping.txt").write_text("".join(f"{w} {WORDS[w]}\n" for w in WNIDS))
    for spec in (str(top), f"imagenet:{top}"):
        source = build_source(spec)
        assert source.class_names[2] == WORDS["n01484850"]
        assert list(source.split("val").targets) == [2]


def test_imagenet_prefix_insists_on_train(tmp_path):
    solid(str(tmp_path / "cats" / "a.JPEG"), 0)
    with pytest.raises(DataError, match="train"):
        build_source(f"imagenet:{tmp_path}")


def one_line_error(spec, match):
    with pytest.raises(DataError, match=match) as e:
        build_source(spec)
    assert "\n" not in str(e.value)


def test_broken_layouts_are_errors_before_training(tmp_path):
    # An empty class folder.
    make_imagenet(str(tmp_path / "a"), val="folders")
    os.makedirs(tmp_path / "a" / "train" / "n09999999")
    one_line_error(str(tmp_path / "a"), "empty class folder.*n09999999")
    # A validation label naming a class train lacks.
    make_imagenet(str(tmp_path / "b"), val="csv")
    csv = tmp_path / "b" / "LOC_val_solution.csv"
    csv.write_text(csv.read_text().replace("n01443537", "n07777777"))
    one_line_error(str(tmp_path / "b"), "n07777777.*train/ lacks|train/ lacks.*n07777777")
    # A CSV that misses an image, and one with a label for an image that isn't there.
    make_imagenet(str(tmp_path / "c"), val="csv")
    csv = tmp_path / "c" / "LOC_val_solution.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-1]) + "\n")
    one_line_error(str(tmp_path / "c"), "1 image.* without a label")
    csv.write_text("\n".join(lines + ["ILSVRC2012_val_00000099,n01440764 1 2 3 4"]) + "\n")
    one_line_error(str(tmp_path / "c"), "1 label.* without an image.*00000099")
    # A ground-truth file with one line too few, and images that aren't numbered 1..N.
    make_imagenet(str(tmp_path / "d"), val="devkit")
    gt = tmp_path / "d" / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    full = gt.read_text()
    gt.write_text("\n".join(full.split()[:-1]) + "\n")
    one_line_error(str(tmp_path / "d"), "5 labels but val/ has 6 images")
    gt.write_text(full)
    val = tmp_path / "d" / "val"
    os.rename(val / "ILSVRC2012_val_00000006.JPEG", val / "ILSVRC2012_val_00000007.JPEG")
    one_line_error(str(tmp_path / "d"), "number says line 7")
    # A flat val folder with no label file anywhere.
    make_imagenet(str(tmp_path / "e"), val="devkit")
    os.remove(tmp_path / "e" / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt")
    one_line_error(str(tmp_path / "e"), "no label file was found")
    # A val class folder that train lacks.
    make_imagenet(str(tmp_path / "f"), val="folders")
    solid(str(tmp_path / "f" / "val" / "n05555555" / "x.JPEG"), 0)
    one_line_error(str(tmp_path / "f"), "class folder.*train/ lacks.*n05555555")
    # A train folder without a single class folder.
    os.makedirs(tmp_path / "g" / "train")
    one_line_error(str(tmp_path / "g"), "no class folders")


def test_specs_that_are_not_datasets(tmp_path):
    one_line_error("cifar:/nowhere", "unknown dataset kind 'cifar'")
    one_line_error("/nowhere/at/all", "no such file or folder")
    one_line_error(f"mnist:{tmp_path}/missing", "no such file or folder")
    one_line_error(str(tmp_path), "cannot tell what dataset")
    one_line_error("synthetic:classes=3,colour=red", r"unknown key\(s\) colour")
    one_line_error("synthetic:classes=3,seed", "KEY=VALUE")
    one_line_error("digits:classes=4-12", "distinct digits 0-9")
    one_line_error("synthetic:classes=999", "at most 144")
    assert parse_spec("digits") == ("digits", "")


def test_plain_class_folders_are_split_80_10_10(tmp_path):
    for k, name in enumerate(["cat", "dog", "fish"]):
        for i in range(10 + 10 * k):  # 10, 20, 30 images: every class is split in proportion
            solid(str(tmp_path / name / f"{i:03d}.jpg"), k)
    source = build_source(str(tmp_path))
    assert source.classes == ["cat", "dog", "fish"]
    files = {s: [ds.describe(i) for i in range(len(ds))] for s, ds in source.splits.items()}
    assert sorted(files) == ["test", "train", "val"]
    assert sum(map(len, files.values())) == 60 and len(set(sum(files.values(), []))) == 60  # a partition
    for s, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        counts = np.bincount(source.splits[s].targets, minlength=3)
        np.testing.assert_array_equal(counts, np.round(np.array([10, 20, 30]) * share))
        check_labels(source.splits[s])
    again = build_source(f"folder:{tmp_path}")
    assert [again.splits["test"].describe(i) for i in range(6)] == files["test"]  # deterministic


def test_train_only_folder_holds_out_val(tmp_path):
    for k, w in enumerate(WNIDS):
        for i in range(10):
            solid(str(tmp_path / "train" / w / f"{i}.JPEG"), k)
    source = build_source(str(tmp_path))
    assert len(source.split("train")) == 27 and len(source.split("val")) == 3
    np.testing.assert_array_equal(np.bincount(source.split("val").targets), [1, 1, 1])


def test_holdout_is_exact_stratified_and_deterministic():
    targets = np.repeat(np.arange(4), [50, 30, 15, 5])
    kept, held = holdout(targets, 20, seed=0)
    assert len(held) == 20 and len(kept) == 80 and not set(kept) & set(held)
    np.testing.assert_array_equal(np.bincount(targets[held], minlength=4), [10, 6, 3, 1])
    np.testing.assert_array_equal(holdout(targets, 20, seed=0)[1], held)
    assert not np.array_equal(holdout(targets, 20, seed=1)[1], held)


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_batches(tmp_path, bytes_keys):
    train_x, train_y, test_x, test_y = write_cifar10(str(tmp_path), bytes_keys=bytes_keys)
    for spec in (str(tmp_path), str(tmp_path / "cifar-10-batches-py"), f"cifar10:{tmp_path}"):
        source = build_source(spec)
        assert source.imagery == "small" and source.base_size == 32 and source.channels == 3 and source.flip
        assert source.class_names == [f"class{i}" for i in range(10)]
        np.testing.assert_array_equal(source.split("test").images.numpy(), test_x)
        np.testing.assert_array_equal(source.split("test").targets, test_y)
        tr, va = source.split("train"), source.split("val")
        assert len(va) == 10 and len(tr) == 90  # a tenth of 100 (5,000 of the real 50,000)
        np.testing.assert_array_equal(np.bincount(va.targets), np.ones(10))
        # Train + val are exactly the training batches, pixels and labels together.
        got = {(x.tobytes(), int(y)) for ds in (tr, va) for x, y in zip(ds.images.numpy(), ds.targets)}
        assert got == {(x.tobytes(), int(y)) for x, y in zip(train_x, train_y)}


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar10(str(tmp_path))

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    one_line_error(str(tmp_path), "refusing to load")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("layout", ["raw", "gz", "torchvision"])
def test_mnist_idx_files(tmp_path, layout):
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    data = write_mnist(str(folder), gz=layout == "gz")
    source = build_source(str(tmp_path))
    assert source.name == str(tmp_path) and source.channels == 1 and source.base_size == 28
    assert not source.flip and source.class_names == [str(i) for i in range(10)]
    np.testing.assert_array_equal(source.split("test").images.numpy()[:, 0], data["t10k"][0])
    np.testing.assert_array_equal(source.split("test").targets, data["t10k"][1])
    assert len(source.split("val")) == 10 and len(source.split("train")) == 90


def test_fashion_mnist_and_broken_idx(tmp_path):
    write_mnist(str(tmp_path / "fashion"))
    source = build_source(str(tmp_path / "fashion"))
    assert source.class_names[9] == "Ankle boot" and source.flip
    assert build_source(f"fashion-mnist:{tmp_path / 'fashion'}").class_names[0] == "T-shirt/top"
    with open(tmp_path / "fashion" / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.write(b"\x01")  # a wrong magic number
    one_line_error(str(tmp_path / "fashion"), "bad magic")


def test_synthetic_source_is_deterministic():
    a = build_source("synthetic:classes=3,per-class=2,seed=5,size=96")
    b = build_source("synthetic:classes=3,per-class=2,seed=5,size=96")
    c = build_source("synthetic:classes=3,per-class=2,seed=6,size=96")
    assert a.num_classes == 3 and len(a.split("train")) == 6 and len(a.split("val")) == 3
    assert a.split("train").images.shape == (6, 3, 256, 256)
    assert torch.equal(a.split("train").images, b.split("train").images)
    assert not torch.equal(a.split("train").images, c.split("train").images)
    assert not torch.equal(a.split("train").images, a.split("val").images[:6].repeat(2, 1, 1, 1)[:6])


@pytest.fixture
def folder_with_bad_files(tmp_path):
    """train/ with 3 classes x 4 good files and one of each broken kind in class 1."""
    root = tmp_path / "ds"
    for k, w in enumerate(WNIDS):
        for i in range(4):
            solid(str(root / "train" / w / f"{w}_{i}.JPEG"), k, size=(70, 50))
    bad = bad_files(str(root / "train" / WNIDS[1]), jpeg(sample_photos()[0]))
    for k, w in enumerate(WNIDS):
        solid(str(root / "val" / w / "v.JPEG"), k)
    return root, bad


def test_bad_files_are_skipped_and_counted_by_the_loader(folder_with_bad_files):
    root, bad = folder_with_bad_files
    train = build_source(str(root)).split("train")
    assert len(train) == 12 + len(bad)
    seen, skipped = 0, []
    for batch in EpochLoader(train, batch_indices(len(train), 4, shuffle=True, seed=3), workers=2):
        assert batch.images.dtype == torch.uint8 and len(batch.images) == len(batch.labels)
        for image, label in zip(batch.images, batch.labels):
            assert colour_class(image) == label
        seen += len(batch.labels)
        skipped += batch.skipped
    assert seen == 12
    assert sorted(skipped) == sorted(bad)  # each bad file named once, by its path


def test_prepared_store_round_trips_the_folder(folder_with_bad_files, tmp_path):
    from alexnet.data.store import prepare_store

    root, bad = folder_with_bad_files
    folder = build_source(str(root))
    meta = prepare_store(folder, str(tmp_path / "store"), workers=2, batch_size=5, progress=False)
    assert sorted(meta["splits"]["train"]["skipped"]) == sorted(bad)
    assert [e.name for e in os.scandir(tmp_path) if "partial" in e.name] == []
    store_dir = tmp_path / "store"
    for spec in (str(store_dir), f"store:{store_dir}", str(store_dir / "store.json")):
        store = build_source(spec)
        assert store.classes == folder.classes and store.imagery == "photo" and store.flip
        for split in ("train", "val"):
            f, s = folder.split(split), store.split(split)
            expected = [(f[i][0], int(f.targets[i])) for i in range(len(f)) if f[i][0] is not None]
            assert len(s) == len(expected)
            images, labels = s.get_batch(torch.arange(len(s)))
            assert images.shape == (len(s), 3, 256, 256)
            for (x, y), xs, ys in zip(expected, images, labels):
                assert torch.equal(x, xs) and y == int(ys)  # pixel-exact, same label
    # The loader takes the store's fast path, and a shuffled epoch is the same set of (image, label).
    s = store.split("train")
    got = [(x.numpy().tobytes(), int(y)) for b in EpochLoader(s, batch_indices(len(s), 5, shuffle=True))
           for x, y in zip(b.images, b.labels)]
    assert sorted(got) == sorted((x.numpy().tobytes(), y) for x, y in expected_train(folder))
    pick = torch.tensor([2, 0])
    assert pickle.loads(pickle.dumps(s)).get_batch(pick)[0].equal(s.get_batch(pick)[0])
    assert np.load(s.images_path).shape == (12, 256, 256, 3)  # still a valid .npy after dropping the bad rows


def expected_train(folder):
    f = folder.split("train")
    return [(f[i][0], int(f.targets[i])) for i in range(len(f)) if f[i][0] is not None]


def test_store_is_written_atomically(folder_with_bad_files, tmp_path):
    from alexnet.data.store import prepare_store

    root, bad = folder_with_bad_files
    source = build_source(str(root))
    source.splits["test"] = type(source.split("train"))(str(root), [os.path.relpath(p, root) for p in bad],
                                                        np.zeros(len(bad)))
    with pytest.raises(DataError, match="no decodable images in the 'test' split"):
        prepare_store(source, str(tmp_path / "store"), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # neither the store nor a partial folder is left
    os.makedirs(tmp_path / "taken")
    with pytest.raises(DataError, match="already exists"):
        prepare_store(source, str(tmp_path / "taken"), progress=False)


def test_stats_match_numpy_and_are_cached(tmp_path, monkeypatch):
    from alexnet.data import stats

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    photos = sample_photos()
    for k, w in enumerate(WNIDS[:2]):
        for i in range(3):
            crop = photos[k][40 * i:40 * i + 300, 50 * i:50 * i + 400]
            os.makedirs(tmp_path / "ds" / "train" / w, exist_ok=True)
            Image.fromarray(crop).save(tmp_path / "ds" / "train" / w / f"{i}.png")
    source = build_source(str(tmp_path / "ds"))
    pixels = np.stack([source.split("train")[i][0].numpy() for i in range(len(source.split("train")))])
    flat = pixels.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64) / 255  # (3, all pixels)
    cov = np.cov(flat, bias=True)
    eigval, eigvec = np.linalg.eigh(cov)
    out = stats.load_or_compute_stats(source)
    np.testing.assert_allclose(out["eigval"].numpy(), eigval[::-1], rtol=1e-4, atol=1e-7)
    for j in range(3):  # eigenvectors are defined up to sign
        v, ref = out["eigvec"][:, j].numpy(), eigvec[:, ::-1][:, j]
        np.testing.assert_allclose(v * np.sign(v @ ref), ref, atol=1e-4)
    np.testing.assert_allclose(out["mean"].numpy(), flat.mean(1) * 255, rtol=1e-5)
    np.testing.assert_allclose(out["mean_image"].numpy(), pixels.mean(0), rtol=1e-5)
    path = stats.stats_path(source)
    assert path.startswith(str(tmp_path / "cache")) and os.path.isfile(path)

    def fail(*a, **k):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(stats, "compute_stats", fail)
    again = stats.load_or_compute_stats(build_source(str(tmp_path / "ds")))
    assert again["count"] == len(pixels) and torch.equal(again["eigvec"], out["eigvec"])
    # New files make a new cache entry.
    Image.fromarray(photos[1][:300, :300]).save(tmp_path / "ds" / "train" / WNIDS[0] / "new.png")
    assert stats.stats_path(build_source(str(tmp_path / "ds"))) != path
