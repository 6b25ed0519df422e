"""``--dry-run``: the Flyte task a cell would register and the DaskJob Flyte would create for it.

Nothing runs and nothing starts: the cell becomes the real flytekit task (``task.build_task``),
flytekit serializes it as registration would (``get_serializable``), and ``manifest.py`` turns
the serialized task into the DaskJob, validated against the CRD. Warnings name what is known to
fail on a real cluster. Imported only when a dry run is asked for (it pulls in flytekit).
"""

from __future__ import annotations

import html
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .cell import CellProgram
from .image import OLD_COMMANDS_REMOVED
from .k8s import ManifestError, to_yaml, validate_manifest
from .manifest import resource_conflicts
from .spec import ClusterSpec
from .task import VALUE_OUTPUT as _VALUE_OUTPUT

#: The warning box in JupyterLab's theme colours, readable in light and dark themes (the
#: fallbacks are the light theme's).
#: The warning box: the sidebar's stylesheet sets the two colours for the light and the dark
#: theme (JupyterLab's --jp-warn-color3 stays a light orange in the dark theme); elsewhere the
#: fallbacks give a light box.
WARNING_STYLE = (
    "background: var(--flyte-dask-warning-background, #fff3cd); "
    "color: var(--flyte-dask-warning-color, #212121); "
    "border: 1px solid var(--jp-warn-color1, #f57c00); border-radius: 2px; "
    "padding: 2px 6px; margin: 2px 0"
)
#: Outputs of the task that are the product's own, never the user's.
_INTERNAL_PREFIX = "flyte_dask_"

#: Flyte v1 backends (through 1.16) start dask with the commands this release removed.
DISTRIBUTED_WITHOUT_OLD_COMMANDS = OLD_COMMANDS_REMOVED
#: Heads the YAML: what the Flyte deployment adds at run time, so nobody mistakes it for missing.
YAML_HEADER = (
    "# As Flyte v1.16's dask plugin builds it with the platform values above. Filled in at run\n"
    "# time, not shown: the execution's generated name, namespace, labels, annotations,\n"
    "# service account, FLYTE_INTERNAL_* variables and the uploaded code's address.\n"
)

# `py3.10`, `python3.12`, `-py310`, `py39` in an image tag.
_PYTHON_TAG = re.compile(r"(?<![a-z0-9])py(?:thon)?[-_]?3[._]?(\d{1,2})(?![0-9])", re.IGNORECASE)
# `dask-2026.7.0`, `distributed2026.6` in a tag; images named dask/distributed carry it bare.
_DASK_TAG = re.compile(r"(?:dask|distributed)[-_]?v?(20\d\d)\.(\d{1,2})", re.IGNORECASE)
_BARE_VERSION = re.compile(r"v?(20\d\d)\.(\d{1,2})(?![0-9])")
_SIMPLE_TYPES = {
    "INTEGER": "int",
    "FLOAT": "float",
    "STRING": "str",
    "BOOLEAN": "bool",
    "DATETIME": "datetime",
    "DURATION": "timedelta",
    "BINARY": "bytes",
    "STRUCT": "dict (struct)",
    "NONE": "None",
}
_PICKLE = "pickle (FlytePickle)"


