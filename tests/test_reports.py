"""The dask dashboard while a cell runs, and the performance report every run leaves behind.

Real IPython shell, real local clusters, real HTTP requests to the live dashboard. The reports
go to ``.flyte_dask/`` in the kernel's working directory: each test runs in its own directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from shell_helpers import INCREMENT, define_inc, magics

from dask_flyte_jupyter import reports
from dask_flyte_jupyter.run import report_anchor

#: Cell code that fetches the live run's dashboard link (the handle's, as the summary, the run
#: table and the sidebar show it) while the cell runs.
FETCH_DASHBOARD = """\
import urllib.request
import IPython
from distributed import Client
client = Client()
total = sum(client.gather(client.map(abs, range(30))))
live = IPython.get_ipython().magics_manager.registry["FlyteDaskMagics"].runs[-1]
link = live.dashboard_link
record_link = live.to_record()["dashboard"]
header = live.view.header.value if live.view is not None and hasattr(live.view, "header") else ""
pages = {}
for page in ("status", "individual-task-stream"):
    with urllib.request.urlopen(link.removesuffix("/status") + "/" + page, timeout=30) as reply:
        pages[page] = (reply.status, reply.read().decode("utf-8", "replace"))
del live
"""
NAME = re.compile(r"^\.flyte_dask/[A-Za-z0-9_-]+-\d{8}-\d{6}-r\d+(-\d+)?\.html$")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The kernel's working directory for the test (the notebook's directory under Jupyter)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert reports.wait(60), "a report was still being written"


def report_file(workdir: Path, run) -> Path:
    assert run.report_path is not None and NAME.match(run.report_path), run.report_path
    assert reports.wait(60)
    return workdir / run.report_path


def test_the_live_dashboard_answers_and_the_finished_run_links_its_report(shell, workdir):
    shell.run_cell_magic("flyte_dask", "--workers 2 --name dash-cell --out run", FETCH_DASHBOARD)
    ns = shell.user_ns
    assert ns["total"] == sum(range(30))
    link = ns["link"]
    assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
    assert ns["record_link"] == link  # the sidebar's record has it while the cluster is up
    for page in ("status", "individual-task-stream"):
        status, body = ns["pages"][page]
        assert status == 200, page
        assert "bokeh" in body.lower(), page  # a real bokeh page, not distributed's fallback
        assert "needs bokeh" not in body.lower(), page

    run = ns["run"]
    # no dead link once the cluster is gone: the report instead of the dashboard
    record = run.to_record()
    assert record["dashboard"] is None and run.dashboard_link is None
    assert record["report"] == run.report_path
    rows = dict(run.summary_rows())
    assert "dashboard" not in rows and rows["report"] == run.report_path
    summary = run.summary_html()
    assert report_anchor(run.report_path) in summary and "dask dashboard" not in summary
    assert run.report_path.startswith(".flyte_dask/dash-cell-")
    assert run.report_path.endswith(f"-r{run.run_number}.html")

    # the report is whole when the cell ends, and no thread of the run is still drawing it
    # (one that did let the next cell see a half-imported pandas)
    early = (workdir / run.report_path).read_text()
    assert "number of tasks" in early and 'http-equiv="refresh"' not in early
    assert not [t for t in threading.enumerate() if t.name.startswith("flyte-dask")]
    page = report_file(workdir, run).read_text()
    assert "<title>Dask Performance Report</title>" in page
    assert re.search(r"number of tasks: (\d+)", page)[1] == "30"
    assert "Workers: 2" in page and "abs" in page  # the task stream names the cell's tasks
    # inline: bokeh's JavaScript is in the file, nothing is fetched from a CDN
    assert "cdn.bokeh.org" not in page and "Bokeh" in page and len(page) > 500_000
    assert (workdir / ".flyte_dask" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_the_report_is_drawn_when_the_cell_runs_inside_an_event_loop(shell, workdir):
    # ipykernel runs a cell's code inside its running event loop, where asyncio.run refuses.
    define_inc(shell)

    async def as_a_kernel_runs_it() -> None:
        shell.run_cell_magic("flyte_dask", "--workers 1 --out run", INCREMENT)

    asyncio.run(as_a_kernel_runs_it())
    run = shell.user_ns["run"]
    page = report_file(workdir, run).read_text()
    assert "No report of" not in page, page[:500]
    assert "number of tasks" in page and "<title>Dask Performance Report</title>" in page
    assert not [t for t in threading.enumerate() if t.name.startswith("flyte-dask")]


def test_the_dashboard_link_in_the_live_view_is_styled_and_marked(shell, workdir, monkeypatch):
    monkeypatch.setattr("dask_flyte_jupyter.display.progress_mode", lambda shell: "widget")
    shell.run_cell_magic("flyte_dask", "--workers 1 --out run", FETCH_DASHBOARD)
    header, link = shell.user_ns["header"], shell.user_ns["link"]
    root = link.removesuffix("/status")
    assert f'href="{link}"' in header and f'data-flyte-dask-dashboard="{root}"' in header
    assert 'class="flyte-dask-link"' in header and "text-decoration: underline" in header
    view = shell.user_ns["run"].view
    assert "dask dashboard" not in view.header.value  # the ended view has no dead link


def test_two_runs_of_one_cell_have_their_own_reports(shell, workdir):
    define_inc(shell)
    shell.run_cell_magic("flyte_dask", "--workers 1 --out first", INCREMENT)
    shell.run_cell_magic("flyte_dask", "--workers 1 --out second", INCREMENT)
    first, second = shell.user_ns["first"], shell.user_ns["second"]
    assert first.report_path != second.report_path
    assert first.run_number < second.run_number
    assert report_file(workdir, first).read_text() != report_file(workdir, second).read_text()


def test_a_failed_run_still_leaves_its_report(shell, workdir):
    cell = (
        "from distributed import Client\nclient = Client()\n"
        "client.gather(client.map(abs, range(5)))\n1 / 0\n"
    )
    with pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    run = magics(shell).runs[-1]
    assert run.status == "failed"
    assert run.to_record()["dashboard"] is None
    page = report_file(workdir, run).read_text()
    assert re.search(r"number of tasks: (\d+)", page)[1] == "5"


def test_a_cache_hit_has_no_cluster_so_no_report_and_no_link(shell, workdir):
    cell = "import time\nstamp = 42\n"
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache --cache-version rep1 --out a", cell)
    shell.run_cell_magic("flyte_dask", "--workers 1 --cache --cache-version rep1 --out b", cell)
    hit = shell.user_ns["b"]
    assert hit.status == "cached"
    record = hit.to_record()
    assert record["report"] is None and record["dashboard"] is None
    assert "report" not in dict(hit.summary_rows())
    assert len(list((workdir / ".flyte_dask").glob("*.html"))) == 1  # the miss's only


def test_a_run_that_never_started_a_cluster_leaves_no_folder(shell, workdir):
    with pytest.raises(UsageError):
        shell.run_cell_magic("flyte_dask", "--workers 0", "x = 1\n")
    assert not (workdir / ".flyte_dask").exists()


def test_report_names_tell_runs_apart_and_stay_unique(workdir):
    started = datetime(2026, 12, 1, 15, 30, 12)
    assert (
        reports.report_file_name("inc cell/1", started, 3) == "inc-cell-1-20261201-153012-r3.html"
    )
    first, relative = reports.new_report_path("inc", started, 3)
    again, relative_again = reports.new_report_path("inc", started, 3)  # another kernel, same run
    assert relative == ".flyte_dask/inc-20261201-153012-r3.html" and first.exists()
    assert relative_again == ".flyte_dask/inc-20261201-153012-r3-2.html" and again != first


def test_the_folder_keeps_only_the_newest_reports(workdir):
    folder = reports.reports_dir()
    for i in range(reports.KEEP + 5):
        (folder / f"old-{i}.html").write_text("x")
        os.utime(folder / f"old-{i}.html", (time.time() - 1000 + i, time.time() - 1000 + i))
    file, _ = reports.new_report_path("new", datetime.now(), 1)
    kept = sorted(p.name for p in folder.glob("*.html"))
    assert len(kept) == reports.KEEP and file.name in kept
    assert "old-0.html" not in kept and "old-5.html" not in kept and "old-6.html" in kept
    assert (folder / ".gitignore").exists()


def test_a_remote_run_brings_its_report_back_like_a_local_one(shell, workdir, admin):
    """The job runner (the stand-in's, running the task's real container args) makes the report
    from its scheduler and returns it as a file output; the kernel saves it in .flyte_dask/."""
    admin.clear_calls()
    admin.fake_versions = {}
    line = f"--remote --config {admin.config_path} --image registry.example/team/cells:1"
    cell = (
        "from distributed import Client\nclient = Client()\n"
        "total = sum(client.gather(client.map(abs, range(12))))\n"
    )
    shell.run_cell_magic("flyte_dask", f"{line} --workers 2 --out run", cell)
    run = shell.user_ns["run"]
    assert run.status == "succeeded" and shell.user_ns["total"] == sum(range(12))
    assert run.report_path.startswith(f".flyte_dask/{run.name}-")
    record = run.to_record()
    assert record["report"] == run.report_path and record["dashboard"] is None
    assert report_anchor(run.report_path) in run.summary_html()
    page = (workdir / run.report_path).read_text()
    assert "<title>Dask Performance Report</title>" in page and "cdn.bokeh.org" not in page
    assert re.search(r"number of tasks: (\d+)", page)[1] == "12"
    assert "Workers: 2" in page
    # an internal output: not among the cell's outputs
    assert "flyte_dask_performance_report" not in shell.user_ns
    assert "flyte_dask_performance_report" not in run.to_record()["outputs"]
