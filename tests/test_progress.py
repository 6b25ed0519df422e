"""Live progress, run summaries, readable errors and the run table (real widgets, real clusters)."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime

import pytest
from IPython.core.error import UsageError
from shell_helpers import interrupt_when_running, magics

from dask_flyte_jupyter.display import QuietView, TextView, WidgetView
from dask_flyte_jupyter.run import report_anchor

SUCCESS = ["packaging", "starting cluster", "running", "stopping cluster", "gathering results"]


@pytest.fixture
def widget_mode(monkeypatch):
    monkeypatch.setenv("FLYTE_DASK_PROGRESS", "widget")


def test_widget_view_of_a_successful_run_counts_every_task(shell, widget_mode):
    cell = (
        "from distributed import Client\nclient = Client()\n"
        "values = client.gather(client.map(lambda x: x * 2, range(500)))\n"
    )
    shell.run_cell_magic("flyte_dask", "--workers 2 --out run", cell)
    run = shell.user_ns["run"]
    view = run.view
    assert isinstance(view, WidgetView)
    assert view.history == [*SUCCESS, "succeeded"]
    assert run.tasks.total == 500 and run.tasks.done == 500
    assert (view.bar.max, view.bar.value) == (500, 500)
    assert "500/500 done" in view.tasks.value
    assert "dask dashboard" not in view.header.value  # its cluster is gone (test_reports.py)
    summary = run.summary_text()
    assert "500 of 500 done" in summary and "values: list (len 500)" in summary


def test_widget_view_of_a_cached_run(shell, widget_mode):
    cell = "import time\nstamp = 42\n"
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache --cache-version progress-1", cell)
    shell.run_cell_magic(
        "flyte_dask", "--workers 1 --cache --cache-version progress-1 --out r", cell
    )
    run = shell.user_ns["r"]
    assert run.view.history == ["packaging", "gathering results", "cached"]
    assert "cache: hit" in run.summary_text()


def test_widget_view_of_a_failing_run(shell, widget_mode):
    with pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("flyte_dask", "--workers 1", "a = 1\n1/0\n")
    run = magics(shell).runs[-1]
    assert run.view.history == ["packaging", "starting cluster", "running", "failed"]
    assert run.failed_phase == "running"
    assert "status: failed" in run.summary_text()


def test_widget_view_of_an_interrupted_run(shell, widget_mode):
    runs = magics(shell).runs
    interrupt_when_running(shell)
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("flyte_dask", "--workers 1", "import time\ntime.sleep(60)\n")
    assert runs[-1].view.history == ["packaging", "starting cluster", "running", "interrupted"]


def test_text_fallback_without_widget_support(shell, capsys, monkeypatch):
    monkeypatch.delenv("FLYTE_DASK_PROGRESS", raising=False)
    shell.run_cell_magic("flyte_dask", "--workers 1 --out run", "x = 5\n")
    run = shell.user_ns["run"]
    assert isinstance(run.view, TextView)  # a plain InteractiveShell has no widget frontend
    out = capsys.readouterr().out
    assert f"flyte_dask: {run.name}: starting cluster…" in out
    assert "status: succeeded" in out  # the static summary at the end


def test_no_progress_keeps_the_summary(shell, capsys, widget_mode):
    shell.run_cell_magic("flyte_dask", "--workers 1 --no-progress --out run", "x = 5\n")
    run = shell.user_ns["run"]
    assert isinstance(run.view, QuietView)
    out = capsys.readouterr().out
    assert "status: succeeded" in out and "starting cluster…" not in out


def test_error_in_the_cell_shows_cell_line_3(shell):
    cell = "a = 1\n1/0\n"  # the %%flyte_dask line is line 1, so 1/0 is on line 3
    with pytest.raises(ZeroDivisionError) as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    shown = caught.value._render_traceback_()
    assert shown[1:3] == ["  Cell line 3", "    1/0"]
    assert shown[-2] == "ZeroDivisionError: division by zero"
    assert shown[-1].startswith("flyte_dask: the cell failed while running")
    assert not any("flytekit" in line or "distributed" in line for line in shown)


def test_error_in_a_dask_task_on_a_worker_shows_the_task_line(shell):
    shell.run_cell(
        "def explode(x):\n    if x == 3:\n        raise ValueError(f'bad {x}')\n    return x"
    )
    cell = (
        "from distributed import Client\nclient = Client()\n"
        "values = client.gather(client.map(explode, range(5)))\n"
    )
    with pytest.raises(ValueError, match="bad 3") as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    shown = "\n".join(caught.value._render_traceback_())
    assert "Cell line 4" in shown  # the gather line of the cell
    assert "in explode" in shown and "raise ValueError(f'bad {x}')" in shown
    assert "site-packages" not in shown


def test_output_that_cannot_be_converted_is_explained(shell):
    cell = "count: int = 'not a number'\n"
    with pytest.raises(Exception) as caught:  # flytekit's own error type
        shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    shown = "\n".join(caught.value._render_traceback_())
    assert "could not be converted to its Flyte type" in shown
    assert "count" not in shell.user_ns


def test_worker_prints_and_warnings_reach_the_cell(shell, capsys):
    cell = (
        "import warnings\nfrom distributed import Client\nclient = Client()\n"
        "def noisy(x):\n    print(f'hello from task {x}')\n"
        "    warnings.warn('careful on the worker')\n    return x\n"
        "client.gather(client.map(noisy, range(2)))\n"
    )
    shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    captured = capsys.readouterr()
    assert "hello from task 0" in captured.out and "hello from task 1" in captured.out
    assert "careful on the worker" in captured.err


def test_runs_table_lists_this_kernels_runs(shell):
    shell.run_cell_magic("flyte_dask", "--workers 1 --name first_run", "x = 1\n")
    with pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("flyte_dask", "--workers 1 --name second_run", "y = 1/0\n")
    table = shell.run_line_magic("flyte_dask_runs", "")
    text, html = table.text(), table.html()
    assert "first_run" in text and "succeeded" in text
    assert "second_run" in text and "failed" in text
    assert html.count("<tr>") == len(magics(shell).runs) + 1
    records = [run.to_record() for run in magics(shell).runs]
    assert records[-1]["status"] == "failed" and records[-1]["error"].startswith("ZeroDivision")
    with pytest.raises(UsageError):
        shell.run_line_magic("flyte_dask_runs", "--bogus")


def test_print_output_is_live_in_a_real_kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext dask_flyte_jupyter", timeout=60)
        seen: list[tuple[float, str]] = []

        def hook(msg):
            if msg["msg_type"] == "stream" and "tick" in msg["content"]["text"]:
                seen.append((time.monotonic(), msg["content"]["text"]))

        cell = "%%flyte_dask --workers 1\nimport time\nprint('tick 1')\ntime.sleep(6)\nprint(2)"
        reply = kc.execute_interactive(cell, output_hook=hook, timeout=180)
        ended = time.monotonic()
        assert reply["content"]["status"] == "ok"
        first = next(t for t, text in seen if "tick 1" in text)
        assert ended - first > 3, "the first print arrived only at the end of the cell"
        assert len(seen) == 1  # "2" is not a tick; the first print came once
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_status_counts_workers_while_the_cluster_starts():
    from dask_flyte_jupyter.display import _status_text
    from dask_flyte_jupyter.run import RunHandle
    from dask_flyte_jupyter.spec import ClusterSpec

    handle = RunHandle(name="t", spec=ClusterSpec())
    handle.begin("starting cluster")
    handle.workers = (1, 4)
    assert _status_text(handle) == "starting cluster (workers up 1/4)"
    handle.begin("running")
    assert _status_text(handle) == "running"


def test_summary_shows_sizes_and_a_clickable_report(shell):
    shell.run_cell_magic(
        "flyte_dask",
        "--workers 2 --out run",
        "import numpy as np\nfrom distributed import Client\nclient = Client()\n"
        "grid = np.zeros((10, 20))\n",
    )
    run = shell.user_ns["run"]
    assert run.workers == (2, 2)
    assert "grid: ndarray (10 x 20, 1.6 KiB)" in run.summary_text()
    # the ended run links its saved report, not the dashboard of a cluster that is gone
    assert run.dashboard_link is None and "dask dashboard" not in run.summary_html()
    assert report_anchor(run.report_path) in run.summary_html()


def test_requested_shape_always_names_the_worker_count():
    from dask_flyte_jupyter.run import requested_text
    from dask_flyte_jupyter.spec import spec_from_options

    words = requested_text(spec_from_options({"worker-mem": "1Gi"}))
    assert words == "2 workers, 1Gi memory per worker"
    assert requested_text(spec_from_options({"workers": 1, "cache": True})) == "1 worker, cached"
    every = spec_from_options(
        {
            "workers": 3,
            "worker-cpu": "500m",
            "worker-gpu": 1,
            "scheduler-cpu": "2",
            "scheduler-mem": "2Gi",
            "interruptible": True,
            "image": "img:1",
        }
    )
    assert requested_text(every) == (
        "3 workers, 500m CPU per worker, 1 GPU per worker, scheduler 2 CPU and 2Gi memory, "
        "interruptible workers, image img:1"
    )
    assert "--" not in requested_text(every)


SCALED_DOWN = "--workers 1 --worker-cpu 64"  # more threads than any test machine has cores


def test_notes_are_not_stderr_and_show_once_in_text_mode(shell, capsys, monkeypatch):
    monkeypatch.setenv("FLYTE_DASK_PROGRESS", "text")
    shell.run_cell_magic("flyte_dask", f"{SCALED_DOWN} --out run", "x = 5\n")
    run = shell.user_ns["run"]
    assert run.notes, "the request was not scaled down"
    out, err = capsys.readouterr()
    assert "flyte_dask" not in err
    for note in run.notes:
        assert out.count(note) == 1, out
    assert out.index(f"flyte_dask: note: {run.notes[0]}") < out.index("status: succeeded")


def test_notes_show_in_the_live_view_then_once_in_the_summary(shell, capsys, widget_mode):
    published: list[dict] = []
    publish = shell.display_pub.publish  # IPython's: records what the cell output gets

    def record(data, **kwargs):
        published.append(data)
        return publish(data, **kwargs)

    shell.display_pub.publish = record
    try:
        shell.run_cell_magic("flyte_dask", f"{SCALED_DOWN} --out run", "x = 5\n")
    finally:
        shell.display_pub.publish = publish
    run = shell.user_ns["run"]
    note = run.notes[0]
    assert note in run.view.notes.value  # the live view showed it
    assert note not in capsys.readouterr().err
    summary = published[-1]  # replaces the live view
    assert summary["text/plain"].count(note) == 1 and summary["text/html"].count(note) == 1


FIRST_OUTPUT = """
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "dask_flyte_jupyter")
seen = []
publish = shell.display_pub.publish

