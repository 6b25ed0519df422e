"""What happens on a dedicated dask cluster, seen from its scheduler.

``TaskMonitor`` counts the tasks of every computation the cell submits, by state, straight from the
scheduler's transitions (users need not hand us their futures), and notes the workers that their
nanny restarts for going over the memory limit. ``ForwardOutput`` sends what dask tasks print or
warn on the workers to the scheduler, which writes it under the cell.

Worker output is shown once, exactly as printed (no prefix), the way a plain dask notebook shows
it: a worker's own stdout and stderr are the kernel's, and ipykernel captures them at the file
descriptor level (``capture_fd_output``) and shows what worker processes write there in the
notebook too. So forwarded text is *not* also written to the worker's own streams; only output
that cannot be forwarded (the worker lost its scheduler) goes there.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from ..run import TaskCounts, WorkerRestart, memory_text

OUTPUT_TOPIC = "flyte-dask-output"
#: The event a nanny logs when it restarts its worker for going over the memory limit.
MEMORY_RESTART_TOPIC = "worker-restart-memory"
# Scheduler states we count; others ("released", "forgotten") are bookkeeping.
_WAITING = ("waiting", "queued", "no-worker")
_COUNTED = (*_WAITING, "processing", "memory", "erred")


class TaskMonitor(SchedulerPlugin):  # type: ignore[misc]
    """Counts tasks by state. Runs in the scheduler's thread; read from any thread."""

    name = "flyte-dask-monitor"

    def __init__(self, stdout: TextIO, stderr: TextIO, scheduler: Any = None) -> None:
        self._states = dict.fromkeys(_COUNTED, 0)
        self._seen: set[Any] = set()
        self._finished: set[Any] = set()
        self._erred: set[Any] = set()
        self._streams = {"stdout": stdout, "stderr": stderr}
        self._scheduler = scheduler
        self._limits: dict[str, int | None] = {}  # worker address -> memory limit (bytes)
        for address, state in list(getattr(scheduler, "workers", {}).items()):
            self._limits[address] = state.memory_limit or None  # up before (a spare cluster)
        self._restarts: list[WorkerRestart] = []

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self._scheduler = scheduler
        state = scheduler.workers.get(worker)
        if state is not None:
            self._limits[worker] = state.memory_limit or None

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        states = self._states
        if start in states and key in self._seen:  # scattered data arrives in memory unseen
            states[start] -= 1
        if finish in states:
            states[finish] += 1
            self._seen.add(key)
        if finish == "memory":
            self._finished.add(key)
        elif finish == "erred":
            self._erred.add(key)

    def counts(self) -> TaskCounts:
        states = self._states
        return TaskCounts(
            total=len(self._seen),
            done=len(self._finished),
            erred=len(self._erred),
            waiting=sum(states[s] for s in _WAITING),
            processing=states["processing"],
            memory=states["memory"],
            restarts=tuple(self._restarts),
        )

    def log_event(self, topic: str, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if topic == OUTPUT_TOPIC:
            stream = self._streams.get(str(msg.get("stream")), self._streams["stderr"])
            stream.write(str(msg.get("text", "")))
            stream.flush()
        elif topic == MEMORY_RESTART_TOPIC:
            restart = self._restart(msg)
            self._restarts.append(restart)
            stream = self._streams["stderr"]
            stream.write(restart_note(restart) + "\n")
            stream.flush()

    def _restart(self, msg: dict[str, Any]) -> WorkerRestart:
        """The restart a nanny reported, with the worker's limit and the tasks it was running."""
        address = str(msg.get("worker"))
        limit = self._limits.get(address)
        tasks: tuple[str, ...] = ()
        state = getattr(self._scheduler, "workers", {}).get(address)
        if state is not None:  # the scheduler has not seen it go yet
            limit = state.memory_limit or None
            tasks = tuple(sorted(str(task.key) for task in state.processing))
        return WorkerRestart(address, int(msg.get("rss") or 0), limit, tasks)


def forget_closed_cluster(cluster: Any) -> None:
    """Lets a closed cluster's in-process servers (scheduler, nannies) go. distributed keeps
    them in two memos that are never emptied: a kernel that starts a cluster per cell would
    otherwise hold every one of them with its tasks, logs, plugins and dashboard documents, and
    its garbage collections would take longer with every cell."""
    from distributed import core

    forget_dashboard(cluster.scheduler)
    # functools.cache of "does this handler take a comm?", keyed by bound methods of servers
    core._expects_comm.cache_clear()


def forget_dashboard(scheduler: Any) -> None:
    """Drops ``scheduler`` from the memo of distributed's dashboard pages
    (``distributed.dashboard.scheduler.template_variables``, keyed by scheduler)."""
    module = sys.modules.get("distributed.dashboard.scheduler")
    memoized = getattr(module, "template_variables", None)
    code = getattr(memoized, "__code__", None)
    cells = getattr(memoized, "__closure__", None) or ()
    if code is None:
        return
    free = dict(zip(code.co_freevars, (cell.cell_contents for cell in cells), strict=False))
    memo = free.get("cache")  # toolz.memoize's dict
    if isinstance(memo, dict):
        for key in [k for k in memo if k is scheduler or (type(k) is tuple and scheduler in k)]:
            del memo[key]


def restart_note(restart: WorkerRestart) -> str:
    """The line shown under the cell when a worker is restarted for using too much memory."""
    limit = f" of {memory_text(restart.memory_limit)}" if restart.memory_limit else ""
    tasks = list(restart.tasks[:3])
    if len(restart.tasks) > 3:
        tasks.append(f"{len(restart.tasks) - 3} more")
    running = f" running {', '.join(tasks)}" if tasks else ""
    return (
        f"flyte_dask: a dask worker went over its memory limit{limit}{running} and was "
        "restarted; raise --worker-mem if this repeats"
    )


class _Forwarder:
    """A worker's stdout/stderr: text goes to the scheduler as events, a line at a time (what is
    left of a line when the stream is flushed), and not to the worker's own stream."""

    def __init__(self, worker: Any, stream: str, original: TextIO) -> None:
        self._worker, self._stream, self.original = worker, stream, original
        self._buffer = ""
        self._lock = threading.Lock()  # tasks print from several threads
        self._sending = threading.local()

    def write(self, text: str) -> int:
        if getattr(self._sending, "active", False):  # output produced while sending: never loop
            self.original.write(text)
            return len(text)
        with self._lock:
            self._buffer += text
            complete, newline, self._buffer = self._buffer.rpartition("\n")
        if newline:
            self._send(complete + newline)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._send(rest)

    def _send(self, text: str) -> None:
        self._sending.active = True
        try:
            message = {"stream": self._stream, "text": text, "worker": self._worker.name}
            self._worker.log_event(OUTPUT_TOPIC, message)
        except Exception:  # no scheduler to send to: keep the text on the worker's own stream
            self.original.write(text)
            self.original.flush()
        finally:
            self._sending.active = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class ForwardOutput(WorkerPlugin):  # type: ignore[misc]
    """Installed on every worker of the cluster (also on workers that restart)."""

    name = "flyte-dask-forward-output"

    def setup(self, worker: Any) -> None:
        sys.stdout = _Forwarder(worker, "stdout", sys.stdout)  # type: ignore[assignment]
        sys.stderr = _Forwarder(worker, "stderr", sys.stderr)  # type: ignore[assignment]

    def teardown(self, worker: Any) -> None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, _Forwarder):
                stream.flush()
                setattr(sys, name, stream.original)


def watch_cluster(cluster: Any) -> TaskMonitor:
    """Installs the monitor on the cluster's (in-process) scheduler and output forwarding on
    its workers; returns the monitor."""
    from distributed.protocol.pickle import dumps

    monitor = TaskMonitor(sys.stdout, sys.stderr, cluster.scheduler)
    cluster.scheduler.add_plugin(monitor)
    cluster.sync(
        cluster.scheduler.register_worker_plugin,
        comm=None,
        plugin=dumps(ForwardOutput()),  # type: ignore[no-untyped-call]
        name=ForwardOutput.name,
        idempotent=False,
    )
    return monitor
