"""The run handle: what one ``%%flyte_dask`` run did, as it happens and after."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .describe import describe_value, output_type, plural, type_name
from .describe import memory_text as memory_text  # re-exported: errors.py, dask_monitor.py
from .spec import ClusterSpec, LocalShape

#: Final statuses of a run.
FINAL = ("succeeded", "cached", "failed", "interrupted")


@dataclass(frozen=True)
class WorkerRestart:
    """A worker that went over its memory limit and was restarted by its nanny."""

    worker: str  # its address
    memory: int  # bytes it used when it was stopped
    memory_limit: int | None  # bytes it was allowed
    tasks: tuple[str, ...] = ()  # keys of the tasks it was running


@dataclass(frozen=True)
class TaskCounts:
    """Dask tasks of a run: all submitted, finished, and how many are in each state now."""

    total: int = 0
    done: int = 0
    erred: int = 0
    waiting: int = 0
    processing: int = 0
    memory: int = 0
    #: Workers the nanny restarted because they went over their memory limit, oldest first.
    restarts: tuple[WorkerRestart, ...] = ()


@dataclass(frozen=True)
class OutputSummary:
    """What the run's summary says of one output, kept when the output itself is not."""

    type: str  # the type's name, e.g. "ndarray"
    text: str  # "name: type (size)", from metadata only (``describe_value``)


class RunFailedError(Exception):
    """A failed run retold from its summary: the history keeps the error's text, not the error
    (its traceback's frames hold the cell's locals)."""

    def __init__(self, text: str, lines: tuple[str, ...] = ()) -> None:
        super().__init__(text)
        self.lines = lines or (text,)

    def _render_traceback_(self) -> list[str]:
        return list(self.lines)


