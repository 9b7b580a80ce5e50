"""Image folders: ImageNet (ILSVRC-2012) and any other dataset in the ImageFolder layout.

Two layouts are recognized:

- ``ROOT/train/<class>/*`` with optional ``ROOT/val`` and ``ROOT/test``, each either class folders
  like train, or (ILSVRC-2012 validation) a flat folder of images plus a ground-truth file:
  ``LOC_val_solution.csv`` (Kaggle), or ``ILSVRC2012_validation_ground_truth.txt`` whose lines are
  devkit class ids (1..1000) of the images sorted by name, mapped to synsets by the devkit's
  ``meta.mat``. Label files are looked for in the val folder, ``ROOT`` and up to three folders
  above it (where the Kaggle download puts them), each also under ``ILSVRC2012_devkit_t12/data``.
  Without ``val/``, a stratified 10% of train is held out as val. A flat ``test/`` (the unlabeled
  ILSVRC test set) is ignored. Kaggle's ``ILSVRC/Data/CLS-LOC`` is found from the download's top folder.
- ``ROOT/<class>/*``: split deterministically into train / val / test, 80 / 10 / 10 per class
  (:func:`alexnet.data.splits.holdout`, seed 0: test first, then val from the rest).

Classes are the sorted folder names of train (as torchvision and Caffe order ImageNet's synsets);
names come from ``LOC_synset_mapping.txt`` or the devkit's ``meta.mat`` when present (else the folder
name, with bytes that are not UTF-8 shown as ``\\xNN``). Image files are the regular files with an
image extension (case-insensitive), hidden files excluded; what is inside them is only looked at when
decoding. Links are followed, each folder and file counted once (:class:`Walk`): a link loop ends.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..files import printable
from .base import DataError, DataSource, ImageSet
from .decode import ImageDecodeError, load_image
from .splits import holdout
from .stats import cache_dir_for

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif")
BASE_SIZE = 256  # the paper's "rescale the shorter side to 256, take the central 256x256"
HOLDOUT = 0.1  # share of each class held out for val (and test), when the dataset has no such split
LABEL_FILE_PARENTS = 3  # how far above ROOT label files are looked for
DEVKIT = "ILSVRC2012_devkit_t12/data"


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


class Walk:
    """Walking image folders that links may join: each folder is entered once and each file counted once,
    however many paths lead to it (identified by device and inode), so a link loop ends and a folder
    linked twice adds nothing; only regular files are images (a FIFO named ``.jpg`` would block its
    reader). One walk spans a whole dataset, so a file linked into two splits or classes counts once,
    where it is met first (classes in name order, train before val and test)."""

    def __init__(self):
        self.seen: set[int] = set()  # device and inode of every folder and file met, packed in one int
        self.repeated_folders = 0  # links to a folder already walked (loops among them)
        self.repeated_files = 0  # paths to a file already counted
        self.not_files = 0  # image names that are not regular files (FIFOs, sockets, devices, dead links)

    def _first(self, dev: int, ino: int) -> bool:
        key = dev << 64 | ino
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def enter(self, folder: str) -> int | None:
        """Mark ``folder`` walked and return its device; None when it was walked already (through another
        path) or cannot be read."""
        try:
            st = os.stat(folder)
        except OSError:
            return None
        if not self._first(st.st_dev, st.st_ino):
            self.repeated_folders += 1
            return None
        return st.st_dev

    def images(self, folder: str) -> list[str] | None:
        """Image files under ``folder`` (recursively, links followed), as sorted paths relative to it;
        None when ``folder`` was walked already."""
        dev = self.enter(folder)
        if dev is None:
            return None
        found, pending = [], [("", dev)]
        while pending:
            rel, dev = pending.pop()
            try:
                with os.scandir(os.path.join(folder, rel)) as it:
                    entries = list(it)
            except OSError:
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                path = os.path.join(rel, e.name) if rel else e.name
                try:
                    if e.is_dir():  # follows links
                        sub = self.enter(e.path)
                        if sub is not None:
                            pending.append((path, sub))
                    elif is_image_name(e.name):
                        if self._new_file(e, dev):
                            found.append(path)
                except OSError:  # vanished meanwhile
                    continue
        return sorted(found)

    def _new_file(self, entry: os.DirEntry, dev: int) -> bool:
        if not entry.is_file():  # follows links: a link to an image is an image, a dead link is nothing
            self.not_files += 1
            return False
        # a plain file's inode comes with the folder listing; a link's target needs a stat
        st_dev, st_ino = (dev, entry.inode()) if not entry.is_symlink() else (entry.stat().st_dev,
                                                                             entry.stat().st_ino)
        if not self._first(st_dev, st_ino):
            self.repeated_files += 1
            return False
        return True

    def note(self) -> str | None:
        """What the walk left out, for the dataset's notes (None when nothing was)."""
        parts = [f"{n} {what}" for n, what in (
            (self.repeated_folders, "link(s) to a folder already walked (loops included)"),
            (self.repeated_files, "path(s) to an image already counted"),
            (self.not_files, "image name(s) that are not regular files")) if n]
        return ("skipped " + ", ".join(parts)) if parts else None


