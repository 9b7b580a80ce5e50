"""Starting a run: :func:`train` (Python) and ``alexnet train`` (the command) both come here.

The order is always: resolve the configuration (nothing is written yet, so a bad option costs nothing),
start the processes, make or reopen the run folder, build the :class:`Trainer`, train, test.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..files import DiskFullError
from ..provenance import environment
from ..runtime import amp_warning
from ..checkpoint import CheckpointError, load_checkpoint
from ..distributed import compute_cleanup, compute_init
from ..data import DataSource
from .config import RESUMABLE_CHANGES, TrainConfig, read_config_file, resolve_config
from .rundir import RunDir
from .tblog import check_tensorboard
from .trainer import Callback, NonFiniteLoss, StopRequest, Trainer


class TrainingStopped(Exception):
    """Raised by :func:`train` when SIGINT / SIGTERM stopped the run (it was saved and can resume)."""

    def __init__(self, signum: int, run_dir: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name}; resume with: alexnet train --resume "
                         f"{run_dir}")
        self.signum, self.run_dir = signum, run_dir


@dataclass
class Outcome:
    run_dir: Path
    results: dict | None  # results.json; None when a signal stopped the run
    signum: int | None = None


def train(model: str | None = None, data: str | None = None, *, config_file: str | None = None,
          resume: str | None = None, callbacks: Sequence[Callback] = (), **options) -> dict:
    """Train a model as ``alexnet train`` does, with the same defaults; returns ``results.json``'s content
    plus ``run_dir``.

    ``alexnet.train(model="alexnet2012", data="synthetic", epochs=2)`` is
    ``alexnet train --model alexnet2012 --data synthetic --epochs 2``; keyword names are the flags' with
    underscores, ``model_opts`` a dict (``--opt``). ``callbacks`` are :class:`Callback` objects told of
    the run's start, steps and epochs.
    """
    values = {**options, **({"model": model} if model else {}), **({"data": data} if data else {})}
    return _finished(launch(values, config_file=config_file, resume=resume, where="argument",
                            callbacks=callbacks))


def train_resolved(cfg: TrainConfig, source: DataSource, *, callbacks: Sequence[Callback] = ()) -> dict:
    """:func:`train` for a config already resolved by :func:`resolve_config` against ``source``."""
    return _finished(run(cfg, source, callbacks=callbacks))


def _finished(outcome: Outcome) -> dict:
    if outcome.signum is not None:
        raise TrainingStopped(outcome.signum, outcome.run_dir)
    return {**outcome.results, "run_dir": str(outcome.run_dir)}


def launch(values: dict, *, config_file: str | None = None, resume: str | None = None,
           where: str = "option", callbacks: Sequence[Callback] = ()) -> Outcome:
    """Resolve, then run. ``values`` are the options given explicitly.

    Under ``torchrun --max-restarts N`` a run must be named: when torchrun restarts the group (a worker
    died), the same command finds the run it started and resumes it from its last checkpoint."""
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if not resume:
        cfg, source = resolve_config(values, config_file=config_file, where=where)
        named = values.get("name") or (read_config_file(config_file).get("name") if config_file else None)
        if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0 and not named:
            raise UserError("torchrun --max-restarts needs a named run (--name NAME): a restarted group "
                            "resumes the run of that name")
        path = Path(cfg.out) / cfg.name
        if not (restart and named and (RunDir(path).last.is_file() or RunDir(path).config_file.is_file())):
            return run(cfg, source, callbacks=callbacks, unique_name=not named)
        resume = str(path)  # torchrun restarted the group: continue the run this command started
    rundir, checkpoint, recorded = _reopen(Path(resume))
    cfg, source = resolve_config(values, config_file=config_file, resume={"config": recorded}, where=where)
    if checkpoint is not None:
        _check_epochs(cfg, checkpoint, rundir.path)
    return run(cfg, source, rundir=rundir, checkpoint=checkpoint, recorded=recorded, callbacks=callbacks,
               restart=restart)


def run(cfg: TrainConfig, source: DataSource, *, rundir: RunDir | None = None, checkpoint: dict | None = None,
        recorded: dict | None = None, callbacks: Sequence[Callback] = (),
        unique_name: bool = False, restart: int = 0) -> Outcome:
    """Run a resolved config: a new run, or (``rundir`` and what :func:`_reopen` read) a resumed one.
    ``unique_name``: the run named itself, so a name taken meanwhile becomes NAME-2, NAME-3, ...
    ``restart``: torchrun's count of group restarts (said in the log).

    The run folder is locked while this process trains it (a second process is refused), and its
    ``state.json`` says ``training`` until the run ends: finished, stopped (a signal), diverged (a
    non-finite loss) or failed (an error), with the reason also in ``log.txt``.
    """
    resume = rundir is not None
    rundir = rundir or RunDir(Path(cfg.out) / cfg.name)
    if cfg.tensorboard:
        check_tensorboard()
    dist, device = compute_init(cfg.device)
    try:
        rundir.primary = dist.primary
        if resume:
            rundir.lock()  # before anything is touched: a run being trained is left alone
            for stale in rundir.clean_leftovers():
                rundir.log(f"removed {stale.name}, left by a run killed while writing it")
        else:
            rundir.create(unique=unique_name)
            rundir.path = Path(dist.broadcast(str(rundir.path)))  # the name rank 0 took
            cfg = cfg.replace(name=rundir.path.name)
        dist.barrier()
        try:
            trainer = Trainer(cfg, source, rundir, dist, device, checkpoint=checkpoint, callbacks=callbacks)
        except BaseException:
            if not resume:
                rundir.discard_if_empty()  # nothing was written: leave no empty run behind
            raise
        _record_start(trainer, recorded, resumed=bool(resume), restarted=bool(resume) and checkpoint is None,
                      world=dist.world, restart=restart)
        if cfg.crop == "random-resized" and source.imagery == "photo" and not resume:
            rundir.log("note: random-resized crops are drawn inside each image's stored 256x256 centre "
                       "square, not the whole image as torchvision's RandomResizedCrop does "
                       "(docs/reproduce.md)")
        if trainer.batch_norm_note:
            rundir.log(trainer.batch_norm_note)
        warning = amp_warning(device, cfg.amp)
        if warning:
            rundir.log(warning, err=True)
        return _train(trainer)
    finally:
        rundir.unlock()
        compute_cleanup()


def _train(trainer: Trainer) -> Outcome:
    """Fit and test, recording how the run ends (state.json, and why in log.txt)."""
    rundir = trainer.rundir
    rundir.set_state("training")
    try:
        with StopRequest() as stop:
            signum = trainer.fit(stop)
        if signum is not None:
            rundir.log(f"stopped by {signal.Signals(signum).name} at epoch {trainer.epoch + 1}, step "
                       f"{trainer.state.step}; saved {rundir.last}. Resume with: alexnet train --resume "
                       f"{rundir.path}", err=True)
            rundir.set_state("stopped", f"stopped by {signal.Signals(signum).name}")
            return Outcome(rundir.path, None, signum)
        results = trainer.finish()
    except NonFiniteLoss as e:
        _record_end(rundir, "diverged", str(e))
        raise
    except KeyboardInterrupt:
        _record_end(rundir, "stopped", "interrupted by a second Ctrl-C; the last checkpoint is kept")
        raise
    except BaseException as e:
        why = str(e).strip().splitlines()
        _record_end(rundir, "failed", why[0] if isinstance(e, (UserError, DiskFullError)) and why
                    else f"{type(e).__name__}: {why[0] if why else ''}")
        raise
    rundir.set_state("finished")
    return Outcome(rundir.path, results)


def _record_end(rundir: RunDir, state: str, reason: str) -> None:
    """Say why the run ended, in log.txt and state.json, as far as the disk lets us (it may be full)."""
    try:
        rundir.log(f"{state}: {reason}", echo=False)
        rundir.set_state(state, reason)
    except OSError:
        pass


def _check_epochs(cfg: TrainConfig, checkpoint: dict, path: Path) -> None:
    """A resumed run never gets fewer epochs than it has trained (or begun)."""
    done, step = checkpoint["epoch"], checkpoint["state"]["step"]
    begun = done + (1 if step > 0 else 0)
    if cfg.epochs < begun:
        what = f"{done} epoch(s)" + (f" and {step} step(s) of epoch {done + 1}" if step > 0 else "")
        raise UserError(f"--epochs {cfg.epochs}: {path} has already trained {what}; a run cannot be "
                        f"shortened (give --epochs {begun} or more, or evaluate it as it is)")


TRAINING_KEYS = ("config", "optimizer", "schedule", "scaler", "epoch", "state", "rng", "history", "best_top1",
                 "best_epoch", "train_seconds", "bad_files")


def _reopen(path: Path) -> tuple[RunDir, dict | None, dict]:
    """A run to continue: from its last checkpoint, or (killed before it wrote one) from the start."""
    rundir = RunDir(path)
    if rundir.last.is_file():
        checkpoint = load_checkpoint(rundir.last)
        missing = [k for k in TRAINING_KEYS if k not in checkpoint]
        if missing:
            raise CheckpointError(f"{rundir.last} lacks the training state ({', '.join(missing)}): "
                                  "training cannot continue from it")
        if checkpoint["optimizer"] is None:
            raise CheckpointError(f"{rundir.last} holds weights only, no optimizer state (a copy of "
                                  "best.pt?): training cannot continue from it; start a new run from its "
                                  f"weights with --pretrained {rundir.last}")
        recorded = checkpoint["config"]
    elif rundir.config_file.is_file():
        checkpoint, recorded = None, rundir.read_config()["config"]
    else:
        raise UserError(f"{path} is not a run directory (no config.json or checkpoints/last.pt to resume "
                        "from)")
    # where the run is now, whatever folder it was started in
    return rundir, checkpoint, {**recorded, "out": str(path.parent), "name": path.name}


def _record_start(trainer: Trainer, recorded: dict | None, *, resumed: bool, restarted: bool,
                  world: int, restart: int = 0) -> None:
    """config.json (written once, amended on a resume that changes options) and the first log line."""
    cfg, rundir, source = trainer.cfg, trainer.rundir, trainer.source
    if not resumed or restarted:
        rundir.write_json("config.json", {
            "config": cfg.to_dict(), "environment": environment(trainer.device),
            "data": {"name": source.name, **source.notes, "classes": source.num_classes},
            "world_size": world, "resumes": []})
        if restarted:
            rundir.log(f"restarting {rundir.path} from its config: it was stopped before its first "
                       "checkpoint")
        else:
            rundir.log(f"run {rundir.path}: {cfg.model} on {cfg.data}, recipe {cfg.recipe}, {cfg.epochs} "
                       f"epochs, device {trainer.device}" + (f" x{world}" if world > 1 else ""))
        return
    changed = {k: [recorded.get(k), getattr(cfg, k)] for k in RESUMABLE_CHANGES
               if k not in ("out",) and k in recorded and recorded[k] != getattr(cfg, k)}
    rundir.log(f"resuming {rundir.path} at epoch {trainer.epoch + 1}, step {trainer.state.step}"
               + (f" (torchrun restarted the group: restart {restart})" if restart else ""))
    before = rundir.read_config().get("world_size", world) if rundir.primary else world
    if before != world:
        rundir.log(f"resumed on {world} process(es), trained so far on {before}: the same global batches "
                   "and random draws (docs/reproduce.md, several processes)")
    if changed or before != world:
        record = rundir.read_config()
        record["config"], record["world_size"] = cfg.to_dict(), world
        record.setdefault("resumes", []).append({
            "epoch": trainer.epoch, "step": trainer.state.step, "changed": changed, "world_size": world,
            "environment": environment(trainer.device)})
        rundir.write_json("config.json", record)
    if changed:
        rundir.log("changed on resume: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        if "epochs" in changed:
            rundir.log(f"the {cfg.schedule} schedule now spans {cfg.epochs} epochs: "
                       + _schedule_note(cfg.schedule, trainer.schedule.lr))


def _schedule_note(schedule: str, lr: float) -> str:
    if schedule == "cosine":
        return (f"the cosine curve is recomputed over the new length, so the lr continues from {lr:.3g} (the "
                f"new curve's value at this step), not from where the old curve ended")
    if schedule == "dexp":
        return (f"the dexp stages are recomputed over the new length, so the lr continues from {lr:.3g} (the "
                f"new schedule's value at this step), and the remaining drops come later")
    if schedule == "plateau":
        return f"drops still follow the validation error; the lr continues at {lr:.3g}"
    if schedule == "step":
        return f"drops continue every step_size epochs; the lr continues at {lr:.3g}"
    return f"the lr stays {lr:.3g}"
