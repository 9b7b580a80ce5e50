"""The training loop of one run: epochs of :func:`train_one_epoch`, validation, the learning-rate
schedule, checkpoints, and the final test.

Everything random (data order, crops, flips, lighting, dropout) is seeded from (seed, epoch, rank), and
mid-epoch checkpoints store the generators' states, so a resumed run repeats exactly what the
uninterrupted run would have done. All of the loop's state goes through :meth:`Trainer.state_dict`.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
import warnings
from typing import Sequence

import torch
from tqdm import tqdm

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..data import DataSource
from ..data.loader import EpochLoader, batch_indices, epoch_seed, train_steps
from ..data.prefetch import Prefetcher
from ..data.selection import reported_weights
from ..data.transforms import Preset
from ..distributed import Dist
from ..errors import UserError
from ..evaluation import EvalResult, Member, evaluate
from ..models.dropout import shardable_dropout
from ..models.split import split_towers
from ..provenance import environment
from ..runtime import grad_scaler, prepare_model
from .config import TrainConfig
from .doctor import Doctor, NoDoctor
from .engine import TrainState, train_one_epoch
from .rundir import RunDir
from .schedule import Schedule
from .setup import build_model, build_optimizer, build_presets, load_stats, tower_devices
from .tblog import open_log


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite: the run stops, keeping its last good checkpoint."""


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


class Callback:
    """Hooks into a run (``alexnet.train(..., callbacks=[...])``); every hook does nothing unless
    overridden. They run on every process, after the run's own bookkeeping of the same moment."""

    def on_start(self, epoch: int, epochs: int) -> None:
        """Training starts (or resumes) with ``epoch`` of ``epochs`` epochs done."""

    def on_step(self, step: int, steps: int) -> None:
        """Step ``step`` (1-based) of the epoch's ``steps`` is done."""

    def on_epoch(self, record: dict) -> None:
        """An epoch ended: ``record`` is its line of metrics.jsonl, already written."""


