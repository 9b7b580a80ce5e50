"""Writers of real dataset formats and hand-broken files, shared by the data tests.

Everything is written from first principles (PNG chunks, idx headers, CIFAR pickles, the devkit's
``meta.mat`` struct), so the tests don't trust the code under test to make their inputs.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(width: int, height: int, *, bit_depth: int, color_type: int,
              rows: bytes | None = None) -> bytes:
    """A PNG by hand: signature, IHDR, one IDAT of ``rows`` (filter byte 0 per row), IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG of a uint16 (H, W) grayscale or (H, W, 3) RGB array."""
    h, w = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    big_endian = array.astype(">u2").reshape(h, -1)
    rows = b"".join(b"\x00" + row.tobytes() for row in big_endian)
    return png_bytes(w, h, bit_depth=16, color_type=color_type, rows=rows)


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two real photos (china, flower), uint8 (427, 640, 3)."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def jpeg(array: np.ndarray, quality: int = 95, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def bad_files(folder: str, good_jpeg: bytes) -> list[str]:
    """Write one of each undecodable kind into ``folder``, all named ``.JPEG``; return their paths."""
    rng = np.random.default_rng(0)
    sos = good_jpeg.index(b"\xff\xda")  # start of scan: everything after is entropy-coded pixels
    contents = {
        "zero_bytes.JPEG": b"",
        "text.JPEG": b"<html>404 Not Found</html>\n",
        "truncated.JPEG": good_jpeg[: len(good_jpeg) // 2],
        "garbage_scan.JPEG": good_jpeg[: sos + 12] + rng.bytes(4000),
        "random_bytes.JPEG": rng.bytes(5000),
        # Headers claiming too many pixels: just over the limit (Pillow alone would only warn) and far over.
        "bomb_just_over.JPEG": png_bytes(10_000, 8_948, bit_depth=8, color_type=0),
        "bomb.JPEG": png_bytes(30_000, 30_000, bit_depth=8, color_type=0),
    }
    paths = []
    for name, data in contents.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def write_cifar10(folder: str, per_class_per_batch: int = 2, *, bytes_keys: bool = False, seed: int = 0):
    """``folder/cifar-10-batches-py`` with 5 training batches and a test batch in the real layout (dict of
    'data' uint8 (N, 3072) as R, G, B planes, 'labels' list). Returns (train images (N, 3, 32, 32),
    train labels, test images, test labels) in file order."""
    rng = np.random.default_rng(seed)
    root = os.path.join(folder, "cifar-10-batches-py")
    os.makedirs(root)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    parts = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.permutation(np.repeat(np.arange(10), per_class_per_batch))
        images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump({key("batch_label"): name, key("labels"): labels.tolist(),
                         key("data"): images.reshape(len(labels), 3072)}, f, protocol=2)
        parts.append((images, labels))
    with open(os.path.join(root, "batches.meta"), "wb") as f:
        names = [f"class{i}" for i in range(10)]
        pickle.dump({key("label_names"): names, key("num_vis"): 3072}, f, protocol=2)
    train_x = np.concatenate([p[0] for p in parts[:5]])
    train_y = np.concatenate([p[1] for p in parts[:5]])
    return train_x, train_y, parts[5][0], parts[5][1]


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 dims, data."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: str, n_train: int = 100, n_test: int = 20, *, gz: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for kind, arr, dims in (("images", images, 3), ("labels", labels, 1)):
            name = f"{part}-{kind}-idx{dims}-ubyte" + (".gz" if gz else "")
            data = idx_bytes(arr)
            with (gzip.open if gz else open)(os.path.join(folder, name), "wb") as f:
                f.write(data)
        out[part] = (images, labels)
    return out


def write_meta_mat(path: str, leaves: list[tuple[int, str, str]], parents: int = 3) -> None:
    """The ILSVRC-2012 devkit's ``meta.mat``: a struct array ``synsets`` (N x 1) with the devkit's fields;
    ``leaves`` are (ILSVRC2012_ID, WNID, words) with no children, followed by ``parents`` inner nodes."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    n = len(leaves) + parents
    synsets = np.zeros((n, 1), dtype=[(f, object) for f in fields])
    for i, (sid, wnid, words) in enumerate(leaves):
        synsets[i, 0] = (sid, wnid, words, "a gloss", 0, np.zeros((1, 0)), 0, 1300)
    for j in range(parents):
        sid = len(leaves) + j + 1
        synsets[len(leaves) + j, 0] = (sid, f"n9{j:07d}", f"parent {j}", "a gloss", 2,
                                       np.array([[1, 2]], dtype=np.float64), 1, 0)
    savemat(path, {"synsets": synsets})
