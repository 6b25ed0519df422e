"""Where the dask performance reports of runs go, what they are called, and how they are made.

Every run whose cluster got up leaves dask's performance report (task stream, worker profiles,
bandwidth, system, scheduler logs), the record that still opens once the cluster is gone:

- in ``.flyte_dask/`` under the kernel's working directory (the notebook's directory under
  Jupyter), named by run: ``<task name>-<start time>-r<run number>.html``;
- drawn with ``mode="inline"`` (bokeh's JavaScript inside the file), so it renders offline;
- only the newest :data:`KEEP` reports stay; the folder holds a ``.gitignore`` that ignores it.

A local report's data is taken from the scheduler while the cluster is still up
(:meth:`LocalRecorder.snapshot`, 5-20 ms on a small cell), and distributed's own
``performance_report`` draws it from that copy as the cell ends, in the cell's own thread.
Drawing takes bokeh about a second; it was done on a background thread once, which let the next
cell's code see a half-imported module (pandas, imported by bokeh meanwhile) and slowed the
kernel's answers right after a cell: a thread that outlives the cell is worse than the second.

Remote runs: the job runner asks its scheduler for the same report (:class:`RemoteRecorder`,
shipped by value in the task's pickle, so this module imports only the standard library at module
level) and returns it as a file output; the backend downloads it here (:func:`new_report_path`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

#: The folder of the reports, in the kernel's working directory.
REPORTS_DIR = ".flyte_dask"
#: How many reports the folder keeps (the oldest go first).
KEEP = 50
#: Passed to bokeh: its JavaScript goes into the file, which then renders without a network.
MODE = "inline"
TITLE = "Dask Performance Report"


# ---- where reports go ----------------------------------------------------------------------


def report_file_name(name: str, started: datetime, run_number: int) -> str:
    """``inc-cell-20261201-153012-r3.html``: the task name, start time and run number."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:60] or "run"
    return f"{slug}-{started:%Y%m%d-%H%M%S}-r{run_number}.html"


