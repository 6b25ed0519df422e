"""What happens on a dedicated dask cluster, seen from its scheduler.

``TaskMonitor`` counts the tasks of every computation the cell submits, by state, straight from the
scheduler's transitions (users need not hand us their futures). ``ForwardOutput`` sends what dask
tasks print or warn on the workers to the scheduler, which writes it under the cell.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from ..run import TaskCounts

OUTPUT_TOPIC = "flyte-dask-output"
# Scheduler states we count; others ("released", "forgotten") are bookkeeping.
_WAITING = ("waiting", "queued", "no-worker")
_COUNTED = (*_WAITING, "processing", "memory", "erred")


class TaskMonitor(SchedulerPlugin):  # type: ignore[misc]
    """Counts tasks by state. Runs in the scheduler's thread; read from any thread."""

    name = "flyte-dask-monitor"

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._states = dict.fromkeys(_COUNTED, 0)
        self._seen: set[Any] = set()
        self._finished: set[Any] = set()
        self._erred: set[Any] = set()
        self._streams = {"stdout": stdout, "stderr": stderr}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        states = self._states
        if start in states:
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
        )

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == OUTPUT_TOPIC and isinstance(msg, dict):
            stream = self._streams.get(str(msg.get("stream")), self._streams["stderr"])
            stream.write(f"[worker {msg.get('worker')}] {msg.get('text', '')}")
            stream.flush()


class _Forwarder:
    """A worker's stdout/stderr: complete lines go to the scheduler as events."""

    def __init__(self, worker: Any, stream: str, original: TextIO) -> None:
        self._worker, self._stream, self.original = worker, stream, original
        self._buffer = ""
        self._sending = threading.local()

    def write(self, text: str) -> int:
        self.original.write(text)
        if getattr(self._sending, "active", False):
            return len(text)  # output produced while sending: never loop
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._sending.active = True
            try:
                message = {"stream": self._stream, "text": line + "\n", "worker": self._worker.name}
                self._worker.log_event(OUTPUT_TOPIC, message)
            except Exception:
                pass
            finally:
                self._sending.active = False
        return len(text)

    def flush(self) -> None:
        self.original.flush()

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
                setattr(sys, name, stream.original)


def watch_cluster(cluster: Any) -> TaskMonitor:
    """Installs the monitor on the cluster's (in-process) scheduler and output forwarding on
    its workers; returns the monitor."""
    from distributed.protocol.pickle import dumps

    monitor = TaskMonitor(sys.stdout, sys.stderr)
    cluster.scheduler.add_plugin(monitor)
    cluster.sync(
        cluster.scheduler.register_worker_plugin,
        comm=None,
        plugin=dumps(ForwardOutput()),  # type: ignore[no-untyped-call]
        name=ForwardOutput.name,
        idempotent=False,
    )
    return monitor
