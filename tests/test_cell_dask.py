"""The cell's cluster is the cell's dask (issue 10), through a real IPython shell and real
clusters: dask code as people write it, without a ``Client()`` in the cell, with the notebook's
own client named in the cell, with tutorial ``Client(n_workers=...)`` lines; and dask state that
crosses the cell boundary (futures, persisted collections, imports)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import dask
import pytest
from dask.callbacks import Callback
from IPython.core.error import UsageError
from shell_helpers import magics

from dask_flyte_jupyter.dask_state import DoneFuture


class KernelThreads(Callback):  # type: ignore[misc]
    """Counts tasks run by the kernel's own (threaded / sync) dask schedulers."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._lock = threading.Lock()

    def _pretask(self, key, dsk, state) -> None:
        with self._lock:
            self.count += 1


@pytest.fixture
def kernel_threads() -> Iterator[KernelThreads]:
    counter = KernelThreads()
    counter.register()
    try:
        yield counter
    finally:
        counter.unregister()


@pytest.fixture
def notebook_client(shell):
    """A client on a cluster the notebook started itself (in-process, so it starts fast)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None)
    client = Client(cluster)
    shell.user_ns.update(client=client, cluster=cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def run(shell, body: str, line: str = "--workers 2"):
    return shell.run_cell_magic("flyte_dask", line, body)


def last_run(shell):
    return magics(shell).runs[-1]


# ---- 1. the cell's cluster is the cell's dask -------------------------------------------------


def test_compute_without_a_client_runs_on_the_cells_cluster(shell, kernel_threads):
    shell.run_cell("import dask, dask.array as da, dask.bag as db\nfrom dask import delayed")
    scheduler_before = dask.config.get("scheduler", None)
    value = run(
        shell,
        """\
x = da.arange(1000, chunks=100)
total = x.sum().compute()
(doubled,) = dask.compute(x * 2)
bag_total = db.from_sequence(range(10), npartitions=2).map(lambda v: v + 1).sum().compute()
lazy = delayed(sum)([1, 2, 3])
later = lazy.compute()
import dask.dataframe as dd
import pandas as pd
frame = dd.from_pandas(pd.DataFrame({"a": range(100)}), npartitions=4)
frame_sum = int(frame.a.sum().compute())
from distributed import get_client, default_client
same = get_client() is default_client()
workers = len(get_client().scheduler_info()["workers"])
total
""",
    )
    assert value == sum(range(1000))
    ns = shell.user_ns
    assert (ns["bag_total"], ns["later"], ns["frame_sum"]) == (55, 6, sum(range(100)))
    assert ns["same"] and ns["workers"] == 2
    assert kernel_threads.count == 0, "dask work ran on the kernel's threads"
    assert last_run(shell).tasks.total > 20
    # the notebook's own defaults are back
    assert dask.config.get("scheduler", None) == scheduler_before
    from distributed.client import _get_global_client

    assert _get_global_client() is None


def test_notebook_client_named_in_the_cell_is_the_cells_own(shell, notebook_client):
    before = len(notebook_client.cluster.scheduler.task_groups)
    run(
        shell,
        """\
