"""``--dry-run``: real flytekit tasks serialized, their DaskJob validated, nothing started."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
import yaml
from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring
from shell_helpers import INCREMENT, magics

from dask_flyte_jupyter.backends.flyte import Connection, FlyteBackend
from dask_flyte_jupyter.cell import analyse_cell
from dask_flyte_jupyter.dryrun import (
    DryRun,
    collect_warnings,
    dask_in_image,
    dry_run,
    python_in_image,
    show_dry_run,
    type_label,
)
from dask_flyte_jupyter.image import default_image
from dask_flyte_jupyter.magics import SPEC_FLAGS, parse_magic_line
from dask_flyte_jupyter.manifest import build_manifest, validate_manifest
from dask_flyte_jupyter.registration import UPLOADED_CODE
from dask_flyte_jupyter.spec import spec_from_options

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "dryrun_increment.yaml"
INCREMENT_LINE = "--workers 4 --worker-cpu 8 --worker-mem 32Gi --scheduler-cpu 2"
KERNEL = (sys.version_info.major, sys.version_info.minor)
KERNEL_TAG = f"py{KERNEL[0]}.{KERNEL[1]}"


def inc(x: int) -> int:
    return x + 1


def plan(line: str, cell: str, namespace: dict[str, Any]) -> DryRun:
    """``dry_run`` for a magic line, parsed by the magic's own parser."""
    options = {k: v for k, v in parse_magic_line(line).items() if k in SPEC_FLAGS}
    return dry_run(analyse_cell(cell, namespace), spec_from_options(options), namespace)


@pytest.fixture
def namespace() -> dict[str, Any]:
    return {"inc": inc, "n": 10}


@pytest.fixture
def increment(namespace: dict[str, Any]) -> DryRun:
    return plan(INCREMENT_LINE, INCREMENT, namespace)


def test_increment_manifest_is_valid_and_matches_the_plugin(increment: DryRun) -> None:
    validate_manifest(increment.manifest)  # dry_run validated it too; check it stays valid
    image = default_image(("distributed",)).name  # the ImageSpec from this kernel
    assert increment.task["image"] == image and increment.task["image_placeholder"]
    golden = yaml.safe_load(GOLDEN.read_text().replace("TASK_IMAGE", image))
    cluster = increment.manifest["spec"]["cluster"]["spec"]
    assert cluster["scheduler"] == golden["scheduler"]
    assert cluster["worker"] == golden["worker"]
    # the headline facts, spelled out
    worker = cluster["worker"]["spec"]["containers"][0]
    assert cluster["worker"]["replicas"] == 4
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "8"
    assert worker["args"][worker["args"].index("--memory-limit") + 1] == "32Gi"
    scheduler = cluster["scheduler"]["spec"]["containers"][0]
    # --scheduler-cpu 2; memory from the platform default (propeller's 1024Mi: none known)
    assert scheduler["resources"]["requests"] == {"cpu": "2", "memory": "1Gi"}
    assert "readinessProbe" not in scheduler  # Flyte 2 adds one; v1.16 does not


def test_increment_job_runner_runs_the_registered_task(increment: DryRun) -> None:
    job = increment.manifest["spec"]["job"]["spec"]
    assert job["restartPolicy"] == "Never"
    (runner,) = job["containers"]
    assert runner["name"] == "job-runner"
    assert runner["args"] == increment.task["args"]
    assert runner["image"] == increment.task["image"]
    # what --remote registers in notebook mode: the pickled code fetched first, then the task
    # loaded by flytekit's notebook resolver
    args = runner["args"]
    assert args[:6] == [
        "pyflyte-fast-execute", "--additional-distribution", UPLOADED_CODE, "--dest-dir", ".", "--"
    ]  # fmt: skip
    assert args[6] == "pyflyte-execute"
    resolver = args[args.index("--resolver") + 1]
    assert resolver == "flytekit.core.python_auto_container.default_notebook_task_resolver"
    assert args[-2] == "entity-name" and args[-1].split(".")[-1] == increment.task["name"]


