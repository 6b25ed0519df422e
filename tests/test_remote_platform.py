"""``--dry-run`` shows what ``--remote`` registers, and both know the platform's resources.

Against the Flyte Admin stand-in (a test double) with the real FlyteRemote client through a real
InteractiveShell: the dry run's TaskTemplate is compared byte for byte with the one the stand-in
received at registration, and Flyte Admin's project/domain ``TASK_RESOURCE`` attributes (read
with the real client) change the shape shown before the run and in its summary.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flyte_admin import FlyteAdminStandIn
from flyteidl.core import tasks_pb2
from google.protobuf.json_format import ParseDict
from shell_helpers import define_inc

from dask_flyte_jupyter.registration import UPLOADED_CODE

IMAGE = "registry.example/team/dask-cells:py3.11"
CELL = """\
from distributed import Client
client = Client()
result = client.gather(client.map(inc, range(n)))
info = client.scheduler_info()["workers"].values()
threads = sorted(w["nthreads"] for w in info)
memory_limits = sorted(w["memory_limit"] for w in info)
"""


@pytest.fixture
def stand_in(admin: FlyteAdminStandIn) -> Iterator[FlyteAdminStandIn]:
    admin.clear_calls()
    yield admin
    with admin.servicer.lock:
        admin.servicer.project_domain_attributes.clear()


def line(admin: FlyteAdminStandIn, extra: str) -> str:
    return f"--remote --config {admin.config_path} --image {IMAGE} {extra}"


def test_the_dry_run_shows_the_template_remote_registers_byte_for_byte(shell, stand_in):
    admin = stand_in
    define_inc(shell)
    shell.run_cell_magic("flyte_dask", line(admin, "--workers 2 --out run"), CELL)
    run = shell.user_ns["run"]
    assert run.status == "succeeded"
    # the parity report says how the image starts dask on a Flyte v1 backend
    assert "dask-scheduler / dask-worker in the image: shims onto" in run.details["environment"]
    (registered,) = [
        task.closure.compiled_task.template
        for (project, domain, name, version), task in admin.servicer.tasks.items()
        if name == run.name and version == run.version
    ]
    plan = shell.run_cell_magic("flyte_dask", line(admin, "--workers 2 --dry-run"), CELL)
    shown = ParseDict(plan.template, tasks_pb2.TaskTemplate())
    # the one difference: where the pickled code was uploaded (known only after the upload)
    args = list(registered.container.args)
    at = args.index("--additional-distribution") + 1
    assert args[at].startswith("s3://") and args[at].endswith("pkl.gz")
    registered.container.args[at] = UPLOADED_CODE
    assert shown.SerializeToString(deterministic=True) == registered.SerializeToString(
        deterministic=True
    )
    # and the dry run registered, uploaded and started nothing
    assert not admin.calls_to("CreateTask", "OK")[1:]
    assert len(admin.calls_to("CreateExecution", "OK")) == 1


def test_platform_limits_are_read_from_admin_and_shown_before_the_run(shell, stand_in):
    admin = stand_in
    admin.set_task_resources({"cpu": "500m", "memory": "512Mi"}, {"cpu": "2", "memory": "1Gi"})
    define_inc(shell)
    flags = "--workers 2 --worker-cpu 8 --worker-mem 32Gi"
    source = f"Flyte Admin: TASK_RESOURCE of {admin.project}/{admin.domain}"

    plan = shell.run_cell_magic("flyte_dask", line(admin, f"{flags} --dry-run"), CELL)
    assert plan.task["shape"] == "2 workers × --nthreads 2 --memory-limit 1Gi"
    assert f"({source})" in dict(plan.rows())["platform resources"]
    assert (
        f"{source}'s limits lower the dask-worker's cpu 8 → 2, memory 32Gi → 1Gi" in plan.warnings
    )
    assert admin.calls_to("GetProjectDomainAttributes", "OK")
    assert not admin.calls_to("CreateTask")

    shell.run_cell_magic("flyte_dask", line(admin, f"{flags} --out run"), CELL)
    run = shell.user_ns["run"]
    assert run.status == "succeeded"
    assert (
        f"the platform's limits lower the dask-worker's cpu 8 → 2, memory 32Gi → 1Gi ({source})"
        in run.notes
    )
    assert dict(run.summary_rows())["used"] == "2 workers × 2 threads, 1 GiB each"
    assert run.details["cluster"].startswith("2 workers × --nthreads 2 --memory-limit 1Gi")
    # the workers really got the clamped shape
    assert shell.user_ns["threads"] == [2, 2]
    assert shell.user_ns["memory_limits"] == [2**30, 2**30]


def test_without_attributes_the_platform_is_unknown_and_says_so(shell, stand_in):
    admin = stand_in
    define_inc(shell)
    plan = shell.run_cell_magic("flyte_dask", line(admin, "--workers 2 --dry-run"), CELL)
    assert dict(plan.rows())["platform resources"].startswith("unknown")
    assert admin.calls_to("GetProjectDomainAttributes", "NOT_FOUND")
    # propeller's own defaults fill the unset worker resources, as on a real cluster
    assert plan.task["shape"] == "2 workers × --nthreads 1 --memory-limit 1Gi"


def test_another_deployment_gets_its_own_uploads(shell, stand_in, flyte_admin):
    """flytekit remembers uploads per process: equal inputs sent to a second Flyte deployment
    must be uploaded there, not named by the first one's addresses."""
    define_inc(shell)
    shell.run_cell_magic("flyte_dask", line(stand_in, "--workers 1 --out first"), CELL)
    define_inc(shell)
    shell.run_cell_magic("flyte_dask", line(flyte_admin, "--workers 1 --out second"), CELL)
    assert shell.user_ns["first"].status == shell.user_ns["second"].status == "succeeded"
    assert shell.user_ns["result"] == list(range(1, 11))
    (execution,) = flyte_admin.executions.values()
    pickled = execution.inputs.literals["inc"].scalar.union.value.scalar.blob.uri
    assert pickled.startswith(f"s3://{flyte_admin.bucket}/")
