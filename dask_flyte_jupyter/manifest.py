"""THE translation of a serialized Flyte dask task to the ``DaskJob`` Flyte would create for it.

It follows Flyte v1.16's dask backend plugin (flyteplugins ``go/tasks/plugins/k8s/dask/dask.go``
and the flytek8s helpers it calls) and nothing later: the task's pod is built as propeller builds
it (resources resolved against the platform's defaults and limits, interruptible tolerations,
node selectors and affinity, the pod template, GPU accelerator placement), then copied into the
job runner, the scheduler (``dask-scheduler``; no readiness probe: that came with Flyte 2) and
the workers (``dask-worker --name $(DASK_WORKER_NAME) --nthreads N --memory-limit M``). The
deployment's own values come from a :class:`~.platform.Platform`. The input is the task template
in protobuf-JSON form (``MessageToDict(template.to_flyte_idl())``), exactly what the plugin reads.

Left out, as only the running execution knows them: the generated name (a placeholder stands
in), namespace, labels, annotations, service account, ``FLYTE_INTERNAL_*`` variables.

Pure: no IPython, no flytekit; ``yaml`` and ``jsonschema`` are imported where they are used.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .k8s import (  # noqa: F401  (re-exported: the manifest's public names)
    API_VERSION,
    KIND,
    ManifestError,
    canonical_quantity,
    crd_path,
    daskjob_schema,
    parse_quantity,
    quantity_value,
    to_yaml,
    validate_manifest,
)
from .platform import Platform

#: Flyte names the DaskJob (and so its cluster) after the task execution, known only at run time.
GENERATED_NAME = "<execution-generated-name>"
# Flyte IDL resource names -> Kubernetes resource names (flytek8s.ToK8sResourceList).
_RESOURCE_NAMES = {
    "CPU": "cpu",
    "MEMORY": "memory",
    "EPHEMERAL_STORAGE": "ephemeral-storage",
}
_SCHEDULER_PORTS = (("tcp-comm", 8786), ("dashboard", 8787))


# --- resources: flytek8s ApplyResourceOverrides -----------------------------------------------


def _resource_list(entries: Any, where: str, gpu_name: str) -> dict[str, str]:
    """IDL resource entries -> Kubernetes resource list; zero values are dropped, like Flyte."""
    names = {**_RESOURCE_NAMES, "GPU": gpu_name}
    result: dict[str, str] = {}
    for entry in entries or ():
        name = names.get(str(entry.get("name", "")))
        if name is None:
            continue  # STORAGE and the like: the plugin ignores them
        try:
            if parse_quantity(str(entry.get("value", "")))[0] != 0:
                result[name] = canonical_quantity(str(entry["value"]))
        except ManifestError as error:
            raise ManifestError(f"{where}: {name}: {error}") from None
    return result


def _raw_resources(
    resources: Mapping[str, Any] | None, where: str, gpu_name: str = "nvidia.com/gpu"
) -> dict[str, dict[str, str]]:
    resources = resources or {}
    return {
        kind: _resource_list(resources.get(kind), f"{where} {kind}", gpu_name)
        for kind in ("requests", "limits")
    }


def _smaller(value: str | None, limit: str | None) -> str | None:
    """ensureResourceLimit: the value, lowered to the limit when both are set."""
    if value is None or limit is None:
        return value
    return limit if parse_quantity(value)[0] > parse_quantity(limit)[0] else value


@dataclass
class _Resolved:
    """Container resources after Flyte's resolution, and what a platform limit lowered."""

    resources: dict[str, dict[str, str]]
    clamped: list[str] = field(default_factory=list)  # "cpu limit 8 -> 2"


