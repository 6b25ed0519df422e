"""The run handle: what one ``%%flyte_dask`` run did, as it happens and after."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .spec import ClusterSpec, LocalShape

#: Final statuses of a run.
FINAL = ("succeeded", "cached", "failed", "interrupted")


@dataclass(frozen=True)
class TaskCounts:
    """Dask tasks of a run: all submitted, finished, and how many are in each state now."""

    total: int = 0
    done: int = 0
    erred: int = 0
    waiting: int = 0
    processing: int = 0
    memory: int = 0


@dataclass
class RunHandle:
    """Status, timings, outputs and links of one run (``--out VAR`` stores it)."""

    name: str
    spec: ClusterSpec
    backend: str = "local"
    version: str = ""
    status: str = "pending"
    started_at: datetime = field(default_factory=datetime.now)
    phases: dict[str, float] = field(default_factory=dict)
    shape: LocalShape | None = None
    notes: list[str] = field(default_factory=list)
    dashboard_link: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    value: Any = None
    error: BaseException | None = None
    failed_phase: str | None = None
    current_phase: str | None = None
    cache_hit: bool = False
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
    def tasks(self) -> TaskCounts:
        """Task counts from the cluster's scheduler (zero when no cluster ran)."""
        return self.task_source() if self.task_source is not None else TaskCounts()

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
        self._ended = time.perf_counter()
        self.emit(f"status:{status}")

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready view of the run, for the run table and the JupyterLab sidebar."""
        return {
            "name": self.name,
            "version": self.version,
            "backend": self.backend,
            "status": self.status,
            "phase": self.current_phase,
            "started": self.started_at.isoformat(timespec="seconds"),
            "duration": round(self.duration, 3),
            "requested": self.spec.to_options(),
            "used": _shape_text(self.shape) if self.shape is not None else None,
            "cache_hit": self.cache_hit,
            "outputs": {k: type(v).__name__ for k, v in self.outputs.items()},
            "tasks": {
                "total": self.tasks.total,
                "done": self.tasks.done,
                "erred": self.tasks.erred,
            },
            "dashboard": self.dashboard_link,
            "links": dict(self.links),
            "remote_status": self.remote_status or None,
            "error": f"{type(self.error).__name__}: {self.error}" if self.error else None,
        }

    # ---- rendering -------------------------------------------------------------------------

    def summary_rows(self) -> list[tuple[str, str]]:
        rows = [
            ("task", f"{self.name} (version {self.version})" if self.version else self.name),
            ("status", self.status + (f" ({self.remote_status})" if self.remote_status else "")),
            ("requested", requested_text(self.spec)),
        ]
        if self.shape is not None:
            rows.append(("used", _shape_text(self.shape)))
        tasks = self.tasks
        if tasks.total:
            erred = f", {tasks.erred} erred" if tasks.erred else ""
            rows.append(("tasks", f"{tasks.done} of {tasks.total} done{erred}"))
        rows.append(("cache", "hit" if self.cache_hit else ("miss" if self.spec.cache else "off")))
        if self.phases:
            rows.append(("time", ", ".join(f"{k} {v:.2f}s" for k, v in self.phases.items())))
        rows.append(("total", f"{self.duration:.2f}s"))
        if self.outputs:
            rows.append(
                ("outputs", ", ".join(describe_value(k, v) for k, v in self.outputs.items()))
            )
        if self.dropped:
            rows.append(("not kept", ", ".join(self.dropped) + " (live cluster objects)"))
        if self.dashboard_link:
            rows.append(("dashboard", self.dashboard_link))
        rows.extend(self.details.items())
        rows.extend(self.links.items())
        rows.extend(("note", note) for note in self.notes)
        return rows

    def summary_text(self) -> str:
        return "\n".join(f"{key:>10}: {value}" for key, value in self.summary_rows())

    def summary_html(self) -> str:
        def value_html(key: str, value: str) -> str:
            if key == "dashboard" or key in self.links:  # clickable in JupyterLab
                return f"<a href='{html.escape(value)}' target='_blank'>{html.escape(value)}</a>"
            return html.escape(value)

        cells = "".join(
            f"<tr><th style='text-align:right'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{value_html(k, v)}</td></tr>"
            for k, v in self.summary_rows()
        )
        return f"<table class='flyte-dask-summary'>{cells}</table>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": self.summary_text(), "text/html": self.summary_html()}


def _shape_text(shape: LocalShape) -> str:
    memory = (
        f", {shape.memory_limit / 2**30:.2f} GiB each" if shape.memory_limit is not None else ""
    )
    return f"{shape.workers} workers x {shape.threads_per_worker} threads{memory}"


def requested_text(spec: ClusterSpec) -> str:
    """The shape asked for, the worker count always included: ``2 workers --worker-mem 1Gi``."""
    flags = spec.magic_line().removeprefix("%%flyte_dask").split()
    if "--workers" in flags:  # said as "N workers" instead
        at = flags.index("--workers")
        del flags[at : at + 2]
    count = spec.workers.count
    return " ".join([f"{count} worker{'' if count == 1 else 's'}", *flags])


def describe_value(name: str, value: Any) -> str:
    """``name: type (size)`` for the summary: shape for frames and arrays, length for sized."""
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    # Lazy collections (dask) have shapes of unknown size: show only concrete ones.
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        size = " x ".join(str(n) for n in shape)
        nbytes = _memory_size(value)
        return f"{name}: {kind} ({size}{', ' + nbytes if nbytes else ''})"
    try:
        return f"{name}: {kind} (len {len(value)})"
    except TypeError:
        return f"{name}: {kind}"


def _memory_size(value: Any) -> str:
    """Memory a frame or an array takes, e.g. "12.3 KiB"; "" when unknown."""
    try:
        if hasattr(value, "memory_usage"):
            size = int(value.memory_usage(deep=True).sum())
        else:
            size = int(value.nbytes)
    except (AttributeError, TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return ""
