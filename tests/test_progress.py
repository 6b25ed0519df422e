"""Live progress, run summaries, readable errors and the run table (real widgets, real clusters)."""

from __future__ import annotations

import time

import pytest
from IPython.core.error import UsageError
from shell_helpers import interrupt_when_running, magics

from dask_flyte_jupyter.display import QuietView, TextView, WidgetView

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
    assert run.dashboard_link in view.header.value
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


def test_summary_shows_sizes_and_a_clickable_dashboard(shell):
    shell.run_cell_magic(
        "flyte_dask",
        "--workers 2 --out run",
        "import numpy as np\nfrom distributed import Client\nclient = Client()\n"
        "grid = np.zeros((10, 20))\n",
    )
    run = shell.user_ns["run"]
    assert run.workers == (2, 2)
    assert "grid: ndarray (10 x 20, 1.6 KiB)" in run.summary_text()
    assert f"<a href='{run.dashboard_link}'" in run.summary_html()


def test_requested_shape_always_names_the_worker_count():
    from dask_flyte_jupyter.run import requested_text
    from dask_flyte_jupyter.spec import spec_from_options

    assert requested_text(spec_from_options({"worker-mem": "1Gi"})) == "2 workers --worker-mem 1Gi"
    assert requested_text(spec_from_options({"workers": 1, "cache": True})) == "1 worker --cache"