def list_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively, each once, see :class:`Walk`), as sorted paths relative
    to it."""
    return Walk().images(folder) or []


class FolderImageSet(ImageSet):
    """Image files decoded on demand to uint8 ``(channels, size, size)``; ``(None, label)`` for a
    file that cannot be decoded."""

    def __init__(self, root: str, paths: list[str], targets, *, size: int = BASE_SIZE, channels: int = 3):
        self.root, self.size, self.channels = root, size, channels
        # Fixed-width bytes rather than a list of str: no per-item Python objects, so loader
        # workers don't slowly copy a million refcounted strings (copy-on-write after fork).
        self.paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.paths) != len(self.targets):
            raise ValueError(f"{len(self.paths)} files but {len(self.targets)} labels")

    def path(self, i: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.paths[i]))

    def describe(self, index: int) -> str:
        return self.path(index)

    def __getitem__(self, i):
        label = int(self.targets[i])
        try:
            return load_image(self.path(i), self.size, self.channels), label
        except ImageDecodeError:
            return None, label


@dataclass
class FolderScan:
    """What walking a folder found, before any pixel is decoded; ``problems`` make it unusable."""

    root: str
    layout: str  # "splits" (train/ val/ test/) or "classes" (one folder per class, split here)
    classes: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    files: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)  # split -> (paths, labels)
    problems: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    mtime: float = 0.0  # newest folder modification time: part of the statistics cache key

    def raise_problems(self) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more problem(s); `alexnet data check` lists them)" \
                if len(self.problems) > 1 else ""
            raise DataError(self.problems[0] + more)


def find_root(path: str) -> str:
    """``path`` itself, or the ``ILSVRC/Data/CLS-LOC`` folder of a Kaggle ImageNet download under it."""
    for sub in ("ILSVRC/Data/CLS-LOC", "Data/CLS-LOC", "CLS-LOC"):
        if os.path.isdir(os.path.join(path, sub, "train")):
            return os.path.join(path, sub)
    return path


def scan_folder(path: str, *, require_splits: bool = False) -> FolderScan:
    """Walk an image folder: its classes, files and labels, and every problem found on the way."""
    root = find_root(os.path.abspath(path))
    if not os.path.isdir(root):
        raise DataError(f"no such folder: {path}")
    has_splits = os.path.isdir(os.path.join(root, "train"))
    if require_splits and not has_splits:
        raise DataError(f"{path}: expected ImageNet's layout, {path}/train/<wnid>/*.JPEG (+ val/)")
    scan = FolderScan(root=root, layout="splits" if has_splits else "classes")
    top = os.path.join(root, "train") if has_splits else root
    walk = Walk()
    walk.enter(root)  # so that a link back to it is a loop, not a class
    per_class = _class_folders(top, scan, "train" if has_splits else os.path.basename(root) or root, walk)
    scan.classes = sorted(per_class)
    index = {c: i for i, c in enumerate(scan.classes)}
    paths = [os.path.join(os.path.relpath(top, root), c, f) if has_splits else os.path.join(c, f)
             for c in scan.classes for f in per_class[c]]
    labels = np.array([index[c] for c in scan.classes for _ in per_class[c]], dtype=np.int64)
    if has_splits:
        scan.files["train"] = (paths, labels)
        for split in ("val", "test"):
            if os.path.isdir(os.path.join(root, split)):
                _scan_eval_split(scan, split, index, walk)
        if "val" not in scan.files and len(labels):
            kept, held = holdout(labels, round(HOLDOUT * len(labels)))
            scan.files["val"] = ([paths[i] for i in held], labels[held])
            scan.files["train"] = ([paths[i] for i in kept], labels[kept])
            scan.notes["val"] = f"no val/ folder: {HOLDOUT:.0%} of train held out, stratified (seed 0)"
    else:
        kept, test = holdout(labels, round(HOLDOUT * len(labels)))
        sub_kept, val = holdout(labels[kept], round(HOLDOUT * len(labels)))
        for split, idx in (("train", kept[sub_kept]), ("val", kept[val]), ("test", test)):
            scan.files[split] = ([paths[i] for i in idx], labels[idx])
        scan.notes["split"] = (f"class folders split per class {1 - 2 * HOLDOUT:.0%} / {HOLDOUT:.0%} / "
                               f"{HOLDOUT:.0%} into train / val / test, stratified (seed 0)")
    if not scan.classes:
        scan.problems.append(f"{top} has no class folders with images (expected {top}/<class>/<image>)")
    scan.class_names = _class_names(scan)
    if walk.note():
        scan.notes["walk"] = walk.note()
    scan.notes["classes"] = len(scan.classes)
    scan.notes["images"] = {s: len(p) for s, (p, _) in scan.files.items()}
    return scan


def _class_folders(top: str, scan: FolderScan, shown: str, walk: Walk) -> dict[str, list[str]]:
    """``{class: [image paths relative to top/class]}``; empty folders and loose images are problems, a
    link to a folder already walked is no class."""
    per_class, loose = {}, []
    walk.enter(top)
    with os.scandir(top) as entries:
        for e in sorted(entries, key=lambda e: e.name):
            if e.name.startswith("."):
                continue
            if e.is_dir():
                images = walk.images(e.path)
                if images is None:
                    continue
                per_class[e.name] = images
                scan.mtime = max(scan.mtime, e.stat().st_mtime)
                if not per_class[e.name]:
                    scan.problems.append(f"empty class folder: {shown}/{e.name} has no image files")
            elif is_image_name(e.name):
                loose.append(e.name)
    scan.mtime = max(scan.mtime, os.stat(top).st_mtime)
    if loose and per_class:
        scan.problems.append(f"{shown}/ has {len(loose)} image(s) outside class folders, e.g. {loose[0]}")
    return per_class


def _scan_eval_split(scan: FolderScan, split: str, index: dict[str, int], walk: Walk) -> None:
    folder = os.path.join(scan.root, split)
    has_dirs = any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(folder))
    if has_dirs:  # class folders, like train
        per_class = _class_folders(folder, scan, split, walk)
        unknown = [c for c in per_class if c not in index]
        if unknown:
            scan.problems.append(f"{split}/ has {len(unknown)} class folder(s) that train/ lacks, "
                                 f"e.g. {split}/{unknown[0]}")
        known = [c for c in sorted(per_class) if c in index]
        scan.files[split] = ([os.path.join(split, c, f) for c in known for f in per_class[c]],
                             np.array([index[c] for c in known for _ in per_class[c]], dtype=np.int64))
        return
    files = walk.images(folder) or []
    scan.mtime = max(scan.mtime, os.stat(folder).st_mtime)
    if split == "test":  # ILSVRC's test images come without labels: nothing to evaluate against
        scan.notes["test"] = f"test/ is a flat folder without labels ({len(files)} images): not used"
        return
    if not files:
        scan.problems.append(f"{split}/ has no images")
        return
    labels = _flat_labels(scan, folder, files, index)
    if labels is not None:
        scan.files[split] = ([os.path.join(split, f) for f in files], labels)


def _search_dirs(scan: FolderScan, folder: str) -> list[str]:
    dirs, d = [folder, scan.root], scan.root
    for _ in range(LABEL_FILE_PARENTS):
        d = os.path.dirname(d)
        dirs.append(d)
    return [os.path.join(d, sub) for d in dirs for sub in ("", DEVKIT)]


def _find(name: str, dirs: list[str]) -> str | None:
    return next((os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))), None)


def _flat_labels(scan: FolderScan, folder: str, files: list[str], index: dict[str, int]) -> np.ndarray | None:
    """Labels of a flat validation folder from its ground-truth file, or None (with a problem noted)."""
    dirs = _search_dirs(scan, folder)
    split = os.path.basename(folder)
    csv_path = _find("LOC_val_solution.csv", dirs)
    gt_path = _find("ILSVRC2012_validation_ground_truth.txt", dirs)
    if csv_path:
        wnids, source = _labels_from_csv(scan, csv_path, files, split), csv_path
    elif gt_path:
        meta = _find("meta.mat", dirs)
        wnids, source = _labels_from_ground_truth(scan, gt_path, meta, files, split), gt_path
    else:
        scan.problems.append(f"{split}/ is a flat folder of {len(files)} images, but no label file was found "
                             "(LOC_val_solution.csv, or ILSVRC2012_validation_ground_truth.txt with the "
                             f"devkit's meta.mat) in {folder}, {scan.root} or the folders above")
        return None
    if wnids is None:
        return None
    unknown = [(f, w) for f, w in zip(files, wnids) if w not in index]
    if unknown:
        scan.problems.append(f"{source}: {len(unknown)} label(s) name a class that train/ lacks, "
                             f"e.g. {unknown[0][1]} for {unknown[0][0]}")
        return None
    scan.notes[split] = f"flat folder labelled by {source}"
    return np.array([index[w] for w in wnids], dtype=np.int64)


def _labels_from_csv(scan: FolderScan, path: str, files: list[str], split: str) -> list[str] | None:
    """Kaggle's ``ImageId,PredictionString`` rows; the first word of PredictionString is the synset."""
    with open(path, newline="") as f:
        rows = {r["ImageId"]: r["PredictionString"].split()[0] for r in csv.DictReader(f)
                if r.get("ImageId") and r.get("PredictionString")}
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    missing = [f for f, s in zip(files, stems) if s not in rows]
    extra = sorted(set(rows) - set(stems))
    if missing or extra:
        scan.problems.append(f"{path} does not match {split}/: {len(missing)} image(s) without a label"
                             f"{f' (e.g. {missing[0]})' if missing else ''}, {len(extra)} label(s) "
                             f"without an image{f' (e.g. {extra[0]})' if extra else ''}")
        return None
    return [rows[s] for s in stems]


