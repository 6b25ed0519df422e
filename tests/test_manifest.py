"""The DaskJob translator and its CRD validator, with plain task templates (protobuf JSON)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from dask_flyte_jupyter.manifest import (
    GENERATED_NAME,
    ManifestError,
    build_manifest,
    canonical_quantity,
    crd_path,
    daskjob_schema,
    quantity_value,
    resource_conflicts,
    to_yaml,
    validate_manifest,
)
from dask_flyte_jupyter.platform import Platform

ARGS = ["pyflyte-execute", "--inputs", "{{.input}}", "--", "task-name", "t"]


def entries(**values: str) -> list[dict[str, str]]:
    names = {"cpu": "CPU", "mem": "MEMORY", "gpu": "GPU", "storage": "EPHEMERAL_STORAGE"}
    return [{"name": names[k], "value": v} for k, v in values.items()]


def template(
    *,
    scheduler: dict[str, Any] | None = None,
    workers: dict[str, Any] | None = None,
    task_resources: dict[str, Any] | None = None,
    interruptible: bool = False,
    env: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A dask TaskTemplate in the protobuf-JSON form flytekit serializes and Flyte reads."""
    container: dict[str, Any] = {"image": "repo/task:1", "args": list(ARGS)}
    if task_resources is not None:
        container["resources"] = task_resources
    if env is not None:
        container["env"] = env
    return {
        "type": "dask",
        "metadata": {"interruptible": interruptible},
        "container": container,
        "custom": {
            "scheduler": scheduler if scheduler is not None else {},
            "workers": workers if workers is not None else {"numberOfWorkers": 2.0},
        },
    }


