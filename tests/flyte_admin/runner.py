"""The runner of the Flyte Admin stand-in: propeller + the dask operator, as local processes.

For every execution it does what Flyte would do in Kubernetes, with processes instead of pods:

1. phase QUEUED -> RUNNING (the task execution is INITIALIZING while the cluster starts);
2. for a ``dask`` task, decode the ``DaskJob`` from the task template's ``custom`` and start
   ``dask scheduler`` plus ``number_of_workers`` × ``dask worker`` (``--nthreads`` from the worker
   CPU limit, ``--memory-limit`` from the memory limit, like flyteplugins' dask plugin; scaled down
   to this machine: threads capped at ``os.cpu_count()``, memory at total memory / workers), and
   wait until every worker has joined;
3. run the registered task's REAL container args (``pyflyte-fast-execute ... -- pyflyte-execute
   ...``) with the template placeholders filled with ``s3://`` paths of the stand-in's bucket and
   ``DASK_SCHEDULER_ADDRESS`` exported, in a subprocess of this venv;
4. read ``outputs.pb`` or ``error.pb`` from the output prefix -> SUCCEEDED / FAILED;
   TerminateExecution -> ABORTED.

Every process is started in its own session and killed as a process group on completion, on
failure and on abort, before the terminal phase becomes visible to clients.  (TEST DOUBLE.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from flyteidl.core import errors_pb2, literals_pb2, tasks_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.plugins import dask_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from .state import Event, StandInExecution

if TYPE_CHECKING:
    from .server import FlyteAdminStandIn

_P = core_execution_pb2
_VENV_BIN = Path(sys.executable).parent
_FAKE_VERSIONS_PRELOAD = Path(__file__).with_name("_fake_versions.py")
_IMAGE_SITE = Path(__file__).with_name("image_site")  # sitecustomize: what the image lacks
_PLACEHOLDER = re.compile(r"\{\{\s*\.?\s*(\w+)\s*\}\}")

_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


def parse_quantity(quantity: str) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``4Gi``, ``1e9``) as a number."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|K|M|G|T|P|E)?\s*", quantity)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return float(match.group(1)) * _SUFFIXES.get(match.group(2) or "", 1)


def _resources(res: tasks_pb2.Resources) -> dict[str, dict[str, str]]:
    """``{"requests": {"cpu": "2"}, "limits": {...}}``; a request fills a missing limit and back."""
    out: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    for kind in ("requests", "limits"):
        for entry in getattr(res, kind):
            name = tasks_pb2.Resources.ResourceName.Name(entry.name).lower()
            out[kind][name] = entry.value
    for name in set(out["requests"]) | set(out["limits"]):
        out["limits"].setdefault(name, out["requests"].get(name, ""))
        out["requests"].setdefault(name, out["limits"][name])
    return out


class _Aborted(Exception):
    pass


class _Processes:
    """The processes of one execution: each leads its own process group; killed as groups."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.descendants: set[int] = set()
        self._logs: list[Any] = []

    def start(self, role: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.workdir / f"{role}.log", "wb")  # noqa: SIM115 - closed in kill_all
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((role, proc))
        return proc

    def snapshot(self) -> None:
        """Remember every descendant, so that tests can check they are all gone."""
        for _, proc in self.procs:
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    self.descendants.add(child.pid)
            except psutil.NoSuchProcess:
                pass

    def log(self, role: str, tail: int | None = None) -> str:
        path = self.workdir / f"{role}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:] if tail else text

    def kill_all(self, grace: float) -> None:
        self.snapshot()
        for _, proc in reversed(self.procs):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for _, proc in reversed(self.procs):
            _signal_group(proc.pid, signal.SIGKILL)  # the group may outlive its leader
            proc.wait()
        for pid in self.descendants:  # anything that left the group (setsid) still goes
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        _wait_gone(self.descendants, 5)
        for log in self._logs:
            log.close()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)


