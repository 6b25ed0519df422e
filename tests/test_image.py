"""The default task image: a flytekit ImageSpec from the kernel's environment, built only where
an image builder exists; elsewhere one clear error saying how to pass --image."""

from __future__ import annotations

import sys
from importlib.metadata import version

import pytest
from flytekit.image_spec import ImageBuildEngine, ImageSpec
from flytekit.image_spec.image_spec import ImageSpecBuilder
from IPython.core.error import UsageError

from dask_flyte_jupyter.cell import analyse_cell
from dask_flyte_jupyter.image import (
    REGISTRY_VARIABLE,
    ImageError,
    available_builder,
    cell_requirements,
    check_buildable,
    default_image,
    ensure_image,
)

KERNEL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
REGISTRY = "registry.example/team"


@pytest.fixture
def no_docker(monkeypatch, tmp_path):
    """A machine without Docker: flytekit's default builder cannot work."""
    monkeypatch.setenv("PATH", str(tmp_path))


def test_default_image_pins_the_kernels_versions_and_the_cells_imports():
    program = analyse_cell("import os\nimport numpy as np\nimport yaml\nimport my_local_mod\n", {})
    image = default_image(program.imports, registry=REGISTRY)
    spec = image.spec
    assert isinstance(spec, ImageSpec)
    assert spec.python_version == KERNEL_PYTHON == image.python
    pinned = {
        "flytekit",
        "flytekitplugins-dask",
        "dask",
        "distributed",
        "bokeh",  # the dask dashboard and the performance report need it
        "numpy",
        "PyYAML",  # the distribution that provides `yaml`
    }
    assert set(spec.packages) == {f"{name}=={version(name)}" for name in pinned}
    assert spec.packages[:5] == [
        f"{name}=={version(name)}"
        for name in ("flytekit", "flytekitplugins-dask", "dask", "distributed", "bokeh")
    ]
    assert image.unresolved == ("my_local_mod",)  # not installable: said, not guessed
    assert image.name.startswith(
        f"{REGISTRY}/flyte-dask-jupyter:py{KERNEL_PYTHON.replace('.', '')}-"
    )
    assert "numpy==" in image.describe() and "my_local_mod" in image.describe()


def test_image_name_is_stable_and_follows_the_contents():
    first = default_image(("numpy",), registry=REGISTRY).name
    assert default_image(("numpy",), registry=REGISTRY).name == first
    assert default_image(("numpy", "yaml"), registry=REGISTRY).name != first
    assert default_image(("os", "json"), registry=REGISTRY).name == default_image((), REGISTRY).name


def test_standard_library_and_base_packages_are_not_pinned_twice():
    imports = ["os", "sys", "dask", "distributed", "flytekit", "bokeh"]
    pinned, unresolved = cell_requirements(imports)
    assert pinned == [] and unresolved == []


def test_registry_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(REGISTRY_VARIABLE, "ghcr.io/my-team")
    assert default_image().name.startswith("ghcr.io/my-team/flyte-dask-jupyter:")


def test_without_a_registry_the_error_says_how_to_pass_an_image(monkeypatch):
    monkeypatch.delenv(REGISTRY_VARIABLE, raising=False)
    with pytest.raises(ImageError, match=REGISTRY_VARIABLE) as caught:
        check_buildable(default_image())
    assert "--image" in str(caught.value) and f"Python {KERNEL_PYTHON}" in str(caught.value)


def test_without_a_builder_the_error_says_how_to_pass_an_image(no_docker):
    assert available_builder() is None  # flytekit's default builder needs Docker
    image = default_image(("numpy",), registry=REGISTRY)
    with pytest.raises(ImageError) as caught:
        check_buildable(image)
    message = str(caught.value)
    assert message.startswith(f"no image builder to build the default image {image.name}")
    assert "Pass --image with an image that has Python" in message
    assert f"numpy=={version('numpy')}" in message


class RecordingBuilder(ImageSpecBuilder):
    """A builder plugin as flytekit sees one (TEST DOUBLE for e.g. flytekitplugins-envd)."""

    def __init__(self, exists: bool) -> None:
        self.exists = exists
        self.built: list[str] = []

    def should_build(self, image_spec: ImageSpec) -> bool:
        return not self.exists

    def build_image(self, image_spec: ImageSpec) -> str | None:
        self.built.append(image_spec.image_name())
        return None


@pytest.fixture
def builder_plugin(no_docker):
    registry = ImageBuildEngine._REGISTRY
    plugins = {}

    def install(exists: bool) -> RecordingBuilder:
        builder = RecordingBuilder(exists)
        name = f"test-builder-{len(plugins)}"
        plugins[name] = builder
        ImageBuildEngine.register(name, builder, priority=100)
        return builder

    yield install
    for name in plugins:
        registry.pop(name, None)


def test_a_builder_plugin_builds_a_missing_image_once(builder_plugin):
    builder = builder_plugin(exists=False)
    image = default_image(("numpy",), registry=REGISTRY)
    assert available_builder() is not None
    assert ensure_image(image) == image.name
    assert builder.built == [image.name]


