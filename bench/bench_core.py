"""Benchmarks of the %%flyte_dask core (issue 2), each against a baseline in the same run.

- load: `%load_ext dask_flyte_jupyter` in a fresh process vs a bare `import IPython`;
- tiny cell: under the magic vs the same code on a raw LocalCluster of the same shape;
- 2,000-task client.map: under the magic vs raw;
- cache hit: a cached cell's wall time.

Run: python bench/bench_core.py [--repeat N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time

from notebook_shell import notebook_shell

LOAD_SNIPPET = """
import time
t0 = time.perf_counter()
import IPython
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t1 = time.perf_counter()
shell.run_line_magic("load_ext", "dask_flyte_jupyter")
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

TINY = (
    "from distributed import Client\nclient = Client()\n"
    "total = client.submit(sum, [1, 2, 3]).result()\n"
)
MAP = (
    "from distributed import Client\nclient = Client()\n"
    "mapped = client.gather(client.map(inc, range(2000)))\n"
)


def bench_load(repeat: int) -> None:
    ipython, load = [], []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_SNIPPET], capture_output=True, text=True, check=True
        )
        a, b = (float(x) for x in out.stdout.split())
        ipython.append(a)
        load.append(b)
    base, added = statistics.median(ipython), statistics.median(load)
    print(
        f"load_ext: import IPython {base:.3f}s, %load_ext adds {added:.3f}s "
        f"(ratio {(base + added) / base:.2f}; target: adds <= 0.15s) "
        f"{'OK' if added <= 0.15 else 'MISSED'}"
    )


def raw_run(code: str, namespace: dict, workers: int) -> None:
    """The same code without the magic: a LocalCluster started and closed the same way, and let
    go as the magic lets its own go (distributed's dashboard keeps every closed cluster alive
    otherwise, ``dask_monitor.forget_closed_cluster``, and the baseline would age the kernel)."""
    import dask
    from distributed import LocalCluster

    from dask_flyte_jupyter.backends.dask_monitor import forget_closed_cluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
            silence_logs=logging.ERROR,
        ) as cluster,
        dask.config.set({"scheduler-address": cluster.scheduler_address}),
    ):
        scope = dict(namespace)
        exec(compile(code, "<raw>", "exec"), scope)
        scope["client"].close()
    forget_closed_cluster(cluster)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_runs(repeat: int) -> None:
    shell = notebook_shell()
    ns = {"inc": shell.user_ns["inc"]}
    magic = lambda code: shell.run_cell_magic("flyte_dask", "--workers 2", code)  # noqa: E731
    magic(TINY)  # warm up imports on both sides
    raw_run(TINY, ns, 2)
    for label, code, target in (("tiny cell", TINY, None), ("2,000-task map", MAP, 1.03)):
        magic_times, raw_times = [], []
        for _ in range(repeat):  # interleaved, so drift on a shared machine hits both
            raw_times.append(timed(lambda code=code: raw_run(code, ns, 2)))
            magic_times.append(timed(lambda code=code: magic(code)))
        m, r = statistics.median(magic_times), statistics.median(raw_times)
        if target is None:
            print(
                f"{label}: magic {m:.3f}s vs raw {r:.3f}s: adds {m - r:.3f}s "
                f"(ratio {m / r:.2f}; target: adds <= 0.3s) {'OK' if m - r <= 0.3 else 'MISSED'}"
            )
        else:
            print(
                f"{label}: magic {m:.3f}s vs raw {r:.3f}s: ratio {m / r:.3f} "
                f"(target <= {target}) {'OK' if m / r <= target else 'MISSED'}"
            )

    from flytekit.core.local_cache import LocalTaskCache

    LocalTaskCache.clear()
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache", TINY)  # fills the cache
    hits = [
        timed(lambda: shell.run_cell_magic("flyte_dask", "--workers 1 --cache", TINY))
        for _ in range(repeat)
    ]
    hit = statistics.median(hits)
    miss = statistics.median(magic_times)
    print(
        f"cache hit: {hit:.3f}s (vs a run {miss:.3f}s: ratio {hit / miss:.3f}; target <= 0.05s) "
        f"{'OK' if hit <= 0.05 else 'MISSED'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    bench_load(options.repeat)
    bench_runs(options.repeat)