import dask
futures = client.map(lambda v: v * 10, range(4))
gathered = client.gather(futures)
scattered = client.gather(client.scatter([1, 2]))
computed = client.compute(dask.delayed(sum)([1, 2])).result()
workers = len(client.scheduler_info()["workers"])
client.wait_for_workers(2)
same_cluster = len(cluster.scheduler_address) > 0
""",
        "--workers 2",
    )
    ns = shell.user_ns
    assert ns["gathered"] == [0, 10, 20, 30] and ns["scattered"] == [1, 2]
    assert ns["computed"] == 3 and ns["workers"] == 2
    assert len(notebook_client.cluster.scheduler.task_groups) == before
    assert ns["client"] is notebook_client, "the notebook's client must be left as it was"
    assert notebook_client.status == "running"
    notes = last_run(shell).notes
    assert "client: the notebook's client stands for this cell's own" in notes
    # and after the cell the notebook's client is the default again
    from distributed import default_client

    assert default_client() is notebook_client


def test_what_a_dedicated_cluster_cannot_do_is_one_sentence(shell, notebook_client):
    with pytest.raises(ValueError, match=r"has 1 workers, so waiting for 3 would never end"):
        run(shell, "client.wait_for_workers(3)\n", "--workers 1")
    run(shell, "client.cluster.scale(8)\nok = 1\n", "--workers 1")
    assert any("scale(8) ignored" in n and "--workers 8" in n for n in last_run(shell).notes)


def test_futures_of_the_notebooks_cluster_are_refused_clearly(shell, notebook_client):
    shell.user_ns["fut"] = notebook_client.submit(sum, [1, 2])
    with pytest.raises(UsageError, match=r"input 'fut' is a future of the notebook's own"):
        run(shell, "value = fut.result()\n")
    shell.run_cell("import dask.array as da\npersisted = da.ones(10, chunks=5).persist()")
    with pytest.raises(UsageError, match=r"input 'persisted' is a persisted collection holding"):
        run(shell, "value = persisted.sum().compute()\n")
    assert "value" not in shell.user_ns


# ---- 3. tutorial clients and clusters inside the cell -----------------------------------------


def test_client_with_arguments_connects_to_the_cells_cluster_with_a_note(shell):
    run(
        shell,
        """\
from dask.distributed import Client, LocalCluster
client = Client(n_workers=4, threads_per_worker=2)
a = len(client.scheduler_info()["workers"])
cluster = LocalCluster(n_workers=3)
b = len(Client(cluster).scheduler_info()["workers"])
c = len(Client("tcp://10.1.2.3:8786").scheduler_info()["workers"])
links = {client.dashboard_link, cluster.dashboard_link, client.cluster.dashboard_link}
import IPython  # the run's own link, while its cluster is up (it is gone when the cell ends)
live = IPython.get_ipython().magics_manager.registry["FlyteDaskMagics"].runs[-1].dashboard_link
""",
        "--workers 2",
    )
    assert (shell.user_ns["a"], shell.user_ns["b"], shell.user_ns["c"]) == (2, 2, 2)
    assert shell.user_ns["links"] == {shell.user_ns["live"]} and shell.user_ns["live"]
    notes = "\n".join(last_run(shell).notes)
    assert "Client(n_workers=4, threads_per_worker=2)" in notes and "--workers 4" in notes
    assert "LocalCluster(n_workers=3) in the cell is this cell's own cluster" in notes
    assert "Client('tcp://10.1.2.3:8786') in the cell connects to this cell's own cluster" in notes
    # clients and clusters never come back; the real classes are back in their modules
    assert "client" not in shell.user_ns and "cluster" not in shell.user_ns
    import distributed

    assert isinstance(distributed.LocalCluster, type)


def test_a_notebook_imported_localcluster_is_the_cells_own_too(shell):
    shell.run_cell("from distributed import LocalCluster, Client")
    run(shell, "c = Client(LocalCluster(n_workers=5))\nw = len(c.scheduler_info()['workers'])\n")
    assert shell.user_ns["w"] == 2


# ---- 4. names come back the way a normal cell binds them --------------------------------------


def test_imports_functions_and_classes_are_bound_after_the_run(shell):
    run(
        shell,
        """\
import json
import numpy as np
from os import path as osp
import xml.etree.ElementTree
def double(v):
    return 2 * v
class Box:
    pass
value = double(21)
""",
    )
    ns = shell.user_ns
    import json
    import os

    import numpy

    assert ns["json"] is json and ns["np"] is numpy and ns["osp"] is os.path
    assert ns["xml"].etree.ElementTree.__name__ == "xml.etree.ElementTree"
    assert ns["double"](4) == 8 and ns["Box"].__name__ == "Box" and ns["value"] == 42


def test_a_failed_cell_binds_nothing(shell):
    with pytest.raises(ZeroDivisionError):
        run(shell, "import json\nvalue = 1\n1 / 0\n")
    assert "json" not in shell.user_ns and "value" not in shell.user_ns


def test_global_on_a_notebook_name_works(shell):
    shell.user_ns["counter"] = 5
    run(shell, "global counter\ncounter = counter + 1\n")
    assert shell.user_ns["counter"] == 6


def test_a_client_of_an_earlier_cell_is_the_later_cells_own(shell):
    run(
        shell,
        "from distributed import Client\nclient = Client()\nfut = client.submit(sum, [1, 2])\n",
    )
    first = last_run(shell).name
    assert "client" not in shell.user_ns
    run(shell, "total = client.gather(client.submit(lambda f: f + 1, fut))\n")
    assert shell.user_ns["total"] == 4
    assert any(first in n and "this cell's own client" in n for n in last_run(shell).notes)


# ---- 5. dask state crosses the cell boundary, materialized ------------------------------------


def test_futures_come_back_done_and_go_on_the_next_cluster_as_real_futures(shell):
    run(
        shell,
        """\
