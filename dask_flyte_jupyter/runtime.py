"""What runs inside the task, around the cell's own code: in the kernel for a local run, in the
Flyte job runner for a remote one.

``start(settings)`` opens a ``Session`` before the cell's first statement and ``Session.stop``
closes it after the last, whatever happens:

- the cell's cluster is the cell's dask: a client on it is the default scheduler, so
  ``.compute()``, ``dask.compute``, ``get_client()`` and ``Client()`` all reach its workers;
  ``Client(...)`` / ``LocalCluster(...)`` with arguments connect to it too, with a note naming
  the flag that sets the shape. The notebook's own clients are left alone and are the default
  again afterwards (the dask config is restored);
- notebook clients and clusters the cell names are bound to the cell's own (``handle``);
- inputs that hold dask state from an earlier cell (finished futures, persisted collections
  brought back) are put on this cluster (``place``);
- outputs are collected before the cluster stops (``collect``): futures come back as
  ``DoneFuture``, persisted collections with their data, modules by name; clients and clusters
  never. What the kernel needs to know about that travels as one JSON report.

Self-contained on purpose: the standard library at module level, dask and distributed imported
where used, nothing from this package but ``dask_state`` and ``timing``, which are shipped the
same way. Remote runs ship these modules by value inside the task's pickle
(``cloudpickle.register_pickle_by_value``), so the image needs no dask_flyte_jupyter.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from .dask_state import dask_kind, materialize, place

#: Name of the output carrying the report (JSON) of a run.
REPORT_OUTPUT = "flyte_dask_report"
#: At most this much of what a remote cell prints comes back to the notebook.
STDOUT_LIMIT = 1 << 20
# Client arguments that ask for a cluster shape, and the flag that sets it instead.
_SHAPE_FLAGS = {
    "n_workers": "--workers",
    "threads_per_worker": "--worker-cpu",
    "memory_limit": "--worker-mem",
    "processes": "--workers",
}


class _Done:
    """What ``CellCluster.close()`` returns: nothing to wait for, awaitable by a client too."""

    def __await__(self) -> Iterator[None]:
        return iter(())

    def __repr__(self) -> str:
        return ""


class CellCluster:
    """The cell's own cluster as the cell's code sees it: it was started for the cell with the
    shape of its flags, and it ends with the cell.

    A notebook cluster the cell names, and any ``LocalCluster(...)`` the cell creates, is this
    object. What it cannot do (change its shape) is said in one sentence.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self.scheduler_address = session.address
        self.name = "the cell's own cluster"
        from distributed.core import Status

        self.status = Status.running

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard of the cell's scheduler, from the scheduler itself."""
        from distributed.comm.addressing import get_address_host
        from distributed.utils import format_dashboard_link

        services = self._session.client.scheduler_info(n_workers=0).get("services", {})
        port = services.get("dashboard")
        host = get_address_host(self.scheduler_address)
        return str(format_dashboard_link(host, port)) if port else None

    @property
    def workers(self) -> int:
        return int(self._session.settings.get("workers", 1))

    def scale(self, n: int | None = None, **kwargs: Any) -> None:
        if n is not None and n != self.workers:
            self._session.note(
                f"cluster.scale({n}) ignored: this cell's cluster has {self.workers} workers "
                f"for the whole cell; ask for them with --workers {n}"
            )

    def adapt(self, *args: Any, **kwargs: Any) -> None:
        self._session.note(
            "cluster.adapt(...) ignored: this cell's cluster has the fixed shape of its flags"
        )

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> None:
        if n_workers > self.workers:
            raise ValueError(
                f"this cell's cluster has {self.workers} workers, so waiting for {n_workers} "
                f"would never end: ask for them with --workers {n_workers}"
            )
        self._session.client.sync(
            self._session.client._wait_for_workers, n_workers, timeout=timeout
        )

    def get_client(self) -> Any:
        return self._session.client

    def close(self, *args: Any, **kwargs: Any) -> _Done:
        return _Done()  # it closes when the cell ends

    def __await__(self) -> Any:
        # `await LocalCluster(asynchronous=True)` in the cell gives this cluster.
        return _ready(self).__await__()

    def __enter__(self) -> CellCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> CellCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"<CellCluster: {self.workers} workers, scheduler {self.scheduler_address}>"

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(repr(self))}</p>"


async def _ready(value: Any) -> Any:
    return value


