"""Benchmark of the live progress view (issues 3 and 14): a 5,000-task map with the live widget
view, and with the text view, vs the same cell with --no-progress, interleaved in one process
(the order rotates each round). Target (issue 14): each view within 1% of --no-progress.

The ratio is the median over rounds of (view / --no-progress) within a round, which cancels the
slow drift of a shared machine; the medians of each mode are printed too.

Run: python bench/bench_progress.py [--repeat N] [--tasks N] [--spares off|on]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

from notebook_shell import notebook_shell

TARGET = 1.01
MODES = ("none", "widget", "text")  # "none" is --no-progress


def cell(tasks: int) -> str:
    return (
        "from distributed import Client\nclient = Client()\n"
        f"total = sum(client.gather(client.map(inc, range({tasks}))))\n"
    )


def main(repeat: int, tasks: int, spares: str) -> None:
    # a spare cluster starting in the background after each run would be noise here
    os.environ["FLYTE_DASK_SPARE_CLUSTER"] = spares
    shell = notebook_shell()
    code = cell(tasks)

    def run(mode: str) -> float:
        # the view is chosen per run: the widget view is the one JupyterLab users see
        os.environ["FLYTE_DASK_PROGRESS"] = "widget" if mode == "none" else mode
        line = "--workers 2" + (" --no-progress" if mode == "none" else "")
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_cell_magic("flyte_dask", line, code)
        return time.perf_counter() - start

    for mode in MODES:  # warm up
        run(mode)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(repeat):  # interleaved, so drift on a shared machine hits all modes
        for mode in MODES[round_ % 3 :] + MODES[: round_ % 3]:
            times[mode].append(run(mode))
    assert shell.user_ns["total"] == sum(range(1, tasks + 1))
    quiet = statistics.median(times["none"])
    for mode in ("widget", "text"):
        paired = statistics.median(
            live / off for live, off in zip(times[mode], times["none"], strict=True)
        )
        print(
            f"{tasks:,}-task map: {mode} view {statistics.median(times[mode]):.3f}s vs "
            f"--no-progress {quiet:.3f}s (medians of {repeat}, spares {spares}): "
            f"ratio {paired:.3f} (target <= {TARGET}) {'OK' if paired <= TARGET else 'MISSED'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--spares", choices=("off", "on"), default="off")
    options = parser.parse_args()
    main(options.repeat, options.tasks, options.spares)