@dataclass(eq=False)  # a handle is itself; comparing outputs could compute or raise
class RunHandle:
    """Status, timings, outputs and links of one run (``--out VAR`` stores it)."""

    name: str
    spec: ClusterSpec
    backend: str = "local"
    version: str = ""
    #: The run's 1-based position in this kernel's history (``record_run``); 0 until recorded.
    run_number: int = 0
    status: str = "pending"
    started_at: datetime = field(default_factory=datetime.now)
    phases: dict[str, float] = field(default_factory=dict)
    shape: LocalShape | None = None
    notes: list[str] = field(default_factory=list)
    #: The live dask dashboard, only while the run's cluster is up (then None: no dead link).
    dashboard_link: str | None = None
    #: The run's saved dask performance report, relative to the kernel's working directory in
    #: POSIX form (``reports.py``); None when no cluster ran (a cache hit) or none was saved.
    report_path: str | None = None
    # The outputs and the value are the user's objects: their reprs may compute or raise.
    outputs: dict[str, Any] = field(default_factory=dict, repr=False)
    dropped: list[str] = field(default_factory=list)
    value: Any = field(default=None, repr=False)
    error: BaseException | None = None
    #: What the summary, the run table and the sidebar show of the outputs and the error; they
    #: outlive the outputs and the error themselves (see :meth:`summary`).
    output_summaries: dict[str, OutputSummary] = field(default_factory=dict, repr=False)
    error_text: str | None = None
    #: The readable error as the cell showed it (``errors.attach_readable_traceback``).
    error_lines: tuple[str, ...] = field(default=(), repr=False)
    failed_phase: str | None = None
    current_phase: str | None = None
    cache_hit: bool = False
    #: The run missed the cache and its result was stored there (a later equal run hits it).
    cache_stored: bool = False
    #: The outputs are the cell's own objects, not unpickled copies (``by_reference.py``).
    outputs_by_reference: bool = False
    task_source: Callable[[], TaskCounts] | None = field(default=None, repr=False)
    workers: tuple[int, int] = (0, 0)  # (up, wanted) while the cluster starts
    #: Links to show with the run (label -> URL), e.g. the Flyte console of a remote execution.
    links: dict[str, str] = field(default_factory=dict)
    #: A remote backend's own view of the run, e.g. "execution RUNNING, node RUNNING".
    remote_status: str = ""
    #: Further summary rows a backend adds (label -> text), e.g. the execution id and image.
    details: dict[str, str] = field(default_factory=dict)
    #: Package versions by role (job runner, scheduler, workers), where a backend reports them.
    environment: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: Set by backends whose runs go on without the kernel (``--no-wait``).
    follower: Callable[..., Any] | None = field(default=None, repr=False)
    refresher: Callable[[], None] | None = field(default=None, repr=False)
    canceller: Callable[[], None] | None = field(default=None, repr=False)
    view: Any = field(default=None, repr=False)  # the live progress view, while shown
    listeners: list[Callable[[RunHandle, str], None]] = field(default_factory=list, repr=False)
    _phase_start: float = field(default=0.0, repr=False)
    _created: float = field(default_factory=time.perf_counter, repr=False)
    _ended: float | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        """Seconds from start to end (or to now while running)."""
        end = self._ended if self._ended is not None else time.perf_counter()
        return end - self._created

    @property
    def label(self) -> str:
        """What tells runs of one cell apart: ``inc-cell · run 3 · 15:30:12``."""
        number = [f"run {self.run_number}"] if self.run_number else []
        return " · ".join([self.name, *number, self.started_at.strftime("%H:%M:%S")])

    @property
    def tasks(self) -> TaskCounts:
        """Task counts from the cluster's scheduler (zero when no cluster ran)."""
        return self.task_source() if self.task_source is not None else TaskCounts()

    @property
    def cache_text(self) -> str:
        """``hit``, ``miss, stored``, ``miss`` (still running, or failed) or ``off``."""
        if self.cache_hit:
            return "hit"
        if self.cache_stored:
            return "miss, stored"
        return "miss" if self.spec.cache else "off"

    def emit(self, event: str) -> None:
        for listener in list(self.listeners):
            listener(self, event)

    def begin(self, phase: str) -> None:
        """Ends the current phase (recording its time) and starts the next one."""
        self._close_phase()
        self.status = "running"
        self.current_phase = phase
        self._phase_start = time.perf_counter()
        self.phases[phase] = 0.0
        self.emit(f"phase:{phase}")

    def phase_times(self) -> dict[str, float]:
        """Seconds per phase so far, the current phase still counting."""
        times = dict(self.phases)
        if self.current_phase is not None:
            times[self.current_phase] = time.perf_counter() - self._phase_start
        return times

    def _close_phase(self) -> None:
        if self.current_phase is not None:
            self.phases[self.current_phase] = time.perf_counter() - self._phase_start

    def wait(self, timeout: float | None = None) -> Any:
        """Follows a run that was started with ``--no-wait`` until it ends, shows its progress,
        writes its outputs into the notebook and returns the value of the cell's last expression
        (a failed run raises, like the cell would have). ``timeout``: seconds, then terminated."""
        if self.follower is not None and self.status not in FINAL:
            return self.follower(timeout=timeout)
        if self.error is not None:
            raise self.error
        if self.error_text is not None:  # a summary from the history: the error is not kept
            raise RunFailedError(self.error_text, self.error_lines)
        return self.value

    def refresh(self) -> None:
        """Updates the status of a run that goes on without the kernel (``--no-wait``)."""
        if self.refresher is not None and self.status not in FINAL:
            self.refresher()

    def cancel(self) -> None:
        """Stops a run that goes on without the kernel (terminates a remote execution)."""
        if self.canceller is not None and self.status not in FINAL:
            self.canceller()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.emit("note")

    def finish(self, status: str, error: BaseException | None = None) -> None:
        self._close_phase()
        final = self.tasks
        self.task_source = lambda: final  # the cluster is gone; keep its last counts
        if error is not None:
            self.failed_phase = self.current_phase
        self.current_phase = None
        self.status = status
        self.error = error
        self.error_text = _error_text(error) if error is not None else None
        if status == "interrupted" and error is not None:
            self.error_text = interrupted_text(error, self.failed_phase)
        self.output_summaries = self._summarize_outputs()
        self._ended = time.perf_counter()
        self.emit(f"status:{status}")

    def _summarize_outputs(self) -> dict[str, OutputSummary]:
        return {
            name: OutputSummary(output_type(value), describe_value(name, value))
            for name, value in self.outputs.items()
        }

    def current_error_text(self) -> str | None:
        """``Type: message`` of the run's error (its message may be restored after ``finish``);
        for an interrupted run, what happened."""
        if self.status == "interrupted" and self.error_text is not None:
            return self.error_text
        return _error_text(self.error) if self.error is not None else self.error_text

    @property
    def output_info(self) -> dict[str, OutputSummary]:
        """Name, type and size of each output: kept at the end of the run, else from the values."""
        return self.output_summaries or self._summarize_outputs()

    def summary(self) -> RunHandle:
        """This run as the history keeps it once it ended: status, timings, shape, notes, links,
        output names, types and sizes, the error's text; not the outputs, the value or the
        error (whose traceback holds the cell's locals), nor the callbacks of a live run.
        The handle itself, which ``--out VAR`` stores, keeps them."""
        lines = getattr(self.error, "flyte_dask_lines", None)
        return dataclasses.replace(
            self,
            phases=dict(self.phases),
            notes=list(self.notes),
            outputs={},
            dropped=list(self.dropped),
            value=None,
            error=None,
            output_summaries=dict(self.output_info),
            error_text=self.current_error_text(),
            error_lines=tuple(lines) if isinstance(lines, list) else self.error_lines,
            links=dict(self.links),
            details=dict(self.details),
            environment={role: dict(v) for role, v in self.environment.items()},
            follower=None,
            refresher=None,
            canceller=None,
            listeners=[],
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready view of the run, for the run table and the JupyterLab sidebar."""
        return {
            "name": self.name,
            "label": self.label,
            "run_number": self.run_number,
            "version": self.version,
            "backend": self.backend,
            "status": self.status,
            "phase": self.current_phase,
            "started": self.started_at.isoformat(timespec="seconds"),
            "duration": round(self.duration, 3),
            "requested": self.spec.to_options(),
            "used": _shape_text(self.shape) if self.shape is not None else None,
            "cache_hit": self.cache_hit,
            "outputs": {k: info.type for k, info in self.output_info.items()},
            "tasks": {
                "total": self.tasks.total,
                "done": self.tasks.done,
                "erred": self.tasks.erred,
            },
            "dashboard": self.dashboard_link,
            "report": self.report_path,
            "links": dict(self.links),
            "remote_status": self.remote_status or None,
            "error": self.current_error_text(),
        }

    # ---- rendering -------------------------------------------------------------------------

    def summary_rows(self, notes: bool = True) -> list[tuple[str, str]]:
        """The summary's rows; ``notes=False`` leaves out the notes (a text view printed them)."""
        rows = [
            ("task", f"{self.label} (version {self.version})" if self.version else self.label),
            ("status", self.status + (f" ({self.remote_status})" if self.remote_status else "")),
            ("requested", requested_text(self.spec)),
        ]
        if self.shape is not None:
            rows.append(("used", _shape_text(self.shape)))
        tasks = self.tasks
        if tasks.total:
            erred = f", {tasks.erred} erred" if tasks.erred else ""
            rows.append(("tasks", f"{tasks.done} of {tasks.total} done{erred}"))
        if tasks.restarts:
            count = len(tasks.restarts)
            rows.append(
                (
                    "restarts",
                    f"{count} worker{'s' if count > 1 else ''} restarted for going over "
                    "the memory limit (--worker-mem)",
                )
            )
        rows.append(("cache", self.cache_text))
        if self.phases:
            rows.append(("time", ", ".join(f"{k} {v:.2f}s" for k, v in self.phases.items())))
        rows.append(("total", f"{self.duration:.2f}s"))
        outputs = self.output_info
        if outputs:
            rows.append(("outputs", ", ".join(info.text for info in outputs.values())))
        if self.dropped:
            rows.append(("not kept", ", ".join(self.dropped) + " (live cluster objects)"))
        if self.dashboard_link:  # only while the cluster is up
            rows.append(("dashboard", self.dashboard_link))
        if self.report_path:
            rows.append(("report", self.report_path))
        rows.extend(self.details.items())
        rows.extend(self.links.items())
        if notes:
            rows.extend(("note", note) for note in self.notes)
        return rows

    def summary_text(self, notes: bool = True) -> str:
        return "\n".join(f"{key:>10}: {value}" for key, value in self.summary_rows(notes))

    def summary_html(self, notes: bool = True) -> str:
        def value_html(key: str, value: str) -> str:
            if key == "dashboard":
                return dashboard_anchor(value)
            if key == "report":
                return report_anchor(value)
            if key in self.links:  # clickable in JupyterLab
                return f"<a href='{html.escape(value)}' target='_blank'>{html.escape(value)}</a>"
            return html.escape(value)

        cells = "".join(
            f"<tr><th style='text-align:right'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{value_html(k, v)}</td></tr>"
            for k, v in self.summary_rows(notes)
        )
        return f"<table class='flyte-dask-summary'>{cells}</table>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": self.summary_text(), "text/html": self.summary_html()}


