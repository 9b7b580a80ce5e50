"""``alexnet train``: one run, started fresh or resumed, written to its run directory.

    runs/NAME/
      config.json      the resolved configuration, versions, data description, command line
      metrics.jsonl    one record per epoch
      log.txt          the epoch lines and warnings (bad files, lr drops)
      checkpoints/     last.pt (every epoch, and inside epochs with --save-every), best.pt (best val top-1)
      results.json     test accuracy / error (top-1, top-5), per-class accuracy, train seconds
      plots/           curves.png, conv1.png, confusion.png

Only rank 0 writes. Everything random (data order, crops, flips, lighting, dropout) is seeded from
(seed, epoch, rank), and mid-epoch checkpoints store the generators' states, so a resumed run
repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from .. import __version__
from ..data import DataSource, build_source
from ..data.loader import EpochLoader, batch_indices
from ..data.stats import load_or_compute_stats
from ..data.transforms import Lighting, Normalization, Preset
from ..errors import UserError
from ..models import create_model
from ..models.base import ImageClassifier
from ..models.weights import read_state_dict
from ..optim import PaperSGD
from ..runtime import grad_scaler, prepare_model
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import Dist, compute_cleanup, compute_init
from .engine import Member, TrainState, evaluate, train_one_epoch
from .schedule import Schedule
from .tensorboard import open_tensorboard

SMALL_MODELS = ("alexnet-small", "lenet5")
RESUMABLE_CHANGES = ("epochs", "device", "workers", "quiet", "save_every", "compile", "cuda_graphs", "out")


# ----------------------------------------------------------------------------- building blocks

def build_model(cfg: TrainConfig, source: DataSource) -> ImageClassifier:
    """The model for ``source``: small models take the data's channels and size by default."""
    options = dict(cfg.model_opts)
    if cfg.model in SMALL_MODELS:
        if source.kind != "small" and "img_size" not in options:
            raise UserError(f"{cfg.model} is made for 28x28 / 32x32 images and {source.name} holds "
                            f"{source.base_size}x{source.base_size} photographs; use alexnet2012 or "
                            f"alexnet-owt, or set --opt img_size=N")
        options.setdefault("in_chans", source.channels)
        options.setdefault("img_size", source.base_size)
    torch.manual_seed(cfg.seed)  # the same initial weights for the same seed
    model = create_model(cfg.model, num_classes=source.num_classes, **options)
    c, h, _ = model.input_size
    if c != source.channels:
        raise UserError(f"{cfg.model} takes {c}-channel images and {source.name} has {source.channels}")
    if cfg.pretrained:
        load_backbone(model, cfg.pretrained)
    return model


