"""The runner of the Flyte Admin stand-in: propeller + the dask operator, as local processes.

For every execution it does what Flyte v1.16 + the dask-kubernetes operator do in Kubernetes,
with processes instead of pods:

1. phase QUEUED -> RUNNING (the task execution is INITIALIZING while the cluster starts);
2. propeller's part: the task template's container args get their placeholders filled with
   ``s3://`` paths of the stand-in's bucket and its env the variables propeller gives a pod
   (``FLYTE_INTERNAL_*``, the platform's, the execution's ``envs``);
3. for a ``dask`` task, Flyte's dask plugin: ``dask_flyte_jupyter.manifest.build_manifest`` (our
   translation of the v1.16 Go plugin) turns that template into the ``DaskJob``; the operator:
   its REAL builder functions (``dask_kubernetes.operator.controller.controller``) turn the
   DaskJob into the scheduler Deployment + Service, one Deployment per worker and the job-runner
   Pod, injecting ``DASK_SCHEDULER_ADDRESS`` / ``DASK_WORKER_NAME``;
4. kubelet's part: each pod's container ``command`` + ``args`` run as a process of the task's
   image (``images.py``: a venv built from its ImageSpec, or the "kernel image" for names the
   stand-in did not build), ``$(VAR)`` expanded from the container env, PATH = the image's bin
   first; the scheduler's Service name resolves to the scheduler process's loopback address.
   Only the networking flags a local process needs are added (see ``SCHEDULER_FLAGS`` /
   ``WORKER_FLAGS``). An executable missing from the image or a pod exiting early fails the
   execution with a system error naming the pod, the image and the command;
5. once every worker has joined, the job runner runs; ``outputs.pb`` or ``error.pb`` under the
   output prefix -> SUCCEEDED / FAILED; TerminateExecution -> ABORTED.

Every process is started in its own session and killed as a process group on completion, on
failure and on abort, before the terminal phase becomes visible to clients.  (TEST DOUBLE.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from flyteidl.core import errors_pb2, literals_pb2, tasks_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.plugins import dask_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from .images import SYSTEM_PATH, ImageStore, StandInImage
from .state import Event, StandInExecution

if TYPE_CHECKING:
    from .server import FlyteAdminStandIn

_P = core_execution_pb2
_VENV_BIN = Path(sys.executable).parent  # the "kernel image": the venv running the tests
_FAKE_VERSIONS_PRELOAD = Path(__file__).with_name("_fake_versions.py")
_IMAGE_SITE = Path(__file__).with_name("image_site")  # sitecustomize: what the image lacks
_PLACEHOLDER = re.compile(r"\{\{\s*\.?\s*(\w+)\s*\}\}")
#: The commands a platform team's Flyte v1 image has (the kernel image gets them as shims).
KERNEL_IMAGE_SHIMS = {"dask-scheduler": "scheduler", "dask-worker": "worker"}
#: Flags the stand-in adds to the scheduler pod's command line, and nothing else: listen on
#: loopback, on a free port instead of 8786 (``--port 0``), tell the stand-in the address in a
#: scheduler file, no dashboard (a pod has 8787 to itself; processes would collide).
SCHEDULER_FLAGS = ("--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file")
#: Flags the stand-in adds to a worker pod's command line: listen on loopback, no dashboard.
#: (The scheduler address comes, as in the pod, from ``DASK_SCHEDULER_ADDRESS``.) Plus
#: ``--no-nanny`` when ``runner.nanny`` is False and ``--preload`` for ``fake_versions``.
WORKER_FLAGS = ("--host", "127.0.0.1", "--no-dashboard")
#: The operator's scheduler port, in the ``DASK_SCHEDULER_ADDRESS`` it injects.
OPERATOR_SCHEDULER_PORT = 8786
_MAX_NAME = 53  # dask_kubernetes.constants.MAX_CLUSTER_NAME_LEN (63 - len("-scheduler"))


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` references expanded the way kubelet expands a container's command, args and
    env values: ``$(VAR)`` -> its value when VAR is defined (else left as it is);
    ``$$`` -> ``$``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (close := text.find(")", i + 2)) != -1:
            name = text[i + 2 : close]
            out.append(env[name] if name in env else text[i : close + 1])
            i = close + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's env as kubelet sets it: in order, each value expanded with the earlier."""
    env: dict[str, str] = {}
    for item in container.get("env") or ():
        env[item["name"]] = kubelet_expand(str(item.get("value", "")), env)
    return env