class _Tee(io.TextIOBase):
    """The task's stdout while a remote cell runs: written through and kept (bounded), so the
    notebook can show what the cell printed."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.kept: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        if self.size < STDOUT_LIMIT:
            self.kept.append(text[: STDOUT_LIMIT - self.size])
            self.size += len(text)
        return int(self.stream.write(text))

    def flush(self) -> None:
        self.stream.flush()


class Session:
    """The cell's dask while its code runs; ``settings`` are the kernel's, fixed at build time."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.notes: list[str] = []
        self.address = ""
        self.client: Any = None
        self.cluster: CellCluster | None = None
        self._undo: list[Callable[[], None]] = []
        self._tee: _Tee | None = None
        self._figures: set[int] = set()

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # ---- start and stop ------------------------------------------------------------------

    def start(self) -> Session:
        import os

        import dask
        from distributed import Client

        self.address = str(
            dask.config.get("scheduler-address", None)
            or os.environ.get("DASK_SCHEDULER_ADDRESS", "")
        )
        if not self.address:
            raise RuntimeError("no dask cluster was started for this cell")
        saved = _config_copy(dask.config.config)
        self._undo.append(lambda: _config_restore(dask.config.config, saved))
        self.cluster = CellCluster(self)
        self.client = Client(self.cluster, set_as_default=True)
        self._undo.append(self._close_clients)
        self._redirect_clusters()
        if self.settings.get("remote"):
            self._tee = _Tee(sys.stdout)
            sys.stdout = self._tee  # type: ignore[assignment]
            self._undo.append(self._untee)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            self._figures = set(pyplot.get_fignums())
        return self

    def stop(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            with contextlib.suppress(Exception):  # the rest of the cleanup must still run
                undo()

    def _untee(self) -> None:
        if sys.stdout is self._tee and self._tee is not None:
            sys.stdout = self._tee.stream

    def _close_clients(self) -> None:
        from distributed.client import _global_clients

        for client in list(_global_clients.values()):
            scheduler = getattr(client, "scheduler", None)
            if getattr(scheduler, "address", None) == self.address or client is self.client:
                client.close()
        self.client.close()

    def _redirect_clusters(self) -> None:
        """While the cell runs, every new client and ``LocalCluster`` is the cell's own."""
        from distributed.client import Client

        session = self
        original_init = Client.__init__

        def client_init(client: Any, address: Any = None, *args: Any, **kwargs: Any) -> None:
            address, kwargs = session._client_arguments(address, args, kwargs)
            original_init(client, address, **kwargs)

        Client.__init__ = client_init  # type: ignore[assignment]

        def undo() -> None:
            Client.__init__ = original_init  # type: ignore[method-assign]

        self._undo.append(undo)
        # The class itself stays: only the names the cell imports it by are replaced.
        for module_name in _CLUSTER_MODULES:
            module = sys.modules.get(module_name)
            real = getattr(module, "LocalCluster", None)
            if module is not None and isinstance(real, type):
                _setter(module, "LocalCluster", self.cluster_class(real))()
                self._undo.append(_setter(module, "LocalCluster", real))

    def cluster_class(self, real: type) -> Any:
        """A stand-in for a cluster class: making one gives the cell's own cluster, with a note
        saying where the shape comes from."""
        session = self

        def make(*args: Any, **kwargs: Any) -> CellCluster:
            shown = ", ".join(
                [*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())]
            )
            flags = _flags_for(kwargs)
            session.note(
                f"{real.__name__}({shown}) in the cell is this cell's own cluster"
                + (f"; its shape comes from the flags ({flags})" if flags else "")
            )
            assert session.cluster is not None
            return session.cluster

        make.__name__ = make.__qualname__ = real.__name__
        return make

    def _client_arguments(
        self, address: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """``Client(...)`` arguments that connect to this cell's cluster, with a note for what
        was asked instead."""
        if args:  # loop, timeout, ... by position: keep them by name
            names = ("loop", "timeout", "set_as_default", "scheduler_file", "security")
            kwargs = {**dict(zip(names, args, strict=False)), **kwargs}
        asked = {k: kwargs.pop(k) for k in list(kwargs) if k in _SHAPE_FLAGS}
        extra = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if k not in _CLIENT_KEEPS and not k.startswith("_")
        }
        if kwargs.get("scheduler_file"):
            kwargs.pop("scheduler_file")
            self.note("Client(scheduler_file=...) in the cell connects to this cell's cluster")
        if asked or extra:
            shown = ", ".join(f"{k}={v!r}" for k, v in {**asked, **extra}.items())
            flags = _flags_for(asked)
            self.note(
                f"Client({shown}) in the cell connects to this cell's own cluster"
                + (f"; its shape comes from the flags ({flags})" if flags else "")
            )
        if isinstance(address, str) and address and address != self.address:
            self.note(f"Client({address!r}) in the cell connects to this cell's own cluster")
        cluster = isinstance(address, CellCluster) or dask_kind(address) == "cluster"
        if address is None or isinstance(address, str) or cluster:
            address = self.cluster
        return address, kwargs

    # ---- the cell's names ----------------------------------------------------------------

    def handle(self, name: str, kind: str) -> Any:
        """What a notebook client or cluster named ``name`` means inside the cell: its own."""
        return self.client if kind == "client" else self.cluster

    def place(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """Inputs with the dask state of earlier cells put on this cluster: ``DoneFuture`` as
        real futures (same keys), persisted collections brought back as persisted again; a
        cluster class the notebook imported makes this cell's cluster."""
        values = tuple(self.cluster_class(v) if _is_cluster_class(v) else v for v in values)
        return place(values, self.client)

    # ---- outputs -------------------------------------------------------------------------

    def collect(
        self,
        scope: dict[str, Any],
        module_scope: dict[str, Any],
        outputs_type: Any,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> Any:
        """The cell's outputs, materialized while its cluster still runs, and the report."""
        values: dict[str, Any] = {}
        report: dict[str, Any] = {
            "dropped": {},
            "boxed": [],
            "modules": {},
            "imports": [],
        }
        for name in self.settings.get("imports", []):
            if name in scope or name in module_scope:
                report["imports"].append(name)
        for name in self.settings["outputs"]:
            if name in scope:
                value = scope[name]
            elif name in module_scope:
                value = module_scope[name]
            else:
                report["dropped"][name] = "unbound"
                values[name] = None
                continue
            kind = "cluster" if isinstance(value, CellCluster) else dask_kind(value)
            if kind in ("client", "cluster"):
                report["dropped"][name] = kind
                values[name] = None
            elif isinstance(value, types.ModuleType):
                report["modules"][name] = value.__name__
                values[name] = None
            else:
                values[name] = value
        values = self._materialize(values, report)
        for name, value in values.items():
            if isinstance(value, tuple) and name not in report["dropped"]:
                report["boxed"].append(name)  # flytekit refuses tuple output values
                values[name] = [value]
        report["notes"] = list(self.notes)
        # Remotely, figures the kernel would show (inline backend) come back as PNG; locally
        # the figures are the kernel's own, shown by its backend as in any cell.
        report["figures"] = self._figures_png() if self.settings.get("figures") else []
        if self._tee is not None:
            report["stdout"] = "".join(self._tee.kept)
        more = extra() if extra is not None else {}  # remote: the cluster's versions
        return outputs_type(**values, **{REPORT_OUTPUT: json.dumps(report)}, **more)

    def _materialize(self, values: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
        """Futures and persisted collections among the outputs, with their data in the kernel."""
        limit = int(self.settings.get("limit") or 0)
        materialized = materialize(values, self._live_client(), limit)
        report["materialized"] = materialized.described
        report["materialized_bytes"] = materialized.nbytes
        return materialized.values

    def _live_client(self) -> Any:
        """The session's client, or a new one if the cell closed it."""
        if self.client.status != "running":
            from distributed import Client

            self.client = Client(self.cluster, set_as_default=False)
        return self.client

    def _figures_png(self) -> list[str]:
        """Figures the cell drew and did not show, as PNG (base64)."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return []
        shown = []
        for number in pyplot.get_fignums():
            if number in self._figures:
                continue
            figure = pyplot.figure(number)
            buffer = io.BytesIO()
            try:
                figure.savefig(buffer, format="png", bbox_inches="tight")
                shown.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
            except Exception:
                pass
            pyplot.close(figure)
        return shown


#: Where cells import ``LocalCluster`` from.
_CLUSTER_MODULES = (
    "distributed",
    "distributed.deploy",
    "distributed.deploy.local",
    "dask.distributed",
)
_CLIENT_KEEPS = frozenset(
    {
        "timeout",
        "set_as_default",
        "asynchronous",
        "name",
        "heartbeat_interval",
        "serializers",
        "deserializers",
        "extensions",
        "direct_to_workers",
        "connection_limit",
        "security",
        "loop",
        "scheduler_file",
    }
)


def _call_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``1, n_workers=4``: the arguments of a call as the cell wrote them."""
    return ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])


def _setter(target: Any, name: str, value: Any) -> Callable[[], None]:
    return lambda: setattr(target, name, value)


def _flags_for(asked: dict[str, Any]) -> str:
    """``--workers 4`` for ``n_workers=4``: the flag that asks for what the arguments asked."""
    parts = []
    if isinstance(asked.get("n_workers"), int):
        parts.append(f"--workers {asked['n_workers']}")
    if isinstance(asked.get("threads_per_worker"), int):
        parts.append(f"--worker-cpu {asked['threads_per_worker']}")
    if isinstance(asked.get("memory_limit"), str):
        parts.append(f"--worker-mem {asked['memory_limit']}")
    if not parts and asked:
        parts = sorted({_SHAPE_FLAGS[k] for k in asked if k in _SHAPE_FLAGS})
    return ", ".join(parts)


def _config_copy(config: dict[str, Any]) -> dict[str, Any]:
    return {k: _config_copy(v) if isinstance(v, dict) else v for k, v in config.items()}


def _config_restore(config: dict[str, Any], saved: dict[str, Any]) -> None:
    """Puts dask's config back in place (the same dict object: dask holds it)."""
    config.clear()
    config.update(saved)


def _is_cluster_class(value: object) -> bool:
    """``LocalCluster`` (or another cluster class) imported by the notebook and used here."""
    return isinstance(value, type) and any(
        f"{k.__module__}.{k.__qualname__}" == "distributed.deploy.cluster.Cluster"
        for k in value.__mro__
    )


def start(settings: dict[str, Any]) -> Session:
    """Opens the session of one run of the cell (called by the task's first statement)."""
    return Session(settings).start()