from distributed import Client
client = Client()
futures = client.map(lambda v: v + 1, range(5))
by_name = {"one": client.submit(lambda: 1)}
bad = client.submit(lambda: 1 / 0)
""",
    )
    futures = shell.user_ns["futures"]
    assert all(isinstance(f, DoneFuture) and f.done() for f in futures)
    assert [f.result() for f in futures] == [1, 2, 3, 4, 5]
    assert shell.user_ns["by_name"]["one"].result() == 1
    bad = shell.user_ns["bad"]
    assert bad.status == "error"
    with pytest.raises(ZeroDivisionError):
        bad.result()
    assert "DoneFuture: finished, type: int, key: lambda-" in repr(futures[0])
    keys = [f.key for f in futures]
    assert "futures (5 futures)" in last_run(shell).details["brought back"]

    run(
        shell,
        """\
from distributed import as_completed, wait, Future
wait(futures)
real = all(isinstance(f, Future) for f in futures)
same_keys = [f.key for f in futures]
done = sorted(f.result() for f in as_completed(futures))
total = client.submit(sum, futures).result()
try:
    bad.result()
    failed = False
except ZeroDivisionError:
    failed = True
""",
    )
    ns = shell.user_ns
    assert ns["real"] and ns["same_keys"] == keys
    assert ns["done"] == [1, 2, 3, 4, 5] and ns["total"] == 15 and ns["failed"]


def test_persisted_collections_come_back_with_their_data(shell, kernel_threads):
    shell.run_cell("import dask.array as da, dask.bag as db, dask.dataframe as dd, pandas as pd")
    run(
        shell,
        """\
x = da.arange(100, chunks=10).persist()
b = db.from_sequence(range(10), npartitions=2).map(lambda v: v * 3).persist()
df = dd.from_pandas(pd.DataFrame({"a": range(20)}), npartitions=4).persist()
lazy = da.ones(10, chunks=5) + 1
""",
    )
    ns = shell.user_ns
    assert type(ns["x"]).__name__ == "Array" and type(ns["df"]).__name__ == "DataFrame"
    from distributed import futures_of

    assert not futures_of(ns["x"]) and not futures_of(ns["df"]) and not futures_of(ns["lazy"])
    brought = last_run(shell).details["brought back"]
    assert "x (persisted collection)" in brought and "lazy" not in brought
    before = kernel_threads.count
    # usable in plain cells, with their data in the kernel
    assert int(ns["x"].sum().compute()) == sum(range(100))
    assert ns["b"].compute() == [v * 3 for v in range(10)]
    assert int(ns["df"].a.sum().compute()) == sum(range(20))
    assert kernel_threads.count > before
    run(
        shell,
        """\
from distributed import futures_of
persisted_again = len(futures_of(x)) == 10 and len(futures_of(df)) > 0
x_total = int(x.sum().compute())
df_total = int(df.a.sum().compute())
""",
    )
    assert shell.user_ns["persisted_again"]
    assert (shell.user_ns["x_total"], shell.user_ns["df_total"]) == (sum(range(100)), 190)


def test_a_lazy_collection_is_never_computed_by_the_product(shell, tmp_path):
    marker = tmp_path / "computed"
    shell.user_ns["marker"] = str(marker)
    run(
        shell,
        """\
import dask
@dask.delayed
def touch(path):
    open(path, "w").close()
    return 1
