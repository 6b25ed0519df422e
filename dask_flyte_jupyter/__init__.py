"""Run a notebook cell as a Flyte dask task on its own dedicated dask cluster.

``%load_ext dask_flyte_jupyter`` registers the ``%%flyte_dask`` magic. Loading stays fast:
flytekit and distributed are imported on the first run.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    from .comm import register_comm
    from .magics import FlyteDaskMagics

    magics = FlyteDaskMagics(ipython)
    ipython.register_magics(magics)
    magics.follow_spare_settings()  # a spare cluster for the next cell, unless turned off
    register_comm(ipython)  # serves the JupyterLab sidebar when this is an ipykernel


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension that serves the runs' reports (``server.py``)."""
    return [{"module": "dask_flyte_jupyter.server"}]


def __getattr__(name: str) -> Any:
    """``dask_flyte_jupyter.ResourcePicker`` (and the rest) without importing ipywidgets or
    dask at ``%load_ext``."""
    if name == "ResourcePicker":
        from .picker import ResourcePicker

        return ResourcePicker
    if name == "DoneFuture":  # a future a cell brought back
        from .dask_state import DoneFuture

        return DoneFuture
    if name == "KernelDefaults":
        from .defaults import KernelDefaults

        return KernelDefaults
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def unload_ipython_extension(ipython: Any) -> None:
    """Shuts the spare cluster down and starts no more (runs leave nothing else running)."""
    from .backends.spare import spare_clusters

    spares = spare_clusters()
    spares.configure(False, spares.idle_timeout)