def test_task_facts_come_from_the_serialized_task(namespace: dict[str, Any]) -> None:
    program = analyse_cell(INCREMENT, namespace)
    spec = spec_from_options({"workers": 4, "cache": True, "cache-version": "v7"})
    built = FlyteBackend(Connection()).build(program, spec, namespace, check_image=False)
    facts = dry_run(program, spec, namespace).task
    assert (facts["name"], facts["version"], facts["type"]) == (built.name, built.version, "dask")
    assert facts["inputs"] == {"inc": "pickle (FlytePickle)", "n": "int"}
    assert facts["outputs"]["result"] == "pickle (FlytePickle)"
    assert facts["outputs"]["flyte_dask_report"] == "str"
    assert (facts["cache"], facts["cache_version"]) == (True, "v7")
    assert facts["interruptible"] is False and facts["workers"] == 4
    # no task resources: the platform defaults (here propeller's own: none are known)
    resolved = {"cpu": "1", "memory": "1Gi"}
    assert facts["resources"]["job-runner"] == {"limits": resolved, "requests": resolved}
    assert facts["args"][-1].split(".")[-1] == built.name


def test_types_are_readable() -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    cell = "total: int = int(frame.a.sum())\nlabel: str = 'x'\n"
    facts = plan("--workers 1", cell, {"frame": frame}).task
    assert facts["inputs"] == {"frame": "StructuredDataset"}
    assert facts["outputs"] == {
        "total": "int",
        "label": "str",
        "flyte_dask_report": "str",
        "flyte_dask_versions": "str",  # the parity report a remote run brings back
        "flyte_dask_performance_report": "FlyteFile | None",  # its dask performance report
    }


@pytest.mark.parametrize(
    ("literal_type", "label"),
    [
        ({"simple": "FLOAT"}, "float"),
        ({"mapValueType": {"simple": "INTEGER"}}, "dict[str, int]"),
        ({"collectionType": {"collectionType": {"simple": "BOOLEAN"}}}, "list[list[bool]]"),
        ({"blob": {"format": "csv"}}, "FlyteFile (csv)"),
        ({"blob": {"dimensionality": "MULTIPART"}}, "FlyteDirectory"),
        ({"structuredDatasetType": {"format": "parquet"}}, "StructuredDataset (parquet)"),
        ({"unionType": {"variants": [{"simple": "INTEGER"}, {"simple": "NONE"}]}}, "int | None"),
        ({"enumType": {"values": ["a", "b"]}}, "enum(a, b)"),
    ],
)
def test_type_labels(literal_type: dict[str, Any], label: str) -> None:
    assert type_label(literal_type) == label


def test_nothing_runs_and_nothing_starts(tmp_path: Path) -> None:
    from distributed.deploy.spec import SpecCluster

    marker = tmp_path / "ran.txt"
    namespace: dict[str, Any] = {"log": [], "marker": str(marker)}
    cell = (
        "log.append('the task ran')\n"
        "open(marker, 'w').write('the task ran')\n"
        "from distributed import Client\n"
        "client = Client()\n"
        "x = 1\n"
    )
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    clusters = set(SpecCluster._instances)
    result = plan("--workers 3 --worker-cpu 1", cell, namespace)
    assert result.manifest["spec"]["cluster"]["spec"]["worker"]["replicas"] == 3
    assert namespace["log"] == [] and not marker.exists()
    assert "x" not in namespace
    assert set(SpecCluster._instances) == clusters
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children


def test_image_sets_every_container(namespace: dict[str, Any]) -> None:
    image = f"registry.example/team/dask:dask2026.5-{KERNEL_TAG}"
    result = plan(f"--workers 2 --image {image}", INCREMENT, namespace)
    spec = result.manifest["spec"]
    pods = [
        spec["job"]["spec"],
        *(spec["cluster"]["spec"][p]["spec"] for p in ("scheduler", "worker")),
    ]
    assert [pod["containers"][0]["image"] for pod in pods] == [image] * 3
    assert result.task["image"] == image and not result.task["image_placeholder"]
    assert "placeholder" not in result._repr_mimebundle_()["text/plain"]
    assert result.warnings == []  # right Python, distributed < 2026.6


