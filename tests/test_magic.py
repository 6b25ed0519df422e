"""The %%flyte_dask magic through a real InteractiveShell and real LocalClusters."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from IPython.core.error import UsageError
from shell_helpers import INCREMENT, define_inc, interrupt_when_running, magics


def test_increment_example_runs_on_exactly_four_workers(shell):
    define_inc(shell, n=25)
    value = shell.run_cell_magic("flyte_dask", "--workers 4", INCREMENT)
    assert shell.user_ns["result"] == [i + 1 for i in range(25)]
    assert shell.user_ns["workers_seen"] == 4
    assert value == sum(i + 1 for i in range(25))
    # a Client cannot outlive its cluster, so it is not written back; futures come back done
    assert "client" not in shell.user_ns
    futures = shell.user_ns["futures"]
    assert [f.result() for f in futures] == shell.user_ns["result"]
    assert all(f.done() and f.status == "finished" for f in futures)
    run = magics(shell).runs[-1]
    assert run.status == "succeeded"
    # the cluster is gone: no dashboard link, the saved report instead (test_reports.py)
    assert run.dashboard_link is None and run.to_record()["dashboard"] is None
    assert run.report_path and run.report_path.startswith(".flyte_dask/")


def test_increment_example_scaled_down_with_a_note(shell, capsys):
    define_inc(shell)
    shell.run_cell_magic(
        "flyte_dask", "--workers 4 --worker-cpu 8 --worker-mem 32Gi --scheduler-cpu 2", INCREMENT
    )
    assert shell.user_ns["result"] == [i + 1 for i in range(10)]
    run = magics(shell).runs[-1]
    assert run.shape.workers == 4
    assert any("threads per worker" in note for note in run.notes)
    out, err = capsys.readouterr()
    assert "threads per worker" not in err  # a note, not an error
    note = next(note for note in run.notes if "threads per worker" in note)
    assert out.count(note) == 1  # printed once (text mode), not again in the summary


def test_worker_threads_and_memory_follow_the_spec(shell):
    cell = """\
from distributed import Client
workers = Client().scheduler_info()["workers"].values()
threads = sorted(w["nthreads"] for w in workers)
memory = sorted(w["memory_limit"] for w in workers)
"""
    shell.run_cell_magic("flyte_dask", "--workers 2 --worker-cpu 2 --worker-mem 1Gi", cell)
    assert shell.user_ns["threads"] == [2, 2]
    assert shell.user_ns["memory"] == [2**30, 2**30]


def test_dask_dataframe_output_equals_pandas(shell):
    frame = pd.DataFrame({"key": [i % 5 for i in range(200)], "value": range(200)})
    shell.user_ns["frame"] = frame
    cell = """\
