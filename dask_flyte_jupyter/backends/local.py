"""The embedded default backend: flytekit local execution on a dedicated ``LocalCluster``.

The cluster is started by the task's ``pre_execute`` hook, which flytekit only calls when the task
really runs, so a cache hit starts nothing. While the task runs, ``Client()`` with no arguments
connects to the cluster through dask's ``scheduler-address`` setting, as the dask operator arranges
in a Flyte pod with ``DASK_SCHEDULER_ADDRESS``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from ..cell import CellProgram
from ..interrupts import quiet_abandoned_gathers, shielded
from ..run import RunHandle
from ..spec import ClusterSpec, LocalShape, local_shape
from ..task import META_OUTPUTS, CellTask, build_task
from . import by_reference
from .dask_monitor import forget_closed_cluster, watch_cluster
from .spare import ReadyCluster, spare_clusters

ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"
#: Seconds the workers of a local cluster may take to start.
WORKER_START_TIMEOUT = 120
#: A worker preload (script text: distributed runs text with spaces as a script).
IGNORE_INTERRUPTS = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)"
#: A worker preload: no "Compute Failed" log block from workers; the cell shows the error
#: readably itself (errors.py).
QUIET_TASK_ERRORS = (
    "import logging; logging.getLogger('distributed.worker').addFilter("
    "lambda record: not str(record.msg).startswith('Compute Failed'))"
)
#: Seconds closing a client or the cluster may take (the teardown is shielded from Ctrl-C).
CLOSE_TIMEOUT = 30


def machine_shape() -> tuple[int, int]:
    """Cores and memory (bytes) this kernel may use."""
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1, psutil.virtual_memory().total


def _on_demand_task_class() -> type:
    """A ``DaskTask`` whose cluster starts when flytekit actually executes it."""
    from flytekitplugins.dask.task import DaskTask

    class OnDemandClusterDaskTask(DaskTask):  # type: ignore[misc]
        start_cluster: Callable[[], None] = staticmethod(lambda: None)
        #: Called with each scratch directory flytekit makes for the run, to remove at its end.
        scratch: Callable[[str], None] = staticmethod(lambda path: None)

        #: Set while a run passes its values by reference (``by_reference.py``).
        passing: by_reference.Passing | None = None

        def local_execute(self, ctx: Any, **kwargs: Any) -> Any:
            state = ctx.execution_state
            if state is not None and state.working_dir:  # made for this call, also on a hit
                self.scratch(str(state.working_dir))
            if self.passing is None:
                return super().local_execute(ctx, **kwargs)
            # flytekit's uncached path, without turning the values into literals
            from flytekit.models.literals import LiteralMap

            self.passing.take_inputs(ctx, kwargs, self.python_interface.inputs)
            return self.sandbox_execute(ctx, LiteralMap(literals={}))

        def _literal_map_to_python_input(self, literal_map: Any, ctx: Any) -> dict[str, Any]:
            if self.passing is None:
                return super()._literal_map_to_python_input(literal_map, ctx)  # type: ignore[no-any-return]
            return self.passing.inputs

        async def _output_to_literal_map(self, native_outputs: Any, ctx: Any) -> Any:
            convert = super()._output_to_literal_map
            if self.passing is None:
                return await convert(native_outputs, ctx)
            return await by_reference.outputs_or_flytekits_error(self, native_outputs, ctx, convert)

        def pre_execute(self, user_params: Any) -> Any:
            for path in _sandbox_dirs(user_params):
                self.scratch(path)
            self.start_cluster()
            return super().pre_execute(user_params)

        def execute(self, **kwargs: Any) -> Any:
            try:
                return super().execute(**kwargs)
            except Exception as error:
                # flytekit rewrites the args of a failing task's error; errors.py puts them back.
                error.flyte_dask_args = error.args  # type: ignore[attr-defined]
                raise

    return OnDemandClusterDaskTask


class LocalBackend:
    """Runs cell tasks with flytekit local execution, each on its own ``LocalCluster``."""

    name = "local"

    def __init__(self) -> None:
        self._task_class: type | None = None

    def build(
        self, program: CellProgram, spec: ClusterSpec, namespace: Mapping[str, object]
    ) -> CellTask:
        if self._task_class is None:
            self._task_class = _on_demand_task_class()
        return build_task(program, spec, namespace, task_class=self._task_class)

    def run(
        self, cell_task: CellTask, inputs: Mapping[str, object], handle: RunHandle
    ) -> dict[str, Any]:
        """Executes the task; returns its outputs by name. Nothing it started outlives it."""
        cores, memory = machine_shape()
        shape = local_shape(handle.spec, cores, memory)

        cleanup = ExitStack()
        try:
            task = cell_task.task
            task.start_cluster = lambda: _start_cluster(shape, handle, cleanup, cell_task.source)
            task.scratch = lambda path: cleanup.callback(shutil.rmtree, path, ignore_errors=True)
            if handle.spec.cache and _cache_enabled():
                outputs = _as_dict(task(**inputs), cell_task)  # the cache stores literals
            else:
                outputs = by_reference.run(task, inputs)
                handle.outputs_by_reference = True
            handle.cache_hit = handle.dashboard_link is None
            handle.cache_stored = handle.spec.cache and not handle.cache_hit and _cache_enabled()
            if not handle.cache_hit:
                handle.begin("stopping cluster")
        finally:
            with shielded():  # a second Ctrl-C must not leave the cluster half closed
                cleanup.close()
        return outputs


def _sandbox_dirs(user_params: Any) -> list[str]:
    """The directories flytekit's local execution makes for one task run and leaves behind:
    the task sandbox, and the checkpoint's temporary directory, which flytekit removes only
    when the checkpoint is collected (for a failed run: when its traceback is gone)."""
    paths = [str(user_params.working_directory)]
    checkpoint_dir = getattr(user_params.checkpoint, "_td", None)  # SyncCheckpoint's own
    if isinstance(checkpoint_dir, tempfile.TemporaryDirectory):
        paths.append(checkpoint_dir.name)
    return paths


def _cache_enabled() -> bool:
    """Whether flytekit's local cache is on (it stores the result of every ``cache=True`` run)."""
    from flytekit.configuration import LocalConfig

    return bool(LocalConfig.auto().cache_enabled)


