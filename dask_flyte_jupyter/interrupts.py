"""Teardown that finishes whatever the user presses.

"Interrupt the kernel" raises ``KeyboardInterrupt`` wherever the main thread is, including in the
middle of closing a cluster, which would leave its scheduler, dashboard and threads behind.
:func:`shielded` holds further interrupts back while a cluster starts or stops (both bounded in
time) and delivers one afterwards, unless an exception is already on its way out.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Runs the block with SIGINT held back; an interrupt that came meanwhile is raised after it
    (as ``KeyboardInterrupt``) unless the block raised or runs while an exception (a first
    interrupt, say) is already on its way out."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread: nothing to hold back here
        return
    pressed: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pressed.append(signum)

    leaving = sys.exc_info()[1] is not None  # used in a `finally` of a failing block
    previous: Any = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed and not leaving:
        raise KeyboardInterrupt


class _AbandonedGathers:
    """A logging filter: drops asyncio's "Task exception was never retrieved" for the per-key
    waits of an interrupted ``client.gather`` (distributed's ``AllExit``), one traceback per key
    otherwise, printed as the client closes or later when they are collected."""

    def filter(self, record: Any) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return type(error).__name__ != "AllExit" or "distributed" not in type(error).__module__


_QUIET = _AbandonedGathers()


def quiet_abandoned_gathers() -> None:
    """Installs the filter on asyncio's logger, once per process."""
    import logging

    logger = logging.getLogger("asyncio")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