def load_backbone(model: ImageClassifier, path: str) -> None:
    """Load a weights file; an output layer of another class count is left freshly initialized."""
    state = read_state_dict(path)
    own = model.state_dict()
    out_name = f"classifier.{list(model.classifier._modules)[-1]}"
    head = [f"{out_name}.weight", f"{out_name}.bias"]
    if all(k in state for k in head) and state[head[0]].shape != own[head[0]].shape:
        state = {k: v for k, v in state.items() if k not in head}
    else:
        head = []
    bad = [k for k in own if k not in head and (k not in state or state[k].shape != own[k].shape)]
    bad += [k for k in state if k not in own]
    if bad:
        raise UserError(f"{path} does not fit {model.name}: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    model.load_state_dict(state, strict=not head)


def build_presets(cfg: TrainConfig, source: DataSource, model: ImageClassifier, stats: dict | None):
    """The training preset and the centre-crop evaluation preset for this data and model."""
    crop, base = model.input_size[-1], source.base_size
    if cfg.normalize == "paper":
        norm = Normalization(stats["mean_image"], torch.ones(source.channels, 1, 1))
    elif cfg.normalize == "channel":
        norm = Normalization.per_channel(stats["mean"])
    elif cfg.normalize == "standard":
        norm = Normalization.per_channel(stats["mean"], stats["std"].clamp_min(1.0))
    else:
        if source.channels != 3:
            raise UserError("--normalize imagenet needs RGB images")
        norm = Normalization.torchvision()
    lighting = None
    if cfg.lighting != "none":
        if source.channels != 3:
            raise UserError(f"PCA lighting needs RGB images; {source.name} has {source.channels} channel(s)")
        lighting = (Lighting.imagenet(cfg.lighting_std) if cfg.lighting == "imagenet"
                    else Lighting(stats["eigval"], stats["eigvec"], cfg.lighting_std))
    pad = cfg.pad if cfg.pad >= 0 else ({28: 2, 32: 4}.get(base, 0) if source.kind == "small" else 0)
    flip = source.flip if cfg.flip == "auto" else cfg.flip == "on"
    try:
        train = Preset(train=True, crop=crop, base_size=base, norm=norm, pad=pad, flip=flip, lighting=lighting,
                       resized=cfg.crop == "random-resized")
        test = Preset(train=False, crop=crop, base_size=base, norm=norm)
    except ValueError as e:
        raise UserError(f"{cfg.model} on {source.name}: {e}") from None
    return train, test


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "paper-sgd":
        return PaperSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def versions() -> dict:
    out = {"alexnet": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
           "platform": platform.platform()}
    try:
        import subprocess

        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            out["git"] = rev.stdout.strip()
    except Exception:  # pragma: no cover - no git here
        pass
    return out


class StopRequest:
    """SIGINT / SIGTERM ask the loop to finish its step, save and exit; a second Ctrl-C is immediate."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def _handle(self, signum, _frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


class RunDir:
    """The files of one run. Every write goes through here, on rank 0 only."""

    def __init__(self, path: Path, primary: bool):
        self.path, self.primary = path, primary

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    def write_json(self, name: str, obj) -> None:
        if self.primary:
            tmp = self.path / f".{name}.tmp"
            tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
            tmp.replace(self.path / name)

    def write_metrics(self, history: list[dict]) -> None:
        if self.primary:
            tmp = self.path / ".metrics.jsonl.tmp"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
            tmp.replace(self.path / "metrics.jsonl")

    def log(self, line: str, *, echo: bool = True, err: bool = False) -> None:
        if not self.primary:
            return
        if echo:
            tqdm.write(line, file=sys.stderr if err else sys.stdout)
        with open(self.path / "log.txt", "a") as f:
            f.write(line + "\n")


def new_run_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    if cfg.name:
        path = out / cfg.name
        if path.exists():
            raise UserError(f"run directory {path} already exists; pick another --name, or continue it "
                            f"with: alexnet train --resume {path}")
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, i = out / stamp, 1
    while path.exists():
        i += 1
        path = out / f"{stamp}-{i}"
    return path


# ----------------------------------------------------------------------------- the run

class Trainer:
    def __init__(self, cfg: TrainConfig, run_path: Path, dist: Dist, device: torch.device,
                 resume: dict | None = None):
        self.cfg, self.dist, self.device = cfg, dist, device
        self.run = RunDir(run_path, dist.primary)
        self.source = build_source(cfg.data)
        for split in ("train", "val"):
            self.source.split(split)  # fail now, not after an epoch, when a split is empty
        self.model = build_model(cfg, self.source)
        self.tensorboard = open_tensorboard(run_path / "tensorboard", cfg.tensorboard and dist.primary)
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            preset = resume["preset"]
            self.train_preset = Preset.from_dict(preset, train=True)
            self.test_preset = Preset.from_dict(preset, train=False)
        else:
            stats = None
            if cfg.normalize != "imagenet" or cfg.lighting == "data":
                if dist.primary:  # rank 0 computes (and caches) first
                    stats = load_or_compute_stats(self.source, max_images=cfg.stats_images or None,
                                                  workers=cfg.workers)
                dist.barrier()
                if not dist.primary:
                    stats = load_or_compute_stats(self.source, max_images=cfg.stats_images or None,
                                                  workers=cfg.workers)
            self.train_preset, self.test_preset = build_presets(cfg, self.source, self.model, stats)
        # the module to call: compiled and/or DDP-wrapped; self.model stays the plain one we save
        self.net = prepare_model(self.model, device, channels_last=cfg.channels_last, compile=cfg.compile,
                                 cuda_graphs=cfg.cuda_graphs)
        if dist.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scaler = grad_scaler(device, cfg.amp)
        if cfg.batch_size % dist.world:
            raise UserError(f"batch size {cfg.batch_size} is not divisible by {dist.world} processes")
        self.local_batch = cfg.batch_size // dist.world
        n_train = len(self.source.split("train"))
        self.steps_per_epoch = len(batch_indices(n_train, self.local_batch, shuffle=True, rank=dist.rank,
                                                 world=dist.world, drop_last=False))
        self.schedule = Schedule(cfg.schedule, self.optimizer, base_lr=cfg.lr, epochs=cfg.epochs,
                                 steps_per_epoch=self.steps_per_epoch, factor=cfg.lr_factor,
                                 patience=cfg.patience, max_drops=cfg.max_drops,
                                 threshold=cfg.plateau_threshold, step_size=cfg.step_size,
                                 warmup_epochs=cfg.warmup_epochs)
        self.epoch, self.state = 0, TrainState()
        self.history: list[dict] = []
        self.best_top1, self.best_epoch, self.train_seconds = -1.0, 0, 0.0
        self.bad_files: set[str] = set()
        self.generator = torch.Generator()
        if resume is not None:
            self._restore(resume)

    # -- checkpoints

    def _restore(self, ckpt: dict) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.history = ckpt["epoch"], list(ckpt["history"])
        self.best_top1, self.best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        self.train_seconds, self.bad_files = ckpt["train_seconds"], set(ckpt["bad_files"])
        if ckpt["state"]["step"] > 0:  # inside an epoch: continue its batches with its generators
            self.state = TrainState(**ckpt["state"])
            self._resume_rng = ckpt["rng"]
        self.run.write_metrics(self.history)

    def _checkpoint(self, path: Path, *, full: bool = True) -> None:
        if not self.dist.primary:
            return
        rng = {"torch": torch.get_rng_state(), "aug": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        save_checkpoint(
            path,
            model_name=self.cfg.model, model_options=self.model_options, num_classes=self.source.num_classes,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict() if full else None,
            schedule=self.schedule.state_dict(), scaler=self.scaler.state_dict(),
            epoch=self.epoch, state=self.state.to_dict(), rng=rng, history=self.history,
            best_top1=self.best_top1, best_epoch=self.best_epoch, train_seconds=self.train_seconds,
            bad_files=sorted(self.bad_files), config=self.cfg.to_dict(), preset=self.train_preset.to_dict(),
            classes=self.source.classes, class_names=self.source.class_names, data=self.source.name,
            versions=versions(),
        )

    @property
    def model_options(self) -> dict:
        opts = dict(self.cfg.model_opts)
        if self.cfg.model in SMALL_MODELS:
            opts.setdefault("in_chans", self.model.input_size[0])
            opts.setdefault("img_size", self.model.input_size[1])
        return opts

    # -- the loop

    def _seed_epoch(self) -> None:
        if getattr(self, "_resume_rng", None) is not None:
            rng, self._resume_rng = self._resume_rng, None
            torch.set_rng_state(rng["torch"])
            self.generator.set_state(rng["aug"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            return
        base = (self.cfg.seed * 1_000_003 + self.epoch) * 64 + self.dist.rank
        torch.manual_seed(base)  # dropout
        self.generator.manual_seed(base + 1)  # crops, flips, lighting

    def _note_bad_files(self, names: list[str]) -> None:
        """Warn once per file; ``names`` is the epoch's growing list of skipped files."""
        for name in names[self._noted:]:
            if name not in self.bad_files:
                self.bad_files.add(name)
                self.run.log(f"warning: skipped undecodable file {name}", err=True)
        self._noted = len(names)

    def fit(self, stop: StopRequest) -> int | None:
        """Train the remaining epochs; returns a signal number if stopped by one."""
        cfg, dist = self.cfg, self.dist
        train_split = self.source.split("train")
        while self.epoch < cfg.epochs:
            self._seed_epoch()
            self._noted = 0
            batches = batch_indices(len(train_split), self.local_batch, shuffle=True, seed=cfg.seed,
                                    epoch=self.epoch, rank=dist.rank, world=dist.world)
            loader = EpochLoader(train_split, batches, start=self.state.step, workers=cfg.workers,
                                 pin_memory=self.device.type == "cuda")
            bar = tqdm(total=len(batches), initial=self.state.step, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       unit="step", leave=False, dynamic_ncols=True, disable=cfg.quiet or not dist.primary)

            def after_step(state: TrainState) -> bool:
                self.schedule.after_step()
                self._note_bad_files(state.skipped)
                if dist.any(stop.signum is not None, self.device):
                    return True
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < len(batches):
                    self._checkpoint(self.run.last)
                return False

            t0 = time.perf_counter()
            stopped = train_one_epoch(self.net, self.optimizer, self.scaler, loader, self.train_preset,
                                      self.generator, self.device, state=self.state, amp=cfg.amp,
                                      channels_last=cfg.channels_last, accum_steps=cfg.accum_steps,
                                      after_step=after_step, progress=bar)
            bar.close()
            self.train_seconds += time.perf_counter() - t0
            if stopped:
                self._checkpoint(self.run.last)
                return stop.signum or signal.SIGTERM
            self._end_epoch()
            if dist.any(stop.signum is not None, self.device):
                return stop.signum or signal.SIGTERM
        return None

    def _end_epoch(self) -> None:
        cfg, dist = self.cfg, self.dist
        sums = torch.tensor([self.state.count, self.state.loss_sum, self.state.correct], dtype=torch.float64,
                            device=self.device)
        count, loss_sum, correct = dist.all_reduce_sum(sums).tolist()
        val = self.validate()
        lr = self.schedule.lr
        self.epoch += 1
        dropped = self.schedule.after_epoch(self.epoch, 100 * (1 - val.top1_accuracy))
        record = {"epoch": self.epoch, "train_loss": loss_sum / max(count, 1),
                  "train_top1": correct / max(count, 1), "val_loss": val.loss, "val_top1": val.top1_accuracy,
                  "val_top5": val.top5_accuracy, "lr": lr, "seconds": self.state.seconds,
                  "images_per_second": count / max(self.state.seconds, 1e-9),
                  "skipped_files": len(self.state.skipped) + val.skipped}
        self.history.append(record)
        self.tensorboard.log_epoch(record, self.model)
        self.state = TrainState()
        improved = val.top1_accuracy > self.best_top1
        if improved:
            self.best_top1, self.best_epoch = val.top1_accuracy, self.epoch
        # last.pt first: if we die between the two writes, best.pt is one epoch stale, never broken
        self._checkpoint(self.run.last)
        if improved:
            self._checkpoint(self.run.best, full=False)
        self.run.write_metrics(self.history)
        k = min(5, self.source.num_classes)
        line = (f"epoch {self.epoch:>3}/{cfg.epochs}  train loss {record['train_loss']:.4f} "
                f"top-1 {100 * record['train_top1']:5.1f}%  val loss {val.loss:.4f} "
                f"top-1 {100 * val.top1_accuracy:5.1f}% top-{k} {100 * val.top5_accuracy:5.1f}%  "
                f"lr {lr:.3g}  {record['seconds']:.1f}s ({record['images_per_second']:.0f} img/s)")
        if record["skipped_files"]:
            line += f"  skipped {record['skipped_files']} bad file(s)"
        self.run.log(line + ("  *" if improved else ""))
        if dropped:
            self.run.log(f"learning rate divided: now {self.schedule.lr:.3g}")

    def _eval_batches(self, split: str, preset: Preset):
        data = self.source.split(split)
        batches = batch_indices(len(data), max(1, self.local_batch), shuffle=False, rank=self.dist.rank,
                                world=self.dist.world)
        return EpochLoader(data, batches, workers=self.cfg.workers, pin_memory=self.device.type == "cuda")

    def validate(self, split: str = "val", preset: Preset | None = None):
        self.net.eval()
        member = Member(self.net, preset or self.test_preset, self.cfg.amp, self.cfg.channels_last)
        return evaluate([member], self._eval_batches(split, member.preset), self.device,
                        self.source.num_classes, self.dist)[0]

    def finish(self) -> dict:
        """Test the best checkpoint, write results.json and the pictures."""
        cfg = self.cfg
        if self.run.best.is_file():
            self.model.load_state_dict(load_checkpoint(self.run.best)["model"])
        split = self.source.eval_split_name("test")
        views = {"center": self.test_preset}
        if cfg.tta == "10crop":
            views["10crop"] = Preset.from_dict(self.train_preset.to_dict(), train=False, tta="10crop")
        tested = {name: self.validate(split, preset) for name, preset in views.items()}
        main = tested[cfg.tta]
        results = {
            "model": cfg.model, "data": cfg.data, "recipe": cfg.recipe, "test_split": split, "tta": cfg.tta,
            "test_top1_accuracy": main.top1_accuracy, "test_top5_accuracy": main.top5_accuracy,
            "test_top1_error": 1 - main.top1_accuracy, "test_top5_error": 1 - main.top5_accuracy,
            "test_loss": main.loss, "test_images": main.count, "topk": min(5, self.source.num_classes),
            "views": {name: r.to_dict() for name, r in tested.items()},
            "per_class_accuracy": dict(zip(self.source.class_names, main.per_class_accuracy)),
            "best_epoch": self.best_epoch, "best_val_top1_accuracy": self.best_top1,
            "epochs": self.epoch, "train_seconds": self.train_seconds,
            "skipped_files": sorted(self.bad_files),
        }
        self.run.write_json("results.json", results)
        self.tensorboard.close()
        if self.dist.primary:
            self.plots(main)
        k = results["topk"]
        self.run.log(f"test ({split}, {cfg.tta}): top-1 {100 * main.top1_accuracy:.2f}% "
                     f"(error {100 * (1 - main.top1_accuracy):.2f}%), top-{k} {100 * main.top5_accuracy:.2f}% "
                     f"(error {100 * (1 - main.top5_accuracy):.2f}%) on {main.count} images; "
                     f"trained {self.train_seconds:.0f}s; run: {self.run.path}")
        return results

    def plots(self, result) -> None:
        from ..viz import plot_confusion, plot_conv1, plot_curves

        out = self.run.path / "plots"
        if self.history:
            plot_curves(self.history, out / "curves.png")
        conv1 = next(m for m in self.model.features if isinstance(m, torch.nn.Conv2d))
        plot_conv1(conv1.weight, out / "conv1.png", towers=self.model.towers)
        if self.source.num_classes <= 100:
            plot_confusion(result.confusion, self.source.class_names, out / "confusion.png")


# ----------------------------------------------------------------------------- entry point

def train(cfg: TrainConfig | None = None, *, resume: str | None = None, overrides: dict | None = None) -> int:
    """Run ``alexnet train``; returns the process exit code."""
    if resume:
        path = Path(resume)
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            raise UserError(f"{path} is not a run directory with checkpoints/last.pt to resume from")
        ckpt = load_checkpoint(last)
        changed = {k: v for k, v in (overrides or {}).items()
                   if k in TrainConfig.__dataclass_fields__ and ckpt["config"].get(k) != v}
        refused = sorted(set(changed) - set(RESUMABLE_CHANGES))
        if refused:
            raise UserError(f"cannot change {', '.join(refused)} when resuming (allowed: "
                            f"{', '.join(RESUMABLE_CHANGES)})")
        cfg = TrainConfig(**{**ckpt["config"], **changed}).validate()
        run_path = path
    else:
        ckpt = None
        run_path = new_run_dir(cfg)

    dist, device = compute_init(cfg.device)
    if cfg.cuda_graphs and device.type != "cuda":  # before anything is written
        raise UserError(f"CUDA graphs need a CUDA device, not {device.type}")
    try:
        if dist.primary:
            run_path.mkdir(parents=True, exist_ok=bool(resume))
        dist.barrier()
        try:
            trainer = Trainer(cfg, run_path, dist, device, resume=ckpt)
        except BaseException:
            if not resume and dist.primary and run_path.is_dir() and not any(run_path.iterdir()):
                run_path.rmdir()  # nothing was written: leave no empty run behind
            raise
        run = trainer.run
        if not resume:
            run.write_json("config.json", {"config": cfg.to_dict(), "versions": versions(),
                                           "data": {"name": trainer.source.name, **trainer.source.notes,
                                                    "classes": trainer.source.num_classes},
                                           "device": str(device), "world_size": dist.world,
                                           "command": sys.argv})
            run.log(f"run {run_path}: {cfg.model} on {cfg.data}, recipe {cfg.recipe}, {cfg.epochs} epochs, "
                    f"device {device}" + (f" x{dist.world}" if dist.world > 1 else ""))
        else:
            run.log(f"resuming {run_path} at epoch {trainer.epoch + 1}, step {trainer.state.step}")
        with StopRequest() as stop:
            signum = trainer.fit(stop)
        if signum is not None:
            name = signal.Signals(signum).name
            if dist.primary:
                run.log(f"stopped by {name} at epoch {trainer.epoch + 1}, step {trainer.state.step}; saved "
                        f"{run.last}. Resume with: alexnet train --resume {run_path}", err=True)
            return 128 + signum
        trainer.finish()
        return 0
    finally:
        compute_cleanup()
