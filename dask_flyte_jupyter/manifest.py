"""THE translation of a serialized Flyte dask task to the ``DaskJob`` Flyte would create for it.

It follows Flyte's dask backend plugin (flyteplugins ``go/tasks/plugins/k8s/dask/dask.go``, v1.16
line): the task's own container becomes the job runner, the scheduler and the workers; the
plugin changes only names, args, images, resources, ports and restart policies. The input is the
task template in protobuf-JSON form (``MessageToDict(template.to_flyte_idl())``, with ``custom``
as ``DaskTask.get_custom`` made it), which is exactly what the plugin reads.

What only the Flyte deployment knows at run time is left out: the execution's generated name
(a placeholder stands in), namespace, labels, service account, ``FLYTE_INTERNAL_*`` variables,
pod templates, and platform default/maximum resources (propeller fills unset cpu/memory from them).

Pure: no IPython, no flytekit; ``yaml`` and ``jsonschema`` are imported where they are used.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

API_VERSION = "kubernetes.dask.org/v1"
KIND = "DaskJob"
#: Flyte names the DaskJob (and so its cluster) after the task execution, known only at run time.
GENERATED_NAME = "<execution-generated-name>"
#: Placeholders for propeller's ``interruptible-tolerations`` / ``interruptible-node-selector``
#: (k8s plugin config); the real values come from the deployment's propeller config.
INTERRUPTIBLE_TOLERATIONS = (
    {"key": "flyte/interruptible", "operator": "Exists", "effect": "NoSchedule"},
)
INTERRUPTIBLE_NODE_SELECTOR = {"flyte/interruptible": "true"}

_CRD = "operator/deployment/helm/dask-kubernetes-operator/crds/daskjob.yaml"
# Flyte IDL resource names -> Kubernetes resource names (flytek8s.ToK8sResourceList).
_RESOURCE_NAMES = {
    "CPU": "cpu",
    "MEMORY": "memory",
    "GPU": "nvidia.com/gpu",  # propeller's default gpu-resource-name
    "EPHEMERAL_STORAGE": "ephemeral-storage",
}
_SCHEDULER_PORTS = (("tcp-comm", 8786), ("dashboard", 8787))


class ManifestError(ValueError):
    """The manifest (or the task it comes from) is not what Kubernetes would accept."""


# --- Kubernetes quantities, as k8s.io/apimachinery's resource.Quantity reads and prints them ---

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:[eE](?P<exp>[+-]?[0-9]+)|(?P<suffix>[KMGTPE]i|[numkMGTPE]))?"
)
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_DECIMAL_POWER = {suffix: power for power, suffix in _DECIMAL.items()}


def parse_quantity(text: str) -> tuple[Fraction, str]:
    """``'32Gi'`` -> (value, format); format is 'BinarySI', 'DecimalSI' or 'DecimalExponent'."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ManifestError(f"{text!r} is not a Kubernetes quantity")
    value = Fraction(match["num"]) * (-1 if match["sign"] == "-" else 1)
    suffix = match["suffix"] or ""
    if match["exp"] is not None:
        value, fmt = value * Fraction(10) ** int(match["exp"]), "DecimalExponent"
    elif suffix.endswith("i"):
        value, fmt = value * 1024 ** _BINARY.index(suffix), "BinarySI"
    else:
        value, fmt = value * Fraction(10) ** _DECIMAL_POWER[suffix], "DecimalSI"
    # Kubernetes keeps nano precision and rounds anything finer up.
    return Fraction(math.ceil(value * 10**9), 10**9), fmt


