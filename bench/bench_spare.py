"""Benchmarks of the spare cluster (issue 14, item 2), each against raw dask in the same run,
A/B interleaved so that drift on a shared machine hits both sides.

- tiny cell when a spare is ready vs raw dask on an already running cluster (a LocalCluster of
  the same shape started beforehand, the same code with a Client on it): what a
  dask-labextension user feels. Target: adds <= 0.15 s.
- the first cell of a kernel (no spare yet) vs a raw LocalCluster of the same shape started,
  used and closed. Target: adds <= 0.1 s.

Run: python bench/bench_spare.py [--repeat N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

from notebook_shell import notebook_shell

from dask_flyte_jupyter.backends.spare import spare_clusters

TINY = (
    "from distributed import Client\nclient = Client()\n"
    "total = client.submit(sum, [1, 2, 3]).result()\n"
)
WORKERS = 2
LINE = f"--workers {WORKERS} --no-progress"


def new_cluster() -> Any:
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
        silence_logs=logging.ERROR,
    )


def raw_on(cluster: Any) -> None:
    """The tiny code with a Client on a cluster that is already running."""
    import dask

    with dask.config.set({"scheduler-address": cluster.scheduler_address}):
        scope: dict[str, Any] = {}
        exec(compile(TINY, "<raw>", "exec"), scope)
        scope["client"].close()


def raw_started_and_closed() -> None:
    with new_cluster() as cluster:
        raw_on(cluster)


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def bench(repeat: int) -> None:
    shell = notebook_shell()
    spares = spare_clusters()
    magic = lambda: shell.run_cell_magic("flyte_dask", LINE, TINY)  # noqa: E731
    runs = shell.magics_manager.registry["FlyteDaskMagics"].runs

    shell.run_line_magic("flyte_dask_config", "--spare-cluster on")
    magic()  # warm up imports on both sides
    raw_started_and_closed()

    # ---- a spare ready vs an open cluster ----------------------------------------------
    running = new_cluster()
    raw_on(running)
    with_spare, open_cluster, start_phase = [], [], []
    try:
        for _ in range(repeat):
            # untimed: the spare the last run started gets ready (nothing runs in the back)
            if spares.ready_cluster(120) is None:
                raise SystemExit("no spare cluster got ready")
            open_cluster.append(timed(lambda: raw_on(running)))
            with_spare.append(timed(magic))
            assert "cluster" in runs[-1].details, "the cell did not run on the spare"
            start_phase.append(runs[-1].phases["starting cluster"])
    finally:
        running.close()
    m, r = statistics.median(with_spare), statistics.median(open_cluster)
    print(
        f"tiny cell, spare ready: magic {m:.3f}s vs raw dask on a running cluster {r:.3f}s: "
        f"adds {m - r:.3f}s (its 'starting cluster' phase {statistics.median(start_phase):.3f}s;"
        f" target: adds <= 0.15s) {verdict(m - r <= 0.15)}"
    )

    # ---- the first cell of a kernel: no spare ------------------------------------------
    first, raw = [], []
    for _ in range(repeat):
        spares.close()  # untimed: the last run's spare would compete with the raw side
        raw.append(timed(raw_started_and_closed))
        first.append(timed(magic))  # starts its own cluster, then a spare for the next cell
        assert "cluster" not in runs[-1].details
    spares.close()
    m, r = statistics.median(first), statistics.median(raw)
    print(
        f"first cell of a kernel: magic {m:.3f}s vs a raw cluster started and closed {r:.3f}s: "
        f"adds {m - r:.3f}s (ratio {m / r:.2f}; target: adds <= 0.1s) {verdict(m - r <= 0.1)}"
    )

    from dask_flyte_jupyter.backends.local import _start_conditions

    check = statistics.median(timed(_start_conditions) for _ in range(20))
    print(f"a spare's start conditions (dask config, environment, sys.path): {check:.4f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    options = parser.parse_args()
    bench(options.repeat)