def _labels_from_ground_truth(scan: FolderScan, path: str, meta: str | None, files: list[str],
                              split: str) -> list[str] | None:
    """Line i of the devkit's ground truth is the class id of the i-th image in name order."""
    if meta is None:
        scan.problems.append(f"{path} needs the devkit's meta.mat (ids -> synsets) next to it; none found")
        return None
    ids = _devkit_synsets(meta)[0]
    with open(path) as f:
        lines = [int(line) for line in f.read().split()]
    if len(lines) != len(files):
        scan.problems.append(f"{path} has {len(lines)} labels but {split}/ has {len(files)} images")
        return None
    # ILSVRC names carry their line number: check it, so a renamed or misplaced file is caught.
    for i, f in enumerate(files, 1):
        m = re.search(r"_(\d+)\.[^.]+$", f)
        if m and int(m.group(1)) != i:
            scan.problems.append(f"{path}: image {i} in name order is {f}, "
                                 f"whose number says line {int(m.group(1))}")
            return None
    bad = [k for k in lines if k not in ids]
    if bad:
        scan.problems.append(f"{path}: class id {bad[0]} is not a leaf synset of {meta}")
        return None
    return [ids[k] for k in lines]


def _devkit_synsets(meta: str) -> tuple[dict[int, str], dict[str, str]]:
    """The devkit's ``meta.mat``: (ILSVRC2012_ID -> WNID, WNID -> words) of the 1000 leaf synsets."""
    from scipy.io import loadmat  # SciPy, for the devkit's meta.mat only

    try:
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        rows = [(int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"])) for s in np.atleast_1d(synsets)
                if int(s["num_children"]) == 0]
    except Exception as e:  # noqa: BLE001 - any unreadable meta.mat is the same problem for the user
        raise DataError(f"{meta}: not a readable ILSVRC devkit meta.mat ({type(e).__name__}: {e})") from None
    return {i: w for i, w, _ in rows}, {w: words for _, w, words in rows}


def _class_names(scan: FolderScan) -> list[str]:
    dirs = _search_dirs(scan, scan.root)
    names = {}
    mapping = _find("LOC_synset_mapping.txt", dirs)
    meta = _find("meta.mat", dirs)
    if mapping:  # "n01440764 tench, Tinca tinca"
        with open(mapping) as f:
            names = dict(line.rstrip("\n").split(" ", 1) for line in f if " " in line.strip())
    elif meta and scan.classes and re.fullmatch(r"n\d{8}", scan.classes[0]):
        names = _devkit_synsets(meta)[1]
    return [names.get(c, printable(c)) for c in scan.classes]  # folder names may be any bytes


def folder_source(path: str, *, require_splits: bool = False, scan: FolderScan | None = None) -> DataSource:
    """A :class:`DataSource` of 256x256 RGB photos from an image folder (see the module docstring)."""
    scan = scan or scan_folder(path, require_splits=require_splits)
    scan.raise_problems()
    splits = {s: FolderImageSet(scan.root, p, y) for s, (p, y) in scan.files.items()}
    for s, ds in splits.items():
        if len(ds) == 0:
            raise DataError(f"{path}: the {s!r} split has no images")
    identity = {"kind": "folder", "root": scan.root, "counts": scan.notes["images"], "mtime": scan.mtime}
    return DataSource(
        name=f"{'imagenet' if require_splits else 'folder'}:{path}", imagery="photo", channels=3,
        base_size=BASE_SIZE, classes=scan.classes, class_names=scan.class_names, splits=splits, flip=True,
        notes={"source": scan.root, "layout": scan.layout, **scan.notes}, cache_dir=cache_dir_for(identity))
