"""The spare cluster (``backends/spare.py``): after a local run, one cluster of its shape starts
in the background for the next cell of that shape. Handed over once, replaced on a shape change,
shut down when idle, at kernel exit, at ``%unload_ext`` and on an interrupt; off when turned off.

Through a real IPython shell (and a real kernel for the exit) with real clusters. The suite runs
with spares off (conftest.py); each test here turns them on and leaves no spare behind: the
``spares`` fixture turns them off again, and ``no_leaks`` checks that nothing is left running.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from IPython.core.error import UsageError
from shell_helpers import magics
from test_interrupts import FOREVER, gated_interrupts, press

from dask_flyte_jupyter.backends import local
from dask_flyte_jupyter.backends.spare import SpareClusters, spare_clusters

ADDRESS = "from distributed import Client\naddress = Client().scheduler.address\n"
AHEAD = "started ahead of the cell (a spare cluster)"


@pytest.fixture
def spares(shell: Any) -> Iterator[SpareClusters]:
    shell.run_line_magic("flyte_dask_config", "--reset")
    shell.run_line_magic("flyte_dask_config", "--spare-cluster on")
    keeper = spare_clusters()
    try:
        yield keeper
    finally:
        shell.run_line_magic("flyte_dask_config", "--reset")  # off again, as in the suite
    assert keeper.describe() is None
    assert not spare_threads()


def spare_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "flyte-dask-spare" and t.is_alive()]


def run(shell: Any, line: str = "--workers 1") -> tuple[str, Any]:
    """Runs a cell that reports its scheduler's address; returns it and the run."""
    shell.run_cell_magic("flyte_dask", f"{line} --no-progress", ADDRESS)
    return shell.user_ns["address"], magics(shell).runs[-1]


class Spare:
    """The spare cluster once it is ready: its scheduler's address and its workers' pids."""

    def __init__(self, spares: SpareClusters) -> None:
        cluster = spares.ready_cluster(120)
        assert cluster is not None, "no spare cluster got ready"
        self.cluster = cluster
        self.address = cluster.scheduler_address
        self.workers = [psutil.Process(w.pid) for w in cluster.scheduler.workers.values()]

    def gone(self, seconds: float = 5) -> bool:
        """Closed, its worker processes ended (waiting up to ``seconds`` for them)."""
        deadline = time.monotonic() + seconds
        while True:
            if self.cluster.status.name == "closed" and not any(map(running, self.workers)):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_next_cell_of_the_shape_gets_the_spare_once(shell, spares):
    first, run1 = run(shell)
    assert "cluster" not in run1.details  # the first cell starts its own
    spare = Spare(spares)
    assert spare.address != first
    assert spares.describe() == {
        "state": "ready",
        "text": "spare cluster: 1 worker × 1 thread, ready · shuts down after 10 min idle",
    }

    second, run2 = run(shell)
    assert second == spare.address  # the cell ran on the spare
    assert run2.details["cluster"] == AHEAD
    assert run2.phases["starting cluster"] < 0.5, run2.phases  # its start was off the path
    assert spare.gone()  # the cell's cluster now, closed with the cell
    # the run's report was recorded on the spare, from the cell's start on
    assert run2.report_path is not None and (Path.cwd() / run2.report_path).stat().st_size > 0
    assert not [note for note in run2.notes if "no performance report" in note]

    next_spare = Spare(spares)  # started after the second run, for the third
    third, run3 = run(shell)
    assert third == next_spare.address and run3.details["cluster"] == AHEAD
    assert len({first, second, third}) == 3  # a spare is handed over once, never again


def test_a_cell_waits_for_a_spare_still_starting(shell, spares):
    run(shell)
    assert spares.describe()["state"] == "starting"  # the next cell comes right away
    _, second = run(shell)
    assert second.details["cluster"] == AHEAD


def test_a_spare_that_failed_to_start_leaves_the_cell_its_own_cluster(shell, spares):
    first, run1 = run(shell)
    spares.close()

    def broken() -> Any:
        raise RuntimeError("no port left")

    spares.prepare(run1.shape, local._start_conditions(), broken)
    second, run2 = run(shell)
    assert run2.status == "succeeded" and "cluster" not in run2.details and second != first


def test_a_spare_of_another_shape_is_replaced(shell, spares):
    run(shell, "--workers 1")
    old = Spare(spares)
    address, run2 = run(shell, "--workers 2")
    assert address != old.address and "cluster" not in run2.details
    assert old.gone()
    new = Spare(spares)
    assert len(new.workers) == 2
    assert spares.describe()["text"].startswith("spare cluster: 2 workers × 1 thread, ready")
    third, run3 = run(shell, "--workers 2")
    assert third == new.address and run3.details["cluster"] == AHEAD


