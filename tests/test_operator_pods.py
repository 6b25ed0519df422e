"""Dry-run DaskJobs through the dask-kubernetes operator's own builders, and each pod's command
line through the parser of the program it starts.

The operator (``dask_kubernetes.operator.controller.controller``) turns a DaskJob into the job
runner pod, the scheduler Deployment and the worker Deployments; the kubelet expands ``$(VAR)``
from the container's env; then ``dask-scheduler`` / ``dask-worker`` parse their arguments with
distributed's click commands and the job runner's with flytekit's (``pyflyte-fast-execute``,
then ``pyflyte-execute``). A flag either program does not know, or a value of the wrong type,
fails here as it would in the pod.
"""

from __future__ import annotations

import re
from typing import Any

import click
import pytest
from dask.utils import parse_bytes
from dask_kubernetes.operator.controller import controller
from distributed.cli import dask_scheduler, dask_worker
from flytekit.bin import entrypoint
from shell_helpers import INCREMENT

from dask_flyte_jupyter.cell import analyse_cell
from dask_flyte_jupyter.dryrun import DryRun, dry_run
from dask_flyte_jupyter.magics import SPEC_FLAGS, parse_magic_line
from dask_flyte_jupyter.registration import UPLOADED_CODE
from dask_flyte_jupyter.spec import spec_from_options

CLUSTER = "f1a2b3c4d5-n0-0"
NAMESPACE = "flytesnacks-development"
NOTEBOOK_RESOLVER = "flytekit.core.python_auto_container.default_notebook_task_resolver"
_VAR = re.compile(r"\$\((\w+)\)")


def inc(x: int) -> int:
    return x + 1


def plan(line: str) -> DryRun:
    namespace = {"inc": inc, "n": 10}
    options = {k: v for k, v in parse_magic_line(line).items() if k in SPEC_FLAGS}
    return dry_run(analyse_cell(INCREMENT, namespace), spec_from_options(options), namespace)


def pods(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod specs the operator creates for the DaskJob, by role."""
    spec = manifest["spec"]
    cluster = spec["cluster"]["spec"]
    scheduler = controller.build_scheduler_deployment_spec(
        CLUSTER, cluster["scheduler"]["spec"], {}, {}
    )
    worker = controller.build_worker_deployment_spec(
        "default", NAMESPACE, CLUSTER, "a1b2c", cluster["worker"]["spec"], {}, {}
    )
    job = controller.build_job_pod_spec("runner", CLUSTER, NAMESPACE, spec["job"]["spec"], {}, {})
    return {
        "scheduler": scheduler["spec"]["template"]["spec"],
        "worker": worker["spec"]["template"]["spec"],
        "job-runner": job["spec"],
    }


def argv(container: dict[str, Any]) -> list[str]:
    """command + args as the kubelet runs them: ``$(VAR)`` from the container's env."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    words = [*container.get("command", []), *container.get("args", [])]
    return [_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), w) for w in words]


def parse(command: click.Command, words: list[str]) -> dict[str, Any]:
    """The options ``command`` would run with, or a failure naming what it rejects."""
    try:
        with command.make_context(words[0], words[1:]) as context:
            return dict(context.params)
    except click.UsageError as error:
        pytest.fail(f"{words[0]} rejects {words[1:]}: {error.format_message()}")


@pytest.mark.parametrize(
    ("line", "threads", "memory"),
    [
        ("--workers 4 --worker-cpu 8 --worker-mem 32Gi --scheduler-cpu 2", 8, "32Gi"),
        ("--workers 2 --worker-cpu 500m --worker-mem 1.5Gi", 1, "1536Mi"),
        ("--workers 2 --worker-gpu 1", 1, "1Gi"),  # propeller's defaults fill cpu / memory
        ("--workers 3 --interruptible --image repo/dask:py3.11", 1, "1Gi"),
    ],
)
def test_every_pod_starts_a_command_its_program_accepts(line: str, threads: int, memory: str):
    result = plan(line)
    built = pods(result.manifest)
    assert result.manifest["spec"]["cluster"]["spec"]["worker"]["replicas"] == int(line.split()[1])

    (scheduler,) = built["scheduler"]["containers"]
    words = argv(scheduler)
    assert words == ["dask-scheduler"]
    parse(dask_scheduler.main, words)
    env = {e["name"]: e["value"] for e in scheduler["env"]} if "env" in scheduler else {}
    assert "DASK_SCHEDULER_ADDRESS" not in env  # the scheduler is the address

    (worker,) = built["worker"]["containers"]
    words = argv(worker)
    assert words[0] == "dask-worker"
    options = parse(dask_worker.main, words)
    worker_env = {e["name"]: e["value"] for e in worker["env"]}
    # the operator names the worker and points it at the cluster's scheduler Service
    assert options["name"] == worker_env["DASK_WORKER_NAME"] == "default-worker-a1b2c"
    assert worker_env["DASK_SCHEDULER_ADDRESS"] == (
        f"tcp://{CLUSTER}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
    )
    assert options["nthreads"] == threads
    assert parse_bytes(options["memory_limit"]) == parse_bytes(memory)

    (runner,) = built["job-runner"]["containers"]
    words = argv(runner)
    fast = parse(entrypoint.fast_execute_task_cmd, words)
    assert fast["additional_distribution"] == UPLOADED_CODE and fast["dest_dir"] == "."
    inner = list(fast["task_execute_cmd"])
    assert inner[0] == "pyflyte-execute"
    execute = parse(entrypoint.execute_task_cmd, inner)
    assert execute["resolver"] == NOTEBOOK_RESOLVER
    assert execute["resolver_args"][0] == "entity-name"
    assert execute["resolver_args"][1].split(".")[-1] == result.task["name"]
    assert execute["inputs"] == "{{.input}}"  # propeller fills the templates


def test_a_flag_the_worker_does_not_know_fails_the_check():
    """The check is real: distributed's parser rejects what a wrong translation would write."""
    manifest = plan("--workers 2 --worker-cpu 500m").manifest
    worker = manifest["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]
    at = worker["args"].index("--nthreads") + 1
    worker["args"][at] = "500m"  # the cpu quantity copied instead of Quantity.Value()
    words = argv(pods(manifest)["worker"]["containers"][0])
    with (
        pytest.raises(click.UsageError, match="'500m' is not a valid integer"),
        dask_worker.main.make_context(words[0], words[1:]),
    ):
        pass
