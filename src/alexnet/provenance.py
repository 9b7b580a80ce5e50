"""What a number or a run needs beside it to be reproducible: date, command, hardware, versions.
One record, written into every run's ``config.json`` and every benchmark's output."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch
from PIL import features

from ._version import __version__


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str | None:
    """``git describe`` of the source tree this package runs from, when it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() or None if rev.returncode == 0 else None


def _version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", None)
    except ImportError:
        return None


def environment(device: torch.device | None = None) -> dict:
    """Date (UTC), command line, machine and library versions (None for a library not installed)."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["alexnet", *sys.argv[1:]]) if sys.argv else "",
        "alexnet": __version__,
        "git": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
    }
    for module in ("numpy", "PIL", "triton", "torchvision"):
        info[module.lower() if module != "PIL" else "pillow"] = _version(module)
    info["libjpeg_turbo"] = features.version("libjpeg_turbo")  # what decodes JPEGs, and how fast
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
            info["cuda"] = torch.version.cuda
    return info
