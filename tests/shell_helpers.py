"""Helpers shared by the tests that drive %%flyte_dask through a real IPython shell."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

#: The increment example from the Flyte dask announcement, as a cell body.
INCREMENT = """\
from distributed import Client
client = Client()
futures = client.map(inc, range(n))
result = client.gather(futures)
workers_seen = len(client.scheduler_info()["workers"])
sum(result)
"""


def magics(shell: Any) -> Any:
    """The FlyteDaskMagics instance registered in the shell."""
    return shell.magics_manager.registry["FlyteDaskMagics"]


def define_inc(shell: Any, n: int = 10) -> None:
    """``inc`` and ``n`` defined by a real cell, so its source is in linecache as in a notebook."""
    shell.run_cell(f"def inc(x):\n    return x + 1\nn = {n}", store_history=False)


def interrupt_when(condition: Callable[[], bool], delay: float = 0.3, seconds: float = 60) -> None:
    """Sends this process SIGINT, as Jupyter's "interrupt the kernel" does, once ``condition()``
    holds (checked from a thread every 50 ms, for at most ``seconds``)."""

    def watch() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                time.sleep(delay)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def interrupt_when_running(shell: Any, delay: float = 0.3) -> None:
    """Interrupts the next run of this shell once it reaches its "running" phase."""
    runs = magics(shell).runs
    before = len(runs)
    interrupt_when(lambda: len(runs) > before and runs[-1].current_phase == "running", delay)
