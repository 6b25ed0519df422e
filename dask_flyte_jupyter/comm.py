"""The JupyterLab sidebar's channel into the kernel: a comm with a typed request/reply envelope.

``%load_ext dask_flyte_jupyter`` in an ipykernel registers the comm target ``dask_flyte_jupyter``
and announces itself by opening (and at once closing) a comm to the same target name, so that a
sidebar already showing this kernel learns that the extension is now loaded. The sidebar talks
over a comm that it opens itself; a kernel without the extension closes that comm at once, which
is how the sidebar knows to offer loading it.

Every message is a JSON object with a ``type``; a reply repeats the request's ``request_id``;
messages the kernel pushes by itself have ``request_id`` null.

===========================  ===============================================================
sidebar -> kernel            kernel -> sidebar
===========================  ===============================================================
``{"type": "hello"}``        ``{"type": "hello", "protocol": 1, "version": "0.1.0",
                             "defaults": {...}}``
``{"type": "runs"}``         ``{"type": "runs", "runs": [RunHandle.to_record(), ...],
                             "defaults": {...}}``
anything else                ``{"type": "error", "message": "..."}``
(nothing)                    ``{"type": "runs", "request_id": null, "runs": [...],
                             "defaults": {...}}`` when a run starts, changes phase or ends (at
                             most ~4 a second while a run reports progress)
(nothing)                    ``{"type": "defaults", "request_id": null, "defaults": {...}}``
                             when ``%flyte_dask_config`` or a picker changes the defaults
(nothing)                    ``{"type": "spare", "request_id": null, "spare": {...} | null}``
                             when the spare cluster starts, gets ready or is shut down
===========================  ===============================================================

``spare`` is the spare cluster waiting for the next cell (``backends/spare.py``), e.g.
``{"state": "ready", "text": "spare cluster: 2 workers × 1 thread, ready · shuts down after
10 min idle"}``; a ``runs`` message carries it too while there is one (no field: none).

``defaults`` is what a cell without flags gets in this kernel, for the sidebar's placeholders:
flag name -> the value as it would be written on the line, ``true``/``false`` for a switch, or
null when the flag is unset (e.g. ``{"workers": "1", "worker-mem": null, "remote": false}``).
It was added within protocol 1: a sidebar ignores fields and pushes it does not know, and a
sidebar that gets no ``defaults`` falls back to the built-in ones.

The run history is the magics instance's ``runs`` list (oldest first). Nothing here runs at
import time, and nothing is imported from ``comm`` outside an ipykernel.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from . import __version__
from .backends.spare import spare_clusters

#: Comm target name, the same on both sides.
TARGET = "dask_flyte_jupyter"
#: Version of the envelope; the sidebar refuses a kernel that speaks another one.
PROTOCOL = 1
#: Shortest interval between two pushes caused by progress events of a run.
PUSH_INTERVAL = 0.25


def _magics(shell: Any) -> Any:
    """The FlyteDaskMagics instance registered in ``shell`` (None when not loaded)."""
    return shell.magics_manager.registry.get("FlyteDaskMagics")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def defaults_record(kernel_defaults: Any) -> dict[str, Any]:
    """The kernel's defaults for the next cell, by the flags the sidebar manages."""
    spec = kernel_defaults.spec
    return {
        "workers": _text(spec.workers.count),
        "worker-cpu": spec.workers.cpu,
        "worker-mem": spec.workers.mem,
        "worker-gpu": _text(spec.workers.gpu),
        "scheduler-cpu": spec.scheduler.cpu,
        "scheduler-mem": spec.scheduler.mem,
        "image": spec.image,
        "interruptible": bool(spec.interruptible),
        "cache": bool(spec.cache),
        "remote": bool(kernel_defaults.remote),
        "project": kernel_defaults.project or None,
        "domain": kernel_defaults.domain or None,
    }


#: The KernelDefaults traits whose change the sidebar is told about.
_DEFAULTS_TRAITS = ["spec", "remote", "project", "domain"]


class ObservedRuns(list):  # type: ignore[type-arg]
    """The run history, calling ``on_append`` for each run added to it."""

    def __init__(self, runs: Iterable[Any], on_append: Callable[[Any], None]) -> None:
        super().__init__(runs)
        self.on_append = on_append

    def append(self, run: Any) -> None:
        super().append(run)
        self.on_append(run)


