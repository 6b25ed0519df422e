"""The cluster spec: what a ``%%flyte_dask`` cell asks for, validated, and its translations.

Pure: no IPython, no I/O; flytekit is imported only inside :func:`to_dask_config`.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekitplugins.dask import Dask


class SpecError(ValueError):
    """A user error in the spec; the message names the flag, the bad value and what is accepted."""


#: Characters of a value an error message shows; a longer value is cut (a pasted blob, a typo).
SHOWN_CHARS = 80


def shown(value: object) -> str:
    """``repr(value)`` for a message: a text longer than :data:`SHOWN_CHARS` is cut there."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"
    return repr(value)


# Kubernetes quantity: a non-negative decimal, then an exponent OR a suffix (never both).
# The exponent is capped at 3 digits so a silly '1e999999' cannot cost a huge integer.
_QUANTITY = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:[eE](?P<exp>[+-]?[0-9]{1,3})|(?P<suffix>[KMGTPE]i|[numkMGTPE]))?"
)
_SUFFIXES = {
    **{s: Fraction(1024) ** (i + 1) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])},
    **{
        s: Fraction(10) ** p
        for s, p in zip("numkMGTPE", [-9, -6, -3, 3, 6, 9, 12, 15, 18], strict=True)
    },
}
_INT64_MAX = 2**63 - 1  # Kubernetes stores quantities as int64 (bytes, millicores)
_CPU_FORMS = "e.g. 2, 1.5, 500m"
_MEM_FORMS = "use a number with an optional suffix, e.g. 4Gi, 512Mi, 1G, 1e9"


def _quantity(value: str, flag: str, what: str, forms: str) -> Fraction:
    """Parse a Kubernetes quantity exactly; reject zero."""
    match = _QUANTITY.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise SpecError(f"{flag}: {shown(value)} is not a {what} ({forms})")
    number = Fraction(match["num"])
    if match["exp"] is not None:
        number *= Fraction(10) ** int(match["exp"])
    elif match["suffix"] is not None:
        number *= _SUFFIXES[match["suffix"]]
    if number <= 0:
        raise SpecError(f"{flag}: must be > 0, got {shown(value)}")
    return number


def parse_cpu(value: str, flag: str) -> float:
    """Kubernetes CPU quantity -> cores (``'500m'`` -> 0.5)."""
    millicores = _quantity(value, flag, "Kubernetes CPU quantity", _CPU_FORMS) * 1000
    if millicores < 1:  # Kubernetes has no CPU unit finer than 1m
        raise SpecError(f"{flag}: {shown(value)} is below 1m, the smallest CPU amount")
    if millicores > _INT64_MAX:
        raise SpecError(f"{flag}: {shown(value)} is too large")
    return float(millicores / 1000)


def parse_memory(value: str, flag: str) -> int:
    """Kubernetes memory quantity -> bytes, rounded up (``'4Gi'`` -> 4294967296)."""
    size = _quantity(value, flag, "Kubernetes quantity", _MEM_FORMS)
    if size < 1:
        raise SpecError(f"{flag}: {shown(value)} is less than 1 byte ({_MEM_FORMS})")
    if size > _INT64_MAX:
        raise SpecError(f"{flag}: {shown(value)} is too large")
    return math.ceil(size)


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


@dataclass(frozen=True)
class SchedulerSpec:
    """Requests for the scheduler pod, as Kubernetes quantity text."""

    cpu: str | None = None
    mem: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpu", _strip(self.cpu))
        object.__setattr__(self, "mem", _strip(self.mem))


@dataclass(frozen=True)
class WorkerSpec:
    """The dask workers: how many, and the limits of each one."""

    count: int = 2
    cpu: str | None = None
    mem: str | None = None
    gpu: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpu", _strip(self.cpu))
        object.__setattr__(self, "mem", _strip(self.mem))


# Flag (without '--') -> (section, field), in the order of the design's options table.
_FLAGS: dict[str, tuple[str | None, str]] = {
    "workers": ("workers", "count"),
    "worker-cpu": ("workers", "cpu"),
    "worker-mem": ("workers", "mem"),
    "worker-gpu": ("workers", "gpu"),
    "scheduler-cpu": ("scheduler", "cpu"),
    "scheduler-mem": ("scheduler", "mem"),
    "image": (None, "image"),
    "interruptible": (None, "interruptible"),
    "cache": (None, "cache"),
    "cache-version": (None, "cache_version"),
    "name": (None, "name"),
    "pod-template": (None, "pod_template"),
    "accelerator": (None, "accelerator"),
}
_BOOL_FLAGS = {"interruptible", "cache"}
_INT_FLAGS = {"workers": 1, "worker-gpu": 0}  # flag -> smallest allowed value
_QUANTITY_FLAGS = {"worker-cpu", "worker-mem", "scheduler-cpu", "scheduler-mem"}
_TEXT_FLAGS = _QUANTITY_FLAGS | {"image", "cache-version", "name", "pod-template", "accelerator"}
# Flyte task names: a letter, then letters, digits, '_', '-', '.'; 63 chars keeps them short
# enough for Kubernetes labels derived from them.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
# A Kubernetes object name (RFC 1123 subdomain), as PodTemplates are named.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# DEVICE or DEVICE:PARTITION, e.g. T4, nvidia-tesla-t4, A100:1g.5gb, A100:unpartitioned.
_ACCELERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}(:[A-Za-z0-9][A-Za-z0-9.]{0,31})?")


