"""The default task image: a flytekit ``ImageSpec`` that mirrors the notebook's environment.

Without ``--image``, a remote run uses an image with the kernel's Python version, the kernel's
versions of flytekit, flytekitplugins-dask, dask, distributed and bokeh (the dashboard and the
performance report), and the installed versions of the packages the cell imports. The same image
runs the job runner, the scheduler and the workers, so the versions on the cluster match the
kernel (the parity report checks that they do).

The image is built only when it is missing, by flytekit's image builder (``ImageBuildEngine``),
and only where the user has one: flytekit's default builder needs a running Docker, builder
plugins (envd, ...) register themselves. With no builder, or with no registry the cluster can pull
from (``FLYTE_DASK_IMAGE_REGISTRY``), the error says how to pass ``--image`` instead.
Imported only by remote runs and dry runs (it imports flytekit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

#: Packages every cell task needs, pinned to the kernel's versions. distributed draws its
#: dashboard (in the scheduler pod) and the run's performance report (in the job runner) with
#: bokeh, which it does not install itself.
BASE_PACKAGES = ("flytekit", "flytekitplugins-dask", "dask", "distributed", "bokeh")
#: Name of the default image (its tag is the ImageSpec's content hash).
IMAGE_NAME = "flyte-dask-jupyter"
#: Registry the default image is pushed to and pulled from, e.g. ``ghcr.io/my-team``.
REGISTRY_VARIABLE = "FLYTE_DASK_IMAGE_REGISTRY"
#: distributed removed ``dask-scheduler`` / ``dask-worker`` in this release; Flyte's v1 dask
#: plugin (through 1.16) still starts the scheduler and the workers with them.
OLD_COMMANDS_REMOVED = (2026, 6)
#: The old commands and what they became: the default image gets them back as thin shims, so it
#: keeps the kernel's distributed and still starts on a Flyte v1 backend.
OLD_COMMANDS = {"dask-scheduler": "scheduler", "dask-worker": "worker"}
#: Seconds to wait for ``docker version`` when checking for a usable Docker.
DOCKER_CHECK_TIMEOUT = 5.0
# Distributions that come with (or are) the Python interpreter: never pinned into an image.
_NEVER_PIN = {"pip", "setuptools", "wheel"}


class ImageError(ValueError):
    """The default image cannot be used; the message says what to do instead (``--image``)."""


@dataclass(frozen=True)
class DefaultImage:
    """The default image of a cell: the flytekit ``ImageSpec`` and what it contains."""

    spec: Any  # flytekit.image_spec.ImageSpec
    python: str  # "3.11"
    packages: tuple[str, ...]  # pinned requirements, base packages first
    unresolved: tuple[str, ...]  # modules the cell imports that no installed package provides
    shims: tuple[str, ...] = ()  # old dask commands the image adds (``OLD_COMMANDS``)

    @property
    def name(self) -> str:
        """The full image name (registry/name:tag); the tag is a hash of the contents."""
        return str(self.spec.image_name())

    def describe(self) -> str:
        """One line: what the image holds."""
        text = f"ImageSpec from this kernel: python {self.python}; {', '.join(self.packages)}"
        if self.shims:
            text += f"; {' / '.join(self.shims)} shims for Flyte v1 backends"
        if self.unresolved:
            text += f"; not installable (not in the image): {', '.join(self.unresolved)}"
        return text


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cell_requirements(imports: Iterable[str]) -> tuple[list[str], list[str]]:
    """Pinned requirements for the top-level modules a cell imports, and the modules that no
    installed distribution provides (local modules, typos). The standard library is skipped."""
    providers = metadata.packages_distributions()
    base = {_normalise(name) for name in BASE_PACKAGES}
    pinned: dict[str, str] = {}
    unresolved: list[str] = []
    for module in sorted(set(imports)):
        if module in sys.stdlib_module_names or module in sys.builtin_module_names:
            continue
        distributions = providers.get(module)
        if not distributions:
            unresolved.append(module)
            continue
        for distribution in distributions:
            key = _normalise(distribution)
            version = _distribution_version(distribution)
            if key in base or key in _NEVER_PIN or version is None:
                continue
            pinned[key] = f"{distribution}=={version}"
    return [pinned[key] for key in sorted(pinned)], unresolved


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def default_image(imports: Iterable[str] = (), registry: str | None = None) -> DefaultImage:
    """The default ImageSpec for a cell importing ``imports`` (``CellProgram.imports``).

    ``registry`` defaults to ``$FLYTE_DASK_IMAGE_REGISTRY``.
    """
    from flytekit.image_spec import ImageSpec

    base = []
    for name in BASE_PACKAGES:
        version = _distribution_version(name)
        base.append(f"{name}=={version}" if version else name)
    extra, unresolved = cell_requirements(imports)
    packages = [*base, *extra]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if registry is None:
        registry = os.environ.get(REGISTRY_VARIABLE) or None
    shims = needs_old_commands(_distribution_version("distributed"))
    spec = ImageSpec(
        name=IMAGE_NAME,
        python_version=python,
        packages=packages,
        registry=registry,
        commands=shim_commands() if shims else None,
        tag_format=f"py{python.replace('.', '')}-{{spec_hash}}",  # the tag names the Python
    )
    return DefaultImage(
        spec, python, tuple(packages), tuple(unresolved), tuple(OLD_COMMANDS) if shims else ()
    )


def needs_old_commands(distributed_version: str | None) -> bool:
    """Whether an image with this distributed lacks ``dask-scheduler`` / ``dask-worker``."""
    if not distributed_version:
        return False
    try:
        year, month = (int(part) for part in distributed_version.split(".")[:2])
    except ValueError:
        return False
    return (year, month) >= OLD_COMMANDS_REMOVED


def shim_commands() -> list[str]:
    """Image build steps (run after the packages are installed) that put ``dask-scheduler`` and
    ``dask-worker`` next to the image's ``dask`` command, each passing its arguments on to
    ``dask scheduler`` / ``dask worker`` (the same options: ``--name``, ``--nthreads``...)."""
    commands = []
    for old, new in OLD_COMMANDS.items():
        commands.append(
            'bin="$(dirname "$(command -v dask)")" && '
            f'printf \'#!/bin/sh\\nexec "%s" {new} "$@"\\n\' "$bin/dask" > "$bin/{old}" && '
            f'chmod +x "$bin/{old}"'
        )
    return commands


def docker_available() -> bool:
    """Whether flytekit's default builder can work here: a docker CLI and a daemon answering."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=DOCKER_CHECK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def available_builder() -> str | None:
    """The image builder flytekit would use here, or None when there is none that can work.

    Builder plugins register with flytekit's ``ImageBuildEngine`` (highest priority wins, as in
    flytekit); its own "default" builder counts only when Docker runs; "noop" builds nothing.
    """
    from flytekit.image_spec import ImageBuildEngine

    registry = ImageBuildEngine.get_registry()
    for name in sorted(registry, key=lambda n: registry[n][1], reverse=True):
        if name == "noop":
            continue
        if name == "default" and not docker_available():
            continue
        return str(name)
    return None


