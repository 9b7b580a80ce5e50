import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _private_stats_cache(tmp_path_factory):
    """Keep the statistics cache of the test runs (and their subprocesses) out of ~/.cache."""
    os.environ["ALEXNET_CACHE"] = str(tmp_path_factory.mktemp("alexnet-cache"))


@pytest.fixture
def cli():
    """Run ``python -m alexnet ARGS`` in a subprocess; returns the CompletedProcess."""

    def run(*args, cwd=None, timeout=600, env=None):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        return subprocess.run([sys.executable, "-m", "alexnet", *map(str, args)], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run