def cluster(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["cluster"]["spec"]  # type: ignore[no-any-return]


def job_runner(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["job"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def scheduler_container(manifest: dict[str, Any]) -> dict[str, Any]:
    return cluster(manifest)["scheduler"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def worker_container(manifest: dict[str, Any]) -> dict[str, Any]:
    return cluster(manifest)["worker"]["spec"]["containers"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("text", "canonical", "value"),
    [
        # what k8s.io/apimachinery's Quantity.String() / Value() give
        ("32Gi", "32Gi", 32 * 2**30),
        ("1024Mi", "1Gi", 2**30),
        ("1.5Gi", "1536Mi", 3 * 2**29),
        ("1000m", "1", 1),
        ("1500m", "1500m", 2),
        ("0.5", "500m", 1),
        ("2.5", "2500m", 3),
        ("1000M", "1G", 10**9),
        ("1e9", "1e9", 10**9),
        ("1.5e9", "1500e6", 15 * 10**8),
        ("0.1Ki", "102400m", 103),  # binary below 1024 prints as decimal
        ("8", "8", 8),
    ],
)
def test_quantities_print_like_kubernetes(text: str, canonical: str, value: int) -> None:
    assert canonical_quantity(text) == canonical
    assert quantity_value(text) == value


def test_bad_quantity_names_the_resource() -> None:
    bad = template(workers={"numberOfWorkers": 1, "resources": {"limits": entries(mem="4Gx")}})
    with pytest.raises(ManifestError, match="workers limits: memory: '4Gx'"):
        build_manifest(bad)


def test_job_runner_is_the_task_container() -> None:
    env = [{"key": "A", "value": "1"}]
    manifest = build_manifest(template(task_resources={"limits": entries(cpu="1")}, env=env))
    assert manifest["apiVersion"] == "kubernetes.dask.org/v1" and manifest["kind"] == "DaskJob"
    assert manifest["spec"]["job"]["spec"]["restartPolicy"] == "Never"
    runner = job_runner(manifest)
    assert runner["name"] == "job-runner" and runner["image"] == "repo/task:1"
    assert runner["args"] == ARGS
    assert runner["env"] == [{"name": "A", "value": "1"}]
    # memory is unset: propeller fills it from its default-memory (1024Mi) when the platform
    # gives no default, request and limit alike
    resolved = {"cpu": "1", "memory": "1Gi"}
    assert runner["resources"] == {"limits": resolved, "requests": resolved}
    # every copy of the task container keeps its env
    assert scheduler_container(manifest)["env"] == worker_container(manifest)["env"]
    validate_manifest(manifest)


def test_groups_fall_back_to_the_task_image_and_resources() -> None:
    task_resources = {"requests": entries(cpu="500m", mem="1Gi")}
    manifest = build_manifest(template(task_resources=task_resources))
    completed = {"cpu": "500m", "memory": "1Gi"}  # the requests fill the missing limits
    expected = {"limits": completed, "requests": completed}
    assert scheduler_container(manifest)["resources"] == expected
    worker = worker_container(manifest)
    assert worker["image"] == scheduler_container(manifest)["image"] == "repo/task:1"
    assert worker["resources"] == expected
    # 500m rounds up to 1 thread, as Quantity.Value() does
    assert worker["args"] == [
        "dask-worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "1", "--memory-limit", "1Gi"
    ]  # fmt: skip
    validate_manifest(manifest)


def test_group_images_and_resources_win() -> None:
    manifest = build_manifest(
        template(
            task_resources={"limits": entries(cpu="1", mem="1Gi")},
            scheduler={"image": "repo/sched:2", "resources": {"requests": entries(mem="2Gi")}},
            workers={
                "numberOfWorkers": 3.0,
                "image": "repo/worker:3",
                "resources": {"limits": entries(cpu="4", gpu="1", storage="10Gi")},
            },
        )
    )
    scheduler = scheduler_container(manifest)
    assert scheduler["image"] == "repo/sched:2"
    resolved = {"cpu": "1", "memory": "2Gi"}  # cpu from propeller's default-cpus (1000m)
    assert scheduler["resources"] == {"limits": resolved, "requests": resolved}
    worker = worker_container(manifest)
    assert worker["image"] == "repo/worker:3"
    limits = {"cpu": "4", "memory": "1Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "10Gi"}
    assert worker["resources"] == {"limits": limits, "requests": limits}
    # the memory limit comes from the platform default, and Go always writes both flags
    assert worker["args"] == [
        "dask-worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "4", "--memory-limit", "1Gi"
    ]  # fmt: skip
    assert cluster(manifest)["worker"]["replicas"] == 3
    assert job_runner(manifest)["image"] == "repo/task:1"
    validate_manifest(manifest)


def test_zero_values_are_dropped_like_flyte_does() -> None:
    resources = {"limits": entries(cpu="2", gpu="0")}
    manifest = build_manifest(template(workers={"numberOfWorkers": 1, "resources": resources}))
    assert worker_container(manifest)["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}


def test_request_above_limit_is_lowered_and_reported() -> None:
    resources = {"requests": entries(cpu="4", mem="1Gi"), "limits": entries(cpu="2")}
    bad = template(workers={"numberOfWorkers": 1, "resources": resources})
    worker = worker_container(build_manifest(bad))
    assert worker["resources"] == {
        "limits": {"cpu": "2", "memory": "1Gi"},
        "requests": {"cpu": "2", "memory": "1Gi"},
    }
    assert resource_conflicts(bad) == [
        "workers: cpu request 4 is above its limit 2 (Flyte lowers the request to the limit)"
    ]
    assert resource_conflicts(template()) == []


def test_interruptible_places_only_workers_with_the_clusters_values() -> None:
    k8s = {
        "interruptible-tolerations": [
            {
                "key": "x/flyte",
                "value": "interruptible",
                "operator": "Equal",
                "effect": "NoSchedule",
            }
        ],
        "interruptible-node-selector": {"x/interruptible": "true"},
    }
    manifest = build_manifest(template(interruptible=True), platform=Platform(k8s=k8s))
    worker_pod = cluster(manifest)["worker"]["spec"]
    assert worker_pod["tolerations"] == k8s["interruptible-tolerations"]
    assert worker_pod["nodeSelector"] == {"x/interruptible": "true"}
    for pod in (cluster(manifest)["scheduler"]["spec"], manifest["spec"]["job"]["spec"]):
        assert "tolerations" not in pod and "nodeSelector" not in pod
    plain = cluster(build_manifest(template(), platform=Platform(k8s=k8s)))["worker"]["spec"]
    assert "tolerations" not in plain and "nodeSelector" not in plain
    validate_manifest(manifest)
    # nothing known about the cluster: nothing invented
    unknown = cluster(build_manifest(template(interruptible=True)))["worker"]["spec"]
    assert "tolerations" not in unknown and "nodeSelector" not in unknown


def test_service_selects_the_clusters_scheduler() -> None:
    manifest = build_manifest(template(), name="abc-n0-0")
    assert manifest["metadata"] == {"name": "abc-n0-0"}
    assert cluster(manifest)["scheduler"]["service"]["selector"] == {
        "dask.org/cluster-name": "abc-n0-0",
        "dask.org/component": "scheduler",
    }
    assert build_manifest(template())["metadata"]["name"] == GENERATED_NAME


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["spec"]["job"]["spec"].pop("containers"), "spec.job.spec: 'containers'"),
        (lambda m: m["spec"].pop("job"), "spec: 'job' is a required property"),
        (
            lambda m: cluster(m)["worker"].update(replicas="4"),
            "spec.cluster.spec.worker.replicas: '4' is not of type 'integer'",
        ),
        (
            lambda m: cluster(m)["worker"].update(replica=4),
            "spec.cluster.spec.worker: Additional properties",
        ),
        (
            lambda m: worker_container(m).pop("name"),
            r"spec.cluster.spec.worker.spec.containers\[0\]: 'name' is a required",
        ),
        (
            lambda m: scheduler_container(m)["ports"][0].update(containerPort="8786"),
            r"containers\[0\].ports\[0\].containerPort: '8786' is not of type 'integer'",
        ),
        (lambda m: m.update(kind="DaskCluster"), "kind: 'DaskJob' was expected"),
        (lambda m: m["status"].update(clusterName=None), "status.clusterName: None"),
    ],
)
def test_the_validator_rejects_broken_manifests(change: Any, message: str) -> None:
    manifest = build_manifest(template())
    manifest["status"] = {"jobStatus": None, "clusterName": "c"}  # nullable: None is fine
    validate_manifest(manifest)
    broken = copy.deepcopy(manifest)
    change(broken)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(broken)


def test_the_schema_comes_from_the_installed_crd() -> None:
    path = crd_path()
    assert path.is_file() and "dask_kubernetes" in path.parts
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["names"]["kind"] == "DaskJob"

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()

    found = keys(daskjob_schema())
    assert "nullable" not in found
    assert not any(key.startswith("x-kubernetes-") for key in found)


def test_not_a_dask_task_is_an_error() -> None:
    plain = template()
    del plain["custom"]
    with pytest.raises(ManifestError, match="not a dask task"):
        build_manifest(plain)


def test_yaml_round_trips() -> None:
    manifest = build_manifest(template(interruptible=True))
    text = to_yaml(manifest)
    assert yaml.safe_load(text) == manifest
    assert text.index("apiVersion") < text.index("kind") < text.index("spec")
