"""Every local run removes the directories flytekit's local execution makes for it (the task
sandbox, its checkpoint's temporary directory, the call's working directory): on success, on a
cache hit, on error and on interrupt, even while the failed run's traceback is still held (as
IPython holds the last one)."""

from __future__ import annotations

import os
import tempfile

import pytest
from shell_helpers import interrupt_when_running, magics


def _all_dirs() -> set[str]:
    found = set()
    for root, dirs, _files in os.walk(tempfile.gettempdir()):
        found.update(os.path.join(root, d) for d in dirs)
    return found


@pytest.fixture
def dirs_before(shell) -> set[str]:
    shell.run_cell_magic("flyte_dask", "--workers 1", "warm = 1\n")  # flytekit's own, once
    return _all_dirs()


def test_a_failed_run_leaves_no_directory(shell, dirs_before):
    with pytest.raises(ValueError, match="boom") as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1", "raise ValueError('boom')\n")
    assert caught.value.__traceback__ is not None  # the frames are still alive
    assert _all_dirs() - dirs_before == set()


def test_an_interrupted_run_leaves_no_directory(shell, dirs_before):
    interrupt_when_running(shell)
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("flyte_dask", "--workers 1", "import time\ntime.sleep(60)\n")
    assert _all_dirs() - dirs_before == set()


def test_successful_and_cached_runs_leave_only_the_cached_outputs(shell, dirs_before):
    from flytekit.core.data_persistence import flyte_tmp_dir

    outputs = os.path.join(flyte_tmp_dir, "raw", "")  # flytekit's output store: the cache's data
    cell = "import uuid\nkey = uuid.uuid4().hex\nused = salt\n"
    shell.user_ns["salt"] = tempfile.gettempdir()  # an input: a cache key of this session
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache", cell)
    after_run = _all_dirs()
    assert all(path.startswith(outputs) for path in after_run - dirs_before)
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache", cell)  # a cache hit
    assert magics(shell).runs[-1].status == "cached"
    assert _all_dirs() == after_run
