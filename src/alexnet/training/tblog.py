"""``--tensorboard``: the run's curves and conv1 kernels as TensorBoard event files in RUN/tensorboard.

The trainer always holds a log object; without the flag it is :class:`NoLog`, which does nothing, so
the loop has no ``if`` for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError

SCALARS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_second")


class NoLog:
    def epoch(self, record: dict) -> None:
        pass

    def kernels(self, weight: torch.Tensor, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLog(NoLog):
    """Scalars per epoch (``train/loss``, ``val/top1``, ``lr``, ...) and conv1's kernels as one image."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

        self.writer = SummaryWriter(log_dir=str(folder))

    def epoch(self, record: dict) -> None:
        for key in SCALARS:
            if key in record:
                self.writer.add_scalar(key.replace("_", "/", 1) if key != "images_per_second" else key,
                                       record[key], record["epoch"])
        self.writer.flush()

    def kernels(self, weight: torch.Tensor, step: int) -> None:
        """conv1's kernels (K, C, h, w), each scaled to [0, 1] on its own, tiled 8 per row."""
        w = weight.detach().float().cpu()
        lo = w.amin(dim=(1, 2, 3), keepdim=True)
        hi = w.amax(dim=(1, 2, 3), keepdim=True)
        w = (w - lo) / (hi - lo).clamp_min(1e-12)
        if w.shape[1] not in (1, 3):
            w = w[:, :1]
        k, c, h, wd = w.shape
        rows = -(-k // 8)
        grid = torch.ones(c, rows * (h + 1), 8 * (wd + 1))
        for i in range(k):
            r, col = divmod(i, 8)
            grid[:, r * (h + 1):r * (h + 1) + h, col * (wd + 1):col * (wd + 1) + wd] = w[i]
        self.writer.add_image("conv1_kernels", grid, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_tensorboard() -> None:
    """Before a run starts: the flag needs the package."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(or pip install 'alexnet[tensorboard]')") from None


def open_log(enabled: bool, folder: Path, primary: bool) -> NoLog:
    return TensorBoardLog(folder) if enabled and primary else NoLog()