def test_an_existing_image_is_not_built_again(builder_plugin):
    builder = builder_plugin(exists=True)
    image = default_image(("pandas",), registry=REGISTRY)
    assert ensure_image(image) == image.name
    assert builder.built == []


def test_remote_cell_without_image_or_builder_fails_before_sending_anything(
    shell, no_docker, monkeypatch, tmp_path
):
    monkeypatch.setenv(REGISTRY_VARIABLE, REGISTRY)
    config = tmp_path / "config.yaml"
    config.write_text("admin:\n  endpoint: dns:///127.0.0.1:1\n  insecure: true\n")
    shell.user_ns["n"] = 2
    with pytest.raises(UsageError, match="no image builder") as caught:
        shell.run_cell_magic("flyte_dask", f"--remote --config {config}", "m = n + 1\n")
    assert "Pass --image" in str(caught.value)


def test_dry_run_shows_the_default_image_and_its_contents(shell, monkeypatch):
    monkeypatch.setenv(REGISTRY_VARIABLE, REGISTRY)
    shell.user_ns["n"] = 2
    plan = shell.run_cell_magic("flyte_dask", "--dry-run", "import numpy as np\nm = np.arange(n)\n")
    text = plan.as_text()
    image = default_image(("numpy",)).name
    assert plan.task["image"] == image and image in text
    assert f"default ImageSpec from this kernel: python {KERNEL_PYTHON}" in text
    assert f"numpy=={version('numpy')}" in text and f"flytekit=={version('flytekit')}" in text
    assert f"bokeh=={version('bokeh')}" in text
    containers = plan.manifest["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"]
    assert containers[0]["image"] == image


def test_remote_task_version_follows_the_image(builder_plugin, monkeypatch):
    from dask_flyte_jupyter.backends.flyte import Connection, FlyteBackend
    from dask_flyte_jupyter.spec import ClusterSpec

    builder_plugin(exists=True)  # the default image can be used here
    monkeypatch.setenv(REGISTRY_VARIABLE, REGISTRY)
    namespace = {"n": 3}
    program = analyse_cell("m = n + 1\n", namespace)

    def version(image: str | None) -> str:
        backend = FlyteBackend(Connection())
        return backend.build(program, ClusterSpec(image=image), namespace).version

    assert version("repo/a:1") == version("repo/a:1")
    assert version("repo/a:1") != version("repo/a:2")
    default = version(None)
    assert default == version(None) and default not in (version("repo/a:1"), version("repo/a:2"))
    monkeypatch.setenv(REGISTRY_VARIABLE, "ghcr.io/elsewhere")  # another default image
    assert version(None) != default


# ---- the old dask commands, for Flyte v1 backends ---------------------------------------------


def test_default_image_adds_the_old_dask_commands_when_distributed_lacks_them():
    from dask_flyte_jupyter.image import needs_old_commands, shim_commands

    image = default_image((), registry=REGISTRY)
    assert needs_old_commands(version("distributed"))  # 2026.6 removed them
    assert image.spec.commands == shim_commands()
    assert image.shims == ("dask-scheduler", "dask-worker")
    assert not needs_old_commands("2026.5.1") and not needs_old_commands(None)


def test_the_shims_start_a_cluster_with_flyte_v1_command_lines(tmp_path):
    """The image's build steps, run in a bin directory of their own, then the scheduler and a
    worker started the way Flyte v1.16's dask plugin starts them (``dask-scheduler``;
    ``dask-worker --name … --nthreads … --memory-limit …``, the address from
    ``DASK_SCHEDULER_ADDRESS`` as the dask operator sets it)."""
    import os
    import shutil
    import socket
    import subprocess
    import time

    from distributed import Client

    from dask_flyte_jupyter.image import shim_commands

    image_bin = tmp_path / "bin"
    image_bin.mkdir()
    dask_command = shutil.which("dask", path=os.path.dirname(sys.executable))
    assert dask_command is not None
    (image_bin / "dask").symlink_to(dask_command)
    env = {**os.environ, "PATH": f"{image_bin}{os.pathsep}{os.environ['PATH']}"}
    for command in shim_commands():
        subprocess.run(["sh", "-c", command], env=env, check=True, timeout=30)
    assert os.access(image_bin / "dask-scheduler", os.X_OK)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    pod_env = {**env, "DASK_SCHEDULER_ADDRESS": address}
    scheduler = subprocess.Popen(
        [
            str(image_bin / "dask-scheduler"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
        ],
        env=pod_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            str(image_bin / "dask-worker"),
            "--name",
            "flyte-worker-0",
            "--nthreads",
            "2",
            "--memory-limit",
            "512Mi",
            "--no-nanny",
        ],
        env=pod_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = Client(address, timeout=5, set_as_default=False)
                break
            except OSError:
                assert time.monotonic() < deadline, "the shim scheduler did not start"
                time.sleep(0.5)
        with client:
            client.wait_for_workers(1, timeout=60)
            (info,) = client.scheduler_info()["workers"].values()
            assert (info["name"], info["nthreads"]) == ("flyte-worker-0", 2)
            assert info["memory_limit"] == 512 * 2**20
            assert client.submit(sum, [1, 2]).result() == 3
    finally:
        for process in (worker, scheduler):
            process.terminate()
        for process in (worker, scheduler):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
