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
    status: str = "pending"
    started_at: datetime = field(default_factory=datetime.now)
    phases: dict[str, float] = field(default_factory=dict)
    shape: LocalShape | None = None
    notes: list[str] = field(default_factory=list)
    dashboard_link: str | None = None
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
        self.output_summaries = self._summarize_outputs()
        self._ended = time.perf_counter()
        self.emit(f"status:{status}")

    def _summarize_outputs(self) -> dict[str, OutputSummary]:
        return {
            name: OutputSummary(_type_name(value), describe_value(name, value))
            for name, value in self.outputs.items()
        }

    def current_error_text(self) -> str | None:
        """``Type: message`` of the run's error (its message may be restored after ``finish``)."""
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
            "links": dict(self.links),
            "remote_status": self.remote_status or None,
            "error": self.current_error_text(),
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


def _type_name(value: Any) -> str:
    try:
        return str(type(value).__name__)
    except Exception:  # a metaclass may do anything
        return "object"


def _error_text(error: BaseException) -> str:
    """``Type: message``; just the type when the message cannot be made."""
    try:
        return f"{_type_name(error)}: {error}"
    except Exception:
        return _type_name(error)


#: Builtin types whose length is shown; their own ``__len__`` is called, never an override.
_SIZED: tuple[type, ...] = (list, tuple, dict, set, frozenset, str, bytes, bytearray)


def describe_value(name: str, value: Any) -> str:
    """``name: type (size)`` for the summary, from metadata only: it never runs the user's
    computation and never raises. Shape and memory for pandas and numpy objects, length for
    builtin containers, partitions / chunks for dask collections, else just the type."""
    try:
        kind, detail = _describe(value)
    except Exception:
        kind, detail = _type_name(value), ""
        if _is_dask_collection(value):
            kind = f"dask {kind}"
    return f"{name}: {kind} ({detail})" if detail else f"{name}: {kind}"


def _is_dask_collection(value: Any) -> bool:
    """A collection of dask itself (not of a library built on it), checked without importing
    dask: its type has ``__dask_graph__`` and comes from a ``dask`` module."""
    try:
        cls = type(value)
        is_collection = callable(getattr(cls, "__dask_graph__", None))
        return is_collection and str(cls.__module__).startswith("dask.")
    except Exception:
        return False


def _describe(value: Any) -> tuple[str, str]:
    """(kind, detail) of a value; may raise (the caller then shows the type only)."""
    kind = _type_name(value)
    cls = type(value)
    if callable(getattr(cls, "__dask_graph__", None)):  # a dask collection, lazy or persisted
        return _describe_dask(value, kind) if _is_dask_collection(value) else (kind, "")
    for sized in _SIZED:
        if isinstance(value, sized):
            return kind, f"len {sized.__len__(value)}"  # type: ignore[attr-defined]
    if str(cls.__module__).partition(".")[0] in ("pandas", "numpy"):
        shape = value.shape
        if isinstance(shape, tuple) and shape and all(isinstance(n, int) for n in shape):
            size = " x ".join(str(n) for n in shape)
            nbytes = _memory_size(value)
            return kind, f"{size}, {nbytes}" if nbytes else size
    return kind, ""


class _WouldCompute(Exception):
    """Raised by the scheduler that is in place while a dask collection is described."""


def _refuse_to_compute(*args: Any, **kwargs: Any) -> Any:
    raise _WouldCompute("describing an output must not compute it")


def _describe_dask(value: Any, kind: str) -> tuple[str, str]:
    """A dask collection from its metadata: DataFrame / Series partitions (and columns), Array
    shape, chunks, dtype and size, Bag partitions; anything else (Delayed) just its type.
    Collections of other libraries built on dask (xarray, ...) show their type only.

    Some metadata is computed on first use (the divisions of a lazy ``set_index``, say); while
    it is read, dask's scheduler is one that refuses to run anything, and what it would have had
    to compute is shown as unknown.
    """
    import dask  # a dask collection exists, so dask is imported already

    parts: list[str] = []
    with dask.config.set(scheduler=_refuse_to_compute):
        if kind == "Array":
            shape = " x ".join(_dimension(n) for n in value.shape)
            blocks = 1
            for count in value.numblocks:
                blocks *= int(count)
            parts += [shape or "scalar", _plural(blocks, "chunk"), str(value.dtype)]
            nbytes = value.nbytes
            if isinstance(nbytes, int) or (isinstance(nbytes, float) and nbytes == nbytes):
                parts.append(_bytes_text(int(nbytes)))
        elif kind in ("DataFrame", "Series", "Index"):
            try:
                count, known = int(value.npartitions), bool(value.known_divisions)
                parts.append(_plural(count, "partition"))
                parts.append("divisions known" if known else "divisions unknown")
            except _WouldCompute:
                parts.append("partitions known once computed")
            if kind == "DataFrame":
                parts.append(_plural(len(value.columns), "column"))
        elif kind == "Bag":
            parts.append(_plural(int(value.npartitions), "partition"))
    return f"dask {kind}", ", ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _dimension(n: Any) -> str:
    return str(int(n)) if isinstance(n, int) or (isinstance(n, float) and n == n) else "nan"


def _memory_size(value: Any) -> str:
    """Memory a pandas or numpy object takes, e.g. "12.3 KiB"; "" when unknown."""
    try:
        if hasattr(value, "memory_usage"):
            usage = value.memory_usage(deep=True)  # per column for frames, a number otherwise
            size = int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        else:
            size = int(value.nbytes)
    except Exception:
        return ""
    return _bytes_text(size)


def memory_text(size: int) -> str:
    """A memory limit as people say it: "200 MiB", "1.5 GiB"."""
    unit, scale = ("GiB", 2**30) if size >= 2**30 else ("MiB", 2**20)
    return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"


def _bytes_text(size: int) -> str:
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return ""
