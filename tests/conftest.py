import contextlib
import io
import os
import subprocess
import sys
import warnings

import pytest
import torch


def pytest_configure(config):
    """pytest-xdist runs one worker per core (pyproject.toml): each takes its share of the cores, and so
    do the processes its tests start (torch reads OMP_NUM_THREADS at start-up). A value of
    OMP_NUM_THREADS set by the user wins. The controlling process runs no test and changes nothing."""
    worker = getattr(config, "workerinput", None)
    if worker is None and config.getoption("numprocesses", None):
        return
    workers = int(worker["workercount"]) if worker else 1
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, (os.cpu_count() or 1) // workers)))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)

# Files that start first, in this order: the longest (the scaled-down paper protocol, minutes on its own),
# then a short one, so that the worker it lands on takes no long file behind it (under --dist loadfile a
# worker starts with two files).
FIRST = ("test_protocol.py", "test_architecture.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: the rest keep their order


@pytest.fixture(autouse=True, scope="session")
def _private_stats_cache(tmp_path_factory):
    """Keep the statistics cache of the test runs (and their subprocesses) out of ~/.cache."""
    os.environ["ALEXNET_CACHE"] = str(tmp_path_factory.mktemp("alexnet-cache"))


def _show_on_stderr(message, category, filename, lineno, file=None, line=None):
    """Warnings printed as a fresh Python process prints them: on (the captured) stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.fixture
def cli(monkeypatch):
    """Run the ``alexnet`` command in this process: ``main(args)`` with stdout and stderr captured and
    warnings printed on stderr; returns a CompletedProcess (exit code, stdout, stderr), as a subprocess
    would, without a new Python and torch start-up per call. ``cwd`` and ``env`` are applied for the
    call; torch's thread count is restored after it. Tests of a real process (signals, the
    ``python -m alexnet`` entry point, torchrun) use :func:`cli_process`."""
    from alexnet.cli import main

    def run(*args, cwd=None, timeout=None, env=None):
        del timeout  # a subprocess's limit; pytest's own timeout covers an in-process call
        args = [str(a) for a in args]
        out, err = io.StringIO(), io.StringIO()
        threads = torch.get_num_threads()
        with monkeypatch.context() as m, warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_on_stderr
            if cwd is not None:
                m.chdir(cwd)
            for key, value in (env or {}).items():
                m.setenv(key, value)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(args)
                except SystemExit as e:  # argparse: --help, usage errors
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        torch.set_num_threads(threads)
        return subprocess.CompletedProcess(["alexnet", *args], code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def cli_process():
    """Run ``python -m alexnet ARGS`` in a subprocess; returns the CompletedProcess."""

    def run(*args, cwd=None, timeout=600, env=None):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        return subprocess.run([sys.executable, "-m", "alexnet", *map(str, args)], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run
