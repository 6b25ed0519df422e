"""Soak: 50 ``%%flyte_dask`` cells in a row in a real Jupyter kernel leave it as they found it.

A real ipykernel (jupyter_client), real local clusters. A quarter of the cells fail, some are
interrupted as JupyterLab does it (``interrupt_kernel``: SIGINT to the kernel's process group,
at different moments: while the cluster starts, while the cell runs). Afterwards the kernel's
child processes, threads, open fds, listening ports, scratch dirs and RSS are back to what they
were after the first run (which starts the threads flytekit and dask keep for the process).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

CELLS = 50
MIB = 2**20
OK = (
    "%%flyte_dask --workers 1 --no-progress\n"
    "from distributed import Client\n"
    "client = Client()\n"
    "v{i} = sum(client.gather(client.map(abs, range(20))))\n"
)
FAILS = "%%flyte_dask --workers 1 --no-progress\nv{i} = 1 / 0\n"
FOREVER = "%%flyte_dask --workers 1 --no-progress\nimport time\nwhile True:\n    time.sleep(0.1)\n"


def execute(client: Any, code: str, timeout: float = 120) -> dict[str, Any]:
    reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)
    return reply["content"]  # type: ignore[no-any-return]


def state(kernel: psutil.Process, scratch: Path) -> dict[str, Any]:
    return {
        "children": len(kernel.children(recursive=True)),
        "threads": kernel.num_threads(),
        "fds": kernel.num_fds(),
        "listening": len(
            [c for c in kernel.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        ),
        "scratch": sorted(p.name for p in scratch.iterdir()),
        "rss": kernel.memory_info().rss,
    }


def settle(kernel: psutil.Process, scratch: Path, baseline: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        now = state(kernel, scratch)
        same = all(now[k] <= baseline[k] for k in ("children", "threads", "fds", "listening"))
        if (same and now["scratch"] == baseline["scratch"]) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


@pytest.fixture
def kernel(tmp_path: Path) -> Any:
    scratch = tmp_path / "kernel-tmp"
    scratch.mkdir()
    manager, client = start_new_kernel(env={**_env(), "TMPDIR": str(scratch)})
    try:
        yield manager, client, scratch
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "FLYTE_"))}
    return {**env, "FLYTE_DASK_SPARE_CLUSTER": "off"}  # as in the whole suite (conftest.py)


def test_fifty_cells_failing_and_interrupted_leave_the_kernel_as_it_was(kernel):
    manager, client, scratch = kernel
    process = psutil.Process(manager.provisioner.pid)
    execute(client, "%load_ext dask_flyte_jupyter")
    first = execute(client, OK.format(i=0))
    assert first["status"] == "ok", first
    execute(client, "del v0\nimport gc\ngc.collect()")
    baseline = state(process, scratch)

    outcomes: dict[str, int] = {"ok": 0, "failed": 0, "interrupted": 0}
    for i in range(1, CELLS + 1):
        if i % 10 in (3, 7):  # interrupted: during the cluster's start, or while running
            client.execute(FOREVER)
            time.sleep(0.4 if i % 10 == 3 else 3.0)
            manager.interrupt_kernel()
            reply = client.get_shell_msg(timeout=120)["content"]
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
            outcomes["interrupted"] += 1
        elif i % 4 == 0:  # a quarter fail
            reply = execute(client, FAILS.format(i=i))
            assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError", reply
            outcomes["failed"] += 1
        else:
            assert execute(client, OK.format(i=i))["status"] == "ok"
            outcomes["ok"] += 1
    runs = execute(client, "from dask_flyte_jupyter.magics import FlyteDaskMagics")
    assert runs["status"] == "ok"
    execute(client, "for _n in [n for n in dir() if n.startswith('v')]: del globals()[_n]")
    execute(client, "import gc\ngc.collect()")
    after = settle(process, scratch, baseline)

    print(
        f"\nsoak: {outcomes}; before -> after: "
        + ", ".join(
            f"{k} {baseline[k] if k != 'rss' else baseline[k] // MIB} -> "
            f"{after[k] if k != 'rss' else after[k] // MIB}{' MiB' if k == 'rss' else ''}"
            for k in ("children", "threads", "fds", "listening", "rss")
        )
    )
    assert outcomes["interrupted"] == 10 and outcomes["failed"] >= CELLS // 4 - 3
    for key in ("children", "threads", "fds", "listening"):
        assert after[key] <= baseline[key], (key, baseline[key], after[key])
    assert after["scratch"] == baseline["scratch"], "scratch dirs left behind"
    assert after["rss"] - baseline["rss"] < 50 * MIB, (baseline["rss"], after["rss"])
    assert tempfile.gettempdir() != str(scratch)  # the kernel's own temp dir was watched
