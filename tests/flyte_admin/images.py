"""Images of the Flyte Admin stand-in: virtualenvs built from flytekit ImageSpecs (TEST DOUBLE).

A real task image is a container image built from an ``ImageSpec``: flytekit's default builder
installs the spec's ``packages`` (adding ``flytekit`` when they do not name it) into a Python of
the spec's ``python_version``, then runs the spec's ``commands`` (``RUN`` with ``sh -c``, the
image's venv first on ``PATH``), and pushes the result to a registry, from which the cluster pulls
it by name. Here an image is a virtualenv:

- :class:`ImageStore` builds one per distinct (interpreter, packages, commands) with
  ``python -m venv`` + ``pip install <packages>`` (pip as this machine is configured) + the
  commands, in place under the cache directory (venvs are not relocatable), behind a file lock
  and a "complete" marker written last, so concurrent test runs build each image once and a
  crashed build is redone. The cache directory is ``$FLYTE_DASK_STANDIN_IMAGE_CACHE``, else
  ``~/.cache/dask-flyte-jupyter/standin-images``; it outlives test runs, so a CI machine builds
  an image once.
- The store is also the registry: a build records ``image name -> venv`` under ``names/``;
  :meth:`ImageStore.get` is the stand-in's pull. Names nobody built here resolve to ``None``
  (the runner then uses the "kernel image", see README.md).
- :class:`StandInImageBuilder` is a flytekit image builder plugin
  (``ImageBuildEngine.register``), so ``%%flyte_dask --remote`` without ``--image`` "builds" the
  default image into the store; the ``standin_image_builder`` fixture (fixtures.py) registers it.

Only what changes an image's contents is honoured (python_version, packages, commands); an
ImageSpec that sets anything else that would (apt/conda packages, a base image, requirements
files, copied sources, env, an entrypoint, ...) is refused, never silently built without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Environment variable overriding the cache directory of the built venvs.
CACHE_VARIABLE = "FLYTE_DASK_STANDIN_IMAGE_CACHE"
DEFAULT_CACHE = Path("~/.cache/dask-flyte-jupyter/standin-images")
#: Name of the builder plugin in flytekit's ``ImageBuildEngine``.
BUILDER_NAME = "flyte-admin-standin"
#: Registry name the tests give the default image (any name does: nothing is pushed).
STANDIN_REGISTRY = "standin.local/tests"
#: Written last into a venv: the build finished.
COMPLETE_MARKER = ".standin-image-complete.json"
#: ``PATH`` of a container image besides its venv (Docker's default for Debian-based images).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Seconds a build may take (pip resolving and downloading flytekit's dependencies).
BUILD_TIMEOUT = 1800
#: ImageSpec fields that change an image's contents but that the store cannot honour.
_UNSUPPORTED = (
    "source_root",
    "env",
    "conda_packages",
    "conda_channels",
    "requirements",
    "apt_packages",
    "cuda",
    "cudnn",
    "base_image",
    "pip_index",
    "pip_extra_index_url",
    "pip_secret_mounts",
    "pip_extra_args",
    "entrypoint",
    "source_copy_mode",
    "copy",
    "python_exec",
    "runtime_packages",
)


class ImageBuildError(RuntimeError):
    """The store cannot build the ImageSpec, or its build failed (the message says why)."""


def kernel_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def cache_dir() -> Path:
    """Where the venvs live: ``$FLYTE_DASK_STANDIN_IMAGE_CACHE`` or the user cache."""
    return Path(os.environ.get(CACHE_VARIABLE) or DEFAULT_CACHE).expanduser()


@dataclass(frozen=True)
class StandInImage:
    """An image the stand-in can run: a venv built by the store (``venv``), or, for names it
    did not build, the kernel's own venv (``venv`` None; see README.md, "kernel image")."""

    name: str
    venv: Path | None
    key: str = "kernel"
    packages: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    build_seconds: float | None = None  # how long its build took (whoever built it)

    @property
    def built(self) -> bool:
        return self.venv is not None

    @property
    def bin(self) -> Path:
        return self.venv / "bin" if self.venv is not None else Path(sys.executable).parent


def _image_name(spec: Any) -> str:
    return str(spec.image_name())


