"""What the summary says of a run's outputs: ``name: type (size)``, from metadata only.

Describing never runs the user's computation and never raises: shape and memory for pandas and
numpy objects, length for builtin containers, partitions / chunks for dask collections.
"""

from __future__ import annotations

from typing import Any


def output_type(value: Any) -> str:
    """The type's name, "dask DataFrame" for dask's own (not pandas' DataFrame)."""
    name = type_name(value)
    return f"dask {name}" if _is_dask_collection(value) else name


def type_name(value: Any) -> str:
    try:
        return str(type(value).__name__)
    except Exception:  # a metaclass may do anything
        return "object"


#: Builtin types whose length is shown; their own ``__len__`` is called, never an override.
_SIZED: tuple[type, ...] = (list, tuple, dict, set, frozenset, str, bytes, bytearray)


def describe_value(name: str, value: Any) -> str:
    """``name: type (size)`` for the summary, from metadata only: it never runs the user's
    computation and never raises. Shape and memory for pandas and numpy objects, length for
    builtin containers, partitions / chunks for dask collections, else just the type."""
    try:
        kind, detail = _describe(value)
    except Exception:
        kind, detail = type_name(value), ""
        if _is_dask_collection(value):
            kind = f"dask {kind}"
    return f"{name}: {kind} ({detail})" if detail else f"{name}: {kind}"


def _is_dask_collection(value: Any) -> bool:
    """A collection of dask itself (not of a library built on it), checked without importing
    dask: its type has ``__dask_graph__`` and comes from a ``dask`` module."""
    try:
        cls = type(value)
        is_collection = callable(getattr(cls, "__dask_graph__", None))
        return is_collection and str(cls.__module__).startswith("dask.")
    except Exception:
        return False


def _describe(value: Any) -> tuple[str, str]:
    """(kind, detail) of a value; may raise (the caller then shows the type only)."""
    kind = type_name(value)
    cls = type(value)
    if callable(getattr(cls, "__dask_graph__", None)):  # a dask collection, lazy or persisted
        return _describe_dask(value, kind) if _is_dask_collection(value) else (kind, "")
    for sized in _SIZED:
        if isinstance(value, sized):
            return kind, f"len {sized.__len__(value)}"  # type: ignore[attr-defined]
    if str(cls.__module__).partition(".")[0] in ("pandas", "numpy"):
        shape = value.shape
        if isinstance(shape, tuple) and shape and all(isinstance(n, int) for n in shape):
            size = " x ".join(str(n) for n in shape)
            nbytes = _memory_size(value)
            return kind, f"{size}, {nbytes}" if nbytes else size
    return kind, ""


class _WouldCompute(Exception):
    """Raised by the scheduler that is in place while a dask collection is described."""


def _refuse_to_compute(*args: Any, **kwargs: Any) -> Any:
    raise _WouldCompute("describing an output must not compute it")


def _describe_dask(value: Any, kind: str) -> tuple[str, str]:
    """A dask collection from its metadata: DataFrame / Series partitions (and columns), Array
    shape, chunks, dtype and size, Bag partitions; anything else (Delayed) just its type.
    Collections of other libraries built on dask (xarray, ...) show their type only.

    Some metadata is computed on first use (the divisions of a lazy ``set_index``, say); while
    it is read, dask's scheduler is one that refuses to run anything, and what it would have had
    to compute is shown as unknown.
    """
    import dask  # a dask collection exists, so dask is imported already

    parts: list[str] = []
    with dask.config.set(scheduler=_refuse_to_compute):
        if kind == "Array":
            shape = " x ".join(_dimension(n) for n in value.shape)
            blocks = 1
            for count in value.numblocks:
                blocks *= int(count)
            parts += [shape or "scalar", plural(blocks, "chunk"), str(value.dtype)]
            nbytes = value.nbytes
            if isinstance(nbytes, int) or (isinstance(nbytes, float) and nbytes == nbytes):
                parts.append(_bytes_text(int(nbytes)))
        elif kind in ("DataFrame", "Series", "Index"):
            try:
                count, known = int(value.npartitions), bool(value.known_divisions)
                parts.append(plural(count, "partition"))
                parts.append("divisions known" if known else "divisions unknown")
            except _WouldCompute:
                parts.append("partitions known once computed")
            if kind == "DataFrame":
                parts.append(plural(len(value.columns), "column"))
        elif kind == "Bag":
            parts.append(plural(int(value.npartitions), "partition"))
    return f"dask {kind}", ", ".join(parts)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _dimension(n: Any) -> str:
    return str(int(n)) if isinstance(n, int) or (isinstance(n, float) and n == n) else "nan"


def _memory_size(value: Any) -> str:
    """Memory a pandas or numpy object takes, e.g. "12.3 KiB"; "" when unknown."""
    try:
        if hasattr(value, "memory_usage"):
            usage = value.memory_usage(deep=True)  # per column for frames, a number otherwise
            size = int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        else:
            size = int(value.nbytes)
    except Exception:
        return ""
    return _bytes_text(size)


def memory_text(size: int) -> str:
    """A memory limit as people say it: "200 MiB", "1.5 GiB"."""
    unit, scale = ("GiB", 2**30) if size >= 2**30 else ("MiB", 2**20)
    return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"


def _bytes_text(size: int) -> str:
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return ""
