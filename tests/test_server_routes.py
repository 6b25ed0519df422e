"""Server routes of the extension: it adds none, so none can be reached without authentication.

The sidebar talks to the kernel over a comm (``dask_flyte_jupyter/comm.py``), through the Jupyter
server's own authenticated kernel websocket; it has no HTTP handler of its own. These tests fail
as soon as something makes the package a Jupyter server extension, so that whoever adds a route
also adds the check that it refuses unauthenticated requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import dask_flyte_jupyter

ROOT = Path(__file__).resolve().parent.parent
SERVER_HOOKS = (
    "_jupyter_server_extension_points",
    "_jupyter_server_extension_paths",
    "_load_jupyter_server_extension",
    "load_jupyter_server_extension",
)


def test_the_package_declares_no_server_extension() -> None:
    for hook in SERVER_HOOKS:
        assert not hasattr(dask_flyte_jupyter, hook), hook
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shared = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert not [dest for dest in shared.values() if dest.startswith("etc/jupyter")]
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert "discovery" not in package["jupyterlab"]


def test_the_jupyter_server_enables_no_extension_of_ours(tmp_path: Path) -> None:
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter"), "server", "extension", "list"],
        env={**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    text = listing.stdout + listing.stderr
    assert "jupyterlab" in text  # the listing works: JupyterLab itself is a server extension
    assert "dask_flyte_jupyter" not in text
