"""What only the Flyte deployment knows, and that changes the pods of a dask task.

Flyte v1.16 builds a task's pods from more than the task: the platform's task resource defaults
and limits (Flyte Admin's ``task_resources``, overridable per project/domain as the matchable
attribute ``TASK_RESOURCE``), flytepropeller's k8s plugin config (``plugins.k8s``: interruptible
tolerations and node selectors, GPU labels, default tolerations ...) and the PodTemplates in the
execution's namespace. A :class:`Platform` holds those values and says where each came from:

- task resources: Flyte Admin's ``TASK_RESOURCE`` attributes when a run (or a dry run with a
  Flyte config) could read them, else the platform file, else unknown (propeller then uses its
  own ``default-cpus`` / ``default-memory`` and no limits);
- the k8s plugin config and pod templates: the platform file, else propeller's built-in values.

The platform file (named by ``$FLYTE_DASK_PLATFORM``: ``%env FLYTE_DASK_PLATFORM=platform.yaml``)
is YAML in the deployment's own terms, so a platform team can copy its values into it::

    task_resources:          # flyteadmin config: task_resources
      defaults: {cpu: 500m, memory: 1Gi}
      limits: {cpu: 2, memory: 1Gi}
    plugins:
      k8s:                   # flytepropeller config: plugins.k8s
        interruptible-tolerations:
          - {key: x/flyte, value: interruptible, operator: Equal, effect: NoSchedule}
        interruptible-node-selector-requirement:
          {key: x/interruptible, operator: In, values: ["true"]}
    pod_templates:           # kubectl get podtemplate NAME -o yaml: its `template`
      gpu-pool:
        spec: {priorityClassName: high}

Pure: no IPython, no flytekit; ``yaml`` is imported when a file is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variable naming the platform file.
PLATFORM_VARIABLE = "FLYTE_DASK_PLATFORM"
#: flytepropeller's own values of the k8s plugin config keys this package reads.
PROPELLER_DEFAULTS: dict[str, Any] = {
    "default-cpus": "1000m",
    "default-memory": "1024Mi",
    "gpu-resource-name": "nvidia.com/gpu",
    "gpu-device-node-label": "k8s.amazonaws.com/accelerator",
    "gpu-partition-size-node-label": "k8s.amazonaws.com/gpu-partition-size",
}
#: The k8s plugin config keys the dask plugin's pods depend on.
K8S_KEYS = (
    "default-cpus",
    "default-memory",
    "gpu-resource-name",
    "gpu-device-node-label",
    "gpu-partition-size-node-label",
    "gpu-unpartitioned-node-selector-requirement",
    "gpu-unpartitioned-toleration",
    "add-tolerations-for-extended-resources",
    "resource-tolerations",
    "interruptible-tolerations",
    "interruptible-node-selector",
    "interruptible-node-selector-requirement",
    "non-interruptible-node-selector-requirement",
    "default-tolerations",
    "default-node-selector",
    "default-affinity",
    "default-pod-template-name",
)
_RESOURCE_KEYS = ("cpu", "memory", "gpu", "ephemeral-storage")
# Flyte Admin's TaskResourceSpec fields -> Kubernetes resource names.
_SPEC_FIELDS = {
    "cpu": "cpu",
    "memory": "memory",
    "gpu": "gpu",
    "ephemeral_storage": "ephemeral-storage",
}


class PlatformError(ValueError):
    """The platform file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Platform:
    """The deployment's values that Flyte's dask plugin applies to a task's pods."""

    defaults: Mapping[str, str] = field(default_factory=dict)  # task resource defaults
    limits: Mapping[str, str] = field(default_factory=dict)  # task resource limits
    resources_from: str = "unknown"  # where defaults/limits came from
    k8s: Mapping[str, Any] = field(default_factory=dict)  # plugins.k8s keys that were given
    k8s_from: str = "flytepropeller's built-in values"
    pod_templates: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    file: str | None = None

    @property
    def resources_known(self) -> bool:
        return self.resources_from != "unknown"

    def setting(self, key: str) -> Any:
        """A k8s plugin config value: the deployment's if given, else propeller's own."""
        return self.k8s.get(key, PROPELLER_DEFAULTS.get(key))

    def with_task_resources(
        self, defaults: Mapping[str, str], limits: Mapping[str, str], source: str
    ) -> Platform:
        return Platform(
            dict(defaults),
            dict(limits),
            source,
            self.k8s,
            self.k8s_from,
            self.pod_templates,
            self.file,
        )

    def describe(self) -> list[tuple[str, str]]:
        """Rows saying which values were used and where they came from."""

        def listed(values: Mapping[str, str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in values.items()) or "none"

        if self.resources_known:
            resources = (
                f"defaults {listed(self.defaults)}; limits {listed(self.limits)} "
                f"({self.resources_from})"
            )
        else:
            resources = (
                "unknown: no TASK_RESOURCE attributes were read and no platform file gives them; "
                f"flytepropeller's defaults assumed (cpu {self.setting('default-cpus')}, memory "
                f"{self.setting('default-memory')}, no limits)"
            )
        k8s = f"{self.k8s_from}" + (f": {', '.join(sorted(self.k8s))}" if self.k8s else "")
        return [("platform resources", resources), ("k8s plugin config", k8s)]


def _resources(section: Any, where: str) -> dict[str, str]:
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise PlatformError(f"{where}: expected a mapping of resource -> quantity")
    values: dict[str, str] = {}
    for key, value in section.items():
        name = str(key).replace("_", "-")
        if name not in _RESOURCE_KEYS:
            raise PlatformError(
                f"{where}: unknown resource {key!r} (known: cpu, memory, gpu, ephemeral-storage)"
            )
        text = str(value).strip()
        if text:
            values[name] = text
    return values


def load_platform(path: str | os.PathLike[str]) -> Platform:
    """Reads a platform file (format in the module docstring)."""
    import yaml

    file = Path(path).expanduser()
    try:
        document = yaml.safe_load(file.read_text()) or {}
    except OSError as error:
        raise PlatformError(f"platform file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise PlatformError(f"platform file {path}: not valid YAML ({error})") from None
    if not isinstance(document, Mapping):
        raise PlatformError(f"platform file {path}: expected a mapping at the top")
    unknown = sorted(set(document) - {"task_resources", "plugins", "pod_templates"})
    if unknown:
        raise PlatformError(
            f"platform file {path}: unknown key(s) {', '.join(unknown)} "
            "(known: task_resources, plugins, pod_templates)"
        )
    task_resources = document.get("task_resources") or {}
    defaults = _resources(task_resources.get("defaults"), f"{path}: task_resources.defaults")
    limits = _resources(task_resources.get("limits"), f"{path}: task_resources.limits")
    k8s = dict(((document.get("plugins") or {}).get("k8s")) or {})
    unknown = sorted(set(k8s) - set(K8S_KEYS))
    if unknown:
        raise PlatformError(
            f"platform file {path}: plugins.k8s: key(s) {', '.join(unknown)} do not change a "
            f"dask task's pods (known: {', '.join(K8S_KEYS)})"
        )
    templates = document.get("pod_templates") or {}
    if not isinstance(templates, Mapping) or not all(
        isinstance(t, Mapping) for t in templates.values()
    ):
        raise PlatformError(f"platform file {path}: pod_templates: expected NAME -> template")
    given = bool(defaults or limits)
    return Platform(
        defaults=defaults,
        limits=limits,
        resources_from=f"platform file {path}" if given else "unknown",
        k8s=k8s,
        k8s_from=f"platform file {path}" if k8s else "flytepropeller's built-in values",
        pod_templates={str(name): dict(t) for name, t in templates.items()},
        file=str(path),
    )


def platform_from_environment() -> Platform:
    """The platform file named by ``$FLYTE_DASK_PLATFORM``, else nothing known."""
    path = os.environ.get(PLATFORM_VARIABLE)
    return load_platform(path) if path else Platform()


def from_task_resource_attributes(attributes: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Flyte Admin's ``TaskResourceAttributes`` (protobuf) -> (defaults, limits)."""

    def spec(message: Any) -> dict[str, str]:
        return {
            name: getattr(message, field_name)
            for field_name, name in _SPEC_FIELDS.items()
            if getattr(message, field_name, "")
        }

    return spec(attributes.defaults), spec(attributes.limits)