def _check_int(flag: str, value: object) -> None:
    low = _INT_FLAGS[flag]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"--{flag}: must be a whole number >= {low}, got {value!r}")


@dataclass(frozen=True)
class ClusterSpec:
    """The dask cluster a cell runs on, plus how the task is named and cached."""

    workers: WorkerSpec = field(default_factory=WorkerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    image: str | None = None
    interruptible: bool = False
    cache: bool = False
    cache_version: str | None = None
    name: str | None = None
    pod_template: str | None = None  # flytekit pod_template_name: a PodTemplate on the cluster
    accelerator: str | None = None  # flytekit accelerator: DEVICE or DEVICE:PARTITION

    def _get(self, flag: str) -> object:
        section, name = _FLAGS[flag]
        return getattr(getattr(self, section) if section else self, name)

    def validate(self) -> ClusterSpec:
        """Raise :class:`SpecError` for the first user error found; return self."""
        _check_int("workers", self.workers.count)
        if self.workers.gpu is not None:
            _check_int("worker-gpu", self.workers.gpu)
        for section, prefix in ((self.workers, "--worker"), (self.scheduler, "--scheduler")):
            if section.cpu is not None:
                parse_cpu(section.cpu, f"{prefix}-cpu")
            if section.mem is not None:
                parse_memory(section.mem, f"{prefix}-mem")
        if self.image is not None and (not self.image or any(c.isspace() for c in self.image)):
            raise SpecError(f"--image: {shown(self.image)} must be non-empty and contain no spaces")
        if self.cache_version is not None and not self.cache:
            raise SpecError("--cache-version needs --cache")
        if self.cache_version is not None and not self.cache_version.strip():
            raise SpecError("--cache-version: must not be empty")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise SpecError(
                f"--name: {shown(self.name)} is not a valid task name (start with a letter; then "
                "letters, digits, '_', '-', '.'; at most 63 characters)"
            )
        if self.pod_template is not None and not _K8S_NAME.fullmatch(self.pod_template):
            raise SpecError(
                f"--pod-template: {shown(self.pod_template)} is not a Kubernetes name (lower-case "
                "letters, digits, '-' and '.', starting and ending with a letter or digit)"
            )
        if self.accelerator is not None:
            if not _ACCELERATOR.fullmatch(self.accelerator):
                raise SpecError(
                    f"--accelerator: {shown(self.accelerator)} is not DEVICE or DEVICE:PARTITION "
                    "(e.g. T4, nvidia-tesla-t4, A100:1g.5gb, A100:unpartitioned)"
                )
            if not self.workers.gpu:
                raise SpecError("--accelerator needs --worker-gpu (the GPUs it describes)")
        return self

    def fingerprint(self) -> str:
        """Canonical JSON of what defines the cluster (everything but name and caching)."""
        shape = asdict(self)
        for key in ("name", "cache", "cache_version"):
            del shape[key]
        for key in ("pod_template", "accelerator"):  # added later: unset keeps old versions
            if shape[key] is None:
                del shape[key]
        return json.dumps(shape, sort_keys=True, separators=(",", ":"))

    def to_options(self) -> dict[str, object]:
        """Flag name (without '--') -> value, for every field that differs from the default."""
        default = ClusterSpec()
        return {f: self._get(f) for f in _FLAGS if self._get(f) != default._get(f)}

    def magic_line(self) -> str:
        """The ``%%flyte_dask`` line that reproduces this spec (defaults omitted)."""
        parts = ["%%flyte_dask"]
        for flag, value in self.to_options().items():
            parts.append(f"--{flag}" if flag in _BOOL_FLAGS else format_option(flag, str(value)))
        return " ".join(parts)


def format_option(flag: str, value: str) -> str:
    """``--flag VALUE`` as the magic line is written: quoted as a POSIX shell needs it
    (``shlex.quote``), so the magic's parser reads back exactly ``value``; a value starting
    with ``-`` goes after ``=``, where argparse cannot take it for an option."""
    quoted = shlex.quote(value)
    return f"--{flag}={quoted}" if value.startswith("-") else f"--{flag} {quoted}"


def _coerce(flag: str, value: object) -> object:
    """Bring a user-given value to the field's type; argparse and widgets may give strings."""
    if flag in _BOOL_FLAGS and not isinstance(value, bool):
        raise SpecError(f"--{flag}: must be true or false, got {shown(value)}")
    if flag in _INT_FLAGS and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            low = _INT_FLAGS[flag]
            raise SpecError(
                f"--{flag}: must be a whole number >= {low}, got {shown(value)}"
            ) from None
    if flag in _QUANTITY_FLAGS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. cpu 2 or 0.5 from a widget
    if flag in _TEXT_FLAGS and not isinstance(value, str):
        raise SpecError(f"--{flag}: expected text, got {shown(value)}")
    return value  # validate() checks the rest


def spec_from_options(
    options: Mapping[str, object], base: ClusterSpec | None = None
) -> ClusterSpec:
    """Build a validated spec from flag -> value; None values are ignored, others override base."""
    unknown = sorted(set(options) - set(_FLAGS))
    if unknown:
        known = " ".join(f"--{f}" for f in _FLAGS)
        raise SpecError(
            f"unknown option(s): {' '.join('--' + u for u in unknown)} (known: {known})"
        )
    spec = base if base is not None else ClusterSpec()
    changes: dict[str | None, dict[str, Any]] = {}  # field values, checked by validate()
    for flag, value in options.items():
        if value is not None:
            section, name = _FLAGS[flag]
            changes.setdefault(section, {})[name] = _coerce(flag, value)
    top = changes.get(None, {})
    for section in ("workers", "scheduler"):
        if section in changes:
            top[section] = replace(getattr(spec, section), **changes[section])
    return replace(spec, **top).validate()


def to_dask_config(spec: ClusterSpec) -> Dask:
    """THE translation of a spec to ``flytekitplugins.dask.Dask``.

    Images stay unset: Flyte then runs scheduler and workers from the task image.
    Scheduler cpu/mem become requests, worker cpu/mem/gpu become limits.
    """
    from flytekit import Resources
    from flytekitplugins.dask import Dask, Scheduler, WorkerGroup

    spec.validate()
    s, w = spec.scheduler, spec.workers
    has_requests = s.cpu is not None or s.mem is not None
    requests = Resources(cpu=s.cpu, mem=s.mem) if has_requests else None
    has_limits = w.cpu is not None or w.mem is not None or w.gpu is not None
    limits = Resources(cpu=w.cpu, mem=w.mem, gpu=w.gpu) if has_limits else None
    return Dask(
        scheduler=Scheduler(requests=requests),
        workers=WorkerGroup(number_of_workers=w.count, limits=limits),
    )


@dataclass(frozen=True)
class LocalShape:
    """The cluster shape actually used on this machine."""

    workers: int
    threads_per_worker: int
    memory_limit: int | None  # bytes per worker; None lets dask decide
    notes: tuple[str, ...]  # what was scaled down, and why


def _size(n: int) -> str:
    return f"{n / 2**30:.1f}".removesuffix(".0") + " GiB"


def local_shape(spec: ClusterSpec, cpu_count: int, total_memory: int) -> LocalShape:
    """Scale the spec down to a machine with ``cpu_count`` cores and ``total_memory`` bytes."""
    cores = max(1, cpu_count)
    machine = f"this machine has {cores} core{'s' if cores > 1 else ''}"
    notes: list[str] = []
    w = spec.workers
    # More workers than ~2 per core only adds overhead, but 4 keeps small machines parallel.
    workers = min(w.count, max(4, 2 * cores))
    if workers < w.count:
        notes.append(f"workers {w.count} → {workers} ({machine})")
    threads = 1
    if w.cpu is not None:
        threads = max(1, math.ceil(parse_cpu(w.cpu, "--worker-cpu")))
        if threads > cores:
            notes.append(f"worker cpu {w.cpu} → {cores} threads per worker ({machine})")
            threads = cores
    memory: int | None = None
    if w.mem is not None:
        memory = parse_memory(w.mem, "--worker-mem")
        # Leave 20% of the machine to the notebook, the scheduler and the OS.
        if total_memory > 0 and workers * memory * 5 > total_memory * 4:
            memory = max(1, total_memory * 4 // (5 * workers))
            notes.append(
                f"worker mem {w.mem} → {_size(memory)} per worker ({workers} workers share 80% "
                f"of this machine's {_size(total_memory)})"
            )
    if w.gpu:
        notes.append(f"worker gpu {w.gpu} → none (local workers have no GPU)")
    return LocalShape(workers, threads, memory, tuple(notes))
