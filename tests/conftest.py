"""Shared fixtures: a real IPython shell with the extension, and a leak check after every test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from flyte_admin.fixtures import admin, flyte_admin  # noqa: F401 - Flyte Admin stand-in (test double)
from lab_server import lab  # noqa: F401 - a real jupyter lab server, for the browser tests

# A private temp dir for this test session (and the processes it starts), so the leak check
# below sees only this session's scratch dirs, not those of other runs on the same machine.
_SESSION_TMP = tempfile.mkdtemp(prefix="flyte-dask-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = _SESSION_TMP
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
# No spare cluster after each run (backends/spare.py), in this process and the kernels it
# starts: every test would start one more cluster, and the leak check below would see it.
# tests/test_spare.py turns spares on for its own runs and closes them.
os.environ["FLYTE_DASK_SPARE_CLUSTER"] = "off"


def _children() -> set[int]:
    """Child processes, except multiprocessing's resource tracker (one per process, by design)
    and the helper processes (renderers, say) that the browser tests' chromium starts and keeps
    for itself as it sees fit."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            if "resource_tracker" not in command and "chromium --type=" not in command:
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def _described(pids: set[int]) -> list[str]:
    described = []
    for pid in sorted(pids):
        try:
            described.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:200]}")
        except psutil.NoSuchProcess:
            described.append(f"{pid}: (ended)")
    return described


def _scratch_dirs() -> set[str]:
    return {str(p) for p in Path(tempfile.gettempdir()).glob("flyte-dask-*")}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """After every test: no child process, cluster, client or scratch dir left behind."""
    children, dirs = _children(), _scratch_dirs()
    yield
    deadline = time.monotonic() + 10
    while _children() - children and time.monotonic() < deadline:
        time.sleep(0.1)
    leaked = _children() - children
    assert not leaked, f"child processes left running: {_described(leaked)}"
    assert not (_scratch_dirs() - dirs), "scratch directories left behind"
    assert "DASK_SCHEDULER_ADDRESS" not in os.environ
    import sys

    if "distributed" in sys.modules:
        import dask
        from distributed.client import _global_clients
        from distributed.deploy.spec import SpecCluster

        assert dask.config.get("scheduler-address", None) is None
        alive = [c for c in SpecCluster._instances if c.status.name not in ("closed", "failed")]
        assert not alive, f"clusters left running: {alive}"
        open_clients = [c for c in _global_clients.values() if c.status not in ("closed",)]
        assert not open_clients, f"clients left open: {open_clients}"


@pytest.fixture(scope="session")
def _ipython():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "dask_flyte_jupyter")
    return shell


@pytest.fixture
def shell(_ipython):
    """The real IPython shell with dask_flyte_jupyter loaded and a fresh user namespace."""
    _ipython.reset(new_session=False)
    yield _ipython
    _ipython.reset(new_session=False)


@pytest.fixture(scope="session", autouse=True)
def _fresh_local_cache() -> Iterator[None]:
    """Runs start with an empty flytekit local cache, so cache hits are this session's own."""
    from flytekit.core.local_cache import LocalTaskCache

    LocalTaskCache.clear()
    yield
