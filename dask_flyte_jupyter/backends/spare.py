"""One spare local cluster, started ahead of the next cell so that its start is off the cell's path.

A local run's cluster takes about a second to start (a scheduler, worker processes). After a
local run that started one, :class:`SpareClusters` starts one more of the same shape in a
background thread and hands it to the next cell of that shape, which then starts none itself.
The run's guarantee stays: each cell gets a dedicated cluster that nothing else ever used. A
spare is handed over at most once, and only when it was started under what the cell's own
cluster would be started under (shape, dask config, environment variables, ``sys.path``, which
worker processes inherit); otherwise it is closed and the cell starts its own.

A spare is shut down when it waited :attr:`SpareClusters.idle_timeout` seconds
(:data:`IDLE_TIMEOUT` unless ``%flyte_dask_config --spare-idle`` says otherwise), at kernel exit
(atexit), at ``%unload_ext``, when a run is interrupted (Ctrl-C means "stop everything") and
when the next cell wants another shape. ``%flyte_dask_config --spare-cluster off`` turns spares
off; the environment variable :data:`SWITCH_VARIABLE` set to ``off`` makes off a kernel's
starting default (the test suite sets it).

The background thread only creates the cluster and waits: distributed and its dashboard were
imported by the run before, in the cell's own thread. (A thread that imports modules while the
next cell runs can make that cell see a half-imported module.) The thread ends when its spare is
handed over or closed; it closes a spare that is not handed over itself.

There is one keeper per process (:func:`spare_clusters`): the spare's processes are the
process's children and atexit is per process. The magics instance sets its switches from the
kernel defaults. Nothing here imports distributed: the cluster comes from the ``start`` callable
``backends/local.py`` gives.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

#: Seconds a spare cluster waits for a cell before it is shut down.
IDLE_TIMEOUT = 600.0
#: ``off`` makes "no spare cluster" a kernel's starting default (``%flyte_dask_config`` wins).
SWITCH_VARIABLE = "FLYTE_DASK_SPARE_CLUSTER"


def enabled_by_default() -> bool:
    """Spares are off unless :data:`SWITCH_VARIABLE` says ``on`` (or ``1``, ``true``, ``yes``):
    a kernel that has one does not yet exit within Jupyter's wait (its scratch directory is
    left when it is killed), so they are opt-in until that is fixed."""
    value = os.environ.get(SWITCH_VARIABLE, "off").strip().lower()
    return value in ("on", "1", "true", "yes")


class ReadyCluster(Protocol):
    """A started cluster and how to close it (with whatever was made for it)."""

    cluster: Any

    def close(self) -> None: ...


@dataclass(eq=False)
class _Spare:
    shape: Any  # LocalShape
    conditions: Any  # what its worker processes inherited (compared with ==)
    #: starting -> ready | failed; ready -> taken | closing; starting -> closing
    state: str = "starting"
    ready: ReadyCluster | None = None
    ready_since: float = 0.0
    thread: threading.Thread | None = field(default=None, repr=False)


def duration_text(seconds: float) -> str:
    """``10 min``, ``90 s``, ``1 s``."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class SpareClusters:
    """The process's spare cluster: at most one waiting, plus those being closed."""

    def __init__(self) -> None:
        self.enabled = False  # until the magics say otherwise
        self.idle_timeout = IDLE_TIMEOUT
        #: Called (from any thread) when the spare starts, gets ready or goes.
        self.listeners: list[Callable[[], None]] = []
        self._changed = threading.Condition()
        self._spare: _Spare | None = None
        self._retiring: list[_Spare] = []  # their threads are closing them
        self._exit_hook = False

    def configure(self, enabled: bool, idle_timeout: float) -> None:
        """Turns spares on or off (off closes the spare) and sets the idle timeout (also of a
        spare already waiting)."""
        with self._changed:
            self.enabled, self.idle_timeout = enabled, idle_timeout
            self._changed.notify_all()
        if not enabled:
            self.close()

    def take(self, shape: Any, conditions: Any) -> ReadyCluster | None:
        """The spare, for a cell of ``shape`` starting under ``conditions``: waits for one still
        starting (interruptible: nothing changes hands until it is ready). None when there is
        none that fits: a spare of another shape is closed (by its thread, meanwhile) and so is
        one started under other conditions. Call it with interrupts held back only once
        :meth:`wait` returned, so that the cluster it returns cannot be lost."""
        self.wait(shape, conditions)
        with self._changed:
            spare = self._spare
            if spare is None:
                return None
            if spare.shape != shape or spare.conditions != conditions or spare.state != "ready":
                self._retire(spare)
                return None
            spare.state = "taken"
            self._spare = None
            self._changed.notify_all()
        self._notify()
        if spare.thread is not None:
            spare.thread.join()  # it only wakes up and ends
        return spare.ready

    def wait(self, shape: Any, conditions: Any) -> None:
        """Waits while a spare that fits ``shape`` and ``conditions`` is still starting."""
        with self._changed:
            while (
                (spare := self._spare) is not None
                and spare.state == "starting"
                and spare.shape == shape
                and spare.conditions == conditions
            ):
                self._changed.wait()

    def prepare(self, shape: Any, conditions: Any, start: Callable[[], ReadyCluster]) -> None:
        """Starts a spare of ``shape`` in the background (``start`` makes it), when spares are
        on and none of that shape is there."""
        with self._changed:
            if not self.enabled:
                return
            self._retiring = [s for s in self._retiring if s.thread and s.thread.is_alive()]
            current = self._spare
            if current is not None:
                if current.shape == shape and current.conditions == conditions:
                    return
                self._retire(current)
            spare = self._spare = _Spare(shape, conditions)
            spare.thread = threading.Thread(
                target=self._keep, args=(spare, start), name="flyte-dask-spare", daemon=True
            )
            if not self._exit_hook:  # daemon thread: atexit, not the interpreter, closes it
                atexit.register(self._close_at_exit)
                self._exit_hook = True
            spare.thread.start()
        self._notify()

    def close(self) -> None:
        """Closes the spare (waiting for one still starting) and waits for every spare being
        closed: when this returns, no spare's process, thread or directory is left."""
        with self._changed:
            if self._spare is not None:
                self._retire(self._spare)
            retiring, self._retiring = self._retiring, []
        for spare in retiring:
            if spare.thread is not None:
                spare.thread.join()
        if retiring:
            self._notify()

    def _close_at_exit(self) -> None:
        """At kernel exit the front end's channels are closed: tell nobody, just close."""
        self.listeners.clear()
        self.close()

    def ready_cluster(self, timeout: float) -> Any | None:
        """The waiting spare's cluster once it is ready (tests and benchmarks wait for it), or
        None when there is none, or none ready within ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._spare is None or self._spare.state != "starting", timeout
            )
            spare = self._spare
            if spare is None or spare.state != "ready" or spare.ready is None:
                return None
            return spare.ready.cluster

    def describe(self) -> dict[str, Any] | None:
        """What users see of the spare (``%flyte_dask_runs``, the sidebar), or None:
        ``{"state": "ready", "text": "spare cluster: 2 workers × 1 thread, ready · shuts down
        after 10 min idle"}``."""
        from ..run import _shape_text

        with self._changed:
            spare = self._spare
            if spare is None or spare.state not in ("starting", "ready"):
                return None
            state, timeout = spare.state, self.idle_timeout
        shape = _shape_text(spare.shape)
        text = f"spare cluster: {shape}, {state} · shuts down after {duration_text(timeout)} idle"
        return {"state": state, "text": text}

    # ---- the spare's own thread ----------------------------------------------------------

    def _keep(self, spare: _Spare, start: Callable[[], ReadyCluster]) -> None:
        """Starts the spare, then waits until it is taken, closed or idle for too long."""
        try:
            ready: ReadyCluster | None = start()
        except BaseException:  # the next cell starts its own cluster
            ready = None
        with self._changed:
            spare.ready, spare.ready_since = ready, time.monotonic()
            if spare.state == "starting":
                spare.state = "ready" if ready is not None else "failed"
            if spare.state == "failed":
                self._retire(spare)  # close() still waits for this thread to end
            self._changed.notify_all()
        self._notify()  # ready (or gone)
        with self._changed:
            while spare.state == "ready":
                idle = time.monotonic() - spare.ready_since
                if idle >= self.idle_timeout:
                    self._retire(spare)
                    break
                self._changed.wait(self.idle_timeout - idle)
            closing = spare.state == "closing"
        self._notify()
        if closing and ready is not None:
            with contextlib.suppress(Exception):  # no traceback at a random time in the notebook
                ready.close()
            self._notify()

    def _retire(self, spare: _Spare) -> None:
        """Marks ``spare`` for closing by its thread (with ``self._changed`` held)."""
        if spare.state in ("starting", "ready"):
            spare.state = "closing"
        if self._spare is spare:
            self._spare = None
        if spare not in self._retiring:
            self._retiring.append(spare)
        self._changed.notify_all()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):  # a front end gone must not break the spare
                listener()


@cache
def spare_clusters() -> SpareClusters:
    """The process's keeper of spare clusters."""
    return SpareClusters()
