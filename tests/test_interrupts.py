"""Interrupts and other BaseExceptions end a run cleanly, with a short message.

Through a real IPython shell and real local clusters. Interrupts are real SIGINTs sent to this
process, as Jupyter's "interrupt the kernel" does; a second and third one come during the
teardown. While a test runs, SIGINT raises ``KeyboardInterrupt`` only while the run is still
going (``gated_interrupts``), so that a late press cannot stop the test session itself.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest
from shell_helpers import magics

from dask_flyte_jupyter.execute import CellExitError

FOREVER = "import time\nwhile True:\n    time.sleep(0.1)\n"


@contextmanager
def gated_interrupts(shell: Any) -> Iterator[None]:
    """SIGINT is Python's KeyboardInterrupt while the last run is running, ignored after."""
    runs = magics(shell).runs

    def handler(signum: int, frame: Any) -> None:
        if runs and runs[-1].status == "running":
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def press(shell: Any, first: float, gaps: tuple[float, ...]) -> threading.Thread:
    """Presses Ctrl-C ``first`` s after the next run starts running, then after each gap."""
    runs = magics(shell).runs
    before = len(runs)

    def presses() -> None:
        deadline = time.monotonic() + 60
        while not (len(runs) > before and runs[-1].current_phase == "running"):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        time.sleep(first)
        os.kill(os.getpid(), signal.SIGINT)
        for gap in gaps:
            time.sleep(gap)
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=presses, daemon=True)
    thread.start()
    return thread


def listening_ports() -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


def settled(check: Any, seconds: float = 15) -> Any:
    deadline = time.monotonic() + seconds
    while (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


@pytest.mark.parametrize(
    "gaps",
    [(), (0.05,), (0.2,), (0.5,), (0.05, 0.05), (0.1, 0.3)],
    ids=["once", "twice-0.05", "twice-0.2", "twice-0.5", "thrice-0.05", "thrice-0.1-0.3"],
)
def test_any_sequence_of_interrupts_leaves_nothing_running(shell, gaps):
    # a run first: flytekit's own event-loop thread stays for the process, by design
    shell.run_cell_magic("flyte_dask", "--workers 1 --no-progress", "x = 1\n")
    ports = listening_ports()
    threads = {t.ident for t in threading.enumerate()}
    with gated_interrupts(shell):
        presser = press(shell, 0.3, gaps)
        with pytest.raises(KeyboardInterrupt):
            shell.run_cell_magic("flyte_dask", "--workers 1", FOREVER)
        presser.join(5)
    run = magics(shell).runs[-1]
    assert run.status == "interrupted"
    # nothing of the run still listens or runs (the no_leaks fixture checks clusters,
    # clients, child processes and scratch dirs)
    assert not settled(lambda: listening_ports() - ports), "ports left listening"
    leftover = settled(
        lambda: [t for t in threading.enumerate() if t.ident not in threads and t.is_alive()]
    )
    assert not leftover, f"threads left running: {leftover}"


def test_an_interrupt_says_so_in_a_few_lines(shell, capsys):
    with gated_interrupts(shell):
        presser = press(shell, 0.3, (0.1,))
        shell.run_cell(f"%%flyte_dask --workers 1 --no-progress\n{FOREVER}")
        presser.join(5)
    out, err = capsys.readouterr()
    text = out + err
    name = magics(shell).runs[-1].name
    assert f"KeyboardInterrupt: {name}: the cell's cluster was shut down" in text
    assert "Traceback" not in text and "flytekit" not in text, text
    interrupt_lines = text[text.index("KeyboardInterrupt") :].strip().splitlines()
    assert len(interrupt_lines) <= 3, interrupt_lines


GATHER = (
    "import time\n"
    "from distributed import Client\n"
    "client = Client()\n"
    "futures = client.map(lambda x: (time.sleep(0.2), x)[1], range(200))\n"
    "total = sum(client.gather(futures))\n"
)


def test_an_interrupted_gather_leaves_no_traceback_per_key(shell, capsys, caplog):
    with gated_interrupts(shell):
        presser = press(shell, 1.5, ())
        shell.run_cell(f"%%flyte_dask --workers 2 --no-progress\n{GATHER}")
        presser.join(5)
    gc.collect()  # the abandoned per-key waits of the gather are logged when collected
    time.sleep(0.5)
    gc.collect()
    out, err = capsys.readouterr()
    text = out + err
    assert magics(shell).runs[-1].status == "interrupted"
    assert "the cell's cluster was shut down" in text
    logged = out + err + caplog.text  # in a kernel, what asyncio logs lands in the cell
    assert "never retrieved" not in logged and "AllExit" not in logged, logged


@pytest.mark.parametrize(
    "call", ["raise SystemExit(3)", "import sys\nsys.exit(3)", "exit()", "quit()"]
)
def test_exiting_in_a_cell_is_one_clear_error(shell, call):
    shell.user_ns.pop("kept", None)
    with pytest.raises(CellExitError, match="cannot end a Flyte task") as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1", f"kept = 1\n{call}\n")
    if "3" in call:
        assert "with 3" in str(caught.value)
    run = magics(shell).runs[-1]
    assert run.status == "failed"
    assert "kept" not in shell.user_ns  # nothing was kept


@pytest.mark.parametrize(
    ("raised", "kind"),
    [("GeneratorExit()", GeneratorExit), ("BaseException('odd')", BaseException)],
)
def test_other_base_exceptions_fail_the_run_in_one_line(shell, raised, kind):
    with pytest.raises(kind) as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1", f"raise {raised}\n")
    assert magics(shell).runs[-1].status == "failed"
    (line,) = caught.value._render_traceback_()
    assert line.startswith(type(caught.value).__name__) and "the run failed" in line


def test_a_cell_raising_keyboard_interrupt_ends_the_run(shell):
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("flyte_dask", "--workers 1", "raise KeyboardInterrupt\n")
    assert magics(shell).runs[-1].status == "interrupted"


def test_workers_leave_ctrl_c_to_the_kernel(shell):
    """Jupyter interrupts the kernel's whole process group; the workers must not each print
    their own KeyboardInterrupt traceback: they ignore SIGINT, and the kernel closes them."""
    cell = (
        "import signal\n"
        "from distributed import Client\n"
        "client = Client()\n"
        "ignored = list(client.run(lambda: signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
        ".values())\n"
    )
    shell.run_cell_magic("flyte_dask", "--workers 2 --no-progress", cell)
    assert shell.user_ns["ignored"] == [True, True]
