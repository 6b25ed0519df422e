"""How a run shows under the cell: a live view while it runs, a static summary when it ends.

In a Jupyter frontend the live view is an ipywidgets view; elsewhere (terminal IPython, headless
nbclient/nbconvert) it is plain text. When the run ends, the widget's output is replaced by the
static summary (HTML and text), so a saved notebook holds no widget that needs a live kernel.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Protocol

from .run import FINAL, RunHandle, dashboard_anchor, report_anchor

#: Environment override of the progress view: "widget", "text" or "none".
MODE_VARIABLE = "FLYTE_DASK_PROGRESS"
#: The live view refreshes at most this often (seconds): about 10 updates a second.
REFRESH = 0.1
#: The text view prints task counts at most this often (seconds).
TEXT_INTERVAL = 5.0


def progress_mode(shell: Any) -> str:
    """ "widget" where a frontend renders widgets, else "text"."""
    forced = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if forced in ("widget", "text", "none"):
        return forced
    in_kernel = getattr(shell, "kernel", None) is not None
    # Kernels started by a Jupyter server (JupyterLab, Notebook) or VS Code have a live frontend;
    # nbclient/nbconvert start kernels without these, and render no widgets.
    frontend = any(name in os.environ for name in ("JPY_SESSION_NAME", "VSCODE_PID"))
    return "widget" if in_kernel and frontend else "text"


def _publish(bundle: dict[str, str], display_id: str | None = None, update: bool = False) -> None:
    from IPython.display import publish_display_data

    transient = {"display_id": display_id} if display_id else {}
    publish_display_data(bundle, transient=transient, update=update)  # type: ignore[no-untyped-call]


class View(Protocol):
    def render(self, handle: RunHandle) -> None: ...
    def close(self, handle: RunHandle) -> None: ...


def _phase_text(handle: RunHandle) -> list[tuple[str, str]]:
    """(phase, "1.23s") pairs, the current phase's time still counting."""
    return [(name, f"{seconds:.1f}s") for name, seconds in handle.phase_times().items()]


def _status_text(handle: RunHandle) -> str:
    """The status or current phase; while the cluster starts, how many workers are up."""
    if handle.status in FINAL:
        return handle.status
    phase = handle.current_phase or ""
    up, wanted = handle.workers
    if phase == "starting cluster" and wanted:
        return f"{phase} (workers up {up}/{wanted})"
    if handle.remote_status:
        return f"{phase} ({handle.remote_status}, {handle.duration:.0f}s elapsed)"
    return phase


def _tasks_text(handle: RunHandle) -> str:
    t = handle.tasks
    if not t.total:
        return ""
    erred = f", {t.erred} erred" if t.erred else ""
    return (
        f"tasks {t.done}/{t.total} done (waiting {t.waiting}, processing {t.processing}, "
        f"in memory {t.memory}{erred})"
    )


class WidgetView:
    """The ipywidgets view: phases with times, a task bar, task states, the dashboard link."""

    def __init__(self) -> None:
        import ipywidgets as widgets

        self.header = widgets.HTML()
        self.phases = widgets.HTML()
        self.bar = widgets.IntProgress(min=0, max=1, value=0, layout={"width": "360px"})
        self.bar.layout.display = "none"  # shown once there are tasks: no empty, unlabelled bar
        self.tasks = widgets.HTML()
        self.notes = widgets.HTML()  # informational: the summary shows them when the run ends
        self.widget = widgets.VBox(
            [self.header, self.phases, widgets.HBox([self.bar, self.tasks]), self.notes]
        )
        self.history: list[str] = []  # phases and final status in the order they were shown
        self.display_id = f"flyte-dask-{id(self)}"
        _publish(self._bundle(), self.display_id)

    def _bundle(self) -> dict[str, Any]:
        return self.widget._repr_mimebundle_()  # type: ignore[no-any-return]

    def render(self, handle: RunHandle) -> None:
        shown = handle.status if handle.status in FINAL else handle.current_phase
        if shown and (not self.history or self.history[-1] != shown):
            self.history.append(shown)
        link = f" · {dashboard_anchor(handle.dashboard_link)}" if handle.dashboard_link else ""
        link += "".join(
            f" · <a href='{html.escape(url)}' target='_blank'>{html.escape(label)}</a>"
            for label, url in handle.links.items()
        )
        status = html.escape(_status_text(handle))
        self.header.value = f"<b>{html.escape(handle.label)}</b> · {status}{link}"
        self.phases.value = " → ".join(
            f"{html.escape(name)} <small>{took}</small>" for name, took in _phase_text(handle)
        )
        counts = handle.tasks
        self.bar.max = max(counts.total, 1)
        self.bar.value = counts.done
        self.bar.bar_style = "danger" if counts.erred else ""
        self.bar.layout.display = "" if counts.total else "none"
        self.tasks.value = html.escape(_tasks_text(handle))
        self.notes.value = "".join(
            f"<div style='color: var(--jp-ui-font-color2, #616161)'>note: {html.escape(n)}</div>"
            for n in handle.notes
        )

    def close(self, handle: RunHandle) -> None:
        self.render(handle)
        _publish(_final_bundle(handle), self.display_id, update=True)
        close_widget_tree(self.widget)


