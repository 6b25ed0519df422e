"""The DaskJob translation against Flyte v1.16.8's own plugin tests.

Each test is one case of flyteplugins ``go/tasks/plugins/k8s/dask/dask_test.go`` (v1.16.8):
the same task template, the same platform values (``testPlatformResources``, the k8s plugin
config each case sets, the pod template), and the same fields asserted with the same expected
values. Go's ``TaskOverrides.GetResources()`` are the resources propeller resolved for the task;
here they are the task container's own resources, which is where a cell puts them.
"""

from __future__ import annotations

from typing import Any

import pytest

from dask_flyte_jupyter.manifest import build_manifest, translate, validate_manifest
from dask_flyte_jupyter.platform import Platform

DEFAULT_TEST_IMAGE = "image://"
TEST_NWORKERS = 10
TEST_TASK_ID = "some-acceptable-name"
TEST_ARGS = ["execute-dask-task"]
TEST_ENV = {"name": "Env_Var", "value": "Env_Val"}
POD_TEMPLATE_NAME = "dask-dummy-pod-template-name"
PRIORITY_CLASS = "pod-template-priority-class-name"
# testPlatformResources: the platform's task resource defaults (requests) and limits.
PLATFORM_DEFAULTS = {"cpu": "4", "memory": "10G"}
PLATFORM_LIMITS = {"cpu": "10", "memory": "24G"}
# defaultResources: what the happy path's task asks for.
DEFAULT_RESOURCES = {
    "requests": {"cpu": "2", "memory": "8G"},
    "limits": {"cpu": "8", "memory": "17G"},
}
_IDL = {"cpu": "CPU", "memory": "MEMORY", "nvidia.com/gpu": "GPU"}


def idl_resources(resources: dict[str, dict[str, str]] | None) -> dict[str, Any]:
    """Kubernetes-style requests/limits -> Flyte IDL resource entries (protobuf JSON)."""
    resources = resources or {}
    return {
        kind: [{"name": _IDL[name], "value": value} for name, value in values.items()]
        for kind, values in resources.items()
        if values
    }