def test_python_mismatch_warns(namespace: dict[str, Any]) -> None:
    result = plan("--workers 2 --image repo/img:py3.9", INCREMENT, namespace)
    assert any(
        "Python 3.9" in w and f"Python {KERNEL[0]}.{KERNEL[1]}" in w for w in result.warnings
    )


def test_default_image_brings_the_old_dask_commands_for_flyte_v1(increment: DryRun) -> None:
    from importlib.metadata import version

    assert version("distributed") >= "2026.6"  # the kernel's, which the default image pins
    # no warning about the dask commands; only that --remote has no registry to push to here
    (warning,) = increment.warnings
    assert (
        warning.startswith("--remote would stop here:") and "FLYTE_DASK_IMAGE_REGISTRY" in warning
    )
    contents = increment.task["image_contents"]
    assert f"distributed=={version('distributed')}" in contents
    assert f"bokeh=={version('bokeh')}" in contents  # the dashboard and the report need it
    assert "dask-scheduler / dask-worker shims for Flyte v1 backends" in contents


def test_dask_image_with_new_distributed_warns(namespace: dict[str, Any]) -> None:
    image = f"ghcr.io/dask/dask:2026.7.0-{KERNEL_TAG}"
    result = plan(f"--workers 2 --image {image}", INCREMENT, namespace)
    (warning,) = result.warnings
    assert image in warning and "dask-worker" in warning


def test_interruptible_placement_comes_from_the_platform_file(
    namespace: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nothing known about the cluster: the dry run invents no tolerations
    unknown = plan("--workers 2 --interruptible", INCREMENT, namespace)
    assert "tolerations" not in unknown.manifest["spec"]["cluster"]["spec"]["worker"]["spec"]
    assert any(w.startswith("--interruptible: your cluster's") for w in unknown.warnings)
    platform = tmp_path / "platform.yaml"
    platform.write_text(
        "task_resources:\n"
        "  defaults: {cpu: 500m, memory: 1Gi}\n"
        "  limits: {cpu: '4', memory: 8Gi}\n"
        "plugins:\n"
        "  k8s:\n"
        "    interruptible-tolerations:\n"
        "      - {key: x/flyte, value: interruptible, operator: Equal, effect: NoSchedule}\n"
        "    interruptible-node-selector-requirement:\n"
        "      {key: x/interruptible, operator: In, values: ['true']}\n"
    )
    monkeypatch.setenv("FLYTE_DASK_PLATFORM", str(platform))
    result = plan("--workers 2 --interruptible --worker-cpu 8", INCREMENT, namespace)
    assert result.task["interruptible"] is True
    spec = result.manifest["spec"]
    worker = spec["cluster"]["spec"]["worker"]["spec"]
    assert worker["tolerations"] == [
        {"key": "x/flyte", "value": "interruptible", "operator": "Equal", "effect": "NoSchedule"}
    ]
    terms = worker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "x/interruptible", "operator": "In", "values": ["true"]}]}
    ]
    for pod in (spec["job"]["spec"], spec["cluster"]["spec"]["scheduler"]["spec"]):
        assert "tolerations" not in pod and "affinity" not in pod
    # the platform's limit clamps --worker-cpu 8, and the dry run says so before anything runs
    assert result.task["shape"] == "2 workers × --nthreads 4 --memory-limit 1Gi"
    assert any(
        f"platform file {platform}'s limits lower the dask-worker's cpu" in w
        for w in result.warnings
    ), result.warnings
    rows = dict(result.rows())
    assert f"(platform file {platform})" in rows["platform resources"]
    assert rows["k8s plugin config"].startswith(f"platform file {platform}")
    assert not any(w.startswith("--interruptible:") for w in result.warnings)


def test_requests_above_limits_warn() -> None:
    workers = {
        "requests": [{"name": "MEMORY", "value": "8Gi"}],
        "limits": [{"name": "MEMORY", "value": "4Gi"}],
    }
    template = {
        "metadata": {},
        "container": {"image": f"repo/img:{KERNEL_TAG}", "args": []},
        "custom": {"scheduler": {}, "workers": {"numberOfWorkers": 1, "resources": workers}},
    }
    manifest = build_manifest(template)
    warnings = collect_warnings(template, manifest, kernel_python=KERNEL)
    assert warnings == [
        "workers: memory request 8Gi is above its limit 4Gi (Flyte lowers the request to the limit)"
    ]


