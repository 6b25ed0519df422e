"""The cell's dask on the remote path (issue 10, points 1, 4, 5 and 7): the real FlyteRemote
client against the Flyte Admin stand-in, whose "image" has no dask_flyte_jupyter (the session
code travels by value in the task's pickle), and whose job runner gets the cluster only through
``DASK_SCHEDULER_ADDRESS``, as in a Flyte pod."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import flyte_admin
import pytest
from flyte_admin import FlyteAdminStandIn

from dask_flyte_jupyter.dask_state import DoneFuture

IMAGE = "registry.example/team/dask-cells:py3.11"


@pytest.fixture(scope="module")
def admin() -> Iterator[FlyteAdminStandIn]:
    standin = FlyteAdminStandIn()
    standin.runner.nanny = False
    assert standin.runner.not_in_image == ("dask_flyte_jupyter",)
    try:
        yield standin
    finally:
        standin.close()


def remote(shell, admin: FlyteAdminStandIn, body: str, flags: str = "--workers 2") -> object:
    line = f"--remote --config {admin.config_path} --image {IMAGE} {flags}"
    return shell.run_cell_magic("flyte_dask", line, body)


def test_compute_without_a_client_and_imports_come_back(shell, admin):
    shell.run_cell("import dask.array as da")
    value = remote(
        shell,
        admin,
        """\
import json
import numpy as np
from dask.callbacks import Callback
import dask
class Count(Callback):
    seen = 0
    def _pretask(self, *args):
        Count.seen += 1
with Count():
    total = int(da.arange(100, chunks=10).sum().compute())
    (squares,) = dask.compute(da.arange(10, chunks=5) ** 2)
from distributed import get_client
workers = len(get_client().scheduler_info()["workers"])
on_threads = Count.seen
print("printed in the job runner")
total
""",
    )
    ns = shell.user_ns
    assert value == ns["total"] == 4950 and list(ns["squares"]) == [v * v for v in range(10)]
    assert ns["workers"] == 2 and ns["on_threads"] == 0
    import json

    import numpy

    assert ns["json"] is json and ns["np"] is numpy and "Callback" in ns


def test_remote_stdout_and_time_lines_come_back(shell, admin, capsys):
    shell.run_cell("import dask.array as da")
    value = remote(
        shell,
        admin,
        'print("hello from the job runner")\n'
        "%time total = da.arange(10, chunks=5).sum().compute()\n"
        "total + 1;\n",
        "--workers 1",
    )
    assert value is None and shell.user_ns["total"] == 45
    out = capsys.readouterr().out
    assert out.count("hello from the job runner") == 1
    assert out.count("CPU times: user ") == 1 and out.count("Wall time: ") == 1


def test_futures_and_persisted_collections_cross_remote_cells(shell, admin):
    remote(
        shell,
        admin,
        """\
from distributed import Client
import dask.array as da
client = Client()
futures = client.map(lambda v: v * 2, range(4))
x = da.arange(20, chunks=5).persist()
""",
    )
    futures = shell.user_ns["futures"]
    assert all(type(f) is DoneFuture for f in futures)  # the kernel's own class
    assert [f.result() for f in futures] == [0, 2, 4, 6]
    assert int(shell.user_ns["x"].sum().compute()) == sum(range(20))
    assert "client" not in shell.user_ns

    remote(
        shell,
        admin,
        """\
from distributed import Future, futures_of, wait
wait(futures)
real = all(isinstance(f, Future) for f in futures)
total = client.submit(sum, futures).result()
persisted = len(futures_of(x)) == 4
x_total = int(x.sum().compute())
""",
    )
    ns = shell.user_ns
    assert ns["real"] and ns["total"] == 12 and ns["persisted"] and ns["x_total"] == 190


def test_the_task_pickle_loads_where_dask_flyte_jupyter_is_not_installed(shell):
    from dask_flyte_jupyter.cell import analyse_cell
    from dask_flyte_jupyter.spec import ClusterSpec
    from dask_flyte_jupyter.task import build_task

    program = analyse_cell("from distributed import Client\nvalue = 1\n", {})
    cell_task = build_task(program, ClusterSpec(), {}, report_versions=True)
    site = Path(flyte_admin.__file__).with_name("image_site")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env["FLYTE_ADMIN_STANDIN_NOT_IN_IMAGE"] = "dask_flyte_jupyter"
    script = (
        "import cloudpickle, sys\n"
        "task = cloudpickle.loads(sys.stdin.buffer.read())\n"
        "print(task.name, 'dask_flyte_jupyter' in sys.modules)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script],
        input=cloudpickle.dumps(cell_task.task),
        capture_output=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr.decode()[-2000:]
    assert loaded.stdout.decode().split() == [cell_task.name, "False"]