@contextlib.contextmanager
def kept_as_summary(runs: list[Any], handle: RunHandle) -> Iterator[None]:
    """Once the block has ended ``handle``'s run, the run history ``runs`` holds its
    :meth:`~RunHandle.summary` instead of the handle: the outputs stay only in the notebook
    (and in a handle the user keeps), a failed run's locals go with its traceback."""
    try:
        yield
    finally:
        if handle.status in FINAL:
            for at, run in enumerate(runs):
                if run is handle:
                    runs[at] = handle.summary()


def start_run(name: str, spec: ClusterSpec, backend: str, runs: list[Any]) -> RunHandle:
    """The handle of a run about to start, in its first phase, numbered as the kernel's next
    run in ``runs`` (``record_run`` records it once the run really starts)."""
    handle = RunHandle(name=name, spec=spec, backend=backend, run_number=len(runs) + 1)
    handle.begin("packaging")
    return handle


def record_run(runs: list[Any], handle: RunHandle) -> None:
    """Adds ``handle`` to the kernel's run history ``runs``, numbering it (1-based)."""
    handle.run_number = len(runs) + 1
    runs.append(handle)


def report_anchor(path: str) -> str:
    """The link to a saved report (``path`` relative to the notebook's directory); the
    JupyterLab extension opens links to ``.flyte_dask/`` through its server route."""
    href = html.escape(path)
    return (
        f'<a href="{href}" target="_blank" data-flyte-dask-report="{href}">performance report</a>'
    )