@pytest.mark.parametrize(
    ("image", "python", "dask"),
    [
        ("repo/img:py3.9", (3, 9), None),
        ("repo/img:1.0-py310", (3, 10), None),
        ("repo/img:python3.12-slim", (3, 12), None),
        ("python:3.12-slim", (3, 12), None),
        ("ghcr.io/dask/dask:2026.7.0-py3.11", (3, 11), (2026, 7)),
        ("daskdev/dask:2024.1.0", None, (2024, 1)),
        ("repo/img:distributed-2026.6.1", None, (2026, 6)),
        ("registry:5000/py3.9/img:latest", None, None),  # only the tag counts
        ("repo/img:2026.7.0", None, None),  # a date-like tag is not a dask version
        ("repo/img@sha256:abc", None, None),
    ],
)
def test_versions_in_image_tags(
    image: str, python: tuple[int, int] | None, dask: tuple[int, int] | None
) -> None:
    assert python_in_image(image) == python
    assert dask_in_image(image) == dask


# --- through a real IPython shell, the way the magic calls it --------------------------------


def dry_run_magic(shell: Any, line: str, cell: str) -> Any:
    """What ``%%flyte_dask --dry-run LINE`` does once magics.py delegates to ``show_dry_run``."""
    m = magics(shell)
    args = parse_argstring(m.flyte_dask, line)
    spec = spec_from_options(
        {flag: getattr(args, dest) for flag, dest in SPEC_FLAGS.items()}, base=m.defaults
    )
    return show_dry_run(m, analyse_cell(cell, shell.user_ns), spec, args.out)


def test_dry_run_in_the_shell_displays_and_changes_nothing(shell: Any) -> None:
    shell.run_cell("def inc(x):\n    return x + 1\nn = 10", store_history=False)
    runs = len(magics(shell).runs)
    # an image for another Python, so that there is a warning to show
    line = f"{INCREMENT_LINE} --image repo/img:py3.9 --dry-run --out planned"
    result = dry_run_magic(shell, line, INCREMENT)
    assert isinstance(result, DryRun) and shell.user_ns["planned"] is result
    assert len(magics(shell).runs) == runs
    assert "result" not in shell.user_ns and "workers_seen" not in shell.user_ns
    shown, _ = shell.display_formatter.format(result)
    assert "kind: DaskJob" in shown["text/plain"] and "WARNING:" in shown["text/plain"]
    page = shown["text/html"]
    assert "<table>" in page and "<pre>" in page and "flyte-dask-warning" in page
    assert "&lt;execution-generated-name&gt;" in page  # escaped, not swallowed as a tag
    assert yaml.safe_load(result.yaml) == result.manifest


def test_dry_run_build_errors_are_usage_errors(shell: Any) -> None:
    with pytest.raises(UsageError, match=r"cannot build the task: .*reserved name"):
        dry_run_magic(shell, "--dry-run", "flyte_dask_value = 1\n")


def test_dry_run_through_the_magic(shell):
    shell.run_cell("def inc(x):\n    return x + 1\nn = 10", store_history=False)
    result = shell.run_cell_magic("flyte_dask", f"{INCREMENT_LINE} --dry-run", INCREMENT)
    assert isinstance(result, DryRun) and "result" not in shell.user_ns


