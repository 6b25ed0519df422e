"""How a run shows under the cell: notes as they come, a one-line result at the end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .run import RunHandle


def _print_event(handle: RunHandle, event: str) -> None:
    if event == "note":
        print(f"flyte_dask: {handle.notes[-1]}", file=sys.stderr)
    elif event in ("status:succeeded", "status:cached"):
        shape = handle.summary_rows()
        used = dict(shape).get("used", "no cluster (cache hit)")
        print(
            f"flyte_dask: {handle.name} {handle.status} in {handle.duration:.2f}s on {used}",
            file=sys.stderr,
        )


@contextmanager
def show_progress(handle: RunHandle) -> Iterator[None]:
    """Shows the run's progress while the block runs."""
    handle.listeners.append(_print_event)
    try:
        yield
    finally:
        handle.listeners.remove(_print_event)
