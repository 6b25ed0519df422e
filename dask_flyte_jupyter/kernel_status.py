"""Keeps the kernel's status "busy" in the front end while a ``%%flyte_dask`` cell runs.

JupyterLab 4.6 opens a kernel subshell for each comm target (its ``commsOverSubshells``
setting): the first time a run shows its ipywidgets view, the front end sends a
``create_subshell_request`` on the control channel, and the widgets' comm messages then run on
that subshell. The kernel publishes "busy" and "idle" for each of those messages, and JupyterLab
shows the last status it received, whatever message it belongs to: the kernel indicator says
"Idle" while the cell still runs. While a run lasts, each such "idle" is followed at once by a
"busy" that belongs to the cell's own execute request, which is what the kernel really is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def stays_busy(shell: Any) -> Iterator[None]:
    """While the block runs, an "idle" status of another message is followed by "busy"."""
    kernel = getattr(shell, "kernel", None)
    publish = getattr(kernel, "_publish_status", None)
    if kernel is None or publish is None or "_publish_status" in vars(kernel):
        yield  # not an ipykernel, or a run inside a run (the outer one already watches)
        return
    cell_request = kernel.get_parent("shell")
    cell_id = _message_id(cell_request)

    def publish_status(status: str, channel: str, parent: Any = None) -> None:
        publish(status, channel, parent)
        of_other_message = _message_id(parent or kernel.get_parent(channel)) != cell_id
        if status == "idle" and of_other_message and cell_id:
            publish("busy", "shell", cell_request)

    kernel._publish_status = publish_status
    try:
        yield
    finally:
        del kernel._publish_status  # the class's own method again


def _message_id(message: Any) -> Any:
    return (message or {}).get("header", {}).get("msg_id")