def dashboard_anchor(url: str) -> str:
    """The link to a live dask dashboard (``url``: its status page or its root)."""
    root = url.removesuffix("/status").rstrip("/")
    return (
        f'<a href="{html.escape(root)}/status" target="_blank" '
        f'data-flyte-dask-dashboard="{html.escape(root)}" class="flyte-dask-link" '
        'style="color: var(--jp-content-link-color, #1976d2); text-decoration: underline">'
        "dask dashboard</a>"
    )


def _shape_text(shape: LocalShape) -> str:
    """``2 workers × 1 thread, 1 GiB each``."""
    memory = f", {memory_text(shape.memory_limit)} each" if shape.memory_limit is not None else ""
    workers = plural(shape.workers, "worker")
    return f"{workers} × {plural(shape.threads_per_worker, 'thread')}{memory}"


def requested_text(spec: ClusterSpec) -> str:
    """The shape asked for in words, the worker count always included:
    ``2 workers, 1Gi memory per worker``."""
    w, s = spec.workers, spec.scheduler
    parts = [plural(w.count, "worker")]
    if w.cpu is not None:
        parts.append(f"{w.cpu} CPU per worker")
    if w.mem is not None:
        parts.append(f"{w.mem} memory per worker")
    if w.gpu:
        parts.append(f"{plural(w.gpu, 'GPU')} per worker")
    if spec.accelerator is not None:
        parts.append(f"accelerator {spec.accelerator}")
    if s.cpu is not None or s.mem is not None:
        scheduler = [f"{s.cpu} CPU" if s.cpu else "", f"{s.mem} memory" if s.mem else ""]
        parts.append("scheduler " + " and ".join(p for p in scheduler if p))
    if spec.interruptible:
        parts.append("interruptible workers")
    if spec.image is not None:
        parts.append(f"image {spec.image}")
    if spec.pod_template is not None:
        parts.append(f"pod template {spec.pod_template}")
    if spec.cache:
        parts.append(f"cached (version {spec.cache_version})" if spec.cache_version else "cached")
    return ", ".join(parts)


def interrupted_text(error: BaseException, phase: str | None) -> str:
    """``interrupted (KeyboardInterrupt) while running; the cluster was shut down``: what the
    interrupt stopped, and what the backend did about it (``flyte_dask_message``)."""
    cluster_up = phase in ("starting cluster", "running", "stopping cluster")
    what = getattr(error, "flyte_dask_message", None) or (
        "the cluster was shut down" if cluster_up else "nothing was kept"
    )
    where = f" while {phase}" if phase else ""
    return f"interrupted ({type_name(error)}){where}; {what}"


def _error_text(error: BaseException) -> str:
    """``Type: message``; just the type when the message cannot be made."""
    try:
        return f"{type_name(error)}: {error}"
    except Exception:
        return type_name(error)
