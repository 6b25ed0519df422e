"""The kernel stays "busy" for the front end while a ``%%flyte_dask`` cell runs.

JupyterLab opens a kernel subshell (a ``create_subshell_request`` on the control channel) when a
run's widget view opens its first comm, and shows the last status the kernel published: without
``kernel_status.stays_busy`` that is the subshell request's "idle", while the cell still runs.
A real ipykernel (jupyter_client) gets the same control message in the middle of a run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

CELL = "%%flyte_dask --workers 1 --no-progress\nimport time\ntime.sleep(4)\nx = 1\n"


@pytest.fixture
def kernel() -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "FLYTE_"))}
    env["FLYTE_DASK_SPARE_CLUSTER"] = "off"  # as in the whole suite (conftest.py)
    manager, client = start_new_kernel(env=env)
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _statuses(client: Any, until_idle_of: str, timeout: float = 120) -> list[tuple[str, str]]:
    """(execution_state, parent msg_type) of every status until the request's own idle."""
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.get_iopub_msg(timeout=timeout)
        if message["msg_type"] != "status":
            continue
        state = message["content"]["execution_state"]
        seen.append((state, message["parent_header"].get("msg_type", "")))
        if state == "idle" and message["parent_header"].get("msg_id") == until_idle_of:
            return seen
    raise AssertionError(f"the cell did not end: {seen}")


def _subshell_request(client: Any) -> None:
    message = client.session.msg("create_subshell_request", {})
    client.control_channel.send(message)


def test_a_control_message_during_a_run_leaves_the_kernel_busy(kernel):
    client = kernel
    client.execute_interactive("%load_ext dask_flyte_jupyter", timeout=60)
    cell = client.execute(CELL)
    time.sleep(2.0)  # the cell is running on its cluster
    _subshell_request(client)
    seen = _statuses(client, cell)
    during = seen[:-1]  # before the cell's own final idle
    assert ("idle", "create_subshell_request") in during, seen  # the front end was told idle …
    last_idle = max(i for i, s in enumerate(during) if s == ("idle", "create_subshell_request"))
    assert ("busy", "execute_request") in during[last_idle + 1 :], seen  # … and busy again
    assert during[-1] == ("busy", "execute_request"), seen
    reply = client.get_shell_msg(timeout=30)["content"]
    assert reply["status"] == "ok", reply


def test_outside_a_run_a_control_message_leaves_the_kernel_idle(kernel):
    client = kernel
    client.execute_interactive("%load_ext dask_flyte_jupyter", timeout=60)
    _subshell_request(client)
    reply = client.get_control_msg(timeout=30)
    assert reply["msg_type"] == "create_subshell_reply", reply
    time.sleep(0.5)
    statuses = []
    while True:
        try:
            message = client.get_iopub_msg(timeout=1)
        except Exception:  # queue.Empty: nothing more
            break
        if message["msg_type"] == "status":
            statuses.append(message["content"]["execution_state"])
    assert statuses and statuses[-1] == "idle", statuses
