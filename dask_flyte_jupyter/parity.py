"""Environment parity: the versions a remote run saw, against the notebook kernel's.

A remote cell task returns one extra output (``task.VERSIONS_OUTPUT``, remote builds only): JSON
with the Python, dask, distributed and flytekit versions of the job runner (the task process)
and, through ``distributed.Client.get_versions``, of the scheduler and every worker. The report
compares them with the kernel and flags every difference, because a version mismatch is the most
common cause of remote failures that users cannot explain.

The collecting function is generated from source (like the task's output collector), so the task
pickles without this package installed in the image.
"""

from __future__ import annotations

import json
import platform
import textwrap
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

#: What the report compares (distribution names; "python" is the interpreter).
PACKAGES = ("python", "dask", "distributed", "flytekit")
#: Seconds the job runner waits to reach the scheduler when collecting versions.
COLLECT_TIMEOUT = 10

Versions = dict[str, str | None]

_COLLECT_SOURCE = textwrap.dedent(
    """
    def flyte_dask_versions():
        import json
        import os
        import platform
        from importlib import metadata

        def short_python(text):
            return ".".join(str(text).split(".")[:3]) if text else text

        def own_versions():
            found = {"python": platform.python_version()}
            for name in PACKAGES[1:]:
                try:
                    found[name] = metadata.version(name)
                except Exception:
                    found[name] = None
            return found

        def reported(info):
            packages = dict(info.get("packages") or {})
            found = {"python": short_python(packages.get("python") or
                                            (info.get("host") or {}).get("python"))}
            for name in PACKAGES[1:]:
                found[name] = packages.get(name)
            return found

        def commands():
            # How the image provides the commands Flyte v1 starts dask with.
            import shutil

            found = {}
            for name in ("dask-scheduler", "dask-worker"):
                path = shutil.which(name)
                if path is None:
                    found[name] = "missing"
                    continue
                try:
                    with open(path, "rb") as file:
                        head = file.read(512)
                except OSError:
                    head = b""
                shim = head.startswith(b"#!/bin/sh") and b"dask" in head and b"exec" in head
                found[name] = "shim" if shim else "distributed's own"
            return found

        report = {"job-runner": own_versions(), "commands": commands()}
        address = os.environ.get("DASK_SCHEDULER_ADDRESS")
        if not address:
            try:
                import dask

                address = dask.config.get("scheduler-address", None)
            except Exception:
                address = None
        if address:
            try:
                from distributed import Client

                with Client(address, timeout=TIMEOUT, set_as_default=False) as client:
                    versions = client.get_versions(check=False, packages=["flytekit"])
                report["scheduler"] = reported(versions.get("scheduler") or {})
                for worker, info in sorted((versions.get("workers") or {}).items()):
                    report["worker " + str(worker)] = reported(info or {})
            except Exception as error:
                report["error"] = type(error).__name__ + ": " + str(error)
        return {OUTPUT: json.dumps(report, sort_keys=True)}
    """
)


def collector(output_name: str) -> Callable[[], dict[str, str]]:
    """The function the remote task calls after the cell's code: ``{output_name: json}``."""
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "PACKAGES": PACKAGES,
        "TIMEOUT": COLLECT_TIMEOUT,
        "OUTPUT": output_name,
    }
    exec(compile(_COLLECT_SOURCE, "<flyte_dask versions>", "exec"), namespace)
    return typing.cast(Callable[[], dict[str, str]], namespace["flyte_dask_versions"])


def kernel_versions() -> Versions:
    """The notebook kernel's versions of :data:`PACKAGES`."""
    found: Versions = {"python": platform.python_version()}
    for name in PACKAGES[1:]:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


@dataclass(frozen=True)
class Mismatch:
    """One package whose version differs from the kernel's on some roles of the run."""

    package: str
    kernel: str | None
    remote: str | None
    roles: tuple[str, ...]

    def text(self) -> str:
        return (
            f"{self.package} {self.remote or 'missing'} on {_roles_text(self.roles)}, "
            f"{self.kernel or 'missing'} in the kernel"
        )


@dataclass
class ParityReport:
    """Versions of the job runner, scheduler and workers, compared with the kernel."""

    kernel: Versions
    roles: dict[str, Versions]
    error: str | None = None  # why the cluster's versions could not be collected
    mismatches: list[Mismatch] = field(default_factory=list)
    #: how the image provides dask-scheduler / dask-worker: "shim", "distributed's own", "missing"
    commands: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_output(cls, text: str, kernel: Versions | None = None) -> ParityReport:
        """The report from the task's versions output (JSON), against ``kernel``."""
        data = json.loads(text)
        error = data.pop("error", None)
        commands = dict(data.pop("commands", None) or {})
        roles = {role: dict(versions) for role, versions in data.items()}
        report = cls(kernel if kernel is not None else kernel_versions(), roles, error)
        report.mismatches = _compare(report.kernel, roles)
        report.commands = commands
        return report

    @property
    def workers(self) -> int:
        return sum(1 for role in self.roles if role.startswith("worker"))

    def summary(self) -> str:
        """One line for the run summary."""
        if self.mismatches:
            mismatches = "; ".join(m.text() for m in self.mismatches)
            return f"MISMATCH with the kernel: {mismatches}{self.commands_text()}"
        seen = ", ".join(f"{p} {self.kernel.get(p)}" for p in PACKAGES)
        where = _roles_text(tuple(self.roles))
        text = f"{seen} on {where}: same as the kernel"
        if self.error:
            text += f" (scheduler and workers not checked: {self.error})"
        return text + self.commands_text()

    def commands_text(self) -> str:
        """``; dask-scheduler / dask-worker: shims onto dask scheduler / dask worker``."""
        kinds = set(self.commands.values())
        if not kinds:
            return ""
        if kinds == {"shim"}:
            how = "shims onto `dask scheduler` / `dask worker` (for Flyte v1)"
        elif kinds == {"distributed's own"}:
            how = "distributed's own"
        else:
            how = ", ".join(f"{name} {kind}" for name, kind in self.commands.items())
        return f"; dask-scheduler / dask-worker in the image: {how}"

    def notes(self) -> list[str]:
        """One note per mismatch (shown under the cell and in the summary)."""
        return [
            f"environment mismatch: {m.text()}; a mismatch is the most common cause of "
            "unexplained remote failures (pass --image with matching versions)"
            for m in self.mismatches
        ]


def _compare(kernel: Mapping[str, str | None], roles: Mapping[str, Versions]) -> list[Mismatch]:
    found: dict[tuple[str, str | None], list[str]] = {}
    for role, versions in roles.items():
        for package in PACKAGES:
            remote = versions.get(package)
            if remote != kernel.get(package):
                found.setdefault((package, remote), []).append(role)
    return [
        Mismatch(package, kernel.get(package), remote, tuple(role_list))
        for (package, remote), role_list in found.items()
    ]


def _roles_text(roles: tuple[str, ...]) -> str:
    """``job runner, scheduler, 3 workers``."""
    workers = sum(1 for role in roles if role.startswith("worker"))
    named = [role.replace("-", " ") for role in roles if not role.startswith("worker")]
    if workers:
        named.append(f"{workers} worker{'s' if workers != 1 else ''}")
    return ", ".join(named) or "nothing"