def apply_resource_overrides(raw: Mapping[str, Mapping[str, str]], platform: Platform) -> _Resolved:
    """flytek8s ``ApplyResourceOverrides(resources, platformResources, assignIfUnset=true)``.

    cpu and memory: an unset request takes the limit, else the platform default (propeller's
    ``default-cpus`` / ``default-memory`` when the platform gives none); an unset limit takes
    the request; then both are lowered to the platform limit and the request to the limit.
    ephemeral-storage and the GPU are resolved the same way only when the task sets them.
    """
    requests, limits = dict(raw.get("requests", {})), dict(raw.get("limits", {}))
    gpu = str(platform.setting("gpu-resource-name"))
    defaults = {
        "cpu": platform.defaults.get("cpu") or str(platform.setting("default-cpus")),
        "memory": platform.defaults.get("memory") or str(platform.setting("default-memory")),
        "ephemeral-storage": platform.defaults.get("ephemeral-storage"),
        gpu: platform.defaults.get("gpu"),
    }
    platform_limits = {**platform.limits}
    if "gpu" in platform_limits:
        platform_limits[gpu] = platform_limits.pop("gpu")
    resolved = _Resolved({})
    for name in ("cpu", "memory", "ephemeral-storage", gpu):
        if name not in ("cpu", "memory") and name not in requests and name not in limits:
            continue
        request = requests.get(name) or limits.get(name) or defaults.get(name)
        limit = limits.get(name) or request
        ceiling = platform_limits.get(name)
        changes = [
            (kind, value, _smaller(value, ceiling))
            for kind, value in (("request", request), ("limit", limit))
            if _smaller(value, ceiling) != value
        ]
        if len(changes) == 2 and changes[0][1:] == changes[1][1:]:
            resolved.clamped.append(f"{name} {changes[0][1]} → {changes[0][2]}")
        else:
            resolved.clamped += [f"{name} {kind} {old} → {new}" for kind, old, new in changes]
        request, limit = _smaller(request, ceiling), _smaller(limit, ceiling)
        request = _smaller(request, limit)
        if request is not None:
            requests[name] = canonical_quantity(request)
        if limit is not None:
            limits[name] = canonical_quantity(limit)
    resolved.resources = {"limits": limits, "requests": requests}
    return resolved


def resource_conflicts(template: Mapping[str, Any]) -> list[str]:
    """Requests above limits in the task, which Flyte silently lowers to the limit."""
    custom = template.get("custom") or {}
    parts = [
        ("task", (template.get("container") or {}).get("resources")),
        ("scheduler", (custom.get("scheduler") or {}).get("resources")),
        ("workers", (custom.get("workers") or {}).get("resources")),
    ]
    found = []
    for where, resources in parts:
        raw = _raw_resources(resources, where)
        for name, request in raw["requests"].items():
            limit = raw["limits"].get(name)
            if limit is not None and parse_quantity(request)[0] > parse_quantity(limit)[0]:
                found.append(
                    f"{where}: {name} request {request} is above its limit {limit} "
                    "(Flyte lowers the request to the limit)"
                )
    return found


# --- the task's pod: flytek8s ToK8sPodSpec ----------------------------------------------------