def _start_cluster(shape: LocalShape, handle: RunHandle, cleanup: ExitStack, code: str) -> None:
    """Starts the dedicated cluster (or takes the spare started for it, ``spare.py``) and points
    ``Client()`` at it until ``cleanup`` closes; before closing it, takes the run's performance
    report of ``code`` (``reports.py``). Once closed, a spare is started for the next cell."""
    import dask

    spares = spare_clusters()
    cleanup.callback(_after_run, shape)  # registered first: runs once all the rest is closed
    cleanup.enter_context(_QUIET_LOGS.held())
    handle.begin("starting cluster")
    main = sys.modules["__main__"]
    if not hasattr(main, "__spec__"):
        # IPython's stand-in __main__ has no __spec__; multiprocessing's spawn needs one.
        main.__spec__ = None
    handle.shape = shape
    for note in shape.notes:
        handle.note(note)
    quiet_abandoned_gathers()  # an interrupted gather would log a traceback per key
    conditions = _start_conditions() if spares.enabled else None
    spares.wait(shape, conditions)  # a spare still starting: waiting for it may be interrupted
    with shielded():  # an interrupt now would lose the half-started cluster: it waits
        own: ReadyCluster | None = spares.take(shape, conditions)
        if own is not None:
            handle.details["cluster"] = "started ahead of the cell (a spare cluster)"
        else:
            own = _OwnCluster(shape)
        cleanup.callback(own.close)
        cleanup.callback(setattr, handle, "dashboard_link", None)  # no link to a closed cluster
    cluster = own.cluster
    handle.task_source = watch_cluster(cluster).counts
    handle.dashboard_link = cluster.dashboard_link
    _wait_for_workers(cluster, shape.workers, handle)
    _record_report(cluster, handle, cleanup, code)
    address = cluster.scheduler_address
    cleanup.enter_context(dask.config.set({"scheduler-address": address}))
    cleanup.callback(_restore_variable, os.environ.get(ADDRESS_VARIABLE))
    os.environ[ADDRESS_VARIABLE] = address
    handle.begin("running")


def _new_cluster(shape: LocalShape, workdir: str) -> Any:
    """The one way a local run's cluster is made, the cell's own and a spare alike: the
    scheduler only; the workers come with ``cluster.scale``, so the view can count them."""
    from distributed import LocalCluster

    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=0,
        threads_per_worker=shape.threads_per_worker,
        memory_limit=shape.memory_limit if shape.memory_limit is not None else "auto",
        processes=True,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
        local_directory=workdir,
        silence_logs=logging.ERROR,
        # Jupyter interrupts the kernel's whole process group: the workers leave Ctrl-C to
        # the kernel (which closes them) instead of each printing its own traceback.
        preload=[IGNORE_INTERRUPTS, QUIET_TASK_ERRORS],
    )