import dask.dataframe as dd
from distributed import Client
client = Client()
totals = dd.from_pandas(frame, npartitions=4).groupby("key").value.sum().compute().to_frame()
"""
    shell.run_cell_magic("flyte_dask", "--workers 2", cell)
    expected = frame.groupby("key").value.sum().to_frame()
    pd.testing.assert_frame_equal(shell.user_ns["totals"].sort_index(), expected)


def test_failing_cell_shows_its_own_line_and_changes_nothing(shell):
    shell.user_ns["a"] = "before"
    cell = "a = 1\nb = 2\n1/0\n"
    with pytest.raises(ZeroDivisionError) as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    shown = "\n".join(caught.value._render_traceback_())
    assert "Cell line 4" in shown and "1/0" in shown  # the %%flyte_dask line is line 1
    assert "flytekit" not in shown and "site-packages" not in shown
    assert str(caught.value) == "division by zero"
    assert shell.user_ns["a"] == "before" and "b" not in shell.user_ns
    assert magics(shell).runs[-1].status == "failed"


def test_failing_cell_fails_run_cell(shell):
    result = shell.run_cell("%%flyte_dask --workers 1\nx = 1\nraise ValueError('boom')\n")
    assert isinstance(result.error_in_exec, ValueError)
    assert "x" not in shell.user_ns


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--workers 0", "--workers: must be a whole number >= 1, got 0"),
        ("--worker-mem 32Gx", "--worker-mem: '32Gx' is not a Kubernetes quantity"),
        ("--worker-cpu abc", "--worker-cpu: 'abc' is not a Kubernetes CPU quantity"),
        ("--bogus", "unrecognized arguments: --bogus"),
        ("--out 1x", "--out: '1x' is not a valid Python name"),
        ("--cache-version v1", "--cache-version needs --cache"),
    ],
)
def test_bad_flags_give_one_clear_message_and_start_nothing(shell, line, message):
    runs = len(magics(shell).runs)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        shell.run_cell_magic("flyte_dask", line, "x = 1\n")
    assert len(magics(shell).runs) == runs
    assert "x" not in shell.user_ns


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("x = 1\ny = (\n", "line 3"),
        ("from os.path import *\n", "line 2: star imports"),
        ("y = undefined_name + 1\n", "name 'undefined_name' is not defined"),
        ("!ls\n", r"shell commands \(`!cmd`\) cannot run inside a Flyte task"),
    ],
)
def test_bad_cells_give_one_clear_message_and_start_nothing(shell, cell, message):
    runs = len(magics(shell).runs)
    with pytest.raises(UsageError, match=message):
        shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    assert len(magics(shell).runs) == runs


def test_cache_hit_returns_equal_outputs_without_a_cluster(shell):
    define_inc(shell, n=7)
    cell = (
        "from distributed import Client\n"
        "client = Client()\n"
        "squares = client.gather(client.map(inc, range(n)))\n"
    )
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache --out first", cell)
    first = shell.user_ns["first"]
    assert first.status == "succeeded" and "starting cluster" in first.phases
    assert first.cache_stored and "cache: miss, stored" in first.summary_text()
    shell.user_ns.pop("squares")
    start = time.perf_counter()
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache --out second", cell)
    elapsed = time.perf_counter() - start
    second = shell.user_ns["second"]
    assert shell.user_ns["squares"] == [i + 1 for i in range(7)]
    assert second.status == "cached" and second.cache_hit
    assert "starting cluster" not in second.phases and second.dashboard_link is None
    assert elapsed < 1.0
    # a different input is a cache miss
    shell.user_ns["n"] = 3
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache --out third", cell)
    assert shell.user_ns["third"].status == "succeeded"
    assert shell.user_ns["squares"] == [1, 2, 3]


def test_killed_worker_does_not_change_the_result(shell):
    cell = """\
import os
import signal
import time
from distributed import Client
client = Client()
def slow_double(x):
    time.sleep(0.05)
    return 2 * x
futures = client.map(slow_double, range(60))
time.sleep(0.3)
victim = sorted(client.run(os.getpid).values())[0]
os.kill(victim, signal.SIGKILL)
doubled = client.gather(futures)
"""
    shell.run_cell_magic("flyte_dask", "--workers 2", cell)
    assert shell.user_ns["doubled"] == [2 * i for i in range(60)]


def test_keyboard_interrupt_tears_the_cluster_down(shell):
    run_list = magics(shell).runs
    interrupt_when_running(shell, delay=0.5)
    cell = "import time\nfrom distributed import Client\nClient().submit(time.sleep, 60).result()\n"
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("flyte_dask", "--workers 2", cell)
    assert run_list[-1].status == "interrupted"
    # the no_leaks fixture checks that no process, cluster, client or scratch dir is left


def test_overrides_and_run_handle(shell):
    shell.user_ns.update(a=2, b=3)
    cell = "c = a * b\nd = c + 1\n"
    shell.run_cell_magic("flyte_dask", "--workers 1 --outputs d --out handle --name my_task", cell)
    assert shell.user_ns["d"] == 7 and "c" not in shell.user_ns
    handle = shell.user_ns["handle"]
    assert handle.name == "my_task" and handle.status == "succeeded"
    assert handle.outputs == {"d": 7}
    assert handle.version and set(handle.phases) >= {"packaging", "starting cluster", "running"}
    bundle = handle._repr_mimebundle_()
    assert "my_task" in bundle["text/plain"] and "<table" in bundle["text/html"]


def test_inputs_override_limits_what_is_sent(shell):
    shell.user_ns.update(a=2)
    with pytest.raises(UsageError, match="missing"):
        shell.run_cell_magic("flyte_dask", "--inputs missing", "x = 1\n")


def test_print_output_reaches_the_cell(shell, capsys):
    shell.run_cell_magic("flyte_dask", "--workers 1", "print('hello from the task')\n")
    assert "hello from the task" in capsys.readouterr().out


def test_help_is_generated_from_the_parser(shell):
    doc = magics(shell).flyte_dask.__doc__
    for flag in ("--workers", "--worker-mem", "--scheduler-cpu", "--cache", "--out", "--remote"):
        assert flag in doc


def test_unclosed_quote_is_a_usage_error(shell):
    with pytest.raises(UsageError, match="No closing quotation"):
        shell.run_cell_magic("flyte_dask", "--image 'unclosed", "x = 1\n")
