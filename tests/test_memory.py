"""Memory: the run history keeps summaries, not data (issue 12, item 2).

Through a real IPython shell, as a notebook runs cells: twenty runs of a cell that binds a
100 MB array, then ``del big``, must leave the kernel's RSS within 50 MiB of what it was before
them; so must twenty failed runs whose cell held a 100 MB local when it raised (the history keeps
the error's text, not its traceback's frames). The baseline is measured after one small run of
each kind, which imports flytekit, dask and numpy once per kernel. Plain IPython keeps the last
traceback (``sys.last_traceback``, ``%debug``), and so the last failed cell's locals; that one is
measured, then let go the way a notebook lets it go: by the next failing cell.
"""

from __future__ import annotations

import gc
import sys
import weakref

import psutil
import pytest
from shell_helpers import magics

from dask_flyte_jupyter.run import RunFailedError

MiB = 2**20
RUNS = 20
#: How far above its baseline the kernel's RSS may be after the runs.
ALLOWED = 50 * MiB
MAGIC = "%%flyte_dask --workers 1 --no-progress\n"
BIG = "big = np.ones(12_500_000)\n"  # 100 MB
FAILING = "big = np.ones(12_500_000)\nraise ValueError(f'failed holding {big.nbytes} bytes')\n"


def rss() -> int:
    """This process's resident memory once garbage is collected."""
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def mib(size: float) -> str:
    return f"{size / MiB:+.1f} MiB"


def run_cell(shell, text: str):
    """Runs a cell as a notebook does (stored in the history, errors shown, not raised)."""
    return shell.run_cell(text, store_history=True)


def test_twenty_runs_of_a_100_mb_cell_free_everything_once_deleted(shell, capsys):
    run_cell(shell, "import numpy as np")
    assert run_cell(shell, MAGIC + "warm = np.ones(10)\n").success  # imports, once per kernel
    run_cell(shell, "del warm")
    baseline = rss()

    arrays = []
    for _ in range(RUNS):
        assert run_cell(shell, MAGIC + BIG).success
        arrays.append(weakref.ref(shell.user_ns["big"]))
    held = rss()
    run_cell(shell, "del big")
    after = rss()
    alive = sum(ref() is not None for ref in arrays)
    print(
        f"\nsucceeded runs: baseline {baseline / MiB:.1f} MiB, with big {mib(held - baseline)}"
        f", after del big {mib(after - baseline)}",
        file=sys.__stdout__,
    )
    assert alive == 0, f"{alive} of the {RUNS} arrays are still referenced"
    assert after - baseline < ALLOWED, f"RSS {mib(after - baseline)} after del big"

    # The history still says what each run did and what it bound.
    runs = list(magics(shell).runs)[-RUNS:]
    for run in runs:
        assert run.status == "succeeded" and run.outputs == {} and run.value is None
        assert run.output_info["big"].type == "ndarray"
        assert "big: ndarray (12500000, 95.4 MiB)" in run.summary_text()
        assert run.to_record()["outputs"] == {"big": "ndarray"}
        assert run.phases["running"] > 0 and run.shape is not None and run.shape.workers == 1
    table = magics(shell).flyte_dask_runs("").text()
    assert table.count(" big ") >= RUNS
    capsys.readouterr()


def test_twenty_failed_runs_holding_100_mb_locals_keep_only_their_error_text(shell, capsys):
    run_cell(shell, "import numpy as np")
    assert not run_cell(shell, MAGIC + "small = np.ones(10)\n1/0\n").success  # imports
    # IPython's first traceback of a plain cell costs tens of MiB once (its formatter's imports
    # and caches); the measure below ends with one
    assert not run_cell(shell, "raise KeyError('warm-up')").success
    baseline = rss()

    for _ in range(RUNS):
        failed = run_cell(shell, MAGIC + FAILING).error_in_exec  # holds the frames: not kept
        assert isinstance(failed, ValueError)
    del failed
    shown = capsys.readouterr().out
    assert shown.count("ValueError: failed holding 100000000 bytes") == RUNS
    last_traceback = rss()  # IPython's own: sys.last_traceback holds the last cell's frames
    assert not run_cell(shell, "raise KeyError('the next failing cell')").success
    after = rss()
    print(
        f"\nfailed runs: baseline {baseline / MiB:.1f} MiB, with IPython's last traceback "
        f"{mib(last_traceback - baseline)}, after the next error {mib(after - baseline)}",
        file=sys.__stdout__,
    )
    assert last_traceback - baseline < 100 * MiB + ALLOWED  # one cell's locals, as IPython keeps
    assert after - baseline < ALLOWED, f"RSS {mib(after - baseline)} after the failed runs"

    runs = list(magics(shell).runs)[-RUNS:]
    for run in runs:
        assert run.status == "failed" and run.error is None and run.failed_phase == "running"
        assert run.error_text == "ValueError: failed holding 100000000 bytes"
        assert run.to_record()["error"] == run.error_text
        assert any("Cell line 3" in line for line in run.error_lines)
    with pytest.raises(RunFailedError, match="failed holding 100000000 bytes") as caught:
        runs[-1].wait()  # a failed run still fails when asked for its value
    assert "Cell line 3" in "\n".join(caught.value._render_traceback_())


def test_the_out_handle_keeps_the_outputs_and_the_history_does_not(shell):
    shell.user_ns["n"] = 3
    shell.run_cell_magic("flyte_dask", "--workers 1 --no-progress --out handle", "m = [n] * 5\n")
    handle, entry = shell.user_ns["handle"], magics(shell).runs[-1]
    assert handle.outputs == {"m": [3, 3, 3, 3, 3]} and handle.outputs["m"] is shell.user_ns["m"]
    assert entry is not handle and entry.outputs == {}
    assert entry.output_info["m"].text == "m: list (len 5)"
    assert entry.name == handle.name and entry.status == handle.status == "succeeded"
    assert entry.to_record()["outputs"] == handle.to_record()["outputs"] == {"m": "list"}
