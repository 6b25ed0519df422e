"""Benchmark of a kernel that ages (issue 14, item 3): does a cell cost more at the 50th run?

One IPython shell runs a tiny ``%%flyte_dask --workers 1`` cell ``--cells`` times (50 by
default, after one warm-up cell that imports flytekit), each next to the same code on a raw
``LocalCluster`` of the same shape started and closed (the order alternates, so that noise on a
shared machine cancels). Per pair, the overhead is magic − raw; the overhead of the first
``--window`` cells is compared with that of the last ones. Target: drift <= 5%.

Also printed: the kernel's RSS after cell 1 and at the end (memory must not grow with the number
of runs), and what the kernel accumulates per run (linecache entries, widgets, logging filters,
atexit callbacks, threads, flytekit entities and contexts, the history record's size).
``--sidebar`` attaches the JupyterLab sidebar's channel to a comm that serializes what it is
sent as a kernel would (the sidebar is open while the cells run).
``--profile`` compares cProfile of the first and last cells (where does the time grow?);
``--trace`` compares tracemalloc snapshots (where does the memory grow?); both slow the cells,
so their drift figure is not the benchmark's.

Run: python bench/bench_drift.py [--cells N] [--window W] [--progress widget|text|none]
                                 [--spares off|on] [--sidebar] [--profile] [--trace]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import cProfile
import gc
import io
import json
import linecache
import logging
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any

from bench_core import TINY, raw_run
from notebook_shell import notebook_shell

LINE = "--workers 1"
TARGET = 0.05


def rss_mib() -> float:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss / 2**20  # type: ignore[no-any-return]


def kernel_state(shell: Any) -> dict[str, int]:
    """What a kernel could pile up run after run, counted."""
    from distributed.client import _global_clients
    from flytekit.core.context_manager import FlyteEntities, flyte_context_Var

    runs = shell.magics_manager.registry["FlyteDaskMagics"].runs
    widgets = sys.modules.get("ipywidgets.widgets.widget")
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    import dask

    return {
        "linecache entries": len(linecache.cache),
        "live widgets": len(widgets._instances) if widgets is not None else 0,
        "asyncio log filters": len(logging.getLogger("asyncio").filters),
        "logging filters+handlers": sum(len(lg.filters) + len(lg.handlers) for lg in loggers),
        "atexit callbacks": atexit._ncallbacks(),
        "threads": threading.active_count(),
        "dask clients": len(_global_clients),
        "dask config bytes": len(repr(dask.config.config)),
        "flytekit entities": len(FlyteEntities.entities),
        "flytekit context depth": len(flyte_context_Var.get()),
        "history runs": len(runs),
        "last record bytes": len(json.dumps(runs[-1].to_record(), default=str)) if runs else 0,
        "gc objects": len(gc.get_objects()),
        "modules": len(sys.modules),
    }


def timed(fn: Any) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fn()
    return time.perf_counter() - start


def theil_sen(values: list[float]) -> float:
    """The median slope between all pairs of points: a trend that a few outliers do not move."""
    slopes = [
        (values[j] - values[i]) / (j - i)
        for i in range(len(values))
        for j in range(i + 1, len(values))
    ]
    return statistics.median(slopes)


def grown_functions(first: pstats.Stats, last: pstats.Stats, top: int = 15) -> list[str]:
    """Functions whose own time grew most between two equally long windows of cells."""
    before: dict[Any, Any] = first.stats  # type: ignore[attr-defined]
    after: dict[Any, Any] = last.stats  # type: ignore[attr-defined]
    grown = []
    for key, (_, calls, own, cumulative, _callers) in after.items():
        old = before.get(key, (0, 0, 0.0, 0.0, {}))
        grown.append((own - old[2], cumulative - old[3], calls - old[1], key))
    grown.sort(key=lambda item: item[0], reverse=True)
    return [
        f"  own {d_own * 1000:+8.1f} ms  cumulative {d_cum * 1000:+8.1f} ms  calls {d_calls:+6d}"
        f"  {os.path.basename(key[0])}:{key[1]} {key[2]}"
        for d_own, d_cum, d_calls, key in grown[:top]
    ]


def open_sidebar(shell: Any) -> Any:
    """A sidebar's comm on the kernel's channel: what a push sends is serialized to JSON, as
    ipykernel does before it goes out (bytes sent are counted)."""
    from comm.base_comm import BaseComm

    from dask_flyte_jupyter.comm import SidebarChannel

    class SerializingComm(BaseComm):  # type: ignore[misc]
        sent = 0

        def publish_msg(  # type: ignore[override]
            self, msg_type: str, data: Any = None, **keys: Any
        ) -> None:
            SerializingComm.sent += len(json.dumps(data, default=str))

    channel = SidebarChannel(shell)
    channel.observe(shell.magics_manager.registry["FlyteDaskMagics"])
    channel.attach(SerializingComm(target_name="dask_flyte_jupyter", primary=False))
    return SerializingComm


SPARE_SWITCH = "FLYTE_DASK_SPARE_CLUSTER"  # backends/spare.py (issue 14, item 2)


def set_spares(shell: Any, mode: str) -> str:
    """Turns the spare cluster on or off with ``%flyte_dask_config --spare-cluster`` where this
    version has it (the switch variable was set before the shell loaded the extension too);
    returns what was measured."""
    magics = shell.magics_manager.registry["FlyteDaskMagics"]
    if "--spare-cluster" not in magics.flyte_dask_config.parser.format_help():
        if mode == "on":
            raise SystemExit("this version has no spare cluster: measure with --spares off")
        return "spares off (this version has no spare cluster)"
    shell.run_line_magic("flyte_dask_config", f"--spare-cluster {mode}")
    return f"spares {mode} (%flyte_dask_config --spare-cluster {mode})"


def main(options: argparse.Namespace) -> None:
    os.environ[SPARE_SWITCH] = options.spares
    if options.progress != "auto":
        os.environ["FLYTE_DASK_PROGRESS"] = options.progress
    workdir = tempfile.mkdtemp(prefix="bench-drift-")  # the runs' performance reports go here
    home = os.getcwd()
    os.chdir(workdir)
    try:
        run_bench(options)
    finally:
        os.chdir(home)
        shutil.rmtree(workdir, ignore_errors=True)


def run_bench(options: argparse.Namespace) -> None:
    shell = notebook_shell()
    spares = set_spares(shell, options.spares)
    namespace = {"inc": shell.user_ns["inc"]}
    sidebar = open_sidebar(shell) if options.sidebar else None

    def magic() -> None:
        shell.run_cell_magic("flyte_dask", LINE, TINY)

    def raw() -> None:
        raw_run(TINY, namespace, 1)

    first_cell = timed(magic)  # cell 1: imports flytekit, builds the first task
    timed(raw)
    rss = {1: rss_mib()}
    state = {1: kernel_state(shell)}
    profiles: dict[str, cProfile.Profile] = {}
    window = options.window
    cells = options.cells
    magic_times: list[float] = []
    raw_times: list[float] = []
    pushed: list[int] = []  # bytes pushed to the sidebar per cell
    for index in range(cells):
        cell = index + 2  # the kernel's cell number: the warm-up was cell 1
        which = "first" if index < window else "last" if index >= cells - window else None
        if options.trace and index == window:
            tracemalloc.start(25)
            traced = tracemalloc.take_snapshot()
        profile = (
            profiles.setdefault(which, cProfile.Profile()) if which and options.profile else None
        )

        def profiled(profile: cProfile.Profile | None = profile) -> None:
            if profile is None:
                return magic()
            profile.enable()
            try:
                magic()
            finally:
                profile.disable()

        sent = sidebar.sent if sidebar is not None else 0
        if index % 2:  # alternate the order: whatever the first of a pair pays, both pay
            magic_times.append(timed(profiled))
            raw_times.append(timed(raw))
        else:
            raw_times.append(timed(raw))
            magic_times.append(timed(profiled))
        pushed.append((sidebar.sent if sidebar is not None else 0) - sent)
        if cell in (2, 11):
            rss[cell], state[cell] = rss_mib(), kernel_state(shell)
    last = cells + 1
    rss[last], state[last] = rss_mib(), kernel_state(shell)
    assert shell.user_ns["total"] == 6

    overhead = [m - r for m, r in zip(magic_times, raw_times, strict=True)]
    early = statistics.median(overhead[:window])
    late = statistics.median(overhead[-window:])
    drift = (late - early) / early
    trend = theil_sen(overhead)
    spread = statistics.quantiles(overhead, n=4)
    print(f"{cells} tiny cells (%%flyte_dask {LINE}) after a warm-up cell, each next to raw dask")
    print(
        f"  measured with {spares}; progress view: {os.environ.get('FLYTE_DASK_PROGRESS', 'auto')}"
    )
    if sidebar is not None:
        print(
            f"  sidebar open: pushes of cell 2 {pushed[0] / 1024:.0f} KiB, of cell {last} "
            f"{pushed[-1] / 1024:.0f} KiB; {sidebar.sent / 2**20:.1f} MiB in all"
        )
    print(f"  cell 1 (imports flytekit): {first_cell:.3f}s")
    print(
        f"  magic {statistics.median(magic_times):.3f}s vs raw {statistics.median(raw_times):.3f}s"
        f" (medians); overhead quartiles {spread[0]:.3f} / {spread[1]:.3f} / {spread[2]:.3f}s"
    )
    print(
        f"  overhead, cells 2-{window + 1}: {early:.3f}s; cells {last - window + 1}-{last}: "
        f"{late:.3f}s; trend over all {cells}: {trend * 1000:+.2f} ms per cell"
    )
    verdict = "OK" if drift <= TARGET else "MISSED"
    print(f"  drift of the overhead: {drift * 100:+.1f}% (target <= {TARGET:.0%}) {verdict}")
    growth = (rss[last] - rss[11]) / (last - 11) if last > 11 else 0.0
    print(
        "  kernel RSS: "
        + ", ".join(f"after cell {cell} {mib:.0f} MiB" for cell, mib in sorted(rss.items()))
        + f" ({growth * 1024:+.0f} KiB per cell from cell 11 on)"
    )
    cols = sorted(state)
    print("  accumulated state: " + " / ".join(f"cell {c}" for c in cols))
    for key in state[1]:
        values = [state[c][key] for c in cols]
        mark = "  <- grows" if values[-1] > values[1] and key not in ("gc objects",) else ""
        print(f"    {key:>26}: " + " / ".join(str(v) for v in values) + mark)
    if options.profile:
        print(f"  functions whose own time grew most (last {window} cells vs first {window}):")
        stats = [pstats.Stats(profiles[which]) for which in ("first", "last")]
        print("\n".join(grown_functions(stats[0], stats[1])))
    if options.trace:
        grown = tracemalloc.take_snapshot().compare_to(traced, "traceback")
        tracemalloc.stop()
        print(f"  memory that grew from cell {window + 2} to the end (tracemalloc, top 10):")
        for stat in grown[:10]:
            frames = [f"{os.path.basename(f.filename)}:{f.lineno}" for f in stat.traceback[-4:]]
            print(
                f"    {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+6d} blocks  "
                + " <- ".join(reversed(frames))
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--progress", choices=("widget", "text", "none", "auto"), default="widget")
    parser.add_argument("--spares", choices=("off", "on"), default="off")
    parser.add_argument("--sidebar", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--trace", action="store_true")
    main(parser.parse_args())
