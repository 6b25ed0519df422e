"""Benchmark of the live progress view (issue 3): a 5,000-task map with the live widget view vs
the same cell with --no-progress, interleaved in one process. Target: ratio <= 1.03.

Run: python bench/bench_progress.py [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

from notebook_shell import notebook_shell

CELL = (
    "from distributed import Client\nclient = Client()\n"
    "total = sum(client.gather(client.map(inc, range(5000))))\n"
)


def main(repeat: int) -> None:
    os.environ["FLYTE_DASK_PROGRESS"] = "widget"  # the ipywidgets view, updated live
    shell = notebook_shell()

    def run(line: str) -> float:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_cell_magic("flyte_dask", line, CELL)
        return time.perf_counter() - start

    run("--workers 2")  # warm up
    live, quiet = [], []
    for _ in range(repeat):  # interleaved, so drift on a shared machine hits both
        quiet.append(run("--workers 2 --no-progress"))
        live.append(run("--workers 2"))
    assert shell.user_ns["total"] == sum(range(1, 5001))
    m_live, m_quiet = statistics.median(live), statistics.median(quiet)
    ratio = m_live / m_quiet
    print(
        f"5,000-task map: live view {m_live:.3f}s vs --no-progress {m_quiet:.3f}s: "
        f"ratio {ratio:.3f} (target <= 1.03) {'OK' if ratio <= 1.03 else 'MISSED'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    main(parser.parse_args().repeat)