def _merge(base: Any, override: Any) -> Any:
    """mergo.Merge(base, override, WithOverride, WithAppendSlice): maps merge key by key, lists
    are appended, and a set (non-empty) value of ``override`` wins."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return copy.deepcopy(base) + copy.deepcopy(override)
    return copy.deepcopy(override) if override not in (None, "", {}, []) else copy.deepcopy(base)


def _merge_pod_template(
    pod: dict[str, Any], template: Mapping[str, Any], primary: str
) -> dict[str, Any]:
    """flytek8s mergePodSpecs: the template's spec is the base; its ``default`` container is
    the base of every container and its ``primary`` container of the primary one."""
    base = copy.deepcopy(dict(template.get("spec") or {}))
    templates = {c.get("name"): c for c in base.get("containers", [])}
    merged: dict[str, Any] = _merge(base, {k: v for k, v in pod.items() if k != "containers"})
    containers = []
    for container in pod["containers"]:
        start: Any = templates.get("default")
        if container["name"] == primary and "primary" in templates:
            start = _merge(start, templates["primary"]) if start else templates["primary"]
        containers.append(_merge(start, container) if start else container)
    merged["containers"] = containers
    return merged


def _require(pod: dict[str, Any], requirement: Mapping[str, Any]) -> None:
    """AddRequiredNodeSelectorRequirements: the requirement joins every node selector term."""
    affinity = pod.setdefault("affinity", {})
    required = affinity.setdefault("nodeAffinity", {}).setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {}
    )
    terms = required.setdefault("nodeSelectorTerms", [])
    if terms:
        for term in terms:
            term.setdefault("matchExpressions", []).append(dict(requirement))
    else:
        terms.append({"matchExpressions": [dict(requirement)]})


def _gpu_placement(pod: dict[str, Any], accelerator: Mapping[str, Any], platform: Platform) -> None:
    """flytek8s ApplyGPUNodeSelectors: only for a pod whose containers have a GPU limit."""
    gpu = platform.setting("gpu-resource-name")
    if not any(gpu in c.get("resources", {}).get("limits", {}) for c in pod["containers"]):
        return
    pod.setdefault("affinity", {})
    device_label = platform.setting("gpu-device-node-label")
    partition_label = platform.setting("gpu-partition-size-node-label")
    device = accelerator.get("device")
    tolerations = pod.setdefault("tolerations", [])
    if device:
        _require(pod, {"key": device_label, "operator": "In", "values": [device]})
        tolerations.append(
            {"key": device_label, "value": device, "operator": "Equal", "effect": "NoSchedule"}
        )
    if accelerator.get("unpartitioned"):
        requirement = platform.setting("gpu-unpartitioned-node-selector-requirement") or {
            "key": partition_label,
            "operator": "DoesNotExist",
        }
        _require(pod, requirement)
        toleration = platform.setting("gpu-unpartitioned-toleration")
        if toleration:
            tolerations.append(dict(toleration))
    elif accelerator.get("partitionSize"):
        size = accelerator["partitionSize"]
        _require(pod, {"key": partition_label, "operator": "In", "values": [size]})
        tolerations.append(
            {"key": partition_label, "value": size, "operator": "Equal", "effect": "NoSchedule"}
        )


def _resource_names(pod: Mapping[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for container in pod["containers"]:
        for kind in ("limits", "requests"):
            names.update(dict.fromkeys(container.get("resources", {}).get(kind, {})))
    return list(names)


def _task_pod(
    container: dict[str, Any],
    template: Mapping[str, Any],
    platform: Platform,
    interruptible: bool,
) -> dict[str, Any]:
    """The task's pod spec as ToK8sPodSpec builds it (interruptible or not)."""
    pod: dict[str, Any] = {"containers": [copy.deepcopy(container)]}
    # UpdatePod: tolerations for requested resources, interruptible ones, the defaults.
    tolerations: list[Any] = []
    resource_tolerations = platform.setting("resource-tolerations") or {}
    for name in _resource_names(pod):
        tolerations += copy.deepcopy(list(resource_tolerations.get(name, [])))
    if interruptible:
        tolerations += copy.deepcopy(list(platform.setting("interruptible-tolerations") or []))
    tolerations += copy.deepcopy(list(platform.setting("default-tolerations") or []))
    if tolerations:
        pod["tolerations"] = tolerations
    selector = dict(platform.setting("default-node-selector") or {})
    if interruptible:
        selector.update(platform.setting("interruptible-node-selector") or {})
    if selector:
        pod["nodeSelector"] = selector
    if platform.setting("default-affinity"):
        pod["affinity"] = copy.deepcopy(dict(platform.setting("default-affinity")))
    requirement = platform.setting(
        "interruptible-node-selector-requirement"
        if interruptible
        else "non-interruptible-node-selector-requirement"
    )
    if requirement:
        _require(pod, requirement)
    # MergeWithBasePodTemplate: the task's pod template, else the deployment's default one.
    name = (template.get("metadata") or {}).get("podTemplateName") or platform.setting(
        "default-pod-template-name"
    )
    if name and name in platform.pod_templates:
        pod = _merge_pod_template(pod, platform.pod_templates[name], container["name"])
    # Extended resources: the accelerator's node selectors and tolerations.
    accelerator = (template.get("extendedResources") or {}).get("gpuAccelerator")
    if accelerator:
        _gpu_placement(pod, accelerator, platform)
    extended = platform.setting("add-tolerations-for-extended-resources") or []
    for name in _resource_names(pod):
        if name in extended:
            wanted = {"key": name, "operator": "Exists", "effect": "NoSchedule"}
            if wanted not in pod.setdefault("tolerations", []):
                pod["tolerations"].append(wanted)
    return pod


# --- the manifest: the dask plugin's BuildResource --------------------------------------------