class SidebarChannel:
    """The open comms of one kernel's sidebars, and what they are told."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.comms: list[Any] = []
        self._last_push = 0.0
        #: Records of ended runs, made once: every push sends the whole history, which would
        #: otherwise cost more with each run the kernel has made (``_record``).
        self._records: weakref.WeakKeyDictionary[Any, tuple[str, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    # ---- comm plumbing -------------------------------------------------------------------

    def attach(self, comm: Any) -> None:
        self.comms.append(comm)
        comm.on_msg(self._on_msg)
        comm.on_close(lambda _msg: self._forget(comm))

    def _forget(self, comm: Any) -> None:
        if comm in self.comms:
            self.comms.remove(comm)

    def open_from_frontend(self, comm: Any, msg: dict[str, Any]) -> None:
        """Comm target: a sidebar opened a comm."""
        self.attach(comm)
        data = msg.get("content", {}).get("data") or {}
        comm.send(self.hello(data.get("request_id")))

    def announce(self) -> None:
        """Tell the front end that the extension is now loaded in this kernel.

        The comm is closed at once: it only says hello. A sidebar answers by opening its own
        comm, which then carries the requests, the replies and the pushes.
        """
        from comm import create_comm

        create_comm(target_name=TARGET, data=self.hello(None)).close()

    def _on_msg(self, msg: dict[str, Any]) -> None:
        data = msg.get("content", {}).get("data") or {}
        comm_id = msg.get("content", {}).get("comm_id")
        comm = next((c for c in self.comms if c.comm_id == comm_id), None)
        if comm is not None:
            comm.send(self.reply(data))

    # ---- the envelope --------------------------------------------------------------------

    def hello(self, request_id: Any) -> dict[str, Any]:
        message = {
            "type": "hello",
            "request_id": request_id,
            "protocol": PROTOCOL,
            "version": __version__,
        }
        return self._with_defaults(message)

    def runs_message(self, request_id: Any) -> dict[str, Any]:
        magics = _magics(self.shell)
        runs = list(magics.runs) if magics is not None else []
        message = {
            "type": "runs",
            "request_id": request_id,
            "runs": [self._record(r) for r in runs],
        }
        spare = spare_clusters().describe()
        if spare is not None:
            message["spare"] = spare
        return self._with_defaults(message)

    def _record(self, run: Any) -> dict[str, Any]:
        """``run.to_record()``; made once for a run that has ended (its record no longer
        changes), again while it runs."""
        from .run import FINAL

        if run.status not in FINAL:
            return run.to_record()  # type: ignore[no-any-return]
        kept = self._records.get(run)
        if kept is None or kept[0] != run.status:
            kept = self._records[run] = (run.status, run.to_record())
        return kept[1]

    def _with_defaults(self, message: dict[str, Any]) -> dict[str, Any]:
        magics = _magics(self.shell)
        if magics is not None:
            message["defaults"] = defaults_record(magics.kernel_defaults)
        return message

    def reply(self, data: Any) -> dict[str, Any]:
        """The answer to one request from a sidebar."""
        if not isinstance(data, dict):
            return {"type": "error", "request_id": None, "message": "a message must be an object"}
        request_id = data.get("request_id")
        kind = data.get("type")
        if kind == "runs":
            return self.runs_message(request_id)
        if kind == "hello":
            return self.hello(request_id)
        return {
            "type": "error",
            "request_id": request_id,
            "message": f"unknown request type {kind!r} (known: hello, runs)",
        }

    # ---- pushes --------------------------------------------------------------------------

    def push(self) -> None:
        if not self.comms:
            return
        message = self.runs_message(None)
        self._last_push = time.monotonic()
        for comm in list(self.comms):
            comm.send(message)

    def on_new_run(self, run: Any) -> None:
        listeners = getattr(run, "listeners", None)
        if isinstance(listeners, list):
            listeners.append(self.on_run_event)
        self.push()

    def on_run_event(self, run: Any, event: str) -> None:
        changed = event.startswith(("status:", "phase:"))
        if changed or time.monotonic() - self._last_push >= PUSH_INTERVAL:
            self.push()

    def on_defaults_changed(self, _change: Any = None) -> None:
        magics = _magics(self.shell)
        if not self.comms or magics is None:
            return
        message = {
            "type": "defaults",
            "request_id": None,
            "defaults": defaults_record(magics.kernel_defaults),
        }
        for comm in list(self.comms):
            comm.send(message)

    def on_spare_changed(self) -> None:
        """Called from the spare cluster's own thread too: only the spare's own record is sent
        then (a run's record reads the user's values)."""
        message = {"type": "spare", "request_id": None, "spare": spare_clusters().describe()}
        for comm in list(self.comms):
            comm.send(message)

    def observe(self, magics: Any) -> None:
        """Push the run list whenever the magics instance records a new run, the defaults
        whenever they change, and the spare cluster whenever it comes or goes."""
        if not isinstance(magics.runs, ObservedRuns) or magics.runs.on_append != self.on_new_run:
            magics.runs = ObservedRuns(magics.runs, self.on_new_run)
        # traitlets keeps a handler once, however often %reload_ext registers it.
        magics.kernel_defaults.observe(self.on_defaults_changed, names=_DEFAULTS_TRAITS)
        listeners = spare_clusters().listeners
        if self.on_spare_changed not in listeners:
            listeners.append(self.on_spare_changed)


def register_comm(shell: Any) -> SidebarChannel | None:
    """Called by ``load_ipython_extension``: serve the sidebar when ``shell`` is an ipykernel.

    Loading twice (``%reload_ext``) keeps one channel and its open comms.
    """
    if getattr(shell, "kernel", None) is None:
        return None  # a terminal IPython: there is no front end to talk to
    from comm import get_comm_manager

    manager = get_comm_manager()
    existing = getattr(manager.targets.get(TARGET), "__self__", None)
    channel = existing if isinstance(existing, SidebarChannel) else SidebarChannel(shell)
    manager.register_target(TARGET, channel.open_from_frontend)
    magics = _magics(shell)
    if magics is not None:
        channel.observe(magics)
    channel.announce()
    return channel