@dataclass
class DryRun:
    """What a ``%%flyte_dask`` cell would register and create; displays as a table + YAML."""

    task: dict[str, Any]
    manifest: dict[str, Any]
    #: the TaskTemplate ``--remote`` registers (protobuf JSON; the code's address a placeholder)
    template: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def yaml(self) -> str:
        return YAML_HEADER + to_yaml(self.manifest)

    def rows(self) -> list[tuple[str, str]]:
        t = self.task
        image = t["image"] + (
            f"  (default {t['image_contents']})" if t["image_placeholder"] else ""
        )
        cache = f"on, version {t['cache_version']}" if t["cache"] else "off"
        return [
            ("task", f"{t['name']}  ({t['type']} task, nothing was started)"),
            ("version", t["version"]),
            ("image", image),
            ("inputs", _signature(t["inputs"])),
            ("outputs", _signature(user_outputs(t["outputs"], t.get("not_kept", ())))),
            *(
                [
                    (
                        "not kept",
                        ", ".join(t["not_kept"]) + " (dask clients and clusters stay in the task)",
                    )
                ]
                if t.get("not_kept")
                else []
            ),
            ("cache", cache),
            ("interruptible", "yes (workers only)" if t["interruptible"] else "no"),
            ("scheduler", _resources_text(t["resources"]["scheduler"])),
            ("workers", f"{t['workers']} × {_resources_text(t['resources']['worker'])}"),
            ("job runner", _resources_text(t["resources"]["job-runner"])),
            ("cluster", t["shape"]),
            *t["platform"],
            *([("pod template", t["pod_template"])] if t["pod_template"] else []),
            ("args", shlex.join(t["args"])),
        ]

    def as_text(self) -> str:
        width = max(len(key) for key, _ in self.rows())
        lines = [f"{key.rjust(width)}  {value}" for key, value in self.rows()]
        lines += [f"WARNING: {warning}" for warning in self.warnings]
        lines += ["", "DaskJob (validated against the dask-kubernetes CRD):", self.yaml]
        return "\n".join(lines)

    def as_html(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:right'>{html.escape(k)}</th>"
            f"<td style='text-align:left'><code>{html.escape(v)}</code></td></tr>"
            for k, v in self.rows()
        )
        warnings = "".join(
            f"<div class='flyte-dask-warning' style='{WARNING_STYLE}'>⚠ {html.escape(w)}</div>"
            for w in self.warnings
        )
        return (
            f"<div class='flyte-dask-dry-run'><table>{cells}</table>{warnings}"
            "<div>DaskJob (validated against the dask-kubernetes CRD):</div>"
            f"<pre>{html.escape(self.yaml)}</pre></div>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": self.as_text(), "text/html": self.as_html()}


#: Calls whose result is a dask client or cluster: a real run never sends those back.
_HANDLE_CALL = re.compile(r"(^|\.)(Client|get_client|\w*Cluster)$")