def reports_dir(base: Path | None = None) -> Path:
    """The reports folder (made, with a ``.gitignore`` that keeps it out of the repository)."""
    folder = (base or Path.cwd()) / REPORTS_DIR
    folder.mkdir(exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# dask performance reports of %%flyte_dask runs\n*\n")
    return folder


def new_report_path(name: str, started: datetime, run_number: int) -> tuple[Path, str]:
    """A new, unique report file (created empty) and its path relative to the working directory
    in POSIX form, as the run's record gives it. Older reports beyond :data:`KEEP` are removed."""
    folder = reports_dir()
    stem = report_file_name(name, started, run_number).removesuffix(".html")
    for attempt in range(1, 1000):  # another kernel in this directory may have taken the name
        file = folder / (f"{stem}.html" if attempt == 1 else f"{stem}-{attempt}.html")
        try:
            file.touch(exist_ok=False)
            break
        except FileExistsError:
            continue
    prune(folder, keep=KEEP, spare=file)
    return file, f"{REPORTS_DIR}/{file.name}"


def prune(folder: Path, keep: int = KEEP, spare: Path | None = None) -> None:
    """Removes all but the newest ``keep`` reports (``spare`` counts and stays)."""
    reports = []
    for file in folder.glob("*.html"):
        try:
            reports.append((file.stat().st_mtime, file))
        except OSError:  # removed meanwhile
            continue
    reports.sort(key=lambda item: (item[1] != spare, -item[0]))
    for _, file in reports[keep:]:
        with contextlib.suppress(OSError):
            file.unlink()


def write_page(file: Path, text: str) -> None:
    """Writes ``text`` into ``file`` at once: a reader sees the old page or the new one."""
    fd, temporary = tempfile.mkstemp(dir=file.parent, prefix=".writing-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _page(title: str, message: str, reload: bool) -> str:
    refresh = '<meta http-equiv="refresh" content="1">' if reload else ""
    return (
        f'<!doctype html><html><head><meta charset="utf-8">{refresh}'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><p>{html.escape(message)}</p></body></html>\n"
    )


# ---- local runs: data taken while the cluster is up, drawn afterwards ----------------------


class _MonitorCopy:
    """What the report reads of the scheduler's system monitor, copied."""

    def __init__(self, monitor: Any, last_count: int) -> None:
        monitor.update()  # a sample of now: a run shorter than the sampling interval has one
        self.quantities = {name: list(values) for name, values in monitor.quantities.items()}
        self.count = monitor.count
        self._since = monitor.range_query(start=last_count)

    def range_query(self, start: int) -> dict[str, list[Any]]:
        if start >= self.count:
            return {name: [] for name in self._since}
        return {name: list(values) for name, values in self._since.items()}

    def update(self) -> None:
        """Sampling again is the live monitor's job; the copy stays as it was."""


class _SchedulerCopy:
    """What ``Scheduler.performance_report`` reads of its scheduler, copied while it runs, so
    that distributed's own code draws the report after the cluster is gone."""

    def __init__(
        self, scheduler: Any, profiles: dict[str, Any], start: float, last_count: int
    ) -> None:
        self.address = scheduler.address
        self.workers = {
            address: SimpleNamespace(
                address=address, name=ws.name, nthreads=ws.nthreads, memory_limit=ws.memory_limit
            )
            for address, ws in scheduler.workers.items()
        }
        self.bandwidth = scheduler.bandwidth
        self.bandwidth_types = dict(scheduler.bandwidth_types)
        self.bandwidth_workers = dict(scheduler.bandwidth_workers)
        self.monitor = _MonitorCopy(scheduler.monitor, last_count)
        self._logs: list[Any] = scheduler.get_logs(start=start, timestamps=True)
        self._task_stream: list[Any] = scheduler.get_task_stream(start=start)
        self._profiles = profiles

    async def get_profile(
        self, scheduler: bool = False, server: bool = False, start: float | None = None
    ) -> Any:
        return self._profiles["scheduler" if scheduler else "server" if server else "compute"]

    def get_task_stream(self, start: float | None = None) -> list[Any]:
        return self._task_stream

    def get_logs(
        self, start: float = 0, n: int | None = None, timestamps: bool = False
    ) -> list[Any]:
        return self._logs


class LocalRecorder:
    """The report of one local run: started when the cell's code starts, taken before its
    cluster closes."""

    def __init__(self, cluster: Any, code: str) -> None:
        from distributed.diagnostics.task_stream import TaskStreamPlugin

        self.code = code
        scheduler = cluster.scheduler

        async def begin() -> int:  # on the scheduler's loop, which owns its plugins
            if TaskStreamPlugin.name not in scheduler.plugins:
                scheduler.add_plugin(TaskStreamPlugin(scheduler))  # type: ignore[no-untyped-call]
            return int(scheduler.monitor.count)

        self.start = time.time()
        self.last_count = cluster.sync(begin)

    def snapshot(self, cluster: Any) -> _SchedulerCopy:
        """The report's data, while the cluster is up (workers send their profiles)."""
        scheduler = cluster.scheduler
        start = self.start

        async def take() -> _SchedulerCopy:
            compute, admin, server = await asyncio.gather(
                scheduler.get_profile(start=start),
                scheduler.get_profile(scheduler=True, start=start),
                scheduler.get_profile(server=True, start=start),
            )
            profiles = {"compute": compute, "scheduler": admin, "server": server}
            return _SchedulerCopy(scheduler, profiles, start, self.last_count)

        return cluster.sync(take)  # type: ignore[no-any-return]

    def save(self, cluster: Any, file: Path, what: str) -> None:
        """Takes the report's data now (the cluster is up), then draws it into ``file``."""
        copy = self.snapshot(cluster)
        _WRITER.draw(copy, self.start, self.last_count, self.code, file, what)


class _Writer:
    """Draws reports one at a time (bokeh keeps its output settings process-wide)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def draw(
        self, copy: _SchedulerCopy, start: float, last_count: int, code: str, file: Path, what: str
    ) -> None:
        with self._lock:
            try:
                page = _draw(copy, start, last_count, code)
            except Exception as error:  # the link must still open, and say why
                page = _page(TITLE, f"No report of {what}: {error}", reload=False)
            with contextlib.suppress(OSError):  # the folder was removed meanwhile
                write_page(file, page)


_WRITER = _Writer()


def wait(timeout: float | None = None) -> bool:
    """True: every report is written when its cell ends (kept for callers that wait)."""
    return True


def _draw(copy: _SchedulerCopy, start: float, last_count: int, code: str) -> str:
    from distributed.scheduler import Scheduler

    report = Scheduler.performance_report(
        copy,  # type: ignore[arg-type]
        start=start,
        last_count=last_count,
        code=code,
        mode=MODE,
    )
    # A kernel's thread runs an event loop (asyncio.run refuses it there): draw on a thread
    # of its own, joined before the cell ends so nothing of the run outlives it.
    with ThreadPoolExecutor(1, thread_name_prefix="flyte-dask-report") as pool:
        return pool.submit(asyncio.run, report).result()


# ---- remote runs: the job runner asks its scheduler ----------------------------------------


class RemoteRecorder:
    """The report of a remote run, made in the job runner: ``start`` opens the run's session and
    starts the report; ``outputs`` (after the cell's code) adds the report file output to
    ``extra``'s outputs. A report that cannot be made is None (the image may lack bokeh)."""

    def __init__(
        self,
        output: str,
        code: str,
        start_session: Callable[[dict[str, Any]], Any],
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.output = output
        self.code = code
        self.start_session = start_session
        self.extra = extra
        self._session: Any = None
        self._begun: tuple[float, int] | None = None

    def start(self, settings: dict[str, Any]) -> Any:
        session = self._session = self.start_session(settings)
        try:
            client = session.client
            last_count = client.run_on_scheduler(_monitor_count)
            client.get_task_stream(start=0, stop=0)  # the scheduler records the task stream
            self._begun = (time.time(), int(last_count))
        except Exception:  # no report then, but the cell runs
            self._begun = None
        return session

    def outputs(self) -> dict[str, Any]:
        more = self.extra() if self.extra is not None else {}
        return {**more, self.output: self._report_file()}

    def _report_file(self) -> Any:
        if self._begun is None:
            return None
        try:
            from flytekit import current_context
            from flytekit.types.file import FlyteFile

            start, last_count = self._begun
            client = self._session._live_client()  # the cell may have closed its client
            page = client.sync(
                client.scheduler.performance_report,
                start=start,
                last_count=last_count,
                code=self.code,
                mode=MODE,
            )
            # the task's own sandbox, which flytekit removes with the run
            path = os.path.join(current_context().working_directory, "performance-report.html")
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(page)
            return FlyteFile(path)
        except Exception:
            return None


def _monitor_count(dask_scheduler: Any) -> int:
    return int(dask_scheduler.monitor.count)
