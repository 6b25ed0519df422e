"""The Flyte backend: the cell runs as a registered Flyte dask task on a Flyte cluster.

The only module that imports ``flytekit.remote``. One backend object serves one run:

1. ``build``: the cell task with the task image (``--image`` or the default ImageSpec from
   ``image.py``) and the extra versions output (``parity.py``); its version is the stable hash of
   cell, spec, input types and image (``task.py``), so it survives kernel restarts.
2. ``run``: connect (flytekit's config lookup or ``--config``; every call bounded by a gRPC
   deadline, so an unreachable endpoint fails in seconds), build the default image if it is
   missing, register the task in flytekit's notebook mode *only if that version does not exist
   yet* (an unchanged cell uploads nothing and registers nothing), create the execution with the
   cell's inputs (DataFrames, arrays and files as Flyte types, the rest as pickles; flytekit
   reuses this kernel's earlier upload of an equal value, a local file is marked by its content's
   stat so that an edited one is uploaded again), then follow it (``follow``) or return at once
   (``--no-wait``).
3. ``follow``: poll the execution (phase, node and task status, console link, elapsed time, shown
   live by the progress view), terminate it on Ctrl-C or ``--timeout``, fetch and convert its
   outputs, report the environment parity, or turn its error into the cell's own traceback
   (cloudpickle reports by-value code as ``<dynamic-code>``; its line numbers are the cell's).
   A ``--cache`` task node says whether Flyte answered it from its cache (``CACHE_HIT``: no pod,
   no cluster; the run is "cached", as a local cache hit) or stored its result there.

``attach`` re-attaches to an execution by id (after a kernel restart) and brings its outputs back.
"""

from __future__ import annotations

import builtins
import contextlib
import linecache
import os
import pathlib
import re
import shutil
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..cell import CellProgram
from ..errors import fold_repeats, unsent_output_text
from ..run import RunHandle, record_run
from ..spec import ClusterSpec, WorkerSpec
from ..task import PERFORMANCE_REPORT_OUTPUT, VERSIONS_OUTPUT, CellTask, build_task, quiet_flytekit

#: Seconds every call may take while connecting: an unreachable endpoint fails this fast.
CONNECT_DEADLINE = 5.0
#: Seconds any other single call to Flyte Admin may take.
RPC_DEADLINE = 60.0
#: Polling of a running execution: from this interval (seconds) up to the maximum while nothing
#: changes; back to the minimum on every change.
POLL_MIN, POLL_MAX = 0.2, 1.0
#: Between two of those reads (a handful of calls each), one small call every this many seconds
#: looks whether the execution's phase changed (say it ended), so that its end is seen at once.
PHASE_CHECK = 0.25
#: Seconds to wait for a terminated execution to reach ABORTED.
TERMINATE_WAIT = 60.0
#: Above this many bytes uploaded per run (code + inputs), the run gets a note.
LARGE_UPLOAD_BYTES = 10 * 2**20
START_NODE, END_NODE = "start-node", "end-node"
_CELL_FUNCTION = "cell"  # the code name of the generated task function (task.py)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+?)\s*$')
#: How Python's traceback says that the frame above repeats (a deep recursion).
_REPEATED = re.compile(r"^\s*\[Previous line repeated (?P<count>\d+) more times?\]\s*$")


class _Explained(Exception):
    """An error whose readable explanation (what the cell shows) is known where it is raised."""

    def __init__(self, message: str, *advice: str) -> None:
        super().__init__(message)
        self.flyte_dask_explanation = [f"{type(self).__name__}: {message}", *advice]


class FlyteConfigError(_Explained, ValueError):
    """A problem with ``--config`` / ``--project`` / ``--domain`` the user must fix."""


class FlyteConnectionError(_Explained, ConnectionError):
    """Flyte Admin could not be reached, or refused the credentials or the project."""


class RemoteExecutionError(RuntimeError):
    """The remote execution failed outside the cell's code, or was aborted by someone else."""


class RemoteTaskError(Exception):
    """The cell's code raised an exception that is not a Python builtin (its type is named)."""


class RemoteTimeoutError(TimeoutError):
    """The execution ran longer than ``--timeout`` and was terminated."""


class _TimedOut(Exception):
    pass


@dataclass(frozen=True)
class Connection:
    """Where to run: a flytectl config file (None: flytekit's lookup), project and domain
    (None: the config's, else flytekit's defaults)."""

    config: str | None = None
    project: str | None = None
    domain: str | None = None

    def __post_init__(self) -> None:
        if self.config is not None:
            path = pathlib.Path(self.config).expanduser()
            if not path.is_file():
                raise FlyteConfigError(f"--config: no such file: {self.config}")
            object.__setattr__(self, "config", str(path))

    def load(self) -> tuple[Any, str, str, str, str]:
        """(flytekit Config, endpoint, project, domain, where the configuration came from)."""
        from flytekit.configuration import Config, TaskConfig
        from flytekit.configuration.file import get_config_file

        config_file = get_config_file(self.config)
        source = self.config or getattr(config_file, "_location", None)
        config = Config.auto(config_file=self.config)
        defaults = TaskConfig.auto(config_file=self.config)
        project = self.project or defaults.project
        domain = self.domain or defaults.domain
        if not project or not domain:
            raise FlyteConfigError("no Flyte project/domain: pass --project and --domain")
        where = f"config {source}" if source else "no Flyte config file found (flytekit defaults)"
        return config, str(config.platform.endpoint), project, domain, where