def test_pod_template_and_accelerator_reach_the_template_and_the_pods(
    namespace: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = "--workers 2 --worker-gpu 1 --accelerator A100:1g.5gb --pod-template gpu-pool"
    result = plan(line, INCREMENT, namespace)
    assert result.template["metadata"]["podTemplateName"] == "gpu-pool"
    assert result.template["extendedResources"]["gpuAccelerator"] == {
        "device": "nvidia-tesla-a100",
        "partitionSize": "1g.5gb",
    }
    assert dict(result.rows())["pod template"] == "gpu-pool"
    # v1.16 places by the accelerator only when the task's own container has a GPU: say so
    assert any(
        w.startswith("--accelerator nvidia-tesla-a100: Flyte v1.16") for w in result.warnings
    )
    assert any("pod template 'gpu-pool'" in w and "not known here" in w for w in result.warnings)
    worker = result.manifest["spec"]["cluster"]["spec"]["worker"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # with the template's contents in the platform file, all three pods are built from it
    platform = tmp_path / "platform.yaml"
    platform.write_text(
        "pod_templates:\n"
        "  gpu-pool:\n"
        "    spec:\n"
        "      priorityClassName: batch-high\n"
        "      tolerations: [{key: pool, operator: Exists, effect: NoSchedule}]\n"
    )
    monkeypatch.setenv("FLYTE_DASK_PLATFORM", str(platform))
    known = plan(line, INCREMENT, namespace)
    spec = known.manifest["spec"]
    for pod in (
        spec["job"]["spec"],
        spec["cluster"]["spec"]["scheduler"]["spec"],
        spec["cluster"]["spec"]["worker"]["spec"],
    ):
        assert pod["priorityClassName"] == "batch-high"
        assert pod["tolerations"] == [{"key": "pool", "operator": "Exists", "effect": "NoSchedule"}]
    assert not any("not known here" in w for w in known.warnings)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--accelerator T4", "--accelerator needs --worker-gpu"),
        ("--worker-gpu 1 --accelerator A100:9g", "A100 has no partition '9g' (known: 1g.5gb"),
        ("--worker-gpu 1 --accelerator T4:1g.5gb", "T4 has no partitions"),
        ("--worker-gpu 1 --accelerator a/b", "--accelerator: 'a/b' is not DEVICE"),
        ("--pod-template Gpu_Pool", "--pod-template: 'Gpu_Pool' is not a Kubernetes name"),
    ],
)
def test_bad_pod_template_or_accelerator_is_one_clear_error(
    shell: Any, line: str, message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        shell.run_cell_magic("flyte_dask", f"{line} --dry-run", "x = 1\n")


def test_the_table_shows_the_users_outputs_only(namespace: dict[str, Any]) -> None:
    cell = INCREMENT.replace("sum(result)", "total = sum(result)\ntotal")
    result = plan("--workers 2", cell, namespace)
    rows = dict(result.rows())
    assert "flyte_dask" not in rows["outputs"] and "flyte_dask" not in rows["inputs"]
    assert "client" not in rows["outputs"].split(", ")[0]  # a real run drops the client
    assert not any(o.startswith("client:") for o in rows["outputs"].split(", "))
    assert "result: pickle (FlytePickle)" in rows["outputs"]
    assert "(last expression): " in rows["outputs"]
    assert rows["not kept"].startswith("client ")
    shown = result.as_text() + result.as_html()
    assert "flyte_dask_report" not in shown and "flyte_dask_value" not in shown
    assert "flyte_dask_versions" not in shown


def test_dask_handles_are_read_from_the_code() -> None:
    from dask_flyte_jupyter.dryrun import dask_handles

    cell = (
        "import distributed\nc = distributed.Client()\nfrom distributed import get_client\n"
        "g = get_client()\nwith LocalCluster() as cluster:\n    pass\nx = compute()\n"
    )
    assert dask_handles(cell) == {"c", "g", "cluster"}


def test_the_warning_box_uses_the_themes_colours(namespace: dict[str, Any]) -> None:
    result = plan("--workers 2 --image repo/img:py3.9", INCREMENT, namespace)
    assert result.warnings
    box = result.as_html().split("flyte-dask-warning", 1)[1].split("</div>", 1)[0]
    # colours the JupyterLab extension's stylesheet sets per theme (checked in the browser by
    # test_lab_ui.py), with light fallbacks elsewhere
    assert "var(--flyte-dask-warning-background, #fff3cd)" in box
    assert "var(--flyte-dask-warning-color, #212121)" in box
    assert "var(--jp-warn-color1" in box
    style = (ROOT / "labextension" / "style" / "base.css").read_text()
    assert "--flyte-dask-warning-background" in style and "--flyte-dask-warning-color" in style
