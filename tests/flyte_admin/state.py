"""What the Flyte Admin stand-in remembers: the call log and the executions (TEST DOUBLE)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from flyteidl.admin import execution_pb2, task_pb2
from flyteidl.core import catalog_pb2, identifier_pb2, literals_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from google.protobuf.timestamp_pb2 import Timestamp

WorkflowPhase = core_execution_pb2.WorkflowExecution.Phase
NodePhase = core_execution_pb2.NodeExecution.Phase
TaskPhase = core_execution_pb2.TaskExecution.Phase

TERMINAL_PHASES = frozenset(
    {
        core_execution_pb2.WorkflowExecution.SUCCEEDED,
        core_execution_pb2.WorkflowExecution.FAILED,
        core_execution_pb2.WorkflowExecution.ABORTED,
        core_execution_pb2.WorkflowExecution.TIMED_OUT,
    }
)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


@dataclass(frozen=True)
class Call:
    """One RPC the stand-in answered: its method, the request's key fields, the status it gave."""

    method: str
    fields: dict[str, Any]
    code: str = "OK"  # grpc.StatusCode name: OK, ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT, ...
    #: When the stand-in started answering (``time.perf_counter()``) and for how many seconds:
    #: the stand-in's own share of a client's time (bench/bench_remote.py).
    at: float = 0.0
    seconds: float = 0.0

    def __repr__(self) -> str:
        return f"Call({self.method}, {self.fields}, {self.code})"


@dataclass
class Event:
    """A phase change of an execution, with the stand-in's wall-clock time."""

    at: float
    phase: str
    note: str = ""


def processes_gone(pids: list[int]) -> bool:
    """True when none of ``pids`` is still running (zombies awaiting their parent count as gone)."""
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
    return True


@dataclass
class StandInExecution:
    """A single-task execution and everything the stand-in's runner saw while running it.

    Protocol state (what Admin would return) and runner observations (for tests) live side by side.
    ``done`` is set when the execution reaches a terminal phase and every process is gone.
    """

    id: identifier_pb2.WorkflowExecutionIdentifier
    spec: execution_pb2.ExecutionSpec
    task: task_pb2.Task
    inputs: literals_pb2.LiteralMap
    node_id: str
    inputs_uri: str
    node_inputs_uri: str
    output_prefix: str
    raw_output_prefix: str
    created_at: float = field(default_factory=time.time)
    phase: int = core_execution_pb2.WorkflowExecution.QUEUED
    node_phase: int = core_execution_pb2.NodeExecution.QUEUED
    task_phase: int = core_execution_pb2.TaskExecution.UNDEFINED  # no task execution yet
    started_at: float | None = None
    task_started_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    outputs: literals_pb2.LiteralMap | None = None
    outputs_uri: str | None = None
    error: core_execution_pb2.ExecutionError | None = None
    abort_cause: str | None = None
    events: list[Event] = field(default_factory=list)
    # -- the task cache (catalog.py), for a discoverable task --
    cache_status: int = catalog_pb2.CACHE_DISABLED  # the task node's, as Admin reports it
    catalog_key: Any = None  # its catalog.CatalogKey
    cache_entry: Any = None  # the catalog.CatalogEntry it reused (CACHE_HIT) or stored
    # -- what the runner saw (for tests) --
    dask_job: dict[str, Any] | None = None  # the task template's custom, i.e. the DaskJob
    cluster: dict[str, Any] = field(default_factory=dict)  # scheduler/workers: address, pids, args
    task_args: list[str] = field(
        default_factory=list
    )  # the container args with placeholders filled
    task_pid: int | None = None
    returncode: int | None = None
    log: str = ""  # stdout + stderr of the job runner (the task process)
    fake_versions: dict[str, str] = field(
        default_factory=dict
    )  # what the cluster was told to report
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return self.id.name

    @property
    def phase_name(self) -> str:
        return WorkflowPhase.Name(self.phase)

    @property
    def cache_status_name(self) -> str:
        """``CACHE_DISABLED``, ``CACHE_MISS`` (running), ``CACHE_HIT``, ``CACHE_POPULATED``..."""
        return catalog_pb2.CatalogCacheStatus.Name(self.cache_status)

    @property
    def is_terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def workers_started(self) -> int:
        return len(self.cluster.get("worker_pids", []))

    @property
    def pids(self) -> list[int]:
        """Every process the runner started for this execution (scheduler, workers, job runner)."""
        pids = list(self.cluster.get("worker_pids", []))
        if self.cluster.get("scheduler_pid"):
            pids.insert(0, self.cluster["scheduler_pid"])
        if self.task_pid:
            pids.append(self.task_pid)
        return pids

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the execution is terminal and its processes are gone."""
        return self.done.wait(timeout)