def go_template(
    custom_image: str = "",
    group_resources: dict[str, dict[str, str]] | None = None,
    pod_template_name: str = "",
    *,
    task_resources: dict[str, dict[str, str]] | None = None,
    interruptible: bool = False,
    extended_resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """dummyDaskTaskTemplate (with the resources Go passes as overrides on the task)."""
    group: dict[str, Any] = {}
    if custom_image:
        group["image"] = custom_image
    if group_resources:
        group["resources"] = idl_resources(group_resources)
    template: dict[str, Any] = {
        "id": {"name": "test-build-resource"},
        "type": "dask",
        "metadata": {"interruptible": interruptible},
        "container": {
            "image": DEFAULT_TEST_IMAGE,
            "args": list(TEST_ARGS),
            "env": [{"key": "Env_Var", "value": "Env_Val"}],
            "resources": idl_resources(task_resources),
        },
        "custom": {
            "scheduler": dict(group),
            "workers": {"numberOfWorkers": TEST_NWORKERS, **group},
        },
    }
    if pod_template_name:
        template["metadata"]["podTemplateName"] = pod_template_name
    if extended_resources:
        template["extendedResources"] = extended_resources
    return template


def platform(**k8s: Any) -> Platform:
    return Platform(
        defaults=PLATFORM_DEFAULTS,
        limits=PLATFORM_LIMITS,
        resources_from="testPlatformResources",
        k8s={key.replace("_", "-"): value for key, value in k8s.items()},
        pod_templates={POD_TEMPLATE_NAME: {"spec": {"priorityClassName": PRIORITY_CLASS}}},
    )


def build(template: dict[str, Any], plat: Platform | None = None) -> dict[str, Any]:
    manifest = build_manifest(template, TEST_TASK_ID, platform=plat or platform())
    validate_manifest(manifest)
    return manifest


def pods(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = manifest["spec"]["cluster"]["spec"]
    return {
        "job": manifest["spec"]["job"]["spec"],
        "scheduler": cluster["scheduler"]["spec"],
        "worker": cluster["worker"]["spec"],
    }


def resources(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["containers"][0]["resources"]  # type: ignore[no-any-return]


def node_selector_terms(pod: dict[str, Any]) -> list[Any]:
    affinity = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return affinity["nodeSelectorTerms"]  # type: ignore[no-any-return]


def test_build_resource_dask_happy_path() -> None:
    manifest = build(go_template(task_resources=DEFAULT_RESOURCES))
    job, scheduler, worker = pods(manifest).values()
    # Job
    assert job["restartPolicy"] == "Never"
    runner = job["containers"][0]
    assert runner["name"] == "job-runner"
    assert runner["image"] == DEFAULT_TEST_IMAGE
    assert runner["args"] == TEST_ARGS
    assert runner["resources"] == DEFAULT_RESOURCES
    assert TEST_ENV in runner["env"]
    for pod in (job, scheduler, worker):  # defaultTolerations, defaultNodeSelector, affinity
        assert not pod.get("tolerations") and not pod.get("nodeSelector")
        assert not pod.get("affinity")
    # Scheduler
    assert scheduler["restartPolicy"] == "Always"
    container = scheduler["containers"][0]
    assert container["image"] == DEFAULT_TEST_IMAGE
    assert container["resources"] == DEFAULT_RESOURCES
    assert container["args"] == ["dask-scheduler"]
    assert container["ports"] == [
        {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
        {"name": "dashboard", "containerPort": 8787, "protocol": "TCP"},
    ]
    assert TEST_ENV in container["env"]
    assert "readinessProbe" not in container  # Flyte 2's plugin adds one; v1.16's does not
    service = manifest["spec"]["cluster"]["spec"]["scheduler"]["service"]
    assert service["type"] == "NodePort"
    assert service["selector"] == {
        "dask.org/cluster-name": TEST_TASK_ID,
        "dask.org/component": "scheduler",
    }
    assert service["ports"] == [
        {"name": "tcp-comm", "protocol": "TCP", "port": 8786, "targetPort": "tcp-comm"},
        {"name": "dashboard", "protocol": "TCP", "port": 8787, "targetPort": "dashboard"},
    ]
    # Default workers
    assert manifest["spec"]["cluster"]["spec"]["worker"]["replicas"] == TEST_NWORKERS
    container = worker["containers"][0]
    assert container["name"] == "dask-worker"
    assert container["image"] == DEFAULT_TEST_IMAGE
    assert container["resources"] == DEFAULT_RESOURCES
    assert TEST_ENV in container["env"]
    assert container["args"] == [
        "dask-worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "8", "--memory-limit", "17G",
    ]  # fmt: skip
    assert worker["restartPolicy"] == "Always"


def test_build_resource_dask_custom_images() -> None:
    manifest = build(go_template("customImage"))
    job, scheduler, worker = pods(manifest).values()
    assert job["containers"][0]["image"] == DEFAULT_TEST_IMAGE
    assert scheduler["containers"][0]["image"] == "customImage"
    assert worker["containers"][0]["image"] == "customImage"


def test_build_resource_dask_default_resource_requirements() -> None:
    flyte_workflow_resources = {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "2G"}}
    manifest = build(go_template(task_resources=flyte_workflow_resources))
    expected = {"requests": {"cpu": "1", "memory": "2G"}, "limits": {"cpu": "2", "memory": "2G"}}
    for pod in pods(manifest).values():
        assert resources(pod) == expected
    args = pods(manifest)["worker"]["containers"][0]["args"]
    assert "--nthreads" in args and "2" in args
    assert "--memory-limit" in args and "2G" in args


def test_build_resource_dask_adjust_resource_requirements() -> None:
    # cpu limit above the platform's, memory limit unset (defaulted from the request)
    flyte_workflow_resources = {"requests": {"cpu": "1", "memory": "2G"}, "limits": {"cpu": "16"}}
    translation = translate(
        go_template(task_resources=flyte_workflow_resources), TEST_TASK_ID, platform=platform()
    )
    expected = {
        "requests": {"cpu": "1", "memory": "2G"},
        "limits": {"cpu": PLATFORM_LIMITS["cpu"], "memory": "2G"},
    }
    for pod in pods(translation.manifest).values():
        assert resources(pod) == expected
    args = pods(translation.manifest)["worker"]["containers"][0]["args"]
    assert "--nthreads" in args and "10" in args  # from the adjusted, platform limits
    assert "--memory-limit" in args and "2G" in args
    # and the dry run can say so
    assert translation.clamped["dask-worker"] == ["cpu limit 16 → 10"]


def test_build_resources_dask_custom_resource_requirements() -> None:
    group = {"requests": {"cpu": "5"}, "limits": {"cpu": "10", "memory": "15G"}}
    flyte_workflow_resources = {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "2G"}}
    manifest = build(go_template("", group, task_resources=flyte_workflow_resources))
    job, scheduler, worker = pods(manifest).values()
    assert resources(job) == {
        "requests": {"cpu": "1", "memory": "2G"},
        "limits": {"cpu": "2", "memory": "2G"},
    }
    # the unset memory request comes from the set memory limit
    expected = {"requests": {"cpu": "5", "memory": "15G"}, "limits": {"cpu": "10", "memory": "15G"}}
    assert resources(scheduler) == expected
    assert resources(worker) == expected
    args = worker["containers"][0]["args"]
    assert "--nthreads" in args and "10" in args
    assert "--memory-limit" in args and "15G" in args


def test_build_resource_dask_interruptible() -> None:
    requirement = {"key": "x/interruptible", "operator": "In", "values": ["true"]}
    tolerations = [
        {"key": "x/flyte", "value": "interruptible", "operator": "Equal", "effect": "NoSchedule"}
    ]
    plat = platform(
        interruptible_node_selector={"x/interruptible": "true"},
        interruptible_node_selector_requirement=requirement,
        interruptible_tolerations=tolerations,
    )
    manifest = build(go_template(task_resources=DEFAULT_RESOURCES, interruptible=True), plat)
    job, scheduler, worker = pods(manifest).values()
    for pod in (job, scheduler):  # should not be interruptible
        assert not pod.get("tolerations") and not pod.get("nodeSelector")
        assert not pod.get("affinity")
    assert worker["tolerations"] == tolerations
    assert worker["nodeSelector"] == {"x/interruptible": "true"}
    assert node_selector_terms(worker)[0]["matchExpressions"][0] == requirement


def test_build_resource_dask_use_pod_template() -> None:
    translation = translate(
        go_template("", None, POD_TEMPLATE_NAME, task_resources=DEFAULT_RESOURCES),
        TEST_TASK_ID,
        platform=platform(),
    )
    for pod in pods(translation.manifest).values():
        assert pod["priorityClassName"] == PRIORITY_CLASS
    assert translation.pod_template == POD_TEMPLATE_NAME and translation.pod_template_known
    validate_manifest(translation.manifest)


EXTENDED_CONFIG = {
    "gpu_device_node_label": "gpu-node-label",
    "gpu_partition_size_node_label": "gpu-partition-size",
    "gpu_resource_name": "nvidia.com/gpu",
    "add_tolerations_for_extended_resources": ["nvidia.com/gpu"],
}


@pytest.mark.parametrize(
    ("accelerator", "expected_nsr", "expected_tol"),
    [
        pytest.param(
            {"device": "nvidia-tesla-t4"},
            [
                {
                    "matchExpressions": [
                        {"key": "gpu-node-label", "operator": "In", "values": ["nvidia-tesla-t4"]}
                    ]
                }
            ],
            [
                {
                    "key": "gpu-node-label",
                    "value": "nvidia-tesla-t4",
                    "operator": "Equal",
                    "effect": "NoSchedule",
                },
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ],
            id="without overrides",
        ),
        pytest.param(
            # Go's "with overrides" case: the accelerator that wins is an A100 partition
            {"device": "nvidia-tesla-a100", "partitionSize": "1g.5gb"},
            [
                {
                    "matchExpressions": [
                        {
                            "key": "gpu-node-label",
                            "operator": "In",
                            "values": ["nvidia-tesla-a100"],
                        },
                        {"key": "gpu-partition-size", "operator": "In", "values": ["1g.5gb"]},
                    ]
                }
            ],
            [
                {
                    "key": "gpu-node-label",
                    "value": "nvidia-tesla-a100",
                    "operator": "Equal",
                    "effect": "NoSchedule",
                },
                {
                    "key": "gpu-partition-size",
                    "value": "1g.5gb",
                    "operator": "Equal",
                    "effect": "NoSchedule",
                },
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ],
            id="with a partition",
        ),
    ],
)
def test_build_resource_dask_extended_resources(
    accelerator: dict[str, Any], expected_nsr: list[Any], expected_tol: list[Any]
) -> None:
    template = go_template(
        task_resources={"limits": {"nvidia.com/gpu": "1"}},
        extended_resources={"gpuAccelerator": accelerator},
    )
    manifest = build(template, platform(**EXTENDED_CONFIG))
    for pod in pods(manifest).values():
        assert node_selector_terms(pod) == expected_nsr
        assert pod["tolerations"] == expected_tol


def test_an_accelerator_needs_a_gpu_on_the_task_pod() -> None:
    """ApplyGPUNodeSelectors runs on the task's pod, before the plugin gives the workers their
    own resources: a GPU only on the workers places no pod by the accelerator (v1.16)."""
    template = go_template(
        "",
        {"limits": {"nvidia.com/gpu": "1"}},
        extended_resources={"gpuAccelerator": {"device": "nvidia-tesla-t4"}},
    )
    manifest = build(template, platform(**EXTENDED_CONFIG))
    for pod in pods(manifest).values():
        assert not pod.get("affinity") and not pod.get("tolerations")
    assert resources(pods(manifest)["worker"])["limits"]["nvidia.com/gpu"] == "1"
