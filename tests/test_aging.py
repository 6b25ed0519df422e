"""A kernel that ages (issue 14, item 3): what one run leaves behind, the next must not add to.

Through a real IPython shell with real clusters: after many runs the kernel holds as many
registered widgets, linecache entries, logging filters and handlers, atexit callbacks, threads,
flytekit entities and contexts as after a few, and the sidebar's pushes do not redo the records
of runs that have ended. Cheap runs are cache hits (the whole pipeline, no cluster); the
cluster's own share is checked on runs that start one. ``bench/bench_drift.py`` measures the
time and memory figures.
"""

from __future__ import annotations

import atexit
import gc
import linecache
import logging
import sys
import threading
import time
from typing import Any

import pytest
from shell_helpers import magics

from dask_flyte_jupyter.comm import SidebarChannel

CLUSTER_CELL = (
    "from distributed import Client\nclient = Client()\n"
    "aging_total = client.submit(sum, [1, 2, 3]).result()\n"
)


def live_widgets() -> int:
    module = sys.modules.get("ipywidgets.widgets.widget")
    return len(module._instances) if module is not None else 0


def kernel_state() -> dict[str, int]:
    """What a kernel could pile up run after run (a closed server's log handler goes when the
    server is collected)."""
    from flytekit.core.context_manager import FlyteEntities, flyte_context_Var

    gc.collect()

    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return {
        "widgets": live_widgets(),
        "linecache entries": len(linecache.cache),
        "asyncio log filters": len(logging.getLogger("asyncio").filters),
        "logging filters and handlers": sum(len(lg.filters) + len(lg.handlers) for lg in loggers),
        "atexit callbacks": atexit._ncallbacks(),
        "flytekit entities": len(FlyteEntities.entities),
        "flytekit context depth": len(flyte_context_Var.get()),
    }


def threads_settled(expected: int, seconds: float = 10) -> int:
    """The number of threads once those a closed cluster is still ending have ended."""
    deadline = time.monotonic() + seconds
    while threading.active_count() > expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def run(shell: Any, line: str, cell: str, capsys: Any) -> None:
    shell.run_cell_magic("flyte_dask", line, cell)
    capsys.readouterr()  # the views' output: not this test's business


@pytest.mark.parametrize("mode", ["widget", "text"])
def test_thirty_runs_leave_no_view_widget_and_nothing_else_behind(shell, capsys, monkeypatch, mode):
    monkeypatch.setenv("FLYTE_DASK_PROGRESS", mode)
    line = "--workers 1 --cache"
    cell = f"aging_{mode} = sum([1, 2, 3])\n"
    widgets = live_widgets()
    for _ in range(3):  # the first one runs and stores its result; the others hit the cache
        run(shell, line, cell, capsys)
    after_three = kernel_state()
    for _ in range(27):
        run(shell, line, cell, capsys)
    assert magics(shell).runs[-1].cache_hit
    assert kernel_state() == after_three
    assert live_widgets() == widgets  # every view closed all its widgets, not just the top one


def servers_alive() -> int:
    """dask schedulers and nannies of this process that nothing has let go yet."""
    from distributed import Nanny, Scheduler

    gc.collect()
    return sum(isinstance(o, (Scheduler, Nanny)) for o in gc.get_objects())


def test_runs_on_clusters_keep_no_closed_cluster_alive(shell, capsys):
    """distributed memoizes its dashboard's page variables by scheduler, and which handlers take
    a comm by bound method: both kept every closed cluster of the kernel alive."""
    before = servers_alive()
    for _ in range(3):
        run(shell, "--workers 1", CLUSTER_CELL, capsys)
    assert shell.user_ns["aging_total"] == 6
    assert servers_alive() == before


def test_runs_on_clusters_add_no_filter_handler_callback_or_thread(shell, capsys):
    for _ in range(2):
        run(shell, "--workers 1", CLUSTER_CELL, capsys)
    after_two = kernel_state()
    threads = threads_settled(threading.active_count())
    for _ in range(6):
        run(shell, "--workers 1", CLUSTER_CELL, capsys)
    assert shell.user_ns["aging_total"] == 6
    assert kernel_state() == after_two  # a closed scheduler's log handler went with it
    assert threads_settled(threads) <= threads


def test_the_sidebar_makes_an_ended_runs_record_once(shell, capsys):
    channel = SidebarChannel(shell)  # what an open sidebar is pushed, without a front end
    run(shell, "--workers 1 --cache", "aging_record = 1 + 1\n", capsys)
    run(shell, "--workers 1 --cache", "aging_record = 1 + 1\n", capsys)
    first, second = channel.runs_message(None)["runs"], channel.runs_message(None)["runs"]
    history = magics(shell).runs
    assert len(first) == len(history)
    assert first[-1] == history[-1].to_record()  # the record is what the run says
    assert all(a is b for a, b in zip(first, second, strict=True))  # made once, sent again

    going = history[-1].summary()  # a run that has not ended is recorded afresh each time
    going.status, going.current_phase = "running", "running"
    history.append(going)
    try:
        assert channel.runs_message(None)["runs"][-1]["status"] == "running"
        going.status = "failed"
        assert channel.runs_message(None)["runs"][-1]["status"] == "failed"
    finally:
        history.remove(going)