def _use_image_hint(image: DefaultImage) -> str:
    return (
        f"Pass --image with an image that has Python {image.python} and "
        f"{', '.join(image.packages)} (e.g. one your platform team publishes)"
    )


def check_buildable(image: DefaultImage) -> str:
    """The builder that will build ``image`` if it is missing; raises :class:`ImageError` with
    what to do when the default image cannot be used here."""
    if not image.spec.registry:
        raise ImageError(
            "the default image needs a registry the Flyte cluster can pull from: set "
            f"{REGISTRY_VARIABLE} (e.g. %env {REGISTRY_VARIABLE}=ghcr.io/my-team). "
            + _use_image_hint(image)
            + "."
        )
    builder = available_builder()
    if builder is None:
        raise ImageError(
            f"no image builder to build the default image {image.name}: flytekit's builder "
            "needs a running Docker, and no builder plugin (e.g. flytekitplugins-envd) is "
            "installed. " + _use_image_hint(image) + "."
        )
    return builder


def ensure_image(image: DefaultImage) -> str:
    """Builds the default image with flytekit's builder unless it already exists; returns its
    name. flytekit remembers what it built in this kernel and asks the registry otherwise."""
    from flytekit.image_spec import ImageBuildEngine

    builder = check_buildable(image)
    spec = image.spec
    if spec.builder != builder:
        import dataclasses

        spec = dataclasses.replace(spec, builder=builder)
    try:
        ImageBuildEngine.build(spec)
    except Exception as error:
        raise ImageError(
            f"building the default image {image.name} with flytekit's {builder!r} builder "
            f"failed: {error}. " + _use_image_hint(image) + "."
        ) from None
    return str(spec.image_name())
