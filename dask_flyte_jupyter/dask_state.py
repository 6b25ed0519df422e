"""Dask state that crosses the boundary of a cell's cluster, the way Flyte moves task outputs:
materialized.

``materialize`` runs before the cell's cluster stops: futures among the outputs become
``DoneFuture`` (finished, holding their value or their error), persisted collections get their
data into their graph; lazy collections are left as they are, never computed. ``place`` runs
when a later cell starts: ``DoneFuture`` become real futures on its cluster (same keys),
collections brought back are persisted on it again.

Runs where the task runs (the kernel, or a Flyte job runner without this package): shipped by
value like ``runtime.py``, so only the standard library at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Containers searched for futures, to this depth (a list of dicts of futures is depth 2).
_CONTAINERS = (list, tuple, dict, set, frozenset)
_MAX_DEPTH = 4
_SCALARS = (int, float, complex, str, bytes, bool, type(None))


def size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def dask_kind(value: object) -> str | None:
    """ "client", "cluster" or "future" for live distributed objects, by class name only."""
    for klass in type(value).__mro__:
        name = f"{klass.__module__}.{klass.__qualname__}"
        if name == "distributed.client.Client":
            return "client"
        if name == "distributed.deploy.cluster.Cluster":
            return "cluster"
        if name == "distributed.client.Future":
            return "future"
    return None


class DoneFuture:
    """A future of a ``%%flyte_dask`` cell, brought back when the cell's cluster ended: finished,
    holding its value, or the error that failed or cancelled it.

    A later ``%%flyte_dask`` cell that uses it gets a real future on its own cluster.
    """

    def __init__(
        self,
        key: Any,
        status: str,
        value: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self.key = key
        self.status = status  # "finished", "error" or "cancelled"
        self._value = value
        self._exception = exception

    @property
    def type(self) -> type | None:
        return type(self._value) if self.status == "finished" else None

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def result(self, timeout: float | None = None) -> Any:
        if self._exception is not None:
            raise self._exception
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._exception

    def traceback(self, timeout: float | None = None) -> None:
        return None

    def add_done_callback(self, fn: Callable[[DoneFuture], Any]) -> None:
        fn(self)

    def release(self) -> None:
        return None

    def __repr__(self) -> str:
        kind = f", type: {type(self._value).__name__}" if self.status == "finished" else ""
        return f"<DoneFuture: {self.status}{kind}, key: {self.key}>"


@dataclass
class Materialized:
    """Outputs with their dask data in them, and what the summary says about it."""

    values: dict[str, Any]
    described: list[str] = field(default_factory=list)  # "futs (5 futures)", ...
    nbytes: int = 0


def materialize(values: dict[str, Any], client: Any, limit: int) -> Materialized:
    """Futures and persisted collections among ``values``, with their data in the kernel.

    More than ``limit`` bytes of dask data raise ``MemoryError`` (the cell fails, its cluster
    still running) with a message that says what to do.
    """
    futures: dict[Any, Any] = {}
    collections: dict[int, Any] = {}
    counts: dict[str, tuple[int, int]] = {}
    for name, value in values.items():
        before = len(futures), len(collections)
        _find_futures(value, futures, collections)
        counts[name] = (len(futures) - before[0], len(collections) - before[1])
    if not futures:
        return Materialized(values)
    from distributed import wait

    # Futures of a client the cell closed are gone with it, as in a plain notebook.
    alive = {k: f for k, f in futures.items() if getattr(f.client, "status", "") == "running"}
    wait(list(alive.values()))
    finished = [k for k, f in alive.items() if f.status == "finished"]
    sizes = client.nbytes(finished, summary=False) if finished else {}
    total = sum(int(v) for v in sizes.values())
    names = [n for n, found in counts.items() if any(found)]
    if limit and total > limit:
        raise MemoryError(
            f"{', '.join(names)} hold {size_text(total)} of dask data on the cell's cluster, "
            f"more than the notebook kernel can take back ({size_text(limit)}, half its "
            "memory): reduce it in the cell (compute a smaller result, or write it to storage, "
            "e.g. to_parquet), or del these names before the cell ends"
        )
    done = _done_futures(futures, finished)
    rebuilt = {
        ident: _rebuild(collection, _data_nodes(collection, done), full=True)
        for ident, collection in collections.items()
    }
    return Materialized(
        values={name: _replace(value, done, rebuilt, 0) for name, value in values.items()},
        described=[_described(name, *counts[name]) for name in names],
        nbytes=total,
    )


def place(values: tuple[Any, ...], client: Any) -> tuple[Any, ...]:
    """``values`` with the dask state of earlier cells put on ``client``'s cluster."""
    found: dict[Any, DoneFuture] = {}
    collections: dict[int, tuple[Any, dict[Any, Any]]] = {}
    for value in values:
        _find_placeable(value, found, collections)
    if not found and not collections:
        return values
    data = {k: f._value for k, f in found.items() if f.status == "finished"}
    for _, held in collections.values():
        data.update(held)
    futures: dict[Any, Any] = {}
    if data:  # scattered under their own keys, so the keys stay what the cell saw
        futures.update(client.scatter(data, broadcast=False, hash=False))
    for key, done in found.items():
        if done.status != "finished":  # the same error, raised on the cluster
            future = client.submit(_raise, done._exception, key=key, pure=False)
            if done.status == "cancelled":
                future.cancel()
            futures[key] = future
    placed = {
        ident: _rebuild(collection, {k: futures[k] for k in held})
        for ident, (collection, held) in collections.items()
    }
    return tuple(_replace(value, futures, placed, 0) for value in values)


def _raise(error: BaseException) -> None:
    raise error