lazy = touch(marker)
lazy
""",
    )
    assert not marker.exists()
    assert last_run(shell).tasks.total == 0
    assert "touch" in repr(shell.user_ns["lazy"])


def test_too_much_dask_data_fails_before_the_cluster_stops(shell, monkeypatch):
    monkeypatch.setenv("FLYTE_DASK_BRING_BACK_LIMIT", "1000")
    with pytest.raises(MemoryError, match=r"big hold .* more than the notebook kernel can take"):
        run(
            shell,
            "import dask.array as da\nbig = da.random.random(10_000, chunks=1000).persist()\n",
        )
    assert "big" not in shell.user_ns
    assert last_run(shell).status == "failed"


# ---- 7. notebook syntax inside the cell -------------------------------------------------------


def test_semicolon_and_time_lines_work_as_in_a_notebook(shell, capsys):
    shell.run_cell("import dask.array as da")
    result = shell.run_cell(
        "%%flyte_dask --workers 1\n"
        "x = da.arange(100, chunks=10)\n"
        "%time total = x.sum().compute()\n"
        "%timeit -n 2 -r 2 x.sum().compute()\n"
        "total;\n"
    )
    assert result.success and result.result is None  # `;`: nothing displayed
    assert shell.user_ns["total"] == 4950
    out = capsys.readouterr().out
    assert re.search(r"^CPU times: user .+, sys: .+, total: .+\nWall time: .+$", out, re.M)
    assert re.search(
        r"^\S+ \S+ ± \S+ \S+ per loop \(mean ± std\. dev\. of 2 runs, 2 loops each\)$", out, re.M
    )
    result = shell.run_cell("%%flyte_dask --workers 1\n%%time\ny = x.sum().compute()\ny + 1\n")
    assert result.result == 4951
    assert capsys.readouterr().out.count("Wall time:") == 1
    result = shell.run_cell("%%flyte_dask --workers 1\n%time x.mean().compute()\n")
    assert result.result == 49.5


# ---- 8. output once ---------------------------------------------------------------------------


def test_a_figure_the_cell_draws_is_shown_once_by_the_kernels_backend(shell):
    import matplotlib
    from IPython.utils.capture import capture_output
    from matplotlib_inline.backend_inline import configure_inline_support, flush_figures

    # What `%matplotlib inline` does in a kernel: the inline backend, shown after each cell.
    inline = "module://matplotlib_inline.backend_inline"
    matplotlib.use(inline)
    matplotlib.interactive(True)
    configure_inline_support(shell, inline)
    try:
        with capture_output() as plain:
            shell.run_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n")
        assert len([o for o in plain.outputs if "image/png" in o.data]) == 1
        shell.run_cell("import matplotlib.pyplot as plt")
        with capture_output() as shown:
            result = shell.run_cell(
                "%%flyte_dask --workers 1 --no-progress\n"
                "fig, ax = plt.subplots()\n"
                "ax.plot([1, 2, 3])\n"
                "ax\n"
            )
        assert result.success and type(result.result).__name__ == "Axes"
        images = [o for o in shown.outputs if "image/png" in o.data]
        assert len(images) == 1
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []  # the unpickled copy is not shown again
        assert shell.user_ns["fig"].axes[0] is not None
    finally:
        if flush_figures in shell.events.callbacks["post_execute"]:
            shell.events.unregister("post_execute", flush_figures)
        matplotlib.interactive(False)
        matplotlib.use("Agg")


def test_remote_figures_come_back_as_images_only_where_the_kernel_shows_figures():
    from dask_flyte_jupyter.cell import analyse_cell
    from dask_flyte_jupyter.spec import ClusterSpec
    from dask_flyte_jupyter.task import run_settings

    program = analyse_cell("x = 1\n", {})
    import matplotlib

    matplotlib.use("Agg")
    assert run_settings(program, ClusterSpec(), ("x",), remote=True)["figures"] is False
    matplotlib.use("module://matplotlib_inline.backend_inline")
    try:
        assert run_settings(program, ClusterSpec(), ("x",), remote=True)["figures"] is True
        assert run_settings(program, ClusterSpec(), ("x",), remote=False)["figures"] is False
    finally:
        matplotlib.use("Agg")
