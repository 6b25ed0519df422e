"""Data in and out (issue 14): a pandas DataFrame into a cell and a computed one out of it,
under the magic vs the same code on a raw LocalCluster of the same shape, interleaved.

The cell is what a dask user writes: ``dd.from_pandas(pdf).assign(...).compute()``. Each run's
peak kernel memory above what it started with is sampled; the target is the magic's peak within
10% of the raw run's.

Run: python bench/bench_data.py [--sizes 200,1000] [--repeat N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import psutil
from bench_core import raw_run
from notebook_shell import notebook_shell

CELL = (
    "import dask.dataframe as dd\n"
    "from distributed import Client\n"
    "client = Client()\n"
    "out = dd.from_pandas(pdf, npartitions=8).assign(z=lambda d: d.x * 2 + d.y).compute()\n"
)
WORKERS = 2


def frame(megabytes: int) -> pd.DataFrame:
    rows = megabytes * 1024 * 1024 // 16  # two float64 columns
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.random(rows), "y": rng.random(rows)})


class PeakMemory:
    """The process's resident memory while ``measure`` runs: its peak above the start."""

    def __init__(self) -> None:
        self.process = psutil.Process()

    def measure(self, run: Callable[[], None]) -> tuple[float, int]:
        gc.collect()
        start_rss = self.process.memory_info().rss
        peak = start_rss
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, self.process.memory_info().rss)
                done.wait(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        try:
            run()
        finally:
            elapsed = time.perf_counter() - started
            done.set()
            sampler.join()
        return elapsed, peak - start_rss


def bench(megabytes: int, repeat: int) -> None:
    shell = notebook_shell()
    shell.user_ns["pdf"] = frame(megabytes)
    memory = PeakMemory()
    namespace = {"pdf": shell.user_ns["pdf"]}

    def magic() -> None:
        shell.run_cell_magic("flyte_dask", f"--workers {WORKERS} --no-progress", CELL)
        shell.user_ns.pop("out")

    def raw() -> None:
        raw_run(CELL, namespace, WORKERS)

    magic()  # warm up imports on both sides
    raw()
    times: dict[str, list[float]] = {"magic": [], "raw": []}
    peaks: dict[str, list[int]] = {"magic": [], "raw": []}
    for _ in range(repeat):  # interleaved: drift on a shared machine hits both
        for label, run in (("raw", raw), ("magic", magic)):
            elapsed, peak = memory.measure(run)
            times[label].append(elapsed)
            peaks[label].append(peak)
    m, r = statistics.median(times["magic"]), statistics.median(times["raw"])
    pm, pr = statistics.median(peaks["magic"]), statistics.median(peaks["raw"])
    mib = 1024 * 1024
    print(
        f"{megabytes} MB in / {megabytes} MB out: magic {m:.2f}s vs raw {r:.2f}s: "
        f"ratio {m / r:.3f} (target <= 1.05) {'OK' if m / r <= 1.05 else 'MISSED'}"
    )
    print(
        f"{megabytes} MB peak kernel memory above start: magic {pm / mib:.0f} MiB vs raw "
        f"{pr / mib:.0f} MiB: ratio {pm / pr:.2f} (target <= 1.10) "
        f"{'OK' if pm <= pr * 1.10 else 'MISSED'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="200,1000", help="DataFrame sizes in MB")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    for size in (int(s) for s in options.sizes.split(",")):
        bench(size, options.repeat)