def test_a_spare_started_under_another_environment_is_not_handed_over(shell, spares):
    run(shell)
    old = Spare(spares)
    cell = (
        "import os\nfrom distributed import Client\nclient = Client()\n"
        "address = client.scheduler.address\n"
        "seen = list(client.run(lambda: os.environ.get('FLYTE_DASK_TEST_SPARE')).values())\n"
    )
    os.environ["FLYTE_DASK_TEST_SPARE"] = "set after the spare started"
    try:
        shell.run_cell_magic("flyte_dask", "--workers 1 --no-progress", cell)
    finally:
        del os.environ["FLYTE_DASK_TEST_SPARE"]
    assert shell.user_ns["address"] != old.address
    assert shell.user_ns["seen"] == ["set after the spare started"]  # as without spares
    assert old.gone()


def test_the_spare_thread_only_starts_the_cluster(shell, spares):
    """No module is imported in the spare's thread (it would race the next cell's imports),
    and the thread is gone once its spare is closed."""
    _, run1 = run(shell)
    spares.close()  # this test starts the next spare itself, watching what it imports
    imported: dict[str, list[str]] = {}

    def start() -> Any:
        before = set(sys.modules)
        try:
            return local._start_spare(run1.shape)
        finally:
            imported["new"] = sorted(set(sys.modules) - before)

    spares.prepare(run1.shape, local._start_conditions(), start)
    assert spare_threads()
    spare = Spare(spares)
    assert imported["new"] == []
    spares.close()
    assert not spare_threads() and spare.gone()


def test_an_idle_spare_is_shut_down(shell, spares):
    shell.run_line_magic("flyte_dask_config", "--spare-idle 1")
    run(shell)
    spare = Spare(spares)
    assert spares.describe()["text"].endswith("ready · shuts down after 1 s idle")
    assert spare.gone(seconds=15)
    assert spares.describe() is None
    deadline = time.monotonic() + 10
    while spare_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not spare_threads()


def test_unload_shuts_the_spare_down(shell, spares):
    run(shell)
    spare = Spare(spares)
    shell.run_line_magic("unload_ext", "dask_flyte_jupyter")
    try:
        assert spare.cluster.status.name == "closed"  # before %unload_ext returned
        assert spare.gone() and spares.describe() is None and not spare_threads()
        assert not spares.enabled  # and no more after a run
    finally:
        shell.run_line_magic("load_ext", "dask_flyte_jupyter")
        shell.run_line_magic("flyte_dask_config", "--spare-cluster on")  # for the fixture


@pytest.mark.parametrize("line", ["--workers 1", "--workers 2"], ids=["same", "other-shape"])
def test_an_interrupt_shuts_the_spare_down(shell, spares, line):
    run(shell, "--workers 1")
    spare = Spare(spares)
    with gated_interrupts(shell):
        presser = press(shell, 0.3, ())
        with pytest.raises(KeyboardInterrupt):
            shell.run_cell_magic("flyte_dask", f"{line} --no-progress", FOREVER)
        presser.join(5)
    assert magics(shell).runs[-1].status == "interrupted"
    assert spares.describe() is None and not spare_threads()  # none left, none started
    assert spare.cluster.status.name == "closed" and spare.gone()


def test_turned_off_and_shown(shell, spares, capsys):
    shell.run_line_magic("flyte_dask_config", "--show")
    shown = capsys.readouterr().out.strip().splitlines()
    assert shown[-1] == "%flyte_dask_config --spare-cluster on"  # the suite's default is off
    run(shell)
    spare = Spare(spares)
    text = "spare cluster: 1 worker × 1 thread, ready · shuts down after 10 min idle"
    table = shell.run_line_magic("flyte_dask_runs", "")
    assert table.text().endswith("\n" + text) and html.escape(text) in table.html()

    shell.run_line_magic("flyte_dask_config", "--spare-cluster off")
    assert spare.cluster.status.name == "closed" and spare.gone()
    assert spares.describe() is None
    _, after = run(shell)
    assert "cluster" not in after.details and spares.describe() is None
    assert "spare cluster" not in shell.run_line_magic("flyte_dask_runs", "").text()

    with pytest.raises(UsageError, match="invalid choice"):
        shell.run_line_magic("flyte_dask_config", "--spare-cluster maybe")
    with pytest.raises(UsageError, match="--spare-idle: must be a number of seconds > 0"):
        shell.run_line_magic("flyte_dask_config", "--spare-idle 0")
    help_text = magics(shell).flyte_dask_config.__doc__
    assert "--spare-cluster" in help_text and "--spare-idle" in help_text