def record(data, **kwargs):
    seen.append((time.perf_counter(), "flytekit" in sys.modules))
    return publish(data, **kwargs)

shell.display_pub.publish = record
started = time.perf_counter()
shell.run_cell_magic("flyte_dask", "--workers 1", "x = 1\\n")
print(json.dumps({"started": started, "seen": seen, "ended": time.perf_counter()}))
"""


def test_the_live_view_shows_before_flytekit_is_imported_and_the_task_built():
    import json
    import subprocess
    import sys

    env = {**os.environ, "FLYTE_DASK_PROGRESS": "widget"}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_OUTPUT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    first_at, flytekit_loaded = timing["seen"][0]
    assert not flytekit_loaded  # shown before the slow steps: importing flytekit, the build
    waited = first_at - timing["started"]
    print(f"first output after {waited:.2f}s of a {timing['ended'] - timing['started']:.1f}s run")
    assert waited < 1.5


def test_two_runs_of_one_cell_are_told_apart(shell, widget_mode):
    for out in ("first", "second"):
        shell.run_cell_magic("flyte_dask", f"--workers 1 --out {out}", "x = 5\n")
    first, second = shell.user_ns["first"], shell.user_ns["second"]
    assert first.name == second.name
    assert second.run_number == first.run_number + 1
    records = [first.to_record(), second.to_record()]
    assert records[0]["label"] != records[1]["label"]
    assert records[1]["label"].startswith(f"{second.name} · run {second.run_number} · ")
    assert records[1]["run_number"] == len(magics(shell).runs)
    datetime.fromisoformat(records[1]["started"])  # stays ISO: the sidebar parses it
    assert second.label in dict(second.summary_rows())["task"]
    assert second.label in second.view.header.value


def test_an_interrupted_run_says_what_happened(shell, widget_mode):
    interrupt_when_running(shell)
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("flyte_dask", "--workers 1", "import time\ntime.sleep(60)\n")
    record = magics(shell).runs[-1].to_record()
    assert record["error"] == (
        "interrupted (KeyboardInterrupt) while running; the cluster was shut down"
    )
    table = shell.run_line_magic("flyte_dask_runs", "")
    assert "interrupted (KeyboardInterrupt) while running" in table.text()


def test_run_table_is_newest_first_with_local_times_and_errors(shell):
    shell.run_cell_magic("flyte_dask", "--workers 1 --name older_run", "x = 1\n")
    with pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("flyte_dask", "--workers 1 --name newer_run", "y = 1/0\n")
    table = shell.run_line_magic("flyte_dask_runs", "")
    text, html = table.text(), table.html()
    assert text.index("newer_run") < text.index("older_run")
    header = text.splitlines()[0].split()
    assert "error" in header
    newest = table.rows[0]
    assert newest[header.index("error")] == "ZeroDivisionError: division by zero"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", newest[header.index("started")])  # today
    assert "T" not in newest[header.index("started")]
    assert "text-align: left" in html and "<th style='text-align: left" in html


def test_start_times_of_other_days_show_the_date():
    from datetime import date

    from dask_flyte_jupyter.display import started_text

    started = datetime(2026, 11, 30, 15, 30, 12)
    assert started_text(started, today=date(2026, 11, 30)) == "15:30:12"
    assert started_text(started, today=date(2026, 12, 1)) == "2026-11-30 15:30:12"


def test_no_empty_bar_while_the_cluster_starts(shell):
    from dask_flyte_jupyter.run import RunHandle, TaskCounts
    from dask_flyte_jupyter.spec import ClusterSpec

    handle = RunHandle(name="t", spec=ClusterSpec(), run_number=2)
    handle.begin("starting cluster")
    handle.workers = (1, 2)
    view = WidgetView()
    try:
        view.render(handle)
        assert view.bar.layout.display == "none"  # hidden: no tasks yet
        assert "starting cluster (workers up 1/2)" in view.header.value
        assert handle.label in view.header.value
        handle.begin("running")
        handle.task_source = lambda: TaskCounts(total=4, done=1, processing=3)
        view.render(handle)
        assert view.bar.layout.display == "" and (view.bar.value, view.bar.max) == (1, 4)
    finally:
        view.widget.close()


def test_a_run_that_cannot_start_leaves_no_live_view(shell, widget_mode):
    published: list[tuple[dict, dict]] = []
    publish = shell.display_pub.publish

    def record(data, **kwargs):
        published.append((data, kwargs))
        return publish(data, **kwargs)

    shell.display_pub.publish = record
    runs = len(magics(shell).runs)
    try:
        with pytest.raises(UsageError, match="cannot build the task"):
            shell.run_cell_magic("flyte_dask", "--workers 1", "flyte_dask_value = 1\n")
    finally:
        shell.display_pub.publish = publish
    assert len(magics(shell).runs) == runs  # not recorded: it never started
    (first, _), (last, options) = published[0], published[-1]
    assert "application/vnd.jupyter.widget-view+json" in first  # shown at once
    assert last == {"text/plain": ""} and options.get("update")  # then taken back
