"""The sidebar's comm, spoken to a real ipykernel over ZMQ as JupyterLab speaks it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from dask_flyte_jupyter.comm import PROTOCOL, TARGET

Message = dict[str, Any]


class Kernel:
    """A kernel and its client, with helpers to read what it publishes."""

    def __init__(self, client: BlockingKernelClient) -> None:
        self.client = client
        self.seen: list[Message] = []

    def wait_for(self, match: Callable[[Message], bool], timeout: float = 60) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=0.5)
            except Exception:  # queue.Empty
                continue
            self.seen.append(msg)
            if match(msg):
                return msg
        types = [m["msg_type"] for m in self.seen[-20:]]
        raise AssertionError(f"no matching message in {timeout}s; last seen: {types}")

    def execute(self, code: str) -> Message:
        """Runs code; returns the execute_reply (iopub messages are kept in ``seen``)."""
        msg_id = self.client.execute(code)
        reply = self.client.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.client.get_shell_msg(timeout=120)
        self.wait_for(
            lambda m: (
                m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"
                and m["parent_header"].get("msg_id") == msg_id
            )
        )
        return reply

    def open_comm(self, data: Message) -> str:
        comm_id = uuid.uuid4().hex
        content = {"comm_id": comm_id, "target_name": TARGET, "data": data}
        self.client.shell_channel.send(self.client.session.msg("comm_open", content))
        return comm_id

    def send(self, comm_id: str, data: Any) -> None:
        content = {"comm_id": comm_id, "data": data}
        self.client.shell_channel.send(self.client.session.msg("comm_msg", content))

    def reply_on(self, comm_id: str, request_id: str | None, timeout: float = 60) -> Message:
        msg = self.wait_for(
            lambda m: (
                m["msg_type"] == "comm_msg"
                and m["content"]["comm_id"] == comm_id
                and m["content"]["data"].get("request_id") == request_id
            ),
            timeout,
        )
        return msg["content"]["data"]  # type: ignore[no-any-return]


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield Kernel(client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)


BUILT_IN_DEFAULTS = {
    "workers": "2",
    "worker-cpu": None,
    "worker-mem": None,
    "worker-gpu": None,
    "scheduler-cpu": None,
    "scheduler-mem": None,
    "image": None,
    "interruptible": False,
    "cache": False,
    "remote": False,
    "project": None,
    "domain": None,
}


def test_a_kernel_without_the_extension_closes_the_sidebars_comm(kernel: Kernel) -> None:
    comm_id = kernel.open_comm({"type": "hello", "request_id": "h0"})
    kernel.wait_for(lambda m: m["msg_type"] == "comm_close" and m["content"]["comm_id"] == comm_id)


def test_load_announce_request_reply_and_pushes(kernel: Kernel) -> None:
    reply = kernel.execute("%load_ext dask_flyte_jupyter")
    assert reply["content"]["status"] == "ok"
    announced = next(
        m
        for m in kernel.seen
        if m["msg_type"] == "comm_open" and m["content"]["target_name"] == TARGET
    )
    assert announced["content"]["data"]["type"] == "hello"
    assert announced["content"]["data"]["protocol"] == PROTOCOL
    kernel_comm = announced["content"]["comm_id"]
    assert any(  # it only says hello
        m["msg_type"] == "comm_close" and m["content"]["comm_id"] == kernel_comm
        for m in kernel.seen
    )

    sidebar = kernel.open_comm({"type": "hello", "request_id": "h1"})
    hello = kernel.reply_on(sidebar, "h1")
    assert hello["type"] == "hello" and hello["protocol"] == PROTOCOL
    # The kernel's defaults come along, for the sidebar's placeholders.
    assert hello["defaults"] == BUILT_IN_DEFAULTS

    kernel.send(sidebar, {"type": "runs", "request_id": "r1"})
    assert kernel.reply_on(sidebar, "r1") == {
        "type": "runs",
        "request_id": "r1",
        "runs": [],
        "defaults": BUILT_IN_DEFAULTS,
    }

    kernel.send(sidebar, {"type": "bogus", "request_id": "b1"})
    error = kernel.reply_on(sidebar, "b1")
    assert error["type"] == "error" and "bogus" in error["message"]

    cell = (
        "%%flyte_dask --workers 1 --name comm-test\n"
        "from distributed import Client\n"
        "client = Client()\n"
        "total = sum(client.gather(client.map(lambda x: x + 1, range(4))))\n"
        "total"
    )
    reply = kernel.execute(cell)
    assert reply["content"]["status"] == "ok", reply["content"]
    # The sidebar was told, unasked, as the run went; the last push shows it finished.
    pushes = [
        m["content"]["data"]
        for m in kernel.seen
        if m["msg_type"] == "comm_msg"
        and m["content"]["comm_id"] == sidebar
        and m["content"]["data"].get("request_id") is None
    ]
    assert {p["type"] for p in pushes} == {"runs"}
    statuses = [p["runs"][-1]["status"] for p in pushes if p["runs"]]
    assert "running" in statuses and statuses[-1] == "succeeded"

    kernel.send(sidebar, {"type": "runs", "request_id": "r2"})
    runs = kernel.reply_on(sidebar, "r2")["runs"]
    assert [r["name"] for r in runs] == ["comm-test"]
    assert runs[0]["status"] == "succeeded" and runs[0]["requested"]["workers"] == 1

    # Reloading keeps one channel: a request is answered once per comm, not twice.
    kernel.execute("%reload_ext dask_flyte_jupyter")
    kernel.send(sidebar, {"type": "runs", "request_id": "r3"})
    kernel.reply_on(sidebar, "r3")
    kernel.execute("1")
    answers = [
        m
        for m in kernel.seen
        if m["msg_type"] == "comm_msg" and m["content"]["data"].get("request_id") == "r3"
    ]
    assert len(answers) == 1


def test_the_sidebar_is_told_when_the_kernel_defaults_change(kernel: Kernel) -> None:
    assert kernel.execute("%load_ext dask_flyte_jupyter")["content"]["status"] == "ok"
    sidebar = kernel.open_comm({"type": "hello", "request_id": "h1"})
    assert kernel.reply_on(sidebar, "h1")["defaults"]["workers"] == "2"

    reply = kernel.execute("%flyte_dask_config --workers 1 --worker-mem 3Gi --interruptible")
    assert reply["content"]["status"] == "ok"
    pushed = [
        m["content"]["data"]
        for m in kernel.seen
        if m["msg_type"] == "comm_msg"
        and m["content"]["comm_id"] == sidebar
        and m["content"]["data"].get("type") == "defaults"
    ]
    assert pushed, "no defaults pushed after %flyte_dask_config"
    assert pushed[-1]["request_id"] is None
    expected = {
        **BUILT_IN_DEFAULTS,
        "workers": "1",
        "worker-mem": "3Gi",
        "interruptible": True,
    }
    assert pushed[-1]["defaults"] == expected
    kernel.send(sidebar, {"type": "runs", "request_id": "r1"})
    assert kernel.reply_on(sidebar, "r1")["defaults"] == expected

    # After a reload (new magics, built-in defaults), the new defaults are followed, once.
    kernel.execute("%reload_ext dask_flyte_jupyter")
    before = len(kernel.seen)
    kernel.execute("%flyte_dask_config --workers 3")
    after = [
        m["content"]["data"]
        for m in kernel.seen[before:]
        if m["msg_type"] == "comm_msg"
        and m["content"]["comm_id"] == sidebar
        and m["content"]["data"].get("type") == "defaults"
    ]
    assert [p["defaults"] for p in after] == [{**BUILT_IN_DEFAULTS, "workers": "3"}]