def k8s_name(text: str) -> str:
    """A DNS-1123 name the operator accepts for a DaskCluster (lowercase, '-', <= 53 chars)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if len(name) > _MAX_NAME or not name:
        name = "f" + hashlib.sha256(text.encode()).hexdigest()[: _MAX_NAME - 1]
    return name


class ContainerStartError(RuntimeError):
    """A pod's container did not start or did not stay up (the message names pod and image)."""


class _Aborted(Exception):
    pass


class _Processes:
    """The processes of one execution: each leads its own process group; killed as groups."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.descendants: set[int] = set()
        self._logs: list[Any] = []

    def start(
        self, role: str, argv: list[str], env: dict[str, str], executable: str | None = None
    ) -> subprocess.Popen:
        log = open(self.workdir / f"{role}.log", "wb")  # noqa: SIM115 - closed in kill_all
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            executable=executable,
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
    ``nanny`` whether workers run under a nanny (dask's default, so the pod's; False adds
    ``--no-nanny``, a stand-in deviation that saves ~1 s per run);
    ``not_in_image`` top-level packages the kernel image lacks: no process of a run on the
    kernel image can import them (this project's own package, as in the default ImageSpec);
    ``images`` the :class:`~.images.ImageStore` image names are pulled from (its cache dir).
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
        self.images = ImageStore()

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
            rendered = self._rendered_template(ex, template)
            dns: dict[str, str] = {}
            if template.type == "dask":
                job_pod, dns = self._start_cluster(ex, template, rendered, procs)
                pod_kind = "job-runner"
            else:  # a plain python task: propeller's pod is the task's container
                job_pod = {
                    "kind": "Pod",
                    "metadata": {"name": self._generated_name(ex)},
                    "spec": {"containers": [self._plain_container(rendered)]},
                }
                pod_kind = "task"
            self._check_abort(ex)
            outcome = self._run_job(ex, template, job_pod, pod_kind, dns, procs)
        except _Aborted:
            outcome = {"aborted": True}
        except ContainerStartError as exc:  # a pod did not start: what kubectl would show
            outcome = {"error": self._system_error(ex, str(exc))}
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

    # -- images: the registry and what a process of an image gets -----------------------------

    def _pull(self, ex: StandInExecution, name: str) -> StandInImage:
        """The image ``name``: a venv the store built under that name, else the kernel image
        (the test venv, standing for a platform team's image with the kernel's packages)."""
        image = self.images.get(name) or StandInImage(name=name, venv=None)
        with self._standin.servicer.lock:
            ex.cluster.setdefault("images", {})[name] = str(image.venv) if image.built else None
        return image

    def _kernel_image_shims(self) -> Path:
        """A bin directory with ``dask-scheduler`` / ``dask-worker`` that exec ``dask scheduler`` /
        ``dask worker`` of the test venv: the commands a Flyte v1 image has."""
        shims = self._standin.scratch_dir / "kernel-image-bin"
        with self._lock:
            if not shims.is_dir():
                shims.mkdir()
                for old, new in KERNEL_IMAGE_SHIMS.items():
                    path = shims / old
                    path.write_text(f'#!/bin/sh\nexec "{_VENV_BIN / "dask"}" {new} "$@"\n')
                    path.chmod(0o755)
        return shims

    def _process_env(self, image: StandInImage, workdir: Path) -> dict[str, str]:
        """What a process of ``image`` gets besides its container's env (its pod's node and
        image): the test process's environment without its Flyte / dask / Python-path settings,
        the image's ``PATH`` (its venv's bin first, then the system's), a private ``TMPDIR``
        (removed with the run), and ``FLYTECTL_CONFIG`` = the stand-in's config, so that
        flytekit never finds the user's. On the kernel image, ``image_site`` hides
        ``not_in_image``."""
        tmp = workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLYTE_", "DASK_", "_F_", "FLYTECTL_"))
            and k not in ("VIRTUAL_ENV", "PYTHONHOME")
        }
        python_path = env.pop("PYTHONPATH", "")
        if image.built:
            env["PATH"] = os.pathsep.join([str(image.bin), SYSTEM_PATH])
        else:
            path = [str(self._kernel_image_shims()), str(image.bin), SYSTEM_PATH]
            env["PATH"] = os.pathsep.join(path)
            if self.not_in_image:
                env["FLYTE_ADMIN_STANDIN_NOT_IN_IMAGE"] = ",".join(self.not_in_image)
                python_path = os.pathsep.join(p for p in (str(_IMAGE_SITE), python_path) if p)
            if python_path:
                env["PYTHONPATH"] = python_path
        env["FLYTECTL_CONFIG"] = str(self._standin.config_path)
        env["TMPDIR"] = str(tmp)
        env["DASK_TEMPORARY_DIRECTORY"] = str(tmp)
        return env

    # -- propeller ----------------------------------------------------------------------------

    @staticmethod
    def _generated_name(ex: StandInExecution) -> str:
        """The task execution's generated name (``<execution>-<node>-<attempt>``), which Flyte
        gives the DaskJob, so the cluster, its pods and its Service."""
        return k8s_name(f"{ex.name}-{ex.node_id}-0")

    def _rendered_template(
        self, ex: StandInExecution, template: tasks_pb2.TaskTemplate
    ) -> dict[str, Any]:
        """The template as the dask plugin gets it from propeller: the container args with the
        placeholders filled, the env with what propeller gives every container of the task (the
        deployment's variables, ``FLYTE_INTERNAL_*``, the execution's ``envs``)."""
        rendered = MessageToDict(template)
        container = rendered.setdefault("container", {})
        for key in ("command", "args"):
            if key in container:
                container[key] = [self._fill(ex, arg) for arg in container[key]]
        task_id = ex.task.id
        env = dict(self._standin.env)  # propeller's default env vars in this deployment
        env.update({kv.get("key", ""): kv.get("value", "") for kv in container.get("env", [])})
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
        env.update({kv.key: kv.value for kv in ex.spec.envs.values})
        container["env"] = [{"key": key, "value": value} for key, value in env.items()]
        return rendered

    def _plain_container(self, rendered: dict[str, Any]) -> dict[str, Any]:
        """The container of a non-dask task's pod, as propeller builds it."""
        container = rendered["container"]
        spec: dict[str, Any] = {"name": "primary", "image": container.get("image", "")}
        for key in ("command", "args"):
            if container.get(key):
                spec[key] = list(container[key])
        spec["env"] = [{"name": kv["key"], "value": kv.get("value", "")} for kv in container["env"]]
        return spec

    # -- kubelet ------------------------------------------------------------------------------

    def _start_container(
        self,
        ex: StandInExecution,
        procs: _Processes,
        role: str,
        pod_kind: str,
        pod: dict[str, Any],
        flags: list[str],
        dns: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[subprocess.Popen, list[str]]:
        """Runs the pod's (Deployment's) first container as a process: its ``command`` + ``args``
        with ``$(VAR)`` expanded from its env (``dns`` maps Service addresses to the real ones
        first), then the stand-in's ``flags``; the executable looked up in the image's PATH."""
        spec = pod["spec"]["template"]["spec"] if pod.get("kind") == "Deployment" else pod["spec"]
        container = spec["containers"][0]
        image = self._pull(ex, container.get("image", ""))
        env = container_env(container)
        for service, real in (dns or {}).items():
            env = {key: value.replace(service, real) for key, value in env.items()}
        argv = [kubelet_expand(str(a), env) for a in (container.get("command") or ())]
        argv += [kubelet_expand(str(a), env) for a in (container.get("args") or ())]
        where = f'{pod_kind} pod: container "{container.get("name")}" of image {image.name}'
        if not argv:
            raise ContainerStartError(f"{where} failed to start: no command specified")
        process_env = {**self._process_env(image, procs.workdir), **env, **(extra_env or {})}
        if "/" in argv[0]:
            executable = argv[0] if os.access(argv[0], os.X_OK) else None
        else:
            executable = shutil.which(argv[0], path=process_env["PATH"])
        command_line = [*argv, *flags]
        with self._standin.servicer.lock:
            ex.cluster.setdefault("pod_args", {})[role] = argv
            ex.cluster.setdefault("standin_flags", {})[role] = list(flags)
            ex.cluster.setdefault("executables", {})[role] = executable
            ex.cluster.setdefault("paths", {})[role] = process_env["PATH"]
        if executable is None:
            raise ContainerStartError(
                f'{where} failed to start: exec: "{argv[0]}": executable file not found in $PATH'
            )
        try:
            proc = procs.start(role, command_line, process_env, executable=executable)
        except OSError as error:  # a shim whose interpreter is missing, no permission, ...
            raise ContainerStartError(
                f'{where} failed to start: exec: "{argv[0]}": {error.strerror or error}'
            ) from None
        return proc, command_line

    @staticmethod
    def _exited(
        pod_kind: str, pod: dict[str, Any], procs: _Processes, role: str, code: int | None
    ) -> ContainerStartError:
        """A (Deployment's) pod whose process ended before the cluster was ready."""
        container = pod["spec"]["template"]["spec"]["containers"][0]
        lines = procs.log(role).strip().splitlines()[-10:]
        log = "\n".join(f"  {line}" for line in lines) if lines else "  (no output)"
        return ContainerStartError(
            f'{pod_kind} pod: container "{container["name"]}" of image {container.get("image")} '
            f"exited with code {code} "
            f"before the dask cluster was ready; the last lines of its log:\n{log}"
        )

    # -- the dask operator --------------------------------------------------------------------

    def _operator(self, ex: StandInExecution, manifest: dict[str, Any]) -> dict[str, Any]:
        """What the dask-kubernetes operator creates for the DaskJob, from its own builders."""
        from dask_kubernetes.operator.controller import controller as operator
        from dask_kubernetes.operator.validation import validate_cluster_name

        manifest = json.loads(json.dumps(manifest))  # the builders share sub-dicts
        name = manifest["metadata"]["name"]
        namespace = f"{ex.id.project}-{ex.id.domain}"  # Flyte's namespace template
        validate_cluster_name(name)
        labels = dict(manifest["metadata"].get("labels") or {})
        annotations = dict(manifest["metadata"].get("annotations") or {})
        spec = manifest["spec"]
        cluster = operator.build_cluster_spec(
            name,
            spec["cluster"]["spec"]["worker"],
            spec["cluster"]["spec"]["scheduler"],
            annotations,
            labels,
        )
        scheduler = cluster["spec"]["scheduler"]
        group = operator.build_default_worker_group_spec(
            name, cluster["spec"]["worker"], annotations, labels
        )
        worker = group["spec"]["worker"]
        return {
            "namespace": namespace,
            "daskcluster": cluster,
            "scheduler": operator.build_scheduler_deployment_spec(
                name, scheduler.get("spec"), annotations, labels
            ),
            "scheduler-service": operator.build_scheduler_service_spec(
                name, scheduler.get("service"), annotations, labels
            ),
            "workergroup": group,
            "workers": [
                operator.build_worker_deployment_spec(
                    worker_group_name=group["metadata"]["name"],
                    namespace=namespace,
                    cluster_name=name,
                    uuid=uuid.uuid4().hex[:10],
                    pod_spec=worker["spec"],
                    annotations=annotations,
                    labels=labels,
                )
                for _ in range(int(worker.get("replicas", 0)))
            ],
            "job-runner": operator.build_job_pod_spec(
                job_name=name,
                cluster_name=name,
                namespace=namespace,
                spec=spec["job"]["spec"],
                annotations=annotations,
                labels=labels,
            ),
        }

    def _start_cluster(
        self,
        ex: StandInExecution,
        template: tasks_pb2.TaskTemplate,
        rendered: dict[str, Any],
        procs: _Processes,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Starts the scheduler and the workers of the task's DaskJob and waits until every
        worker has joined; returns the job-runner pod and the Service -> address map."""
        from dask_flyte_jupyter.manifest import build_manifest

        platform = self._standin.platform_for(ex.id.project, ex.id.domain)
        manifest = build_manifest(rendered, name=self._generated_name(ex), platform=platform)
        pods = self._operator(ex, manifest)
        namespace = pods["namespace"]
        service = pods["scheduler-service"]["metadata"]["name"]
        ports = pods["scheduler-service"]["spec"].get("ports") or ()
        comm = next((p["port"] for p in ports if p.get("name") == "tcp-comm"), None)
        service_address = (
            f"tcp://{service}.{namespace}.svc.cluster.local:{comm or OPERATOR_SCHEDULER_PORT}"
        )
        job = ParseDict(MessageToDict(template.custom), dask_pb2.DaskJob())
        fake_versions = dict(self._standin.fake_versions)
        extra_env: dict[str, str] = {}
        preload: list[str] = []
        if fake_versions:
            extra_env["FLYTE_ADMIN_STANDIN_FAKE_VERSIONS"] = json.dumps(fake_versions)
            preload = ["--preload", str(_FAKE_VERSIONS_PRELOAD)]
        worker_container = manifest["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]
        plugin_args = list(worker_container.get("args") or ())

        def flag(name: str) -> str | None:
            return plugin_args[plugin_args.index(name) + 1] if name in plugin_args else None

        with self._standin.servicer.lock:
            ex.dask_job = MessageToDict(job)
            ex.fake_versions = fake_versions
            ex.cluster.update(
                {
                    "manifest": manifest,
                    "pods": pods,
                    "scheduler_service_address": service_address,
                    "shape": {
                        "n_workers": len(pods["workers"]),
                        "resources": worker_container.get("resources", {}),
                        "nthreads": flag("--nthreads"),
                        "memory_limit": flag("--memory-limit"),
                        "workers": {},
                    },
                    "scheduler_args": [],
                    "worker_args": [],
                    "worker_names": [],
                    "worker_pids": [],
                }
            )
        scheduler_file = procs.workdir / "scheduler.json"
        scheduler_pod = pods["scheduler"]
        scheduler, scheduler_args = self._start_container(
            ex,
            procs,
            "scheduler",
            "scheduler",
            scheduler_pod,
            [*SCHEDULER_FLAGS, str(scheduler_file), *preload],
            extra_env=extra_env,
        )
        with self._standin.servicer.lock:
            ex.cluster["scheduler_pid"] = scheduler.pid
            ex.cluster["scheduler_args"] = scheduler_args
        deadline = time.monotonic() + self.cluster_timeout
        address = None
        while address is None:
            self._check_abort(ex)
            if scheduler.poll() is not None:
                raise self._exited(
                    "scheduler", scheduler_pod, procs, "scheduler", scheduler.returncode
                )
            if time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start in time")
            try:
                address = json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        dns = {service_address: address}  # what cluster DNS + the Service would resolve
        with self._standin.servicer.lock:
            ex.cluster["scheduler_address"] = address
        worker_flags = [*WORKER_FLAGS, *([] if self.nanny else ["--no-nanny"]), *preload]
        workers: dict[str, dict[str, Any]] = {}
        for i, deployment in enumerate(pods["workers"]):
            role = f"worker-{i}"
            worker, worker_args = self._start_container(
                ex, procs, role, "dask-worker", deployment, worker_flags, dns, extra_env
            )
            workers[role] = deployment
            with self._standin.servicer.lock:
                ex.cluster["worker_args"].append(worker_args)
                ex.cluster["worker_names"].append(deployment["metadata"]["name"])
                ex.cluster["worker_pids"].append(worker.pid)
        n_workers = len(workers)
        self._update(ex, f"dask cluster: scheduler up, {n_workers} workers starting")
        while True:
            self._check_abort(ex)
            for role, proc in procs.procs:
                if proc.poll() is not None:
                    kind = "dask-worker" if role in workers else "scheduler"
                    pod = workers.get(role, scheduler_pod)
                    raise self._exited(kind, pod, procs, role, proc.returncode)
            try:
                identity = asyncio.run(_scheduler_identity(address))
                joined = len(identity.get("workers", {}))
            except OSError:
                identity, joined = {}, 0
            if joined >= n_workers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {joined} of {n_workers} dask workers joined in "
                    f"{self.cluster_timeout:.0f}s"
                )
            time.sleep(0.1)
        procs.snapshot()
        with self._standin.servicer.lock:
            ex.cluster["workers_joined"] = joined
            ex.cluster["shape"]["workers"] = {
                info.get("name"): {
                    "nthreads": info.get("nthreads"),
                    "memory_limit": info.get("memory_limit"),
                }
                for info in identity.get("workers", {}).values()
            }
        self._update(ex, f"dask cluster ready: {joined} workers")
        return pods["job-runner"], dns

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
        pod: dict[str, Any],
        pod_kind: str,
        dns: dict[str, str],
        procs: _Processes,
    ) -> dict[str, Any]:
        """Runs the job-runner pod (a plain task's pod) and reads what it left behind."""
        runner, argv = self._start_container(ex, procs, "job-runner", pod_kind, pod, [], dns)
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