def canonical_quantity(text: str) -> str:
    """The text Kubernetes (and so the plugin's ``Quantity.String()``) prints for a quantity.

    ``'1024Mi'`` -> ``'1Gi'``, ``'1000m'`` -> ``'1'``, ``'1.5Gi'`` -> ``'1536Mi'``.
    """
    value, fmt = parse_quantity(text)
    if value == 0:
        return "0"
    if fmt == "BinarySI" and (abs(value) < 1024 or value.denominator != 1):
        fmt = "DecimalSI"  # Kubernetes avoids rounding and tiny binary values this way
    if fmt == "BinarySI":
        number, power = int(value), 0
        while number % 1024 == 0 and power < len(_BINARY) - 1:
            number, power = number // 1024, power + 1
        return f"{number}{_BINARY[power]}"
    mantissa, exponent = int(value * 10**9), -9
    while mantissa % 10 == 0:
        mantissa, exponent = mantissa // 10, exponent + 1
    shift = exponent % 3  # the exponent goes down to a multiple of 3
    mantissa, exponent = mantissa * 10**shift, exponent - shift
    if fmt == "DecimalSI" and exponent in _DECIMAL:
        return f"{mantissa}{_DECIMAL[exponent]}"
    return f"{mantissa}e{exponent}" if exponent else str(mantissa)


def quantity_value(text: str) -> int:
    """``Quantity.Value()``: the quantity rounded up to a whole number (``'500m'`` -> 1)."""
    return math.ceil(parse_quantity(text)[0])


# --- resources -------------------------------------------------------------------------------


def _resource_list(entries: Any, where: str) -> dict[str, str]:
    """IDL resource entries -> Kubernetes resource list; zero values are dropped, like Flyte."""
    result: dict[str, str] = {}
    for entry in entries or ():
        name = _RESOURCE_NAMES.get(str(entry.get("name", "")))
        if name is None:
            continue  # STORAGE and the like: the plugin ignores them
        try:
            if parse_quantity(str(entry.get("value", "")))[0] != 0:
                result[name] = canonical_quantity(str(entry["value"]))
        except ManifestError as error:
            raise ManifestError(f"{where}: {name}: {error}") from None
    return result


def _raw_resources(resources: Mapping[str, Any] | None, where: str) -> dict[str, dict[str, str]]:
    resources = resources or {}
    return {
        kind: _resource_list(resources.get(kind), f"{where} {kind}")
        for kind in ("requests", "limits")
    }


