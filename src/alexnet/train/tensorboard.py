"""``alexnet train --tensorboard``: TensorBoard event files in ``RUN/tensorboard/``.

Per epoch, every number of the ``metrics.jsonl`` record as a scalar (``loss/train``, ``loss/val``,
``top1/train``, ``top1/val``, ``top5/val``, ``lr``, ``seconds``, ...) and the conv1 kernels as an
image (the tiling of ``plots/conv1.png``). Written by the primary process only. When the flag is off
a do-nothing logger stands in, so the training loop has no branch for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from ..errors import UserError


class NoTensorBoard:
    """The logger when ``--tensorboard`` is off (or on the other ranks)."""

    def log_epoch(self, record: dict, model: nn.Module) -> None:
        pass

    def close(self) -> None:
        pass


def scalar_tag(key: str) -> str:
    """``train_loss`` -> ``loss/train``: TensorBoard then draws train and val on one chart each."""
    split, sep, metric = key.partition("_")
    return f"{metric}/{split}" if sep and split in ("train", "val") else key


class TensorBoard(NoTensorBoard):
    """Writes the event files with ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, path: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                            "(or pip install 'alexnet[tensorboard]')") from None
        self.path, self.writer_class, self.writer = Path(path), SummaryWriter, None

    def log_epoch(self, record: dict, model: nn.Module) -> None:
        from ..viz import kernel_grid

        if self.writer is None:  # made at the first epoch's end: a run that fails to start leaves no folder
            self.writer = self.writer_class(str(self.path))
        step = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(scalar_tag(key), value, step)
        conv1 = next(m for m in model.features.modules() if isinstance(m, nn.Conv2d))
        grid = kernel_grid(conv1.weight)  # (H, W, 1 or 3) in [0, 1]
        grid = np.repeat(grid, 3, -1) if grid.shape[-1] == 1 else grid
        self.writer.add_image("conv1 kernels", grid, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_tensorboard(path: str | Path, enabled: bool) -> NoTensorBoard:
    """A :class:`TensorBoard` writing to ``path`` when ``enabled``, else a :class:`NoTensorBoard`."""
    return TensorBoard(path) if enabled else NoTensorBoard()