def _done_futures(futures: dict[Any, Any], finished: list[Any]) -> dict[Any, DoneFuture]:
    gathered: dict[Any, Any] = {}
    by_client: dict[int, list[Any]] = {}
    for key in finished:
        by_client.setdefault(id(futures[key].client), []).append(futures[key])
    for group in by_client.values():  # a client gathers only its own futures
        results = group[0].client.gather(group)
        gathered.update((f.key, v) for f, v in zip(group, results, strict=True))
    done: dict[Any, DoneFuture] = {}
    for key, future in futures.items():
        if key in gathered:
            done[key] = DoneFuture(key, "finished", gathered[key])
        else:
            status = "cancelled" if future.status == "cancelled" else "error"
            done[key] = DoneFuture(key, status, exception=_exception_of(future))
    return done


def _exception_of(future: Any) -> BaseException:
    try:
        error = future.exception(timeout=5)
    except BaseException as cancelled:  # a cancelled future raises instead
        return cancelled
    return error if isinstance(error, BaseException) else RuntimeError(str(error))


def _described(name: str, futures: int, collections: int) -> str:
    """``x (persisted collection)``, ``futs (5 futures)``: for the summary."""
    if collections:
        what = f"{collections} persisted collections" if collections > 1 else ""
        what = what or "persisted collection"
    else:
        what = "future" if futures == 1 else f"{futures} futures"
    return f"{name} ({what})"


def is_collection(value: object) -> bool:
    """A dask collection (array, bag, dataframe, delayed...), checked without importing dask."""
    return hasattr(type(value), "__dask_graph__") and not isinstance(value, type)


def _future_keys(collection: Any) -> list[Any]:
    from distributed import futures_of

    return [f.key for f in futures_of(collection)]


def _leaves(value: Any, depth: int = 0) -> Iterator[Any]:
    """``value``, or the non-scalar items inside it when it is a container (to _MAX_DEPTH)."""
    if isinstance(value, _CONTAINERS) and depth < _MAX_DEPTH:
        for item in value.values() if isinstance(value, dict) else value:
            if not isinstance(item, _SCALARS):
                yield from _leaves(item, depth + 1)
    else:
        yield value


def _find_futures(value: Any, futures: dict[Any, Any], collections: dict[int, Any]) -> None:
    for leaf in _leaves(value):
        if dask_kind(leaf) == "future":
            futures.setdefault(leaf.key, leaf)
        elif is_collection(leaf):
            from distributed import futures_of

            held = futures_of(leaf)
            if held:
                collections[id(leaf)] = leaf
                for future in held:
                    futures.setdefault(future.key, future)


def _find_placeable(
    value: Any, found: dict[Any, DoneFuture], collections: dict[int, tuple[Any, dict[Any, Any]]]
) -> None:
    for leaf in _leaves(value):
        if isinstance(leaf, DoneFuture):
            found.setdefault(leaf.key, leaf)
        elif is_collection(leaf):
            data = _brought_back_data(leaf)
            if data:
                collections[id(leaf)] = (leaf, data)


def _brought_back_data(collection: Any) -> dict[Any, Any]:
    """key -> value for a collection that a cell persisted and brought back (its output keys
    hold data), else {}: lazy collections are left as they are."""
    from dask._task_spec import Alias, DataNode
    from dask.core import flatten

    expr = getattr(collection, "expr", None)
    if expr is not None:  # dask.dataframe: only a graph brought back (FromGraph) holds data
        if type(expr).__name__ != "FromGraph":
            return {}
        graph = dict(expr.operand("layer"))
        keys = list(expr.operand("keys"))
    else:
        graph_object = collection.__dask_graph__()
        layers = getattr(graph_object, "layers", None)
        if layers is not None:  # one materialized layer: what _rebuild made
            if len(layers) != 1:
                return {}
            (layer,) = layers.values()
            if type(layer).__name__ != "MaterializedLayer":
                return {}
            graph = dict(layer.mapping)
        else:
            graph = dict(graph_object)
        keys = list(flatten(collection.__dask_keys__()))
    data = {}
    for key in keys:
        node, seen = graph.get(key), 0
        while isinstance(node, Alias) and seen < 10:
            key, node, seen = node.target, graph.get(node.target), seen + 1
        if not isinstance(node, DataNode):
            return {}
        data[key] = node.value
    return data


def _data_nodes(collection: Any, done: dict[Any, DoneFuture]) -> dict[Any, Any]:
    """The collection's futures as data, for a graph that holds its data in the kernel."""
    from dask._task_spec import DataNode

    return {key: DataNode(key, done[key].result()) for key in _future_keys(collection)}


def _rebuild(collection: Any, replaced: dict[Any, Any], full: bool = False) -> Any:
    """The collection of the same type with some of its graph's entries replaced. ``full``
    keeps the rest of the graph (a lazy collection built on persisted data)."""
    graph = {**dict(collection.__dask_graph__()), **replaced} if full else replaced
    rebuild, args = collection.__dask_postpersist__()
    return rebuild(graph, *args)


def _replace(value: Any, futures: dict[Any, Any], collections: dict[int, Any], depth: int) -> Any:
    """``value`` with futures (by key) and collections (by id) replaced; unchanged containers
    are the same objects."""
    if dask_kind(value) == "future" or isinstance(value, DoneFuture):
        return futures.get(value.key, value)
    if id(value) in collections:
        return collections[id(value)]
    if not isinstance(value, _CONTAINERS) or depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        new = {k: _replace(v, futures, collections, depth + 1) for k, v in value.items()}
        changed = any(new[k] is not v for k, v in value.items())
        return new if changed and type(value) is dict else value
    items = [_replace(v, futures, collections, depth + 1) for v in value]
    changed = any(new is not old for new, old in zip(items, value, strict=True))
    return type(value)(items) if changed and type(value) in _CONTAINERS else value
