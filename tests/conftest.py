import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def cli():
    """Run ``python -m alexnet ARGS`` in a subprocess; returns the CompletedProcess."""

    def run(*args, cwd=None, timeout=600, env=None):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        return subprocess.run([sys.executable, "-m", "alexnet", *map(str, args)], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run