class TextView:
    """Plain-text progress: a line per phase, task counts every few seconds, then the summary."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.history: list[str] = []
        self._last_tasks = 0.0
        self._last_text = ""
        self._remote_status = ""
        self._notes_shown = 0  # notes printed so far: the summary leaves them out

    def render(self, handle: RunHandle) -> None:
        shown = handle.status if handle.status in FINAL else handle.current_phase
        if shown and (not self.history or self.history[-1] != shown):
            self.history.append(shown)
            if shown not in FINAL:
                self.stream.write(f"flyte_dask: {handle.name}: {shown}…\n")
        for note in handle.notes[self._notes_shown :]:
            self.stream.write(f"flyte_dask: note: {note}\n")
        self._notes_shown = max(self._notes_shown, len(handle.notes))
        if handle.remote_status and handle.remote_status != self._remote_status:
            self._remote_status = handle.remote_status
            links = "".join(f" · {label}: {url}" for label, url in handle.links.items())
            self.stream.write(
                f"flyte_dask: {handle.remote_status} ({handle.duration:.0f}s elapsed){links}\n"
            )
        now = time.monotonic()
        tasks = _tasks_text(handle)
        if tasks and tasks != self._last_text and now - self._last_tasks >= TEXT_INTERVAL:
            self._last_tasks, self._last_text = now, tasks
            self.stream.write(f"flyte_dask: {tasks}\n")

    def close(self, handle: RunHandle) -> None:
        self.render(handle)
        _publish(_final_bundle(handle, notes=False))  # printed once above, not again


class QuietView:
    """``--no-progress``: nothing while running; the summary at the end."""

    history: Sequence[str] = ()

    def render(self, handle: RunHandle) -> None:
        pass

    def close(self, handle: RunHandle) -> None:
        _publish(_final_bundle(handle))


def _final_bundle(handle: RunHandle, notes: bool = True) -> dict[str, str]:
    """The summary of an ended run; a short line for a run that goes on (``--no-wait``), whose
    handle the cell returns and so displays itself."""
    if handle.status in FINAL:
        return {"text/plain": handle.summary_text(notes), "text/html": handle.summary_html(notes)}
    text = f"flyte_dask: {handle.name}: {handle.remote_status or handle.status}; not waiting for it"
    return {"text/plain": text, "text/html": f"<div>{html.escape(text)}</div>"}


def make_view(mode: str) -> View:
    if mode == "widget":
        try:
            return WidgetView()
        except ImportError:
            return TextView()
    if mode == "text":
        return TextView()
    return QuietView()


def first_view(handle: RunHandle, mode: str) -> View:
    """The run's view, shown at once: before flytekit is imported and the task built (seconds),
    so the cell answers as soon as it runs. ``show_progress(view=...)`` goes on with it."""
    view = make_view(mode)
    view.render(handle)
    return view


def discard_view(view: View) -> None:
    """Takes back a first view whose run never started (a usage error): the error says it."""
    if isinstance(view, WidgetView):
        _publish({"text/plain": ""}, view.display_id, update=True)
        close_widget_tree(view.widget)


def close_widget_tree(widget: Any) -> None:
    """Closes ``widget`` and every widget it holds (children, layout, style). ipywidgets'
    ``close`` closes only the widget itself, and each widget stays registered in the kernel
    until closed: a view left 18 widgets behind per run."""
    from ipywidgets import Widget

    for child in getattr(widget, "children", ()):
        close_widget_tree(child)
    for part in ("layout", "style"):
        owned = getattr(widget, part, None)
        if isinstance(owned, Widget):
            owned.close()
    widget.close()


@contextmanager
def show_progress(handle: RunHandle, mode: str, view: View | None = None) -> Iterator[View]:
    """Shows the run live while the block runs (refreshed at most 10 times a second), then its
    summary. Phase changes and notes render at once, so every phase appears in the view.
    ``view``: one already shown (``first_view``), else a new one for ``mode``."""
    if view is None:
        view = make_view(mode)
    lock = threading.Lock()
    stop = threading.Event()

    def render(*_: object) -> None:
        with lock:
            view.render(handle)

    def on_event(_: RunHandle, event: str) -> None:
        if event.startswith("phase:") or event == "note":
            render()

    def tick() -> None:
        while not stop.wait(REFRESH):
            render()

    render()  # shows the phase the run is already in
    handle.listeners.append(on_event)
    ticker = threading.Thread(target=tick, name="flyte-dask-progress", daemon=True)
    if not isinstance(view, QuietView):
        ticker.start()
    try:
        yield view
    finally:
        stop.set()
        if ticker.is_alive():
            ticker.join()
        handle.listeners.remove(on_event)
        with lock:
            view.close(handle)


class RunTable:
    """``%flyte_dask_runs``: this kernel's runs as a table (HTML and text), newest first."""

    columns = (
        "run",
        "name",
        "status",
        "started",
        "duration",
        "shape",
        "cache",
        "outputs",
        "error",
        "links",
    )

    def __init__(self, runs: Sequence[RunHandle], spare: dict[str, Any] | None = None) -> None:
        self.rows = [self._row(run) for run in reversed(runs)]
        #: The spare cluster waiting for the next cell (``backends/spare.py``), shown under
        #: the runs so that nobody takes it for a leaked one.
        self.spare: str | None = spare["text"] if spare is not None else None

    @staticmethod
    def _row(run: RunHandle) -> tuple[str, ...]:
        run.refresh()  # a run that goes on without the kernel (--no-wait): its status now
        record = run.to_record()
        return (
            str(run.run_number or "-"),
            run.name,
            run.status + (f" ({run.remote_status})" if run.remote_status else ""),
            started_text(run.started_at),
            f"{run.duration:.1f}s",
            record["used"] or "-",
            run.cache_text,
            ", ".join(run.output_info) or "-",
            _one_line(record["error"]),
            _links_text(run),
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self.html()}

    def text(self) -> str:
        spare = f"\n{self.spare}" if self.spare else ""
        if not self.rows:
            return "No %%flyte_dask runs in this kernel yet." + spare
        table = [self.columns, *self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(self.columns))]
        return (
            "\n".join(
                "  ".join(c.ljust(width) for c, width in zip(row, widths, strict=True)).rstrip()
                for row in table
            )
            + spare
        )

    def html(self) -> str:
        spare = f"<p class='flyte-dask-spare'>{html.escape(self.spare)}</p>" if self.spare else ""
        if not self.rows:
            return "<p>No <code>%%flyte_dask</code> runs in this kernel yet.</p>" + spare
        left = "text-align: left; vertical-align: top"  # JupyterLab right-aligns by default
        head = "".join(f"<th style='{left}'>{c}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='{left}'>{_cell_html(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return f"<table class='flyte-dask-runs'><tr>{head}</tr>{body}</table>{spare}"


def started_text(started: datetime, today: date | None = None) -> str:
    """A local start time as people read it: ``15:30:12`` today, else ``2026-11-30 15:30:12``."""
    local = started.astimezone() if started.tzinfo is not None else started
    if local.date() == (today or date.today()):
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


#: The run table's error column shows at most this many characters of the error's first line.
ERROR_WIDTH = 80


def _one_line(text: str | None) -> str:
    if not text:
        return "-"
    first = text.strip().splitlines()[0] if text.strip() else "-"
    return first if len(first) <= ERROR_WIDTH else first[: ERROR_WIDTH - 1] + "…"


def _links_text(run: RunHandle) -> str:
    """The run's report, its live dashboard (only while its cluster is up) and its other links
    (the Flyte console), space-separated; "-" when it has none."""
    links = [run.report_path, run.dashboard_link, *run.links.values()]
    return " ".join(link for link in links if link) or "-"


def _cell_html(value: str) -> str:
    if value.startswith(("http", ".flyte_dask/")):  # a links cell (``_links_text``)
        return " · ".join(_link_html(link) for link in value.split(" "))
    return html.escape(value)


def _link_html(link: str) -> str:
    if link.startswith(".flyte_dask/"):
        return report_anchor(link)
    if "/console/" in link:
        return f"<a href='{html.escape(link)}' target='_blank'>Flyte console</a>"
    return dashboard_anchor(link)