async def _scheduler_identity(address: str) -> dict[str, Any]:
    from distributed.core import rpc

    async with rpc(address, timeout=2) as scheduler:
        return await scheduler.identity()


class ExecutionRunner:
    """Runs executions of one stand-in, each in its own thread.

    Knobs (attributes): ``queue_delay`` seconds an execution stays QUEUED; ``cluster_timeout``
    for the dask cluster to come up; ``kill_grace`` seconds between SIGTERM and SIGKILL;
    ``nanny`` whether workers run under a nanny (the operator's default; True);
    ``not_in_image`` top-level packages the "image" lacks: no process of a run can import them
    (this project's own package, as in the default ImageSpec).
    """

    def __init__(self, standin: FlyteAdminStandIn) -> None:
        self._standin = standin
        self._threads: dict[str, threading.Thread] = {}
        self._abort: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.queue_delay = 0.0
        self.cluster_timeout = 60.0
        self.kill_grace = 3.0
        self.nanny = True
        self.not_in_image: tuple[str, ...] = ("dask_flyte_jupyter",)

    # -- API used by the servicer -------------------------------------------------------------

    def submit(self, ex: StandInExecution) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the stand-in is closed")
            self._abort[ex.name] = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(ex,), name=f"standin-run-{ex.name}", daemon=True
            )
            self._threads[ex.name] = thread
        thread.start()

    def abort(self, ex: StandInExecution) -> None:
        with self._lock:
            event = self._abort.get(ex.name)
        if event is not None:
            event.set()

    def close(self, timeout: float = 30) -> None:
        with self._lock:
            self._closed = True
            threads = dict(self._threads)
        lock = self._standin.servicer.lock
        for name, thread in threads.items():
            if thread.is_alive():
                ex = self._standin.executions[name]
                with lock:
                    if ex.abort_cause is None and not ex.is_terminal:
                        ex.abort_cause = "the Flyte Admin stand-in was closed"
                self._abort[name].set()
        for thread in threads.values():
            thread.join(timeout)

    # -- the run ------------------------------------------------------------------------------

    def _update(self, ex: StandInExecution, note: str = "", **changes: Any) -> None:
        with self._standin.servicer.lock:
            for key, value in changes.items():
                setattr(ex, key, value)
            ex.updated_at = time.time()
            ex.events.append(Event(ex.updated_at, ex.phase_name, note))

    def _check_abort(self, ex: StandInExecution) -> None:
        if self._abort[ex.name].is_set():
            raise _Aborted

    def _run(self, ex: StandInExecution) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"run-{ex.name}-", dir=self._standin.scratch_dir))
        procs = _Processes(workdir)
        outcome: dict[str, Any] = {}
        try:
            deadline = time.monotonic() + self.queue_delay
            while time.monotonic() < deadline:
                self._check_abort(ex)
                time.sleep(0.05)
            self._check_abort(ex)
            now = time.time()
            self._update(
                ex,
                "starting",
                phase=_P.WorkflowExecution.RUNNING,
                node_phase=_P.NodeExecution.RUNNING,
                task_phase=_P.TaskExecution.INITIALIZING,
                started_at=now,
                task_started_at=now,
            )
            template = ex.task.closure.compiled_task.template
            env = self._task_env(ex, workdir)
            if template.type == "dask":
                env["DASK_SCHEDULER_ADDRESS"] = self._start_cluster(ex, template, procs)
            self._check_abort(ex)
            outcome = self._run_job(ex, template, env, procs)
        except _Aborted:
            outcome = {"aborted": True}
        except Exception as exc:  # the cluster did not come up, or a stand-in bug
            outcome = {"error": self._system_error(ex, f"{type(exc).__name__}: {exc}")}
        finally:
            procs.kill_all(self.kill_grace)
            with self._standin.servicer.lock:
                ex.cluster["descendant_pids"] = sorted(procs.descendants)
                ex.log = procs.log("job-runner")
                ex.cluster["log"] = "".join(
                    procs.log(role) for role, _ in procs.procs if role != "job-runner"
                )
            self._finish(ex, outcome)
            ex.done.set()

    def _finish(self, ex: StandInExecution, outcome: dict[str, Any]) -> None:
        if outcome.get("aborted") or self._abort[ex.name].is_set():
            self._update(
                ex,
                ex.abort_cause or "aborted",
                phase=_P.WorkflowExecution.ABORTED,
                node_phase=_P.NodeExecution.ABORTED,
                task_phase=_P.TaskExecution.ABORTED,
                ended_at=time.time(),
            )
        elif "outputs" in outcome:
            self._update(
                ex,
                "succeeded",
                outputs=outcome["outputs"],
                outputs_uri=outcome["outputs_uri"],
                phase=_P.WorkflowExecution.SUCCEEDED,
                node_phase=_P.NodeExecution.SUCCEEDED,
                task_phase=_P.TaskExecution.SUCCEEDED,
                ended_at=time.time(),
            )
        else:
            error = outcome.get("error") or self._system_error(ex, "no outcome")
            self._update(
                ex,
                error.message.splitlines()[-1] if error.message else "failed",
                error=error,
                phase=_P.WorkflowExecution.FAILED,
                node_phase=_P.NodeExecution.FAILED,
                task_phase=_P.TaskExecution.FAILED,
                ended_at=time.time(),
            )

    @staticmethod
    def _system_error(ex: StandInExecution, message: str) -> core_execution_pb2.ExecutionError:
        return core_execution_pb2.ExecutionError(
            code="SYSTEM", message=message, kind=core_execution_pb2.ExecutionError.SYSTEM
        )

    def _base_env(self, workdir: Path) -> dict[str, str]:
        """The test process's environment without its Flyte / dask settings, plus the stand-in's.

        Like a pod, every process gets its own temporary directory (removed with the run).
        """
        tmp = workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLYTE_", "DASK_", "_F_", "FLYTECTL_"))
        }
        env["PATH"] = os.pathsep.join([str(_VENV_BIN), env.get("PATH", "")])
        env.update(self._standin.env)
        # flytekit's config lookup must find the stand-in's config, never the user's.
        env["FLYTECTL_CONFIG"] = str(self._standin.config_path)
        env["TMPDIR"] = str(tmp)
        env["DASK_TEMPORARY_DIRECTORY"] = str(tmp)
        if self.not_in_image:
            env["FLYTE_ADMIN_STANDIN_NOT_IN_IMAGE"] = ",".join(self.not_in_image)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(_IMAGE_SITE), env.get("PYTHONPATH", "")) if p
            )
        return env

    def _task_env(self, ex: StandInExecution, workdir: Path) -> dict[str, str]:
        """What propeller puts into the task's pod."""
        env = self._base_env(workdir)
        container = ex.task.closure.compiled_task.template.container
        env.update({kv.key: kv.value for kv in container.env})
        env.update({kv.key: kv.value for kv in ex.spec.envs.values})
        task_id = ex.task.id
        env.update(
            {
                "FLYTE_INTERNAL_EXECUTION_ID": ex.id.name,
                "FLYTE_INTERNAL_EXECUTION_PROJECT": ex.id.project,
                "FLYTE_INTERNAL_EXECUTION_DOMAIN": ex.id.domain,
                "FLYTE_INTERNAL_EXECUTION_WORKFLOW": f"{task_id.project}:{task_id.domain}:"
                f".flytegen.{task_id.name}",
                "FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN": f".flytegen.{task_id.name}",
                "FLYTE_INTERNAL_TASK_PROJECT": task_id.project,
                "FLYTE_INTERNAL_TASK_DOMAIN": task_id.domain,
                "FLYTE_INTERNAL_TASK_NAME": task_id.name,
                "FLYTE_INTERNAL_TASK_VERSION": task_id.version,
                "FLYTE_INTERNAL_PROJECT": task_id.project,
                "FLYTE_INTERNAL_DOMAIN": task_id.domain,
                "FLYTE_INTERNAL_NAME": task_id.name,
                "FLYTE_INTERNAL_VERSION": task_id.version,
                "FLYTE_ATTEMPT_NUMBER": "0",
            }
        )
        return env

    # -- the dask operator --------------------------------------------------------------------

    def _worker_shape(
        self, job: dask_pb2.DaskJob, template: tasks_pb2.TaskTemplate
    ) -> dict[str, Any]:
        """Worker args the Flyte dask plugin would build, then scaled down to this machine."""
        group = _resources(job.workers.resources)
        if not group["limits"]:  # the group's own resources if set, else the task's
            group = _resources(template.container.resources)
        limits = group["limits"]
        n_workers = max(1, job.workers.number_of_workers or 1)
        cpus = os.cpu_count() or 1
        total_memory = psutil.virtual_memory().total
        shape: dict[str, Any] = {
            "n_workers": n_workers,
            "resources": group,
            "requested_nthreads": None,
            "requested_memory_limit": None,
        }
        if limits.get("cpu"):
            requested = max(1, math.ceil(parse_quantity(limits["cpu"])))
            shape["requested_nthreads"] = requested
            shape["nthreads"] = min(requested, cpus)
        else:
            shape["nthreads"] = max(1, cpus // n_workers)
        fair_memory = total_memory // n_workers
        if limits.get("memory"):
            requested_mem = int(parse_quantity(limits["memory"]))
            shape["requested_memory_limit"] = requested_mem
            shape["memory_limit"] = min(requested_mem, fair_memory)
        else:
            shape["memory_limit"] = fair_memory
        shape["scaled_down"] = (shape["requested_nthreads"] or 0) > shape["nthreads"] or (
            shape["requested_memory_limit"] or 0
        ) > shape["memory_limit"]
        return shape

    def _start_cluster(
        self, ex: StandInExecution, template: tasks_pb2.TaskTemplate, procs: _Processes
    ) -> str:
        job = ParseDict(MessageToDict(template.custom), dask_pb2.DaskJob())
        shape = self._worker_shape(job, template)
        env = self._base_env(procs.workdir)
        preload: list[str] = []
        fake_versions = dict(self._standin.fake_versions)
        if fake_versions:
            env["FLYTE_ADMIN_STANDIN_FAKE_VERSIONS"] = json.dumps(fake_versions)
            preload = ["--preload", str(_FAKE_VERSIONS_PRELOAD)]
        scheduler_file = procs.workdir / "scheduler.json"
        dask_cli = [sys.executable, "-m", "dask"]
        scheduler_args = [
            *dask_cli,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
            *preload,
        ]
        with self._standin.servicer.lock:
            ex.dask_job = MessageToDict(job)
            ex.fake_versions = fake_versions
            ex.cluster.update(
                {
                    "shape": shape,
                    "scheduler_args": scheduler_args,
                    "worker_args": [],
                    "worker_pids": [],
                }
            )
        scheduler = procs.start("scheduler", scheduler_args, env)
        with self._standin.servicer.lock:
            ex.cluster["scheduler_pid"] = scheduler.pid
        deadline = time.monotonic() + self.cluster_timeout
        address = None
        while address is None:
            self._check_abort(ex)
            if scheduler.poll() is not None:
                raise RuntimeError(
                    f"dask scheduler exited with code {scheduler.returncode}:\n"
                    + procs.log("scheduler", 4000)
                )
            if time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start in time")
            try:
                address = json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        with self._standin.servicer.lock:
            ex.cluster["scheduler_address"] = address
        for i in range(shape["n_workers"]):
            worker_args = [
                *dask_cli,
                "worker",
                address,
                "--name",
                f"{ex.name}-worker-{i}",
                "--nthreads",
                str(shape["nthreads"]),
                "--memory-limit",
                str(shape["memory_limit"]),
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--nanny" if self.nanny else "--no-nanny",
                *preload,
            ]
            worker = procs.start(f"worker-{i}", worker_args, env)
            with self._standin.servicer.lock:
                ex.cluster["worker_args"].append(worker_args)
                ex.cluster["worker_pids"].append(worker.pid)
        self._update(ex, f"dask cluster: scheduler up, {shape['n_workers']} workers starting")
        while True:
            self._check_abort(ex)
            for role, proc in procs.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"dask {role} exited with code {proc.returncode}:\n" + procs.log(role, 4000)
                    )
            try:
                identity = asyncio.run(_scheduler_identity(address))
                joined = len(identity.get("workers", {}))
            except OSError:
                joined = 0
            if joined >= shape["n_workers"]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {joined} of {shape['n_workers']} dask workers joined in "
                    f"{self.cluster_timeout:.0f}s"
                )
            time.sleep(0.1)
        procs.snapshot()
        with self._standin.servicer.lock:
            ex.cluster["workers_joined"] = joined
        self._update(ex, f"dask cluster ready: {joined} workers")
        return address

    # -- the job runner -----------------------------------------------------------------------

    def _fill(self, ex: StandInExecution, arg: str) -> str:
        values = {
            "input": ex.node_inputs_uri,
            "inputprefix": ex.node_inputs_uri.rsplit("/", 1)[0],
            "outputprefix": ex.output_prefix,
            "rawoutputdataprefix": ex.raw_output_prefix,
            "checkpointoutputprefix": f"{ex.raw_output_prefix}/_flytecheckpoints",
            "prevcheckpointprefix": "",
            "perretryuniquekey": f"{ex.name}-{ex.node_id}-0",
        }
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), arg)

    def _run_job(
        self,
        ex: StandInExecution,
        template: tasks_pb2.TaskTemplate,
        env: dict[str, str],
        procs: _Processes,
    ) -> dict[str, Any]:
        container = template.container
        argv = [self._fill(ex, a) for a in [*container.command, *container.args]]
        if not argv:
            raise RuntimeError("the task template has no container command or args")
        runner = procs.start("job-runner", argv, env)
        with self._standin.servicer.lock:
            ex.task_args = argv
            ex.task_pid = runner.pid
        self._update(ex, "job runner started", task_phase=_P.TaskExecution.RUNNING)
        while runner.poll() is None:
            if self._abort[ex.name].is_set():
                raise _Aborted
            procs.snapshot()
            time.sleep(0.1)
        with self._standin.servicer.lock:
            ex.returncode = runner.returncode
        storage = self._standin.storage
        prefix = storage.key(ex.output_prefix)
        error_pb = storage.get(f"{prefix}/error.pb")
        if error_pb is not None:
            doc = errors_pb2.ErrorDocument.FromString(error_pb)
            return {
                "error": core_execution_pb2.ExecutionError(
                    code=doc.error.code,
                    message=doc.error.message,
                    error_uri=f"{ex.output_prefix}/error.pb",
                    kind=doc.error.origin,
                    timestamp=doc.error.timestamp,
                    worker=doc.error.worker,
                )
            }
        if runner.returncode != 0:
            return {
                "error": self._system_error(
                    ex,
                    f"[{ex.node_id}] job-runner terminated with exit code "
                    f"({runner.returncode}).\n{procs.log('job-runner', 4000)}",
                )
            }
        outputs_pb = storage.get(f"{prefix}/outputs.pb")
        if outputs_pb is None:
            if template.interface.outputs.variables:
                return {
                    "error": self._system_error(
                        ex, f"[{ex.node_id}] OutputsNotFound: no outputs.pb under {prefix}"
                    )
                }
            outputs_pb = storage.put(f"{prefix}/outputs.pb", b"") and b""
        return {
            "outputs": literals_pb2.LiteralMap.FromString(outputs_pb),
            "outputs_uri": f"{ex.output_prefix}/outputs.pb",
        }