class ImageStore:
    """Builds ImageSpecs into cached venvs and remembers image name -> venv (see module doc)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()

    # -- what an ImageSpec becomes ----------------------------------------------------------

    @staticmethod
    def contents(spec: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The packages (flytekit added as flytekit's default builder adds it) and commands."""
        unsupported = [field for field in _UNSUPPORTED if getattr(spec, field, None)]
        if unsupported:
            raise ImageBuildError(
                f"the stand-in's image store cannot build ImageSpec {spec.name!r}: it sets "
                f"{', '.join(unsupported)} (only python_version, packages and commands are built)"
            )
        python = spec.python_version or kernel_python()
        if str(python) != kernel_python():
            raise ImageBuildError(
                f"ImageSpec {spec.name!r} asks for Python {python}; the stand-in builds images "
                f"from this machine's Python {kernel_python()} only"
            )
        packages = [str(p) for p in spec.packages or ()]
        if not any(_requirement_name(p) == "flytekit" for p in packages):
            from flytekit import __version__

            packages.append(f"flytekit=={__version__}" if "dev" not in __version__ else "flytekit")
        return tuple(packages), tuple(str(c) for c in spec.commands or ())

    def key(self, spec: Any) -> str:
        """The content hash of the venv: the exact interpreter, the packages, the commands."""
        packages, commands = self.contents(spec)
        text = json.dumps(
            {
                "python": sys.version,
                "interpreter": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
                "packages": packages,
                "commands": commands,
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    # -- the registry ------------------------------------------------------------------------

    def _name_file(self, name: str) -> Path:
        return self.root / "names" / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.json"

    def get(self, name: str) -> StandInImage | None:
        """The image this store built under ``name``, or None (never built, or incomplete)."""
        try:
            entry = json.loads(self._name_file(name).read_text())
        except (OSError, ValueError):
            return None
        if entry.get("name") != name:
            return None
        return self._complete(name, str(entry.get("key", "")))

    def _complete(self, name: str, key: str) -> StandInImage | None:
        venv = self.root / key
        try:
            marker = json.loads((venv / COMPLETE_MARKER).read_text())
        except (OSError, ValueError):
            return None
        return StandInImage(
            name=name,
            venv=venv,
            key=key,
            packages=tuple(marker.get("packages", ())),
            commands=tuple(marker.get("commands", ())),
            build_seconds=marker.get("build_seconds"),
        )

    def _tag(self, name: str, key: str) -> None:
        path = self._name_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"name": name, "key": key}))
        os.replace(tmp, path)

    # -- building ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another run building the same image: wait for it
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def build(self, spec: Any) -> tuple[StandInImage, bool]:
        """Builds ``spec`` unless its venv is cached; returns the image and whether it was built
        now. The image is recorded under ``spec.image_name()``."""
        name = _image_name(spec)
        packages, commands = self.contents(spec)
        key = self.key(spec)
        with self._locked(key):
            image = self._complete(name, key)
            built_now = image is None
            if image is None:
                self._build_venv(self.root / key, packages, commands)
                image = self._complete(name, key)
                assert image is not None
            self._tag(name, key)
        return image, built_now

    def _build_venv(self, venv: Path, packages: tuple[str, ...], commands: tuple[str, ...]) -> None:
        if venv.exists():  # an earlier build died half way
            shutil.rmtree(venv)
        log_path = venv.with_suffix(".build.log")
        start = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.pop("VIRTUAL_ENV", None)
        with open(log_path, "wb") as log:

            def run(argv: list[str], what: str, **kwargs: Any) -> None:
                log.write(f"$ {' '.join(argv)}\n".encode())
                log.flush()
                try:
                    done = subprocess.run(
                        argv,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        timeout=BUILD_TIMEOUT,
                        check=False,
                        **kwargs,
                    )
                except subprocess.TimeoutExpired:
                    raise ImageBuildError(f"{what} took longer than {BUILD_TIMEOUT}s") from None
                if done.returncode != 0:
                    log.flush()
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise ImageBuildError(f"{what} failed (exit code {done.returncode}):\n{tail}")

            try:
                run([sys.executable, "-m", "venv", str(venv)], "python -m venv", env=env)
                python = str(venv / "bin" / "python")
                run(
                    [python, "-m", "pip", "install", "--no-input", *packages],
                    "pip install",
                    env=env,
                )
                if commands:
                    # A Dockerfile RUN after the packages: sh -c, the venv's bin first on PATH.
                    command_env = {
                        **env,
                        "VIRTUAL_ENV": str(venv),
                        "PATH": os.pathsep.join([str(venv / "bin"), SYSTEM_PATH]),
                    }
                    run(
                        ["sh", "-c", " && ".join(commands)],
                        "the ImageSpec's commands",
                        env=command_env,
                        cwd=venv,
                    )
            except BaseException:
                shutil.rmtree(venv, ignore_errors=True)
                raise
        marker = {
            "packages": list(packages),
            "commands": list(commands),
            "python": sys.version,
            "build_seconds": round(time.monotonic() - start, 1),
            "built_at": time.time(),
        }
        (venv / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1))


def _requirement_name(requirement: str) -> str:
    name = requirement.strip()
    for stop in "<>=!~[;@ ":
        name = name.split(stop, 1)[0]
    return name.lower().replace("_", "-")


class StandInImageBuilder:
    """flytekit image builder plugin: "builds" an ImageSpec into the store (TEST DOUBLE).

    ``asked`` lists the image names flytekit asked about (``should_build``), ``builds`` records
    ``(image name, seconds, built now)`` for every build: an image already in the store is not
    built again (flytekit asks first, as it asks a registry).
    """

    def __init__(self, store: ImageStore | None = None) -> None:
        self.store = store or ImageStore()
        self.asked: list[str] = []
        self.builds: list[tuple[str, float, bool]] = []

    def should_build(self, image_spec: Any) -> bool:
        # flytekit's default builder asks docker's registry; the store is this registry.
        self.asked.append(_image_name(image_spec))
        return self.store.get(_image_name(image_spec)) is None

    def build_image(self, image_spec: Any) -> str | None:
        start = time.monotonic()
        image, built_now = self.store.build(image_spec)
        self.builds.append((image.name, time.monotonic() - start, built_now))
        return None  # the image is known by image_spec.image_name()


def register_builder(builder: StandInImageBuilder, priority: int = 100) -> None:
    """Registers ``builder`` with flytekit's ``ImageBuildEngine`` (above flytekit's own)."""
    from flytekit.image_spec import ImageBuildEngine

    ImageBuildEngine.register(BUILDER_NAME, builder, priority=priority)  # type: ignore[arg-type]


def unregister_builder() -> None:
    from flytekit.image_spec import ImageBuildEngine

    ImageBuildEngine.get_registry().pop(BUILDER_NAME, None)


__all__ = [
    "BUILDER_NAME",
    "CACHE_VARIABLE",
    "STANDIN_REGISTRY",
    "ImageBuildError",
    "ImageStore",
    "StandInImage",
    "StandInImageBuilder",
    "cache_dir",
    "register_builder",
    "unregister_builder",
]