def _complete(raw: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Flyte's ApplyResourceOverrides: a request fills a missing limit and the reverse, and a
    request above its limit is lowered to the limit (platform defaults/maxima are not known)."""
    requests, limits = dict(raw.get("requests", {})), dict(raw.get("limits", {}))
    for name in [*requests, *(n for n in limits if n not in requests)]:
        request = requests.get(name, limits.get(name))
        limit = limits.get(name, request)
        assert request is not None and limit is not None
        if parse_quantity(request)[0] > parse_quantity(limit)[0]:
            request = limit
        requests[name], limits[name] = request, limit
    return {k: v for k, v in (("limits", limits), ("requests", requests)) if v}


def _group_resources(
    group: Mapping[str, Any], task_resources: dict[str, dict[str, str]], where: str
) -> dict[str, dict[str, str]]:
    """The group's own resources if it sets any, else the task's (both completed)."""
    own = _raw_resources(group.get("resources"), where)
    return _complete(own) if own["requests"] or own["limits"] else task_resources


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


# --- the manifest ----------------------------------------------------------------------------


def _container(
    name: str,
    image: str,
    args: list[str],
    env: list[dict[str, str]],
    resources: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image, "args": list(args)}
    if env:
        container["env"] = copy.deepcopy(env)
    if resources:
        container["resources"] = copy.deepcopy(resources)
    container.update(extra)
    # flytek8s.BuildRawContainer sets this on the task container, so every copy keeps it.
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _worker_args(resources: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``dask-worker`` args exactly as the plugin derives them from the worker limits."""
    args = ["dask-worker", "--name", "$(DASK_WORKER_NAME)"]
    limits = resources.get("limits", {})
    # The plugin always has cpu/memory limits (platform defaults fill them); we only know
    # the ones the task sets, so a missing limit leaves its flag out.
    if "cpu" in limits:
        args += ["--nthreads", str(quantity_value(limits["cpu"]))]
    if "memory" in limits:
        args += ["--memory-limit", limits["memory"]]
    return args


def build_manifest(template: Mapping[str, Any], name: str = GENERATED_NAME) -> dict[str, Any]:
    """The ``DaskJob`` Flyte's dask plugin creates for ``template`` (protobuf-JSON TaskTemplate)."""
    container = template.get("container")
    custom = template.get("custom")
    if not container or not container.get("image"):
        raise ManifestError("the task has no container image")
    if not custom or "scheduler" not in custom or "workers" not in custom:
        raise ManifestError("the task's custom has no dask scheduler/workers (not a dask task?)")
    image: str = container["image"]
    args: list[str] = list(container.get("args", []))
    env = [{"name": kv["key"], "value": kv.get("value", "")} for kv in container.get("env", [])]
    task_resources = _complete(_raw_resources(container.get("resources"), "task"))
    scheduler, workers = custom["scheduler"], custom["workers"]
    interruptible = bool((template.get("metadata") or {}).get("interruptible", False))

    scheduler_container = _container(
        "scheduler",
        scheduler.get("image") or image,
        ["dask-scheduler"],
        env,
        _group_resources(scheduler, task_resources, "scheduler"),
        ports=[
            {"name": port_name, "containerPort": port, "protocol": "TCP"}
            for port_name, port in _SCHEDULER_PORTS
        ],
        # Added by the plugin unless the pod template brings one (it cannot here).
        readinessProbe={
            "httpGet": {"port": "dashboard"},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "failureThreshold": 30,
        },
    )

    worker_resources = _group_resources(workers, task_resources, "workers")
    worker_pod: dict[str, Any] = {
        "containers": [
            _container(
                "dask-worker",
                workers.get("image") or image,
                _worker_args(worker_resources),
                env,
                worker_resources,
            )
        ],
        "restartPolicy": "Always",  # workers run as a Deployment
    }
    if interruptible:  # only workers: scheduler and job runner use the non-interruptible pod
        worker_pod["tolerations"] = [dict(t) for t in INTERRUPTIBLE_TOLERATIONS]
        worker_pod["nodeSelector"] = dict(INTERRUPTIBLE_NODE_SELECTOR)

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "job": {
                "spec": {
                    "containers": [_container("job-runner", image, args, env, task_resources)],
                    "restartPolicy": "Never",
                }
            },
            "cluster": {
                "spec": {
                    "scheduler": {
                        "spec": {"containers": [scheduler_container], "restartPolicy": "Always"},
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


# --- validation against the CRD --------------------------------------------------------------


def crd_path() -> Path:
    """The DaskJob CRD shipped in the installed dask-kubernetes package."""
    spec = importlib.util.find_spec("dask_kubernetes")  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ManifestError("dask-kubernetes is not installed; it ships the DaskJob CRD")
    return Path(next(iter(spec.submodule_search_locations))) / _CRD


def _json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) -> JSON schema: ``nullable`` becomes a type union,
    ``x-kubernetes-*`` keys go, and objects with declared properties reject unknown fields
    (as ``kubectl``'s strict field validation does), so a misspelt field is caught."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":  # field name -> schema: the names are data, never keywords
            schema[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif not key.startswith("x-kubernetes-"):
            schema[key] = _json_schema(value)
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


@functools.cache  # the CRD is ~0.5 MB of YAML: read it once per process
def daskjob_schema() -> dict[str, Any]:
    """The JSON schema of a whole DaskJob object, from the CRD's ``openAPIV3Schema``."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_path().read_text(), Loader=loader)  # a safe loader (C if available)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == API_VERSION.split("/")[1])
    schema: dict[str, Any] = _json_schema(version["schema"]["openAPIV3Schema"])
    # The API server adds the object envelope; the CRD schema leaves it out.
    schema["properties"].update(
        apiVersion={"const": API_VERSION},
        kind={"const": KIND},
        metadata={
            "type": "object",
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
            "additionalProperties": True,
        },
    )
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` naming the failing path if the CRD schema rejects it."""
    import jsonschema

    validator = jsonschema.Draft7Validator(daskjob_schema())
    errors = sorted(
        validator.iter_errors(manifest), key=lambda e: (list(e.absolute_path), e.message)
    )
    if errors:
        error = jsonschema.exceptions.best_match(errors) or errors[0]
        raise ManifestError(
            f"DaskJob {_path(error.absolute_path)}: {error.message}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        )


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """The manifest as YAML, in the field order it was built in."""
    import yaml

    return str(yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False))