def _remote_class() -> type:
    """``FlyteRemote`` that tells the run when flytekit uploads the cell's code (for timings)."""
    from flytekit.remote import FlyteRemote

    class CellRemote(FlyteRemote):  # type: ignore[misc]
        on_upload: Callable[[pathlib.Path], None] | None = None
        after_upload: Callable[[], None] | None = None

        def upload_file(self, to_upload: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
            if self.on_upload is not None:
                self.on_upload(pathlib.Path(to_upload))
            result = super().upload_file(to_upload, *args, **kwargs)
            if self.after_upload is not None:
                self.after_upload()
            return result

        def _pickle_and_upload_entity(self, entity: Any, pickled_dict: Any = None) -> Any:
            # flytekit files a notebook task in the pickle under the task's name, but the job
            # runner looks it up by the name its resolver writes into the container args, taken
            # from the task's function (a Python identifier): for a --name such as "remote-cell"
            # or "team.prep" the two differ, so the task is filed under that name too.
            if pickled_dict is None:
                from flytekit.remote.remote import _get_pickled_target_dict

                _, pickled_dict = _get_pickled_target_dict(entity)
            looked_up_as = entity.task_resolver.loader_args(None, entity)[-1]
            pickled_dict.entities.setdefault(looked_up_as, entity)
            return super()._pickle_and_upload_entity(entity, pickled_dict)

    return CellRemote


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Every gRPC call inside fails with ``FlyteTimeout`` after ``seconds`` (not retried)."""
    from flytekit.clients.grpc_utils.deadline_interceptor import scoped_grpc_deadline

    with scoped_grpc_deadline(seconds):
        yield


def _flyte_inputs(namespace: Mapping[str, object], names: tuple[str, ...]) -> dict[str, Any]:
    """Local files and directories named by ``pathlib`` paths travel as FlyteFile/FlyteDirectory
    (flytekit uploads them); a path on this machine would mean nothing on the cluster."""
    converted: dict[str, Any] = {}
    for name in names:
        value = namespace[name]
        if isinstance(value, pathlib.PurePath):
            from flytekit.types.directory import FlyteDirectory
            from flytekit.types.file import FlyteFile

            path = pathlib.Path(value)
            flyte_path: Any = None
            if path.is_file():
                flyte_path = FlyteFile(str(path))
            elif path.is_dir():
                flyte_path = FlyteDirectory(str(path))
            if flyte_path is not None:
                # flytekit reuses an earlier upload of an equal pickle, in which a FlyteFile is
                # just its path: the content's mark makes an edited file another value.
                flyte_path.flyte_dask_content = _content_mark(path)
                converted[name] = flyte_path
    return converted


def _content_mark(path: pathlib.Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """What tells an edited file or directory from the one uploaded before, without reading
    it: per file its name in ``path``, inode, size, and modification and change times (the
    change time no tool can set back)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    mark = []
    for file in files:
        stat = file.stat()
        name = file.relative_to(path).as_posix() if file != path else ""
        mark.append((name, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return tuple(mark)


def _size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def input_sizes(inputs: Mapping[str, Any], input_types: Mapping[str, Any]) -> dict[str, int]:
    """Roughly how many bytes each input uploads: frames and arrays by memory, files by size,
    pickled values by their pickle; plain values (numbers, short strings) are left out."""
    import cloudpickle

    from ..task import type_label

    sizes: dict[str, int] = {}
    for name, value in inputs.items():
        label = type_label(input_types.get(name))
        try:
            if label == "DataFrame":
                sizes[name] = int(value.memory_usage(deep=True).sum())
            elif label == "ndarray":
                sizes[name] = int(value.nbytes)
            elif label == "FlyteFile":
                sizes[name] = os.path.getsize(value.path)
            elif label == "FlyteDirectory":
                root = pathlib.Path(value.path)
                sizes[name] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
            elif label == "pickle":
                sizes[name] = len(cloudpickle.dumps(value))
        except Exception:  # a size is a hint, never a reason to fail
            continue
    return sizes


def parse_execution_id(text: str, project: str, domain: str) -> tuple[str, str, str]:
    """``NAME``, ``PROJECT/DOMAIN/NAME`` or a Flyte console URL -> (project, domain, name)."""
    text = text.strip()
    match = re.search(r"/projects/([^/]+)/domains/([^/]+)/executions/([^/?#]+)", text)
    if match:
        return match[1], match[2], match[3]
    parts = [part for part in re.split(r"[/:]", text) if part]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 1:
        return project, domain, parts[0]
    raise FlyteConfigError(f"not an execution id: {text!r} (NAME, PROJECT/DOMAIN/NAME or a URL)")


class FlyteBackend:
    """Runs cell tasks on a Flyte cluster through ``FlyteRemote`` in notebook mode."""

    name = "flyte"

    def __init__(
        self, connection: Connection, *, timeout: float | None = None, wait: bool = True
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.wait = wait
        self.image: str | None = None
        self.default_image: Any = None  # image.DefaultImage when no --image was given
        self.upload_sizes: dict[str, int] = {}  # "code" (pkl.gz) and input names -> bytes
        self.uploaded_bytes = 0  # what this run really uploaded (code and inputs)
        self.platform: Any = None  # platform.Platform: the deployment's values, once read
        self._cell_task: CellTask | None = None
        self._code_files: dict[str, str] = {}
        self._remote: Any = None
        self._endpoint = ""
        self._project = ""
        self._domain = ""
        self._execution: Any = None
        self._execution_name = ""
        self._created = 0.0  # monotonic time the execution was created
        self._output_types: dict[str, Any] = {}

    # ---- build -------------------------------------------------------------------------------

    def build(
        self,
        program: CellProgram,
        spec: ClusterSpec,
        namespace: Mapping[str, object],
        *,
        check_image: bool = True,
    ) -> CellTask:
        """The cell task for a remote run: the task image in its spec (so that the version
        changes with the image) and the versions output. Image problems raise ``ImageError``
        (unless ``check_image`` is false: the dry run shows them as warnings)."""
        from ..execute import code_files
        from ..image import check_buildable, default_image

        task_spec = spec
        if spec.image is None:
            self.default_image = default_image(program.imports)
            if check_image:
                check_buildable(self.default_image)
            task_spec = replace(spec, image=self.default_image.name)
        self.image = task_spec.image
        converted = _flyte_inputs(namespace, program.inputs)
        cell_task = build_task(program, task_spec, {**namespace, **converted}, report_versions=True)
        self._cell_task = cell_task
        self._output_types = dict(cell_task.task.python_interface.outputs)
        originals = {name: namespace[name] for name in program.inputs}
        self._code_files = code_files(program, originals, cell_task.filename)
        return cell_task

    # ---- run ---------------------------------------------------------------------------------

    def run(
        self, cell_task: CellTask, inputs: Mapping[str, object], handle: RunHandle
    ) -> dict[str, Any] | None:
        """Registers (if needed) and starts the execution; follows it unless ``--no-wait``."""
        self._cell_task = cell_task
        try:
            remote = self.connect(handle)
            self._describe_image(handle)
            self.platform = self.read_platform(remote)
            flyte_task = self._register(remote, cell_task, handle)
            self._show_shape(flyte_task, handle)
            self._create(remote, flyte_task, cell_task, inputs, handle)
        except KeyboardInterrupt as interrupt:
            interrupt.flyte_dask_message = (  # type: ignore[attr-defined]
                self._terminate(handle, "interrupted from the notebook")
                if self._execution_name
                else "nothing was started on Flyte"
            )
            raise
        if not self.wait:
            handle.begin("submitted")
            handle.refresher = lambda: self.refresh(handle)
            handle.canceller = lambda: self.cancel(handle)
            handle.details["follow"] = (
                "handle.wait() follows it and brings the outputs back; after a kernel restart: "
                f"%flyte_dask_attach {self._execution_name}"
            )
            return None
        return self.follow(handle, self.timeout)

    def connect(self, handle: RunHandle | None = None) -> Any:
        """A ``FlyteRemote`` for the connection; nothing is sent yet."""
        from flytekit.core.python_auto_container import default_notebook_task_resolver

        if handle is not None:
            handle.begin("connecting")
        config, endpoint, project, domain, where = self.connection.load()
        self._endpoint, self._project, self._domain = endpoint, project, domain
        if handle is not None:
            handle.details["flyte"] = f"{endpoint}, project {project}, domain {domain} ({where})"
        # flytekit's notebook resolver caches its own name on first use, which changes every
        # later pickle: read it before the first registration, so that all pickles agree.
        _ = default_notebook_task_resolver.lhs
        with quiet_flytekit():
            self._remote = _remote_class()(
                config,
                default_project=project,
                default_domain=domain,
                interactive_mode_enabled=True,
            )
        _forget_other_deployments((endpoint, project, domain))
        return self._remote

    def read_platform(self, remote: Any) -> Any:
        """The deployment's values (``platform.Platform``): the platform file's, with Flyte
        Admin's TASK_RESOURCE attributes of this project/domain when it has any."""
        from flytekit.exceptions.base import FlyteException

        from ..platform import PlatformError, platform_from_environment
        from .cluster_shape import with_admin_resources

        try:
            platform = platform_from_environment()
        except PlatformError as error:
            raise FlyteConfigError(str(error)) from None
        try:
            with _deadline(CONNECT_DEADLINE), quiet_flytekit():
                return with_admin_resources(platform, remote.client, self._project, self._domain)
        except FlyteException as error:  # the first call: a silent endpoint fails here
            raise self._connection_error(error) from None

    def _show_shape(self, flyte_task: Any, handle: RunHandle) -> None:
        """The cluster the registered task gets on this platform: the summary's "used" row, and
        a note for each pod whose resources a platform limit lowers."""
        from .cluster_shape import cluster_shape

        found = cluster_shape(flyte_task.template, self.platform)
        if found is None:
            return
        handle.details["cluster"] = found.detail
        for note in found.notes:
            handle.note(note)
        handle.shape = found.shape

    def _connection_error(self, error: BaseException) -> FlyteConnectionError:
        """One clear message naming the endpoint (never the credentials)."""
        from flytekit.exceptions.user import (
            FlyteAuthenticationException,
            FlyteInvalidInputException,
            FlyteTimeout,
        )

        where = f"Flyte Admin at {self._endpoint}"
        auth_problem = _auth_config_problem(error)
        if isinstance(error, FlyteAuthenticationException):
            text = f"{where} refused the credentials"
            advice = "Log in again (or fix the config's auth settings) and re-run the cell."
        elif isinstance(error, FlyteInvalidInputException):
            text, advice = self._unknown_target(where)
        elif auth_problem is not None:
            text = f"the auth settings of the Flyte config for {where} are incomplete"
            advice = f"flytekit: {auth_problem}"
            if "client id" in auth_problem.lower():
                advice = (
                    "clientSecretLocation (or clientSecretEnvVar) makes flytekit log in with a "
                    "client secret, which needs admin.clientId as well: add clientId to the "
                    "config, or remove the secret to log in interactively."
                )
        else:
            if isinstance(error, FlyteTimeout):
                text = f"{where} did not answer within {CONNECT_DEADLINE:g}s"
            else:
                text = f"cannot reach {where} ({type(error).__name__})"
            advice = (
                "Check the endpoint in the Flyte config (--config PATH, $FLYTECTL_CONFIG or "
                "~/.flyte/config.yaml) and that the cluster is reachable from this machine."
            )
        return FlyteConnectionError(text, advice)

    def _unknown_target(self, where: str) -> tuple[str, str]:
        """What Admin's INVALID_ARGUMENT for a project / domain means (Admin validates that both
        are registered): which of them does not exist, from Admin's own lists when it gives them."""
        projects: list[str] | None = None
        domains: list[str] | None = None
        with contextlib.suppress(Exception), _deadline(CONNECT_DEADLINE), quiet_flytekit():
            client = self._remote.client
            projects = sorted(p.id for p in client.list_projects_paginated(limit=100)[0])
            domains = [d.id for d in client.get_domains()]
        if projects is not None and self._project not in projects:
            known = ", ".join(projects) or "none"
            return (
                f"project {self._project!r} does not exist on {where}",
                f"Pass an existing --project (it has: {known}), or create the project first.",
            )
        if domains is not None and self._domain not in domains:
            return (
                f"domain {self._domain!r} does not exist on {where}",
                f"Pass an existing --domain (it has: {', '.join(domains)}).",
            )
        return (
            f"{where} refused project {self._project!r} / domain {self._domain!r}",
            "Pass an existing --project / --domain.",
        )

    def _describe_image(self, handle: RunHandle) -> None:
        from ..dryrun import python_in_image

        if self.default_image is not None:
            handle.details["image"] = f"{self.image} ({self.default_image.describe()})"
            return
        handle.details["image"] = f"{self.image} (--image)"
        python = python_in_image(self.image or "")
        if python is not None and python != sys.version_info[:2]:
            handle.note(
                f"image {self.image} is for Python {python[0]}.{python[1]}, this kernel runs "
                f"{sys.version_info[0]}.{sys.version_info[1]}: the pickled cell will not load"
            )

    def _register(self, remote: Any, cell_task: CellTask, handle: RunHandle) -> Any:
        """The registered task of this version: fetched if it exists, else registered (the
        code is pickled and uploaded, then the task created)."""
        from flytekit.exceptions.base import FlyteException
        from flytekit.exceptions.user import FlyteEntityNotExistException

        from ..registration import registration_settings

        try:
            with _deadline(CONNECT_DEADLINE):
                flyte_task = remote.fetch_task(
                    self._project, self._domain, cell_task.name, cell_task.version
                )
            handle.details["code"] = "this version is registered already: nothing uploaded"
        except FlyteEntityNotExistException:
            flyte_task = None
        except FlyteException as error:
            raise self._connection_error(error) from None
        if flyte_task is None:
            if self.default_image is not None:
                from ..image import ensure_image

                handle.begin("building image")
                try:
                    ensure_image(self.default_image)
                except ValueError as error:  # ImageError: says how to pass --image instead
                    error.flyte_dask_explanation = [f"ImageError: {error}"]  # type: ignore[attr-defined]
                    raise
            handle.begin("packaging code")
            remote.on_upload = lambda path: self._uploading(path, handle)
            remote.after_upload = lambda: handle.begin("registering")
            settings = registration_settings(self._project, self._domain, cell_task.version)
            try:
                with _deadline(RPC_DEADLINE), quiet_flytekit():
                    flyte_task = remote.register_task(cell_task.task, settings, cell_task.version)
            finally:
                remote.on_upload = remote.after_upload = None
        flyte_task.python_interface = cell_task.task.python_interface
        return flyte_task

    def _uploading(self, path: pathlib.Path, handle: RunHandle) -> None:
        handle.begin("uploading code")
        size = path.stat().st_size
        self.upload_sizes["code"] = size
        self.uploaded_bytes += size
        handle.details["code"] = f"{_size_text(size)} pickled (pkl.gz), uploaded and registered"

    def _create(
        self,
        remote: Any,
        flyte_task: Any,
        cell_task: CellTask,
        inputs: Mapping[str, object],
        handle: RunHandle,
    ) -> None:
        """Creates the execution (inputs are converted to Flyte literals and uploaded first:
        flytekit reuses the upload of a value equal to one this kernel sent before)."""
        handle.begin("uploading inputs")
        values = {**inputs, **_flyte_inputs(inputs, tuple(inputs))}
        sizes = input_sizes(values, cell_task.input_types)
        self.upload_sizes.update(sizes)
        uploads: list[int] = []  # bytes of each file flytekit uploads for the inputs
        remote.on_upload = lambda path: uploads.append(path.stat().st_size)
        name = f"fd{uuid.uuid4().hex[:18]}"  # ours, so that an interrupt can still terminate it
        self._execution_name = name
        try:
            with _deadline(RPC_DEADLINE):
                execution = remote.execute(
                    flyte_task,
                    inputs=values,
                    project=self._project,
                    domain=self._domain,
                    execution_name=name,
                    type_hints=cell_task.task.python_interface.inputs,
                    wait=False,
                )
        finally:
            remote.on_upload = None
        self.uploaded_bytes += sum(uploads)
        if sizes:
            reused = "" if uploads else " (as sent before: not uploaded again)"
            handle.details["inputs"] = (
                ", ".join(f"{name} {_size_text(size)}" for name, size in sizes.items()) + reused
            )
        if self.uploaded_bytes > LARGE_UPLOAD_BYTES:
            biggest = max(sizes, key=lambda name: sizes[name]) if sizes else "code"
            handle.note(
                f"this run uploaded {_size_text(self.uploaded_bytes)} (largest input: {biggest}, "
                f"{_size_text(self.upload_sizes.get(biggest, 0))}), again whenever a value "
                "changes and in every new kernel: put large data in blob storage and read it "
                "inside the cell"
            )
        self._started(remote, execution, handle)

    def _started(self, remote: Any, execution: Any, handle: RunHandle) -> None:
        from flytekit.models.core.execution import WorkflowExecutionPhase

        self._execution = execution
        self._execution_name = execution.id.name
        self._created = time.monotonic()
        ident = execution.id
        handle.details["execution"] = f"{ident.project}/{ident.domain}/{ident.name}"
        handle.links["Flyte console"] = remote.generate_console_url(execution)
        phase = WorkflowExecutionPhase.enum_to_string(execution.closure.phase)
        handle.remote_status = f"execution {phase}"

    # ---- follow ------------------------------------------------------------------------------

    def follow(self, handle: RunHandle, timeout: float | None = None) -> dict[str, Any]:
        """Waits for the execution (live status on the handle); returns its outputs. Ctrl-C and
        ``timeout`` (seconds from the execution's creation) terminate it."""
        if timeout is None:
            timeout = self.timeout
        handle.refresher = handle.canceller = None
        handle.details.pop("follow", None)
        deadline = None if timeout is None else self._created + timeout
        try:
            execution = self._poll(handle, deadline)
        except KeyboardInterrupt as interrupt:
            interrupt.flyte_dask_message = self._terminate(  # type: ignore[attr-defined]
                handle, "interrupted from the notebook"
            )
            raise
        except _TimedOut:
            ended = self._terminate(handle, f"ran longer than --timeout {timeout:g}s")
            text = f"the execution ran longer than --timeout {timeout:g}s; {ended}"
            failure = RemoteTimeoutError(text)
            failure.flyte_dask_explanation = [  # type: ignore[attr-defined]
                f"RemoteTimeoutError: {text}",
                *self._footer(handle, "timed out"),
            ]
            raise failure from None
        return self._finish(execution, handle)

    def _poll(self, handle: RunHandle, deadline: float | None) -> Any:
        from flytekit.exceptions.base import FlyteException

        remote, execution = self._remote, self._execution
        interval, last = POLL_MIN, ""
        while True:
            try:
                execution = remote.sync_execution(execution, sync_nodes=True)
            except FlyteException as error:
                raise FlyteConnectionError(
                    f"lost contact with Flyte Admin at {self._endpoint} "
                    f"({type(error).__name__}); execution {self._execution_name} may still run",
                    f"Re-attach later: %flyte_dask_attach {self._execution_name}",
                ) from None
            self._execution = execution
            status = self._show_status(execution, handle)
            if execution.is_done:
                return execution
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise _TimedOut
            interval = POLL_MIN if status != last else min(interval * 1.5, POLL_MAX)
            last = status
            self._sleep_watching(
                execution, now + interval if deadline is None else min(now + interval, deadline)
            )

    def _sleep_watching(self, execution: Any, until: float) -> None:
        """Sleeps until ``until`` (monotonic), or less once the execution's phase changed:
        between the full reads of ``_poll`` one ``GetExecution`` every :data:`PHASE_CHECK`
        seconds, so that a run's end is seen within that, not within :data:`POLL_MAX`."""
        from flytekit.exceptions.base import FlyteException

        phase = execution.closure.phase
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(PHASE_CHECK, left))
            if time.monotonic() >= until:
                return
            try:
                with _deadline(CONNECT_DEADLINE):
                    current = self._remote.client.get_execution(execution.id)
            except FlyteException:
                return  # the full read says what is wrong
            if current.closure.phase != phase:
                return

    def _show_status(self, execution: Any, handle: RunHandle) -> str:
        """Execution phase, node and task status on the handle; the run's phase from them."""
        from flytekit.models.core.execution import (
            NodeExecutionPhase,
            TaskExecutionPhase,
            WorkflowExecutionPhase,
        )

        phase = execution.closure.phase
        parts = [f"execution {WorkflowExecutionPhase.enum_to_string(phase)}"]
        task_phase = node_phase = None
        cached = False  # the node's result came from Flyte's cache: no cluster starts for it
        for node_id, node in (execution.node_executions or {}).items():
            if node_id in (START_NODE, END_NODE):
                continue
            node_phase = node.closure.phase
            cached = cached or _cache_status(node) == "CACHE_HIT"
            parts.append(f"node {node_id} {NodeExecutionPhase.enum_to_string(node_phase)}")
            if node.task_executions:
                task_phase = node.task_executions[-1].closure.phase
                parts.append(f"task {TaskExecutionPhase.enum_to_string(task_phase)}")
        handle.remote_status = ", ".join(parts)
        starting = (
            None,
            TaskExecutionPhase.UNDEFINED,
            TaskExecutionPhase.QUEUED,
            TaskExecutionPhase.WAITING_FOR_RESOURCES,
            TaskExecutionPhase.INITIALIZING,
        )
        waiting = (None, NodeExecutionPhase.UNDEFINED, NodeExecutionPhase.QUEUED)
        w = WorkflowExecutionPhase
        if phase in (w.UNDEFINED, w.QUEUED):
            wanted = "queued"
        elif phase == w.ABORTING:
            wanted = "aborting"
        elif cached:
            wanted = handle.current_phase or "queued"
        elif phase == w.RUNNING and task_phase is None and node_phase in waiting:
            wanted = "queued"  # propeller has not started the task (it looks up the cache first)
        elif phase == w.RUNNING and task_phase in starting:
            wanted = "starting cluster"
        elif phase in (w.RUNNING, w.SUCCEEDING, w.FAILING):
            wanted = "running"
        else:
            wanted = handle.current_phase or "running"
        if handle.current_phase != wanted:
            handle.begin(wanted)
        return handle.remote_status

    def _terminate(self, handle: RunHandle, cause: str) -> str:
        """Terminates the execution and waits (bounded) until it is ABORTED; says what happened."""
        from flytekit.exceptions.base import FlyteException
        from flytekit.models.core.execution import WorkflowExecutionPhase

        remote, name = self._remote, self._execution_name
        try:
            if self._execution is None:  # interrupted while it was being created
                with _deadline(CONNECT_DEADLINE):
                    self._execution = remote.fetch_execution(self._project, self._domain, name)
            with _deadline(CONNECT_DEADLINE):
                remote.terminate(self._execution, cause)
        except FlyteException:
            pass  # it ended already, or never started: its phase below tells
        except KeyboardInterrupt:
            return f"termination of execution {name} was interrupted: check the Flyte console"
        if self._execution is None:
            return "nothing was started on Flyte"
        deadline = time.monotonic() + TERMINATE_WAIT
        execution = self._execution
        try:
            while time.monotonic() < deadline:
                execution = remote.sync_execution(execution, sync_nodes=False)
                if execution.is_done:
                    break
                time.sleep(POLL_MIN)
        except KeyboardInterrupt:
            return f"execution {name} was told to terminate and is still stopping"
        except FlyteException:
            pass
        phase = WorkflowExecutionPhase.enum_to_string(execution.closure.phase)
        handle.remote_status = f"execution {phase}"
        message = (
            f"execution {name} was terminated ({phase})"
            if phase == "ABORTED"
            else f"execution {name} is {phase}"
        )
        handle.note(message)
        return message

    def refresh(self, handle: RunHandle) -> None:
        """The current phase of a ``--no-wait`` execution (for ``%flyte_dask_runs``)."""
        from flytekit.exceptions.base import FlyteException
        from flytekit.models.core.execution import WorkflowExecutionPhase

        try:
            with _deadline(CONNECT_DEADLINE):
                self._execution = self._remote.sync_execution(self._execution, sync_nodes=False)
        except FlyteException:
            handle.remote_status = f"unknown: Flyte Admin at {self._endpoint} did not answer"
            return
        phase = WorkflowExecutionPhase.enum_to_string(self._execution.closure.phase)
        done = " (handle.wait() brings the outputs)" if self._execution.is_done else ""
        handle.remote_status = f"execution {phase}{done}"

    def cancel(self, handle: RunHandle) -> None:
        """Terminates a ``--no-wait`` execution."""
        message = self._terminate(handle, "cancelled from the notebook")
        handle.refresher = handle.canceller = handle.follower = None
        handle.finish("interrupted", RemoteExecutionError(message))

    # ---- results -----------------------------------------------------------------------------

    def _finish(self, execution: Any, handle: RunHandle) -> dict[str, Any]:
        from flytekit.models.core.execution import WorkflowExecutionPhase

        phase = execution.closure.phase
        handle.remote_status = f"execution {WorkflowExecutionPhase.enum_to_string(phase)}"
        if phase == WorkflowExecutionPhase.SUCCEEDED:
            self._read_cache_status(execution, handle)
            handle.begin("fetching outputs")
            return self._outputs(execution, handle)
        if phase == WorkflowExecutionPhase.FAILED:
            raise self._failure(execution, handle)
        name = WorkflowExecutionPhase.enum_to_string(phase)
        cause = getattr(getattr(execution.closure, "abort_metadata", None), "cause", "") or ""
        text = f"execution {execution.id.name} ended {name}" + (f": {cause}" if cause else "")
        failure = RemoteExecutionError(text)
        failure.flyte_dask_explanation = [  # type: ignore[attr-defined]
            f"RemoteExecutionError: {text}",
            *self._footer(handle, name.lower()),
        ]
        raise failure

    def _read_cache_status(self, execution: Any, handle: RunHandle) -> None:
        """Whether the task node's result came from Flyte's cache (``CACHE_HIT``: no pod and
        no cluster ran; the outputs are those of an earlier execution) or was stored there
        (``CACHE_POPULATED``), from the node executions that ``sync_execution`` read."""
        from flytekit.exceptions.base import FlyteException

        nodes = [
            node
            for node_id, node in (execution.node_executions or {}).items()
            if node_id not in (START_NODE, END_NODE)
        ]
        if not nodes:  # not synced with its nodes: ask Admin for them
            try:
                with _deadline(CONNECT_DEADLINE):
                    listed, _ = self._remote.client.list_node_executions(execution.id)
            except FlyteException:
                return
            nodes = [n for n in listed if n.id.node_id not in (START_NODE, END_NODE)]
        for node in nodes:
            status = _cache_status(node)
            if status == "CACHE_HIT":
                handle.cache_hit = True
                handle.shape = None  # no cluster was used: no "used" row
                handle.details.pop("cluster", None)
                source = node.closure.task_node_metadata.catalog_key.source_task_execution
                ident = source.node_execution_id.execution_id if source is not None else None
                if ident is not None and ident.name:
                    handle.details["cached from"] = (
                        f"execution {ident.project}/{ident.domain}/{ident.name} "
                        f"(its result is reused; no cluster was started)"
                    )
            elif status == "CACHE_POPULATED":
                handle.cache_stored = True

    def _outputs(self, execution: Any, handle: RunHandle) -> dict[str, Any]:
        """The execution's outputs as Python values; the versions output becomes the parity
        report on the handle."""
        from flytekit.core.type_engine import TypeEngine

        from ..parity import ParityReport

        literals = execution.outputs.literals
        values: dict[str, Any] = {}
        with self._remote.remote_context() as ctx:
            for name, literal in literals.items():
                python_type = self._output_types.get(name)
                if python_type is None:
                    continue
                values[name] = TypeEngine.to_python_value(ctx, literal, python_type)
            self._save_report(values.pop(PERFORMANCE_REPORT_OUTPUT, None), handle)
        versions = values.pop(VERSIONS_OUTPUT, None)
        if versions:
            report = ParityReport.from_output(versions)
            handle.environment = report.roles
            handle.details["environment"] = report.summary()
            for note in report.notes():
                handle.note(note)
        return values

    def _save_report(self, report: Any, handle: RunHandle) -> None:
        """Downloads the performance report the job runner made into ``.flyte_dask/``, as a
        local run's (``reports.py``). A cache hit ran no cluster: its report is an earlier
        run's, not linked."""
        from ..reports import new_report_path

        if report is None or handle.cache_hit:
            return
        file, relative = new_report_path(handle.name, handle.started_at, handle.run_number)
        try:
            downloaded = report.download()
            shutil.copyfile(downloaded, file)
            os.unlink(downloaded)  # flytekit's local copy
        except Exception as error:  # the outputs still come back
            file.unlink(missing_ok=True)
            handle.note(f"no performance report: the job runner's could not be downloaded: {error}")
            return
        handle.report_path = relative

    def _footer(self, handle: RunHandle, what: str) -> list[str]:
        lines = [
            f"flyte_dask: the remote run {what} (task {handle.name}, execution "
            f"{handle.details.get('execution', self._execution_name)})"
        ]
        lines += [f"{label}: {url}" for label, url in handle.links.items()]
        return lines

    def _failure(self, execution: Any, handle: RunHandle) -> BaseException:
        """The cell's own error: its type (builtin types are raised as such), its message and
        its frames with the cell's line numbers."""
        error = execution.error
        message = (error.message if error is not None else "") or "no error message"
        trace, summary = _split_flytekit_error(message)
        frames = _user_frames(trace)
        last = summary.strip().splitlines()[-1] if summary.strip() else message.splitlines()[-1]
        type_name, _, text = last.partition(": ")
        kind = getattr(error, "kind", None)
        system = kind is not None and int(kind) != 1 and not frames  # 1: USER
        if frames and re.fullmatch(r"[A-Za-z_][\w.]*", type_name):
            lines = ["Traceback (remote, your code only, most recent call last):"]
            lines += self._frame_lines(frames)
            lines.append(last)
            exception_class = getattr(builtins, type_name, None)
            if isinstance(exception_class, type) and issubclass(exception_class, Exception):
                try:
                    failure: BaseException = exception_class(text)
                except Exception:
                    failure = RemoteTaskError(last)
            else:
                failure = RemoteTaskError(last)
        else:
            head = "\n".join(message.strip().splitlines()[-15:])
            kind_text = "a system error" if system else "an error"
            lines = [f"RemoteExecutionError: {kind_text} outside the cell's code:"]
            lines += textwrap.indent(head, "  ").splitlines()
            if "convert" in message.lower():
                lines.append(
                    unsent_output_text(message)
                    or "An input or output of the cell could not be converted to its Flyte type: "
                    "leave it out with --inputs / --outputs, or build it inside the cell."
                )
            else:
                lines.append(
                    "Check that the image (--image) has this kernel's Python and packages; the "
                    "Flyte console shows the pods' logs."
                )
            failure = RemoteExecutionError(head.splitlines()[-1] if head else message)
        lines += self._footer(handle, "failed")
        failure.flyte_dask_explanation = lines  # type: ignore[attr-defined]
        failure.execution_id = self._execution_name  # type: ignore[attr-defined]
        return failure

    def _frame_lines(self, frames: list[tuple[str, int, str]]) -> list[str]:
        """The frames' lines, a frame repeated in a row (recursion) folded as Python does."""
        shown: list[tuple[Hashable, list[str]]] = []
        cell_file = self._cell_task.filename if self._cell_task is not None else ""
        for frame in frames:
            lines: list[str] = []
            filename, lineno, function = frame
            if filename == "<dynamic-code>":
                if function == _CELL_FUNCTION:
                    filename = cell_file or "<cell>"
                else:
                    filename = self._code_files.get(function, filename)
            if filename in (cell_file, "<cell>"):
                lines.append(f"  Cell line {lineno}")
            else:
                lines.append(f'  File "{filename}", line {lineno}, in {function}')
            source = linecache.getline(filename, lineno).strip() if filename else ""
            if source:
                lines.append(f"    {source}")
            shown.append((frame, lines))
        return fold_repeats(shown)

    # ---- attach ------------------------------------------------------------------------------

    def attach(self, execution_id: str, handle: RunHandle) -> None:
        """Finds the execution (and its task's output types) to follow it with ``follow``."""
        from flytekit.exceptions.base import FlyteException
        from flytekit.exceptions.user import FlyteEntityNotExistException

        remote = self.connect(handle)
        project, domain, name = parse_execution_id(execution_id, self._project, self._domain)
        self._project, self._domain, self._execution_name = project, domain, name
        try:
            with _deadline(CONNECT_DEADLINE):
                execution = remote.fetch_execution(project=project, domain=domain, name=name)
                task_id = execution.spec.launch_plan
                flyte_task = remote.fetch_task(
                    task_id.project, task_id.domain, task_id.name, task_id.version
                )
        except FlyteEntityNotExistException:
            raise FlyteConfigError(
                f"no execution {name!r} in project {project!r}, domain {domain!r} "
                f"at {self._endpoint}"
            ) from None
        except FlyteException as error:
            raise self._connection_error(error) from None
        handle.name, handle.version = task_id.name, task_id.version
        handle.spec = _spec_of(flyte_task)
        self._output_types = {
            name: _python_type(variable.type)
            for name, variable in flyte_task.interface.outputs.items()
        }
        self._started(remote, execution, handle)
        self.image = flyte_task.template.container.image if flyte_task.template.container else ""
        handle.details["image"] = str(self.image)


def _auth_config_problem(error: BaseException) -> str | None:
    """Why flytekit could not log in with the config's auth settings, when that is what
    ``error`` is: flytekit's auth code raises ``ValueError`` (say "Client ID and Client SECRET
    both are required") on the first call, which its gRPC wrapper re-raises as a
    ``FlyteSystemException`` like any unreachable endpoint."""
    cause = error.__cause__ or error.__context__
    while cause is not None:
        tb = cause.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next  # where it was raised
        raised_in = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
        if isinstance(cause, ValueError) and raised_in.startswith("flytekit.clients"):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def _forget_other_deployments(where: tuple[str, str, str]) -> None:
    """flytekit caches converted inputs (with the addresses they were uploaded to) and its
    uploads per process, not per deployment: after a cell with another --config, --project or
    --domain, equal inputs would name the blobs of the deployment used before. Both caches are
    emptied when ``where`` (endpoint, project, domain) changes; the mark lives on the cache."""
    from flytekit.core.type_engine import TypeEngine
    from flytekit.remote.remote_fs import FlytePathResolver

    cache = TypeEngine._LITERAL_CACHE
    if getattr(cache, "flyte_dask_deployment", where) != where:
        cache.clear()
        FlytePathResolver._flyte_path_to_remote_map.clear()
    cache.flyte_dask_deployment = where


def _cache_status(node: Any) -> str | None:
    """The flyteidl ``CatalogCacheStatus`` a node execution reports (``CACHE_HIT``,
    ``CACHE_POPULATED``, ``CACHE_DISABLED``, ...); None when it is not a task node."""
    from flyteidl.core.catalog_pb2 import CatalogCacheStatus

    metadata = getattr(node.closure, "task_node_metadata", None)
    if metadata is None:
        return None
    try:
        return str(CatalogCacheStatus.Name(int(metadata.cache_status)))
    except ValueError:  # a status newer than this flyteidl
        return None


def _split_flytekit_error(message: str) -> tuple[str, str]:
    """flytekit's "Trace: ... Message: ..." error text -> (traceback text, message text)."""
    if "Message:" in message:
        trace, _, summary = message.partition("Message:")
        return textwrap.dedent(trace.replace("Trace:", "", 1)), textwrap.dedent(summary)
    return message, message


def _user_frames(trace: str) -> list[tuple[str, int, str]]:
    """(file, line, function) of the traceback's frames that are not library code; a frame
    Python folded ("[Previous line repeated N more times]") is there N more times."""
    frames: list[tuple[str, int, str]] = []
    kept = False  # whether the last frame of the text is among them
    for line in trace.splitlines():
        repeated = _REPEATED.match(line)
        if repeated is not None and kept:
            frames += [frames[-1]] * min(int(repeated["count"]), sys.getrecursionlimit())
            continue
        match = _FRAME.match(line)
        if match is None:
            continue
        filename = match["file"]
        kept = not (
            filename.startswith("<frozen")
            or "site-packages" in filename
            or re.search(r"/lib/python3[.\d]*/", filename)
        )
        if kept:
            frames.append((filename, int(match["line"]), match["name"]))
    return frames


def _python_type(literal_type: Any) -> Any:
    """The Python type to read an output of a registered task with (no local task at hand)."""
    from flytekit.core.type_engine import TypeEngine

    from ..task import PICKLED

    idl = literal_type.to_flyte_idl()
    if idl.HasField("structured_dataset_type"):
        import pandas as pd

        return pd.DataFrame
    if idl.HasField("union_type"):
        formats = {v.blob.format for v in idl.union_type.variants if v.HasField("blob")}
        if "PythonPickle" in formats:
            return PICKLED
    if idl.HasField("blob") and idl.blob.format == "PythonPickle":
        return PICKLED
    return TypeEngine.guess_python_type(literal_type)


def _spec_of(flyte_task: Any) -> ClusterSpec:
    """The worker count of a registered dask task (what the run summary shows as requested)."""
    try:
        custom = flyte_task.template.custom or {}
        count = int(custom.get("workers", {}).get("numberOfWorkers", 0))
    except (AttributeError, TypeError, ValueError):
        count = 0
    return ClusterSpec(workers=WorkerSpec(count=count)) if count >= 1 else ClusterSpec()


def attach_execution(
    magics: Any,
    execution_id: str,
    connection: Connection,
    out_var: str | None,
    progress: bool,
    timeout: float | None = None,
) -> Any:
    """``%flyte_dask_attach``: follows an execution started earlier (also by another kernel)
    and writes its outputs into the notebook; returns the value of the cell's last expression."""
    from ..display import progress_mode
    from ..execute import follow_run, prepare_flytekit
    from ..results import Results

    shell = magics.shell
    prepare_flytekit(shell)
    backend = FlyteBackend(connection, timeout=timeout)
    handle = RunHandle(name=execution_id, spec=ClusterSpec(), backend=backend.name)
    mode = progress_mode(shell) if progress else "none"
    handle.begin("attaching")
    record_run(magics.runs, handle)

    def run() -> dict[str, Any]:
        backend.attach(execution_id, handle)
        backend._created = time.monotonic()
        return backend.follow(handle, timeout)

    results = Results(shell, magics, handle, out_var, remote=True)
    follow_run(handle, run, mode, results, "<attached cell>", {})
    return handle.value