def _primary(pod: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    """A copy of the pod whose (only) primary container is renamed and changed."""
    pod = copy.deepcopy(pod)
    container = pod["containers"][0]
    container["name"] = name
    container.update(changes)
    return pod


def _worker_args(resources: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``dask-worker`` args exactly as the plugin derives them from the worker limits: the
    limits are always resolved, so both flags are always there (``Quantity.Value()`` rounds
    the cpu up; a missing limit would print as 0)."""
    limits = resources.get("limits", {})
    cpu, memory = limits.get("cpu"), limits.get("memory")
    return [
        "dask-worker",
        "--name",
        "$(DASK_WORKER_NAME)",
        "--nthreads",
        str(quantity_value(cpu)) if cpu else "0",
        "--memory-limit",
        memory or "0",
    ]


@dataclass
class Translation:
    """The DaskJob, plus what the platform changed on the way (for the dry run and the summary)."""

    manifest: dict[str, Any]
    clamped: dict[str, list[str]]  # pod -> "cpu limit 8 → 2" lowered by a platform limit
    pod_template: str | None  # the pod template the pods are merged with, if any
    pod_template_known: bool
    #: an accelerator that places no pod: the task's own container requests no GPU
    accelerator_unplaced: bool = False


def translate(
    template: Mapping[str, Any],
    name: str = GENERATED_NAME,
    *,
    platform: Platform | None = None,
) -> Translation:
    """The ``DaskJob`` Flyte v1.16's dask plugin creates for ``template`` (protobuf-JSON
    TaskTemplate) on a deployment with ``platform``'s values."""
    platform = platform or Platform()
    container = template.get("container")
    custom = template.get("custom")
    if not container or not container.get("image"):
        raise ManifestError("the task has no container image")
    if not custom or "scheduler" not in custom or "workers" not in custom:
        raise ManifestError("the task's custom has no dask scheduler/workers (not a dask task?)")
    gpu = str(platform.setting("gpu-resource-name"))
    image: str = container["image"]
    task = apply_resource_overrides(
        _raw_resources(container.get("resources"), "task", gpu), platform
    )
    env = [{"name": kv["key"], "value": kv.get("value", "")} for kv in container.get("env", [])]
    task_container: dict[str, Any] = {"name": "primary", "image": image}
    task_container["args"] = list(container.get("args", []))
    if env:
        task_container["env"] = env
    task_container["resources"] = task.resources
    # flytek8s.BuildRawContainer sets this on the task container, so every copy keeps it.
    task_container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    interruptible = bool((template.get("metadata") or {}).get("interruptible", False))
    pod = _task_pod(task_container, template, platform, interruptible)
    steady_pod = _task_pod(task_container, template, platform, False) if interruptible else pod
    scheduler, workers = custom["scheduler"], custom["workers"]
    clamped = {"job-runner": list(task.clamped)}

    def group_resources(group: Mapping[str, Any], role: str, where: str) -> dict[str, Any] | None:
        own = _raw_resources(group.get("resources"), where, gpu)
        if not own["requests"] and not own["limits"]:
            clamped[role] = list(task.clamped)
            return None  # the task's resources stay
        resolved = apply_resource_overrides(own, platform)
        clamped[role] = resolved.clamped
        return resolved.resources

    scheduler_changes: dict[str, Any] = {"args": ["dask-scheduler"]}
    if scheduler.get("image"):
        scheduler_changes["image"] = scheduler["image"]
    if (resources := group_resources(scheduler, "scheduler", "scheduler")) is not None:
        scheduler_changes["resources"] = resources
    scheduler_changes["ports"] = [
        {"name": port_name, "containerPort": port, "protocol": "TCP"}
        for port_name, port in _SCHEDULER_PORTS
    ]
    scheduler_pod = _primary(steady_pod, "scheduler", **scheduler_changes)
    scheduler_pod["restartPolicy"] = "Always"

    worker_changes: dict[str, Any] = {}
    if workers.get("image"):
        worker_changes["image"] = workers["image"]
    worker_resources = group_resources(workers, "dask-worker", "workers") or task.resources
    worker_changes["resources"] = worker_resources
    worker_changes["args"] = _worker_args(worker_resources)
    worker_pod = _primary(pod, "dask-worker", **worker_changes)
    worker_pod["restartPolicy"] = "Always"  # workers run as a Deployment

    accelerator = (template.get("extendedResources") or {}).get("gpuAccelerator")
    job_pod = _primary(steady_pod, "job-runner")
    job_pod["restartPolicy"] = "Never"
    template_name = (template.get("metadata") or {}).get("podTemplateName") or platform.setting(
        "default-pod-template-name"
    )
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "job": {"spec": job_pod},
            "cluster": {
                "spec": {
                    "scheduler": {
                        "spec": scheduler_pod,
                        "service": {
                            "type": "NodePort",  # as the plugin sets it
                            "selector": {
                                "dask.org/cluster-name": name,
                                "dask.org/component": "scheduler",
                            },
                            "ports": [
                                {
                                    "name": port_name,
                                    "protocol": "TCP",
                                    "port": port,
                                    "targetPort": port_name,
                                }
                                for port_name, port in _SCHEDULER_PORTS
                            ],
                        },
                    },
                    "worker": {
                        "replicas": int(workers.get("numberOfWorkers", 0)),
                        "spec": worker_pod,
                    },
                }
            },
        },
    }
    return Translation(
        manifest,
        {role: notes for role, notes in clamped.items() if notes},
        template_name or None,
        bool(template_name) and template_name in platform.pod_templates,
        bool(accelerator) and gpu not in task.resources["limits"],
    )


def build_manifest(
    template: Mapping[str, Any],
    name: str = GENERATED_NAME,
    *,
    platform: Platform | None = None,
) -> dict[str, Any]:
    """The ``DaskJob`` Flyte's dask plugin creates for ``template`` (see :func:`translate`)."""
    return translate(template, name, platform=platform).manifest


def worker_shape(manifest: Mapping[str, Any]) -> tuple[int, str, str]:
    """(workers, ``--nthreads``, ``--memory-limit``) of a DaskJob: the shape the cluster gets."""
    worker = manifest["spec"]["cluster"]["spec"]["worker"]
    args = worker["spec"]["containers"][0]["args"]
    return (
        int(worker["replicas"]),
        args[args.index("--nthreads") + 1],
        args[args.index("--memory-limit") + 1],
    )