class _OwnCluster:
    """A cluster of ``shape`` with its scratch directory (``flyte-dask-*``), removed with it."""

    def __init__(self, shape: LocalShape) -> None:
        self.workdir = tempfile.mkdtemp(prefix="flyte-dask-")
        try:
            self.cluster = _new_cluster(shape, self.workdir)
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    def close(self) -> None:
        try:
            with _QUIET_LOGS.held():  # also a spare's, closed from its own thread
                _close_cluster(self.cluster)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _start_spare(shape: LocalShape) -> _OwnCluster:
    """A spare of ``shape`` with its workers up (run in the spare's thread)."""
    with _QUIET_LOGS.held():
        own = _OwnCluster(shape)
        try:
            _wait_for_workers(own.cluster, shape.workers, None)
        except BaseException:
            own.close()
            raise
    return own


class _QuietLogs:
    """distributed's log handlers at ERROR while any local run's cluster starts, runs or stops.

    Each ``LocalCluster`` (``silence_logs``) puts back the levels it found when it closes: with
    a spare starting or closing while a cell's own cluster runs, that would let the other's
    INFO lines into the notebook midway. Held here first, around all of them, theirs is a no-op.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._restore = ExitStack()

    @contextmanager
    def held(self) -> Iterator[None]:
        from distributed.utils import silence_logging_cmgr

        with self._lock:
            if self._holders == 0:
                self._restore = ExitStack()
                self._restore.enter_context(silence_logging_cmgr(logging.ERROR))
                self._restore.enter_context(silence_logging_cmgr(logging.ERROR, root="bokeh"))
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._restore.close()


#: One for the process, like the log handlers it sets.
_QUIET_LOGS = _QuietLogs()


def _start_conditions() -> Any:
    """What worker processes inherit besides the shape: the dask config, the environment and
    ``sys.path``. A spare started under other conditions is not handed over."""
    import copy

    import dask

    # What imports resolve to: distributed puts each in-process server's scratch directory on
    # sys.path, and flytekit's local execution the working directory once more (a duplicate).
    path = tuple(dict.fromkeys(entry for entry in sys.path if "dask-scratch-space" not in entry))
    try:
        return (copy.deepcopy(dask.config.config), dict(os.environ), path)
    except Exception:  # a config value that cannot be copied: no spare then
        return object()


def _after_run(shape: LocalShape) -> None:
    """After a local run that started a cluster: a spare for the next cell of ``shape``; after
    an interrupted run none, and the spare is closed (Ctrl-C means "stop everything")."""
    spares = spare_clusters()
    if isinstance(sys.exc_info()[1], KeyboardInterrupt):
        spares.close()
    elif spares.enabled:
        spares.prepare(shape, _start_conditions(), lambda: _start_spare(shape))


def _wait_for_workers(cluster: Any, wanted: int, handle: RunHandle | None) -> None:
    """Scales the cluster to ``wanted`` workers and waits for them, counting them as they join
    (on ``handle``, when there is one)."""

    def count(up: int) -> None:
        if handle is not None:
            handle.workers = (up, wanted)

    count(0)
    cluster.scale(wanted)
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while (up := len(cluster.scheduler.workers)) < wanted:
        count(up)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {up} of {wanted} dask workers started in {WORKER_START_TIMEOUT}s"
            )
        time.sleep(0.02)
    count(wanted)


def _record_report(cluster: Any, handle: RunHandle, cleanup: ExitStack, code: str) -> None:
    """Records the run's performance report from now until ``cleanup``, which saves it while
    the cluster is still up (also when the cell failed)."""
    from ..reports import LocalRecorder, new_report_path

    try:
        recorder = LocalRecorder(cluster, code)
    except Exception as error:  # the run goes on without it
        handle.note(f"no performance report: {error}")
        return

    def save() -> None:
        file, relative = new_report_path(handle.name, handle.started_at, handle.run_number)
        try:
            recorder.save(cluster, file, handle.label)
        except Exception as error:
            file.unlink(missing_ok=True)
            handle.note(f"no performance report: {error}")
            return
        handle.report_path = relative

    cleanup.callback(save)


def _restore_variable(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(ADDRESS_VARIABLE, None)
    else:
        os.environ[ADDRESS_VARIABLE] = previous


def _close_cluster(cluster: Any) -> None:
    """Closes the clients the cell opened on this cluster, then the cluster itself."""
    from distributed.client import _global_clients

    for client in list(_global_clients.values()):
        if client.scheduler is not None and client.scheduler.address == cluster.scheduler_address:
            client.close(timeout=CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
    cluster.close(timeout=CLOSE_TIMEOUT)
    forget_closed_cluster(cluster)  # distributed's memos would keep it alive (issue 14)


def _as_dict(outputs: Any, cell_task: CellTask) -> dict[str, Any]:
    names = [*cell_task.output_names, *META_OUTPUTS]
    if len(names) == 1:
        return {names[0]: outputs}
    return dict(zip(names, outputs, strict=True))