class Trainer:
    """One run: built from a resolved config and its data source; ``checkpoint`` continues one."""

    def __init__(self, cfg: TrainConfig, source: DataSource, rundir: RunDir, dist: Dist,
                 device: torch.device, checkpoint: dict | None = None,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.source, self.rundir, self.dist, self.device = cfg, source, rundir, dist, device
        self.callbacks = list(callbacks)
        for split in ("train", "val"):
            source.split(split)  # fail now, not after an epoch, when a split is empty
        if cfg.batch_size < dist.world * cfg.accum_steps:
            raise UserError(f"batch size {cfg.batch_size} is smaller than {dist.world} processes x "
                            f"{cfg.accum_steps} micro-batches: some would get no image in every step")
        self.model = build_model(cfg, source)  # the plain module: what checkpoints save
        if dist.launched:  # dropout masks drawn for the global batch: the same on 1, 2 or 4 processes
            shardable_dropout(self.model)
        self.batch_norm_note = self._batch_norm(device)
        if checkpoint is not None:
            self.train_preset = Preset.from_dict(checkpoint["preset"], train=True)
            self.test_preset = Preset.from_dict(checkpoint["preset"], train=False)
        else:
            stats = load_stats(cfg, source, dist)
            self.train_preset, self.test_preset = build_presets(cfg, source, self.model, stats)
        # the module to call: compiled and/or DDP-wrapped around self.model
        if cfg.tower_devices:  # the paper's two-GPU split: inputs and logits live on the first device
            towers = tower_devices(cfg.tower_devices, dist.local_rank)
            self.model = self.net = split_towers(self.model, towers)
            self.device = device = towers[0]
        else:
            self.net = prepare_model(self.model, device, channels_last=cfg.channels_last, compile=cfg.compile,
                                     cuda_graphs=cfg.cuda_graphs)
        if dist.launched:  # torchrun, even with one process; a module on two devices takes device_ids=None
            ids = [device.index] if device.type == "cuda" and not cfg.tower_devices else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
            if any(1 in p.shape for p in self.model.parameters()):
                # a conv of one input channel in channels-last: its weight's strides (25, 1, 5, 1) and the
                # bucket's (25, 25, 5, 1) describe the same memory, and DDP warns of a mismatch
                warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        self.optimizer = build_optimizer(cfg, self.model)
        self.scaler = grad_scaler(device, cfg.amp)
        self.local_batch = -(-cfg.batch_size // dist.world)  # evaluation's batches per process
        self.steps_per_epoch = len(self._train_batches(0))
        self.schedule = Schedule.from_config(cfg, self.optimizer, self.steps_per_epoch)
        self.generator = torch.Generator()  # crops, flips, lighting
        self.epoch = 0
        self.state = TrainState()  # the epoch in progress
        self.history: list[dict] = []
        self.best_top1, self.best_epoch, self.train_seconds = -1.0, 0, 0.0
        self.bad_files: set[str] = set()
        self.resume_rng: dict | None = None  # generator states to continue a half-done epoch with
        self.doctor_state: dict | None = None  # the doctor's count and alerts, from a resumed checkpoint
        self.noted = 0  # skipped files of this epoch already warned about
        self.log = open_log(cfg.tensorboard, rundir.path / "tensorboard", dist.primary)
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            self._check_best()

    def _batch_norm(self, device: torch.device) -> str | None:
        """Batch norm over several processes: SyncBatchNorm on CUDA (statistics of the whole global batch,
        as one process computes them); elsewhere each process normalizes by its own part of the batch,
        which the run log says (returned here)."""
        norms = (torch.nn.modules.batchnorm._BatchNorm,)
        if self.dist.world == 1 or not any(isinstance(m, norms) for m in self.model.modules()):
            return None
        last = len(self.source.split("train")) % self.cfg.batch_size or self.cfg.batch_size
        if last < 2 * self.dist.world * self.cfg.accum_steps:
            raise UserError(f"the last step of each epoch holds {last} image(s): too few for batch norm "
                            f"on {self.dist.world} processes x {self.cfg.accum_steps} micro-batches (each "
                            "needs 2 or more); choose another --batch-size")
        if device.type == "cuda" and not self.cfg.tower_devices:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            return None
        return (f"note: batch norm statistics are per process ({self.dist.world} processes on {device.type}; "
                "SyncBatchNorm needs CUDA): results depend on the number of processes")

    # -- checkpoints

    def state_dict(self, *, full: bool = True) -> dict:
        """Everything a checkpoint holds; ``full=False`` leaves out the optimizer (best.pt)."""
        rng = {"torch": torch.get_rng_state(), "aug": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model_name": self.cfg.model, "model_options": dict(self.cfg.model_opts),
            "num_classes": self.source.num_classes, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if full else None,
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "state": self.state.to_dict(), "rng": rng, "history": self.history,
            "best_top1": self.best_top1, "best_epoch": self.best_epoch, "train_seconds": self.train_seconds,
            "bad_files": sorted(self.bad_files), "config": self.cfg.to_dict(),
            "preset": self.train_preset.to_dict(), "classes": self.source.classes,
            "class_names": self.source.class_names, "data": self.source.name, "versions": environment(),
            "doctor": self.doctor.state_dict(),
        }

    def load_state_dict(self, ckpt: dict) -> None:
        groups = len(ckpt["optimizer"]["param_groups"])
        if groups != len(self.optimizer.param_groups):
            raise UserError(f"{self.rundir.last} holds {groups} optimizer parameter group(s) and this "
                            f"version uses {len(self.optimizer.param_groups)} (weights, biases): it was "
                            f"saved by an earlier alexnet; start a new run from its weights (--pretrained)")
        self.model.load_state_dict(ckpt["model"])
        bases = [g["initial_lr"] for g in self.optimizer.param_groups]  # from this config, not the file
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group, base in zip(self.optimizer.param_groups, bases):
            group["initial_lr"] = base
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.history = ckpt["epoch"], list(ckpt["history"])
        self.best_top1, self.best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        self.train_seconds, self.bad_files = ckpt["train_seconds"], set(ckpt["bad_files"])
        self.doctor_state = ckpt.get("doctor")  # (None: saved with --doctor off, or by an earlier version)
        if ckpt["state"]["step"] > 0:  # inside an epoch: continue its batches with its generators
            self.state = TrainState(**ckpt["state"])  # all processes' sums (save gathers them) ...
            if not self.dist.primary:  # ... counted once, on the primary process
                self.state.count, self.state.loss_sum, self.state.correct, self.state.skipped = 0, 0.0, 0, []
            self.resume_rng = ckpt["rng"]

    def _check_best(self) -> None:
        """On resume: best.pt must hold the epoch last.pt names as the best. last.pt is written first, so a
        run killed between the two writes left best.pt one improvement behind; last.pt is then the end of
        that very epoch and holds the best weights, and best.pt is rewritten from it. Any other mismatch
        (files copied between runs) is an error: results would name one epoch and test another."""
        if self.best_epoch == 0:  # no epoch has ended yet
            return
        path = self.rundir.best
        held = load_checkpoint(path)["epoch"] if path.is_file() else None
        if held == self.best_epoch:
            return
        if self.epoch == self.best_epoch and self.state.step == 0:
            self.save("best")
            self.rundir.log(f"best.pt held {'no weights' if held is None else f'epoch {held}'} while last.pt "
                            f"names epoch {self.best_epoch} as the best (the run was stopped between the two "
                            f"writes): best.pt rewritten from last.pt, which is epoch {self.epoch}")
            return
        if held is not None:  # (a best.pt removed by hand: the test then reports the last weights, saying so)
            raise CheckpointError(f"{path} holds epoch {held} but {self.rundir.last} names epoch "
                                  f"{self.best_epoch} as the best: the two do not belong to the same run; "
                                  "put back the run's own best.pt, or remove it")

    def save(self, which: str = "last") -> None:
        """Write last.pt (on every process: inside an epoch, the processes' running sums are gathered
        first) or best.pt; only the primary process writes."""
        if which == "last" and self.state.step > 0:
            self._gather_state()
        if self.dist.primary:
            path = self.rundir.last if which == "last" else self.rundir.best
            save_checkpoint(path, self.state_dict(full=which == "last"))

    def _gather_state(self) -> None:
        """The epoch's running sums of all processes on the primary one (the others start again from
        zero), so a checkpoint inside an epoch holds the whole run's and resumes on any number of
        processes."""
        dist, state = self.dist, self.state
        if dist.world == 1:
            return
        sums = torch.tensor([state.count, state.loss_sum, state.correct], dtype=torch.float64,
                            device=self.device)
        count, loss_sum, correct = dist.all_reduce_sum(sums).tolist()
        skipped = [name for names in dist.all_gather_object(state.skipped) for name in names]
        if dist.primary:
            state.count, state.loss_sum, state.correct = int(count), loss_sum, int(correct)
            state.skipped = skipped
        else:
            state.count, state.loss_sum, state.correct, state.skipped = 0, 0.0, 0, []
        self.noted = 0
        self.doctor.sums_replaced()

    # -- the loop

    def _train_batches(self, epoch: int) -> list:
        """This process's part of each global step of ``epoch`` (:func:`~alexnet.data.loader.train_steps`)."""
        n = len(self.source.split("train"))
        return train_steps(n, self.cfg.batch_size, seed=self.cfg.seed, epoch=epoch, rank=self.dist.rank,
                           world=self.dist.world, accum_steps=self.cfg.accum_steps)

    def _seed_epoch(self) -> None:
        if self.resume_rng is not None:
            rng, self.resume_rng = self.resume_rng, None
            torch.set_rng_state(rng["torch"])
            self.generator.set_state(rng["aug"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            return
        # the same on every process: each draws for the whole global batch and uses its rows
        base = epoch_seed(self.cfg.seed, self.epoch) * 64
        torch.manual_seed(base)  # dropout
        self.generator.manual_seed(base + 1)  # crops, flips, lighting

    def _check_finite(self, loss_sum: float) -> None:
        if not math.isfinite(loss_sum):
            kept = f"the last good checkpoint is kept: {self.rundir.last}" if self.rundir.last.is_file() \
                else "no checkpoint was written"
            raise NonFiniteLoss(f"the training loss became {loss_sum} in epoch {self.epoch + 1}, step "
                                f"{self.state.step} (lr {self.schedule.lr:.3g}): the run diverged; try a "
                                f"lower --lr; {kept}")

    def _note_bad_files(self, names: list[str]) -> None:
        """Warn once per file; ``names`` is the epoch's growing list of skipped files."""
        for name in names[self.noted:]:
            if name not in self.bad_files:
                self.bad_files.add(name)
                self.rundir.log(f"warning: skipped undecodable file {name}", err=True)
        self.noted = len(names)

    def fit(self, stop: StopRequest) -> int | None:
        """Train the remaining epochs; returns a signal number if stopped by one."""
        cfg, dist = self.cfg, self.dist
        for cb in self.callbacks:
            cb.on_start(self.epoch, cfg.epochs)
        while self.epoch < cfg.epochs:
            self._seed_epoch()
            self.noted = 0
            batches = self._train_batches(self.epoch)
            loader = EpochLoader(self.source.split("train"), batches, start=self.state.step,
                                 workers=cfg.workers,
                                 pin_memory=self.device.type == "cuda")
            bar = tqdm(total=len(batches), initial=self.state.step,
                       desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       unit="step", leave=False, dynamic_ncols=True, disable=cfg.quiet or not dist.primary)

            def after_step(state: TrainState, steps: int = len(batches)) -> bool:
                self._check_finite(state.loss_sum)
                self.doctor.after_step(state, self.epoch * steps + state.step)
                self.schedule.after_step()
                self._note_bad_files(state.skipped)
                for cb in self.callbacks:
                    cb.on_step(state.step, steps)
                if dist.any(stop.signum is not None, self.device):
                    return True
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < steps:
                    self.save("last")
                return False

            t0 = time.perf_counter()
            with Prefetcher(loader, self.device) as ahead:  # the next batch loads during this step
                stopped = train_one_epoch(self.net, self.optimizer, self.scaler, ahead, self.train_preset,
                                          self.generator, self.device, state=self.state, amp=cfg.amp,
                                          channels_last=cfg.channels_last, accum_steps=cfg.accum_steps,
                                          world=dist.world, shard=dist.launched, after_step=after_step,
                                          progress=bar)
            bar.close()
            self.train_seconds += time.perf_counter() - t0
            if stopped:
                self.save("last")
                return stop.signum or signal.SIGTERM
            self._end_epoch()
            if dist.any(stop.signum is not None, self.device):
                return stop.signum or signal.SIGTERM
        return None

    @functools.cached_property
    def doctor(self) -> Doctor | NoDoctor:
        """Watches the run (docs/doctor.md); made at its first use, the weights and history in place."""
        if self.cfg.doctor == "off":
            return NoDoctor()
        doctor = Doctor(self.model, self.optimizer, self.source, self.test_preset, self.device, self.rundir,
                        seed=self.cfg.seed, steps=self.cfg.doctor_steps, channels_last=self.cfg.channels_last,
                        history=self.history)
        if self.doctor_state is not None:  # resumed: its count and alerts as they were saved
            doctor.load_state_dict(self.doctor_state)
        return doctor

    def _end_epoch(self) -> None:
        cfg, dist = self.cfg, self.dist
        sums = torch.tensor([self.state.count, self.state.loss_sum, self.state.correct], dtype=torch.float64,
                            device=self.device)
        count, loss_sum, correct = dist.all_reduce_sum(sums).tolist()
        train_loss = loss_sum / max(count, 1)
        val = self.evaluate_split("val")
        lr = self.schedule.lr
        health = self.doctor.examine(self.epoch, self.epoch * self.steps_per_epoch + self.state.step)
        self.epoch += 1
        dropped = self.schedule.after_epoch(self.epoch, 100 * (1 - val.top1_accuracy))
        record = {"epoch": self.epoch, "train_loss": train_loss,
                  "train_top1": correct / max(count, 1), "val_loss": val.loss, "val_top1": val.top1_accuracy,
                  "val_top5": val.top5_accuracy, "lr": lr, "seconds": self.state.seconds,
                  "images_per_second": count / max(self.state.seconds, 1e-9),
                  "skipped_files": len(self.state.skipped) + val.skipped, **health}
        self.history.append(record)
        self.state = TrainState()
        improved = val.top1_accuracy > self.best_top1
        if improved:
            self.best_top1, self.best_epoch = val.top1_accuracy, self.epoch
        # last.pt first: if we die between the two writes, best.pt is one improvement behind, never broken,
        # and the resume rewrites it from last.pt (_check_best)
        self.save("last")
        if improved:
            self.save("best")
        self.rundir.write_metrics(self.history)
        self.log.epoch(record)
        for cb in self.callbacks:
            cb.on_epoch(record)
        k = min(5, self.source.num_classes)
        line = (f"epoch {self.epoch:>3}/{cfg.epochs}  train loss {train_loss:.4f} "
                f"top-1 {100 * record['train_top1']:5.1f}%  val loss {val.loss:.4f} "
                f"top-1 {100 * val.top1_accuracy:5.1f}% top-{k} {100 * val.top5_accuracy:5.1f}%  "
                f"lr {lr:.3g}  {record['seconds']:.1f}s ({record['images_per_second']:.0f} img/s)")
        if record["skipped_files"]:
            line += f"  skipped {record['skipped_files']} bad file(s)"
        self.rundir.log(line + ("  *" if improved else ""))
        if dropped:
            self.rundir.log(f"learning rate divided: now {self.schedule.lr:.3g}")

    def evaluate_split(self, split: str, preset: Preset | None = None,
                       progress: str | None = None) -> EvalResult:
        """Loss and accuracy of the current weights on one split (summed over all processes)."""
        self.net.eval()
        member = Member(self.net, preset or self.test_preset, self.cfg.amp, self.cfg.channels_last)
        data = self.source.split(split)
        batches = batch_indices(len(data), max(1, self.local_batch), shuffle=False, rank=self.dist.rank,
                                world=self.dist.world)
        loader = EpochLoader(data, batches, workers=self.cfg.workers, pin_memory=self.device.type == "cuda")
        bar = tqdm(total=len(batches), desc=progress, unit="batch", leave=False, dynamic_ncols=True,
                   disable=progress is None or self.cfg.quiet or not self.dist.primary)
        result = evaluate([member], loader, self.device, self.source.num_classes, self.dist, progress=bar)[0]
        bar.close()
        return result

    def finish(self) -> dict:
        """Test the weights, write results.json and the pictures.

        Which weights: :func:`alexnet.data.selection.reported_weights`, the rule evaluation shares. The best
        checkpoint (by validation top-1) is tested when the test split is not the one that chose it. A
        dataset without a test split (ILSVRC-2012: train and val) reports on val, so there the last
        weights are tested: a number chosen on the images it reports would be optimistic.
        """
        cfg = self.cfg
        split = self.source.eval_split_name("test")
        choice = reported_weights(split, has_best=self.rundir.best.is_file())
        weights = str(choice)
        if choice.which == "best":
            best = load_checkpoint(self.rundir.best)
            if best["epoch"] != self.best_epoch:  # never name one epoch and test another
                raise CheckpointError(f"{self.rundir.best} holds epoch {best['epoch']}, not the best epoch "
                                      f"{self.best_epoch}: it was replaced while the run trained")
            self.model.load_state_dict(best["model"])
            weights = f"best: epoch {self.best_epoch}, {choice.why}"
        views = {"center": self.test_preset}
        if cfg.tta == "10crop":
            views["10crop"] = Preset.from_dict(self.train_preset.to_dict(), train=False, tta="10crop")
        tested = {name: self.evaluate_split(split, preset, progress=f"test ({split}, {name})")
                  for name, preset in views.items()}
        main = tested[cfg.tta]
        results = {
            "model": cfg.model, "data": cfg.data, "recipe": cfg.recipe, "test_split": split, "tta": cfg.tta,
            "test_top1_accuracy": main.top1_accuracy, "test_top5_accuracy": main.top5_accuracy,
            "test_top1_error": 1 - main.top1_accuracy, "test_top5_error": 1 - main.top5_accuracy,
            "test_loss": main.loss, "test_images": main.count, "topk": min(5, self.source.num_classes),
            "views": {name: r.to_dict() for name, r in tested.items()},
            "per_class_accuracy": dict(zip(self.source.class_names, main.per_class_accuracy)),
            "weights": weights, "best_epoch": self.best_epoch, "best_val_top1_accuracy": self.best_top1,
            "epochs": self.epoch, "train_seconds": self.train_seconds,
            "skipped_files": sorted(self.bad_files),
        }
        self.rundir.write_json("results.json", results)
        if self.dist.primary:
            self.plots(main)
        k = results["topk"]
        self.rundir.log(f"test ({split}, {cfg.tta}): top-1 {100 * main.top1_accuracy:.2f}% "
                        f"(error {100 * (1 - main.top1_accuracy):.2f}%), top-{k} "
                        f"{100 * main.top5_accuracy:.2f}% "
                        f"(error {100 * (1 - main.top5_accuracy):.2f}%) on {main.count} images; "
                        f"trained {self.train_seconds:.0f}s; run: {self.rundir.path}")
        return results

    def plots(self, result: EvalResult) -> None:
        # deferred: matplotlib takes half a second to import, and `import alexnet` should not pay it
        from ..viz import plot_confusion, plot_conv1, plot_curves

        out = self.rundir.path / "plots"
        if self.history:
            plot_curves(self.history, out / "curves.png", run=self.rundir.path.name, model=self.cfg.model)
        conv1 = next(v for v in self.model.state_dict().values() if v.ndim == 4)  # grouped, also when split
        plot_conv1(conv1, out / "conv1.png", towers=getattr(self.model, "towers", 1))
        self.log.kernels(conv1, self.epoch)
        self.log.close()
        if self.source.num_classes <= 100:
            plot_confusion(result.confusion, self.source.class_names, out / "confusion.png")
