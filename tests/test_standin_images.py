"""The Flyte Admin stand-in runs pods from real images (tests/flyte_admin/images.py, a test
double): a ``%%flyte_dask --remote`` cell without ``--image`` gets its default ImageSpec built into
a venv, and the scheduler, the workers and the job runner run the command lines Flyte v1.16's
dask plugin and the dask-kubernetes operator give their pods, with that venv's executables, and
the job runner brings back the run's performance report (the default image has bokeh); an image
without the commands fails the cell the way the pods would fail in Kubernetes.

The venvs are cached (``~/.cache/dask-flyte-jupyter/standin-images`` or
``$FLYTE_DASK_STANDIN_IMAGE_CACHE``): the first run on a machine builds each (~1.5 min each here),
later runs reuse them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import psutil
import pytest
from flyte_admin import fixtures as _fixtures
from flyte_admin import processes_gone
from flyte_admin.images import (
    BUILD_TIMEOUT,
    STANDIN_REGISTRY,
    ImageBuildError,
    ImageStore,
    StandInImage,
    kernel_python,
)
from flyte_admin.runner import SCHEDULER_FLAGS, WORKER_FLAGS, k8s_name, kubelet_expand
from flytekit.image_spec import ImageSpec
from shell_helpers import magics

from dask_flyte_jupyter.backends.flyte import RemoteExecutionError
from dask_flyte_jupyter.image import needs_old_commands

CELL = """\
from distributed import Client
client = Client()
result = client.gather(client.map(inc, range(n)))
"""
standin_image_builder = _fixtures.standin_image_builder  # the builder plugin fixture
# A cold cache builds the image inside the cell (pip install of flytekit & co.).
BUILDS = pytest.mark.timeout(BUILD_TIMEOUT + 300)


def define_inputs(shell) -> None:
    shell.run_cell("def inc(x):\n    return x + 1\n", store_history=False)
    shell.run_cell("n = 10\n", store_history=False)


def execution_of(admin, run):
    return admin.executions[run.details["execution"].rsplit("/", 1)[1]]


def image_python(image: StandInImage, code: str) -> str:
    """Runs ``code`` with the image's Python, outside this checkout (as a pod would)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(image.bin / "python"), "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(os.environ.get("TMPDIR", "/tmp")),
        env=env,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def processes_of(path: Path) -> list[psutil.Process]:
    """Every process on the machine whose command line mentions ``path``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(path) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


@BUILDS
def test_cell_without_image_runs_on_its_built_default_image(
    shell, flyte_admin, standin_image_builder, tmp_path, monkeypatch
):
    admin, builder = flyte_admin, standin_image_builder
    monkeypatch.chdir(tmp_path)  # the kernel's working directory: the report lands here
    define_inputs(shell)
    line = f"--remote --config {admin.config_path} --workers 2 --out run"
    shell.run_cell_magic("flyte_dask", line, CELL)
    assert shell.user_ns["result"] == list(range(1, 11))
    run = shell.user_ns["run"]
    assert run.status == "succeeded"

    # flytekit's image build went to the stand-in's builder: the default image, now a venv
    # (built by this cell, or found in the store, as a registry would have it).
    (name,) = builder.asked
    assert [built for built, _, _ in builder.builds] in ([], [name])
    seen = execution_of(admin, run)
    assert seen.task.closure.compiled_task.template.container.image == name
    assert name.startswith(f"{STANDIN_REGISTRY}/flyte-dask-jupyter:py")
    image = admin.runner.images.get(name)
    assert image is not None and image.built and image.venv is not None
    now = f"built now in {builder.builds[0][1]:.1f}s" if builder.builds else "found in the store"
    print(f"\ndefault image {name}: {now}; its build took {image.build_seconds}s")
    assert seen.cluster["images"] == {name: str(image.venv)}
    # The image holds the kernel's pins, not this project (it is in no package list).
    assert f"distributed=={version('distributed')}" in image.packages
    # bokeh, for the scheduler's dashboard and the job runner's performance report
    assert f"bokeh=={version('bokeh')}" in image.packages
    assert image_python(image, "import bokeh; print(bokeh.__version__)") == version("bokeh")
    assert (
        image_python(
            image, "import importlib.util as u; print(u.find_spec('dask_flyte_jupyter') is None)"
        )
        == "True"
    )
    venv_bin = str(image.bin)

    # The operator's pods, from its own builders: one Deployment per worker, the Service name
    # in DASK_SCHEDULER_ADDRESS, which the stand-in resolved to the scheduler's real address.
    pods = seen.cluster["pods"]
    job = seen.cluster["manifest"]["metadata"]["name"]
    assert pods["scheduler"]["metadata"]["name"] == f"{job}-scheduler"
    assert pods["job-runner"]["metadata"]["name"] == f"{job}-runner"
    assert len(pods["workers"]) == 2 and seen.workers_started == 2
    service = f"tcp://{job}-scheduler.{pods['namespace']}.svc.cluster.local:8786"
    assert seen.cluster["scheduler_service_address"] == service
    job_env = {e["name"]: e["value"] for e in pods["job-runner"]["spec"]["containers"][0]["env"]}
    assert job_env["DASK_SCHEDULER_ADDRESS"] == service
    assert seen.cluster["scheduler_address"].startswith("tcp://127.0.0.1:")

    # The scheduler ran the plugin's `dask-scheduler` from the image, plus only the stand-in's
    # networking flags.
    executables = seen.cluster["executables"]
    assert seen.cluster["pod_args"]["scheduler"] == ["dask-scheduler"]
    assert executables["scheduler"] == f"{venv_bin}/dask-scheduler"
    scheduler_file = seen.cluster["scheduler_args"][-1]
    assert seen.cluster["scheduler_args"] == ["dask-scheduler", *SCHEDULER_FLAGS, scheduler_file]

    # Each worker: the plugin's args verbatim, $(DASK_WORKER_NAME) = its Deployment's name.
    plugin_args = seen.cluster["manifest"]["spec"]["cluster"]["spec"]["worker"]["spec"][
        "containers"
    ][0]["args"]
    assert plugin_args[:3] == ["dask-worker", "--name", "$(DASK_WORKER_NAME)"]
    assert plugin_args[3::2] == ["--nthreads", "--memory-limit"]
    joined = seen.cluster["shape"]["workers"]
    for i, deployment in enumerate(pods["workers"]):
        worker_name = deployment["metadata"]["name"]
        assert worker_name.startswith(f"{job}-default-worker-")
        expected = [*plugin_args[:2], worker_name, *plugin_args[3:]]
        assert seen.cluster["pod_args"][f"worker-{i}"] == expected
        assert seen.cluster["worker_args"][i] == [*expected, *WORKER_FLAGS]
        assert executables[f"worker-{i}"] == f"{venv_bin}/dask-worker"
        assert joined[worker_name]["nthreads"] == int(plugin_args[4])
    assert set(joined) == set(seen.cluster["worker_names"]) and seen.cluster["workers_joined"] == 2

    # The job runner: the registered notebook-mode args, placeholders filled, with the image's
    # pyflyte-fast-execute, which starts the image's pyflyte-execute (first on its PATH).
    registered = list(seen.task.closure.compiled_task.template.container.args)
    assert seen.task_args == seen.cluster["pod_args"]["job-runner"]
    assert len(seen.task_args) == len(registered) and registered[0] == "pyflyte-fast-execute"
    for ran, arg in zip(seen.task_args, registered, strict=True):
        assert ran == arg or "{{" in arg
    assert "pyflyte-execute" in seen.task_args and not any("{{" in a for a in seen.task_args)
    assert executables["job-runner"] == f"{venv_bin}/pyflyte-fast-execute"
    job_path = seen.cluster["paths"]["job-runner"]
    assert job_path.split(os.pathsep)[0] == venv_bin
    assert shutil.which("pyflyte-execute", path=job_path) == f"{venv_bin}/pyflyte-execute"

    # The job runner, in the image, drew the run's performance report from its scheduler (it
    # could not without bokeh); the kernel saved it under .flyte_dask/ and the summary links it.
    assert run.report_path is not None and run.report_path.startswith(f".flyte_dask/{run.name}-")
    assert dict(run.summary_rows())["report"] == run.report_path
    assert run.to_record()["report"] == run.report_path
    page = (tmp_path / run.report_path).read_text()
    assert "<title>Dask Performance Report</title>" in page and "cdn.bokeh.org" not in page
    assert re.search(r"number of tasks: (\d+)", page)[1] == "10"  # client.map(inc, range(10))
    assert "Workers: 2" in page

    assert processes_gone(seen.pids + seen.cluster["descendant_pids"])
    assert not processes_of(image.venv)


@BUILDS
def test_image_without_the_dask_commands_fails_the_cell_naming_pod_and_command(shell, flyte_admin):
    """An image built from an ImageSpec that pins flytekit and flytekitplugins-dask but not
    distributed, and adds no shims. flytekitplugins-dask pulls ``dask[distributed]`` in, so the
    image does have distributed — today's release, which no longer has ``dask-scheduler`` /
    ``dask-worker`` (removed in 2026.6): exactly the image that fails on a Flyte v1.16 backend,
    whose plugin starts the scheduler with ``dask-scheduler``."""
    admin = flyte_admin
    spec = ImageSpec(
        name="no-dask-commands",
        python_version=kernel_python(),
        registry=STANDIN_REGISTRY,
        packages=[
            f"flytekit=={version('flytekit')}",
            f"flytekitplugins-dask=={version('flytekitplugins-dask')}",
        ],
    )
    image, _ = ImageStore().build(spec)
    assert image.venv is not None and (image.bin / "dask").exists()
    assert not (image.bin / "dask-scheduler").exists()
    assert needs_old_commands(
        image_python(image, "import importlib.metadata as m; print(m.version('distributed'))")
    )

    define_inputs(shell)
    line = f"--remote --config {admin.config_path} --image {image.name} --workers 2"
    with pytest.raises(RemoteExecutionError) as caught:
        shell.run_cell_magic("flyte_dask", line, CELL)
    expected = (
        f'scheduler pod: container "scheduler" of image {image.name} failed to start: '
        'exec: "dask-scheduler": executable file not found in $PATH'
    )
    assert str(caught.value) == expected
    shown = caught.value._render_traceback_()
    assert shown[0] == "RemoteExecutionError: a system error outside the cell's code:"
    assert shown[1] == f"  {expected}"
    assert "result" not in shell.user_ns

    run = magics(shell).runs[-1]
    assert run.status == "failed"
    seen = execution_of(admin, run)
    assert seen.phase_name == "FAILED" and seen.error.message == expected
    assert seen.error.kind == seen.error.SYSTEM
    assert seen.cluster["images"] == {image.name: str(image.venv)}
    assert seen.cluster["pod_args"]["scheduler"] == ["dask-scheduler"]
    assert seen.cluster["executables"]["scheduler"] is None
    # Nothing else was started, and nothing survives.
    assert seen.workers_started == 0 and seen.task_pid is None
    assert processes_gone(seen.pids + seen.cluster["descendant_pids"])
    assert not processes_of(image.venv)
    assert not processes_of(admin.scratch_dir)


# ---- the pieces, without a cluster ----------------------------------------------------------


def test_kubelet_expansion_of_command_lines():
    env = {"DASK_WORKER_NAME": "w-1", "A": "x"}
    assert kubelet_expand("--name=$(DASK_WORKER_NAME)", env) == "--name=w-1"
    assert kubelet_expand("$(MISSING) $$(A) $A $(A", env) == "$(MISSING) $(A) $A $(A"
    assert kubelet_expand("$(A)$(A)", env) == "xx"


def test_execution_names_become_names_the_operator_accepts():
    from dask_kubernetes.operator.validation import validate_cluster_name

    for raw in ("abc123-n0-0", "Abc_DEF-fN0x-0", "a" * 80):
        validate_cluster_name(k8s_name(raw))
    assert k8s_name("abc123-n0-0") == "abc123-n0-0"


def test_the_store_refuses_what_it_cannot_build(tmp_path):
    store = ImageStore(tmp_path)
    other = "3.10" if kernel_python() != "3.10" else "3.12"
    with pytest.raises(ImageBuildError, match=f"asks for Python {other}"):
        store.build(ImageSpec(name="x", python_version=other, packages=["dask"]))
    with pytest.raises(ImageBuildError, match="apt_packages"):
        store.build(ImageSpec(name="x", python_version=kernel_python(), apt_packages=["git"]))
    assert store.get("x:anything") is None and not any(tmp_path.glob("*/bin"))
    # flytekit is added, as flytekit's default builder adds it
    packages, _ = store.contents(ImageSpec(name="x", python_version=kernel_python()))
    assert packages == (f"flytekit=={version('flytekit')}",)
    assert sys.version_info[:2] == tuple(int(p) for p in kernel_python().split("."))
