"""The Flyte Admin stand-in (a test double) driven by flytekit's real FlyteRemote client.

Only flytekit's public client is used here, never dask_flyte_jupyter's code: these tests show that
the stand-in speaks the protocol the remote backend will speak, in notebook (interactive) mode.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import sys
import time
from collections.abc import Iterator

import cloudpickle
import psutil
import pytest
from flyte_admin import FlyteAdminStandIn, processes_gone
from flyte_admin import fixtures as _fixtures
from flytekit import task
from flytekit.clients.grpc_utils.deadline_interceptor import scoped_grpc_deadline
from flytekit.configuration import Config, ImageConfig, PlatformConfig, SerializationSettings
from flytekit.core.python_auto_container import default_notebook_task_resolver
from flytekit.exceptions.system import FlyteSystemException, FlyteSystemUnavailableException
from flytekit.exceptions.user import (
    FlyteEntityNotExistException,
    FlyteInvalidInputException,
    FlyteTimeout,
)
from flytekit.models.core.execution import ExecutionError, WorkflowExecutionPhase
from flytekit.remote import FlyteRemote
from flytekitplugins.dask import Dask, WorkerGroup

VERSION = "v1"  # an explicit, stable version, as the remote backend will pass

flyte_admin = _fixtures.flyte_admin  # the stand-in fixture (redundant once conftest imports it)


@task(task_config=Dask(workers=WorkerGroup(number_of_workers=3)))
def count_workers() -> int:
    from distributed import Client

    with Client() as client:
        return len(client.scheduler_info()["workers"])


@task(task_config=Dask(workers=WorkerGroup(number_of_workers=1)))
def fail(x: int) -> int:
    if x > 0:
        raise ValueError(f"boom {x}")
    return x


@task(task_config=Dask(workers=WorkerGroup(number_of_workers=1)))
def sleep_for(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@task(task_config=Dask(workers=WorkerGroup(number_of_workers=1)))
def cluster_versions() -> list[str]:
    from distributed import Client

    with Client() as client:
        versions = client.get_versions(check=False)
    workers = [w["packages"]["distributed"] for w in versions["workers"].values()]
    return [versions["scheduler"]["packages"]["distributed"], *workers]


@contextlib.contextmanager
def by_value() -> Iterator[None]:
    """Pickle this module's functions by value, as the notebook's ``__main__`` would be.

    Notebook mode cloudpickles the task; a function of an importable module is pickled by
    reference, and the job runner (like a pod built from an image) cannot import a test module.
    """
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def remote_for(admin: FlyteAdminStandIn) -> FlyteRemote:
    # flytekit's notebook resolver caches its own name on first use, which changes the pickle
    # of every task registered after that: without this, the first and the second registration
    # of the same task in a process differ (Admin: INVALID_ARGUMENT, "different structure").
    assert default_notebook_task_resolver.lhs == "default_notebook_task_resolver"
    return FlyteRemote(
        Config.auto(config_file=str(admin.config_path)),
        default_project=admin.project,
        default_domain=admin.domain,
        interactive_mode_enabled=True,
    )


def test_dask_task_runs_on_its_own_cluster_and_reregistration_is_a_noop(flyte_admin):
    remote = remote_for(flyte_admin)
    with by_value():
        execution = remote.execute(count_workers, inputs={}, version=VERSION, wait=False)
    assert flyte_admin.calls_to("CreateExecution", "OK")
    execution = remote.wait(execution, timeout=120, poll_interval=0.2)

    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED
    assert execution.outputs["o0"] == 3
    seen = flyte_admin.executions[execution.id.name]
    assert seen.dask_job["workers"]["numberOfWorkers"] == 3
    assert seen.workers_started == 3
    assert seen.cluster["workers_joined"] == 3
    assert seen.task_args[:2] == ["pyflyte-fast-execute", "--additional-distribution"]
    assert not any("{{" in arg for arg in seen.task_args)
    assert processes_gone(seen.pids + seen.cluster["descendant_pids"])
    phases = [event.phase for event in seen.events]
    assert phases[:2] == ["QUEUED", "RUNNING"] and phases[-1] == "SUCCEEDED"
    # flytekit registered it the notebook way: code uploaded, then the task created once.
    assert len(flyte_admin.calls_to("CreateUploadLocation", "OK")) == 1
    assert len(flyte_admin.calls_to("CreateTask", "OK")) == 1
    node = execution.node_executions[seen.node_id]
    assert node.outputs["o0"] == 3 and node.task_executions[0].is_done

    # Registering the identical task again: Admin answers ALREADY_EXISTS, flytekit accepts it.
    flyte_admin.clear_calls()
    with by_value():
        again = remote.register_task(count_workers, version=VERSION)
    assert again.id.version == VERSION
    assert flyte_admin.calls_to("CreateTask")
    assert not flyte_admin.calls_to("CreateTask", "OK")
    assert {c.code for c in flyte_admin.calls_to("CreateTask")} == {"ALREADY_EXISTS"}

    # Executing the same version from a new client finds the task: no registration, no upload.
    flyte_admin.clear_calls()
    with by_value():
        remote = remote_for(flyte_admin)
        remote.terminate(remote.execute(count_workers, inputs={}, version=VERSION), "enough")
    assert [c.method for c in flyte_admin.calls[:2]] == ["GetTask", "CreateExecution"]
    assert not flyte_admin.calls_to("CreateTask")
    assert not flyte_admin.calls_to("CreateUploadLocation")


def test_admin_answers_like_admin_without_running_anything(flyte_admin):
    remote = remote_for(flyte_admin)
    with pytest.raises(FlyteEntityNotExistException):
        remote.fetch_task(name=count_workers.name, version=VERSION)
    with by_value():
        registered = remote.register_task(count_workers, version=VERSION)
    assert registered.template.type == "dask"
    assert remote.fetch_task(name=count_workers.name, version=VERSION).id == registered.id
    # flytekit retries NOT_FOUND 3 times (rpc_retries) and caches a found task per client.
    assert [c.code for c in flyte_admin.calls_to("GetTask")] == ["NOT_FOUND"] * 4 + ["OK"]

    # Same id, different spec (another image): refused, as Admin refuses it.
    other_image = SerializationSettings(
        image_config=ImageConfig.auto(img_name="example.com/other:1"),
        project=flyte_admin.project,
        domain=flyte_admin.domain,
    )
    with by_value(), pytest.raises(FlyteInvalidInputException):
        remote.register_task(count_workers, other_image, version=VERSION)
    assert "INVALID_ARGUMENT" in {c.code for c in flyte_admin.calls_to("CreateTask")}
    assert not flyte_admin.executions


def test_failing_task_fails_the_execution_with_the_user_error(flyte_admin):
    remote = remote_for(flyte_admin)
    with by_value():
        execution = remote.execute(fail, inputs={"x": 7}, version=VERSION)
    execution = remote.wait(execution, timeout=120, poll_interval=0.2)

    assert execution.closure.phase == WorkflowExecutionPhase.FAILED
    assert "ValueError: boom 7" in execution.error.message
    # The user's traceback; by-value code has no file (cloudpickle), only its own line numbers.
    lines, first = inspect.getsourcelines(fail.task_function)
    raise_line = first + next(i for i, line in enumerate(lines) if "raise ValueError" in line)
    assert f'File "<dynamic-code>", line {raise_line}, in fail' in execution.error.message
    assert execution.error.kind == ExecutionError.ErrorKind.USER
    assert execution.error.error_uri.endswith("/error.pb")
    seen = flyte_admin.executions[execution.id.name]
    assert seen.returncode == 0  # flytekit reports user errors through error.pb, not exit codes
    assert processes_gone(seen.pids + seen.cluster["descendant_pids"])


def test_terminate_aborts_and_kills_every_process(flyte_admin):
    remote = remote_for(flyte_admin)
    with by_value():
        execution = remote.execute(sleep_for, inputs={"seconds": 120.0}, version=VERSION)
    seen = flyte_admin.executions[execution.id.name]
    deadline = time.monotonic() + 60
    while seen.task_pid is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen.task_pid is not None
    time.sleep(1)  # let the job runner get going
    pids = seen.pids
    assert all(psutil.pid_exists(pid) for pid in pids)

    remote.terminate(execution, "user interrupt")
    execution = remote.wait(execution, timeout=30, poll_interval=0.2)

    assert execution.closure.phase == WorkflowExecutionPhase.ABORTED
    assert execution.closure.abort_metadata.cause == "user interrupt"
    assert processes_gone(pids + seen.cluster["descendant_pids"])
    ours = [p for p in psutil.Process().children(recursive=True) if p.pid in pids]
    assert not ours
    # Terminating a finished execution: Admin says FAILED_PRECONDITION (flytekit retries it).
    with pytest.raises(FlyteSystemException):
        remote.terminate(execution, "again")
    assert flyte_admin.calls_to("TerminateExecution", "FAILED_PRECONDITION")


def test_fake_versions_are_reported_by_the_cluster(flyte_admin):
    flyte_admin.fake_versions = {"distributed": "2000.1.0"}
    flyte_admin.max_inline_bytes = 0  # outputs only by URL: the client reads them from S3
    remote = remote_for(flyte_admin)
    with by_value():
        execution = remote.execute(cluster_versions, inputs={}, version=VERSION)
    execution = remote.wait(execution, timeout=120, poll_interval=0.2)

    assert execution.closure.phase == WorkflowExecutionPhase.SUCCEEDED
    assert execution.outputs["o0"] == ["2000.1.0", "2000.1.0"]
    assert flyte_admin.executions[execution.id.name].fake_versions == {"distributed": "2000.1.0"}


def test_unreachable_endpoint_fails_within_seconds():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = FlyteRemote(
        Config(platform=PlatformConfig(endpoint=f"127.0.0.1:{port}", insecure=True)),
        default_project="flytesnacks",
        default_domain="development",
    )
    start = time.monotonic()
    with pytest.raises(FlyteSystemUnavailableException):
        remote.fetch_task(name="anything", version=VERSION)
    assert time.monotonic() - start < 5

    # An endpoint that accepts TCP but never speaks gRPC would hang for ~20 s per attempt;
    # flytekit's scoped deadline bounds every call made inside it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        remote = FlyteRemote(
            Config(
                platform=PlatformConfig(
                    endpoint=f"127.0.0.1:{silent.getsockname()[1]}", insecure=True
                )
            ),
            default_project="flytesnacks",
            default_domain="development",
        )
        start = time.monotonic()
        with pytest.raises(FlyteTimeout), scoped_grpc_deadline(2):
            remote.fetch_task(name="anything", version=VERSION)
        assert time.monotonic() - start < 5