def dask_handles(body: str) -> set[str]:
    """Names the cell binds to a dask client or cluster (``client = Client()``,
    ``with LocalCluster() as cluster``), read from the code: the dry run runs nothing."""
    import ast

    names: set[str] = set()
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return names

    def makes_handle(node: ast.AST | None) -> bool:
        if isinstance(node, ast.Await):
            node = node.value
        return isinstance(node, ast.Call) and bool(_HANDLE_CALL.search(ast.unparse(node.func)))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and makes_handle(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if makes_handle(item.context_expr) and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
    return names


def user_outputs(outputs: Mapping[str, str], dropped: Iterable[str] = ()) -> dict[str, str]:
    """The outputs the notebook gets: not the internal ``flyte_dask_*`` ones (the run's report,
    versions...), nor ``dropped`` (clients and clusters: real runs drop them); the last
    expression's value under a readable name."""
    dropped = set(dropped)
    shown = {}
    for name, label in outputs.items():
        if name == _VALUE_OUTPUT:
            shown["(last expression)"] = label
        elif not name.startswith(_INTERNAL_PREFIX) and name not in dropped:
            shown[name] = label
    return shown


def _signature(types: Mapping[str, str]) -> str:
    return ", ".join(f"{name}: {label}" for name, label in types.items()) or "(none)"


def _resources_text(resources: Mapping[str, Mapping[str, str]]) -> str:
    def listed(values: Mapping[str, str]) -> str:
        return ", ".join(f"{name} {value}" for name, value in values.items())

    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if not requests and not limits:
        return "Flyte's platform defaults"
    if requests == limits:
        return f"{listed(requests)} (requests = limits)"
    return f"requests {listed(requests) or '-'}; limits {listed(limits) or '-'}"


def type_label(literal_type: Mapping[str, Any]) -> str:
    """A Flyte literal type (protobuf JSON) as a short readable name."""
    t = literal_type
    if "simple" in t:
        return _SIMPLE_TYPES.get(t["simple"], str(t["simple"]).lower())
    if "blob" in t:
        fmt = t["blob"].get("format", "")
        if fmt == "PythonPickle":
            return _PICKLE
        kind = "FlyteDirectory" if t["blob"].get("dimensionality") == "MULTIPART" else "FlyteFile"
        return f"{kind} ({fmt})" if fmt else kind
    if "structuredDatasetType" in t:
        fmt = t["structuredDatasetType"].get("format")
        return f"StructuredDataset ({fmt})" if fmt else "StructuredDataset"
    if "collectionType" in t:
        return f"list[{type_label(t['collectionType'])}]"
    if "mapValueType" in t:
        return f"dict[str, {type_label(t['mapValueType'])}]"
    if "enumType" in t:
        return f"enum({', '.join(t['enumType'].get('values', []))})"
    if "unionType" in t:
        labels = [type_label(v) for v in t["unionType"].get("variants", [])]
        if sorted(labels) == sorted([_PICKLE, "None"]):
            return _PICKLE  # flytekit's pickle type (Optional[Any]) is a union with None
        return " | ".join(labels)
    if "schema" in t:
        return "FlyteSchema"
    return "unknown"


def _image_parts(image: str) -> tuple[str, str]:
    """``'ghcr.io/dask/dask:2026.7.0-py3.12'`` -> (``'dask'``, ``'2026.7.0-py3.12'``)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return name, tag


def python_in_image(image: str) -> tuple[int, int] | None:
    """The Python version an image's tag names, if any (``python:3.12-slim`` counts too)."""
    name, tag = _image_parts(image)
    match = _PYTHON_TAG.search(tag)
    if match:
        return 3, int(match[1])
    bare = re.match(r"3\.(\d{1,2})(?![0-9])", tag) if name == "python" else None
    return (3, int(bare[1])) if bare else None


def dask_in_image(image: str) -> tuple[int, int] | None:
    """The dask/distributed version an image's tag names, if any."""
    name, tag = _image_parts(image)
    match = _DASK_TAG.search(tag)
    if match is None and name in ("dask", "distributed"):
        match = _BARE_VERSION.match(tag)
    return (int(match[1]), int(match[2])) if match else None


def collect_warnings(
    template: Mapping[str, Any],
    manifest: Mapping[str, Any],
    *,
    kernel_python: tuple[int, int],
) -> list[str]:
    """What is known to fail (or be changed) on a real cluster, as short sentences. (The
    default image has the old dask commands as shims: ``image.shim_commands``.)"""
    warnings: list[str] = []
    old_backend = (
        "Flyte v1 backends (through 1.16) start the cluster with `dask-scheduler` / "
        "`dask-worker`, which distributed 2026.6 removed"
    )
    kernel = f"{kernel_python[0]}.{kernel_python[1]}"
    for image in dict.fromkeys(_images(manifest)):
        python = python_in_image(image)
        if python is not None and python != kernel_python:
            warnings.append(
                f"image {image} is for Python {python[0]}.{python[1]} but this kernel runs "
                f"Python {kernel}: the pickled cell will not load there"
            )
        dask_version = dask_in_image(image)
        if dask_version is not None and dask_version >= DISTRIBUTED_WITHOUT_OLD_COMMANDS:
            warnings.append(
                f"image {image} has dask {dask_version[0]}.{dask_version[1]}: {old_backend}; "
                "use an image with distributed<2026.6"
            )
    warnings += resource_conflicts(template)
    return warnings


def _images(manifest: Mapping[str, Any]) -> list[str]:
    spec = manifest["spec"]
    pods = [
        spec["job"]["spec"],
        spec["cluster"]["spec"]["scheduler"]["spec"],
        spec["cluster"]["spec"]["worker"]["spec"],
    ]
    return [container["image"] for pod in pods for container in pod["containers"]]


def _container_resources(pod: Mapping[str, Any]) -> dict[str, Any]:
    return dict(pod["containers"][0].get("resources", {}))


def _platform(backend: Any, read_admin: bool) -> tuple[Any, list[str]]:
    """The deployment's values for the dry run: the platform file's, and with a Flyte config
    the TASK_RESOURCE attributes Flyte Admin has (one read; nothing is registered)."""
    from .platform import PlatformError, platform_from_environment

    try:
        platform = platform_from_environment()
    except PlatformError as error:
        raise ValueError(str(error)) from None
    if not read_admin:
        return platform, []
    try:
        return backend.read_platform(backend.connect()), []
    except Exception as error:  # unreachable, refused...: the dry run still shows the rest
        return platform, [f"could not read the platform's task resources from Flyte Admin: {error}"]


def _platform_warnings(translation: Any, template: Mapping[str, Any], platform: Any) -> list[str]:
    warnings = []
    source = platform.resources_from if platform.resources_known else "the platform"
    for role, lowered in translation.clamped.items():
        warnings.append(f"{source}'s limits lower the {role}'s {', '.join(lowered)}")
    if translation.pod_template and not translation.pod_template_known:
        warnings.append(
            f"pod template {translation.pod_template!r} is merged into all three pods at run "
            "time; its contents are not known here (add them to the platform file's "
            "pod_templates to see them), and Flyte fails the task if it does not exist"
        )
    interruptible_keys = [k for k in platform.k8s if k.startswith("interruptible-")]
    if (template.get("metadata") or {}).get("interruptible") and not interruptible_keys:
        warnings.append(
            "--interruptible: your cluster's interruptible tolerations, node selector and "
            "affinity are not known here, so none are shown; Flyte adds them to the workers at "
            "run time (give them in the platform file's plugins.k8s to see them)"
        )
    if translation.accelerator_unplaced:
        accelerator = template["extendedResources"]["gpuAccelerator"]
        warnings.append(
            f"--accelerator {accelerator.get('device')}: Flyte v1.16 places pods by the "
            "accelerator only when the task's own container requests a GPU; the workers get "
            "theirs afterwards, so no pod gets its node selector or toleration"
        )
    return warnings


def dry_run(
    program: CellProgram,
    spec: ClusterSpec,
    namespace: Mapping[str, object],
    connection: Any = None,
    *,
    read_admin: bool = False,
) -> DryRun:
    """Builds the cell's task as ``--remote`` would (the same build and serialization, without
    uploading or registering) and the DaskJob Flyte v1.16 creates for it on this platform."""
    from google.protobuf.json_format import MessageToDict

    from .backends.flyte import Connection, FlyteBackend
    from .image import ImageError, check_buildable
    from .manifest import translate, worker_shape
    from .registration import registered_template

    backend = FlyteBackend(connection or Connection())
    _, _, project, domain, _ = backend.connection.load()
    warnings: list[str] = []
    cell_task = backend.build(program, spec, namespace, check_image=False)
    default = backend.default_image
    if default is not None:
        try:
            check_buildable(default)
        except ImageError as error:
            warnings.append(f"--remote would stop here: {error}")
    model = registered_template(cell_task.task, project, domain, cell_task.version)
    template: dict[str, Any] = MessageToDict(model.to_flyte_idl())
    platform, admin_warnings = _platform(backend, read_admin)
    translation = translate(template, platform=platform)
    manifest = translation.manifest
    validate_manifest(manifest)  # a failure here is our bug, never the user's

    def types(variables: Mapping[str, Any]) -> dict[str, str]:
        return {n: type_label(MessageToDict(v.type.to_flyte_idl())) for n, v in variables.items()}

    job = manifest["spec"]
    cluster = job["cluster"]["spec"]
    workers, nthreads, memory = worker_shape(manifest)
    facts = {
        "name": model.id.name,
        "version": model.id.version,
        "type": model.type,
        "image": model.container.image,
        "image_placeholder": spec.image is None,  # no --image: the default ImageSpec
        "image_contents": default.describe() if default is not None else None,
        "inputs": types(model.interface.inputs),
        "outputs": types(model.interface.outputs),  # all of them; the table shows the user's
        "not_kept": sorted(dask_handles(program.body) & set(model.interface.outputs)),
        "cache": bool(model.metadata.discoverable),
        "cache_version": model.metadata.discovery_version or None,
        "interruptible": bool(model.metadata.interruptible),
        "workers": cluster["worker"]["replicas"],
        "shape": f"{workers} worker{'' if workers == 1 else 's'} × --nthreads {nthreads} "
        f"--memory-limit {memory}",
        "platform": platform.describe(),
        "pod_template": translation.pod_template,
        "resources": {
            "job-runner": _container_resources(job["job"]["spec"]),
            "scheduler": _container_resources(cluster["scheduler"]["spec"]),
            "worker": _container_resources(cluster["worker"]["spec"]),
        },
        "args": list(model.container.args),
    }
    warnings += admin_warnings
    warnings += collect_warnings(
        template,
        manifest,
        kernel_python=(sys.version_info.major, sys.version_info.minor),
    )
    warnings += _platform_warnings(translation, template, platform)
    return DryRun(task=facts, manifest=manifest, template=template, warnings=warnings)


def show_dry_run(
    magics: Any,
    program: CellProgram,
    spec: ClusterSpec,
    out_var: str | None = None,
    connection: Any = None,
) -> DryRun:
    """What ``%%flyte_dask --dry-run`` does: build the DryRun, store it in ``--out``, return it
    (so the cell displays it). User errors become one ``UsageError``, as for a real run."""
    from IPython.core.error import UsageError

    from .execute import prepare_flytekit

    shell = magics.shell
    prepare_flytekit(shell)
    try:
        result = dry_run(
            program, spec, shell.user_ns, connection, read_admin=connection is not None
        )
    except ManifestError:
        raise  # a manifest the CRD rejects is a bug in this package: keep the traceback
    except (ValueError, TypeError) as error:
        raise UsageError(f"cannot build the task: {error}") from None
    if out_var is not None:
        shell.user_ns[out_var] = result
    return result
