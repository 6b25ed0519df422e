"""Dask preload of the Flyte Admin stand-in: make this process report fake versions (TEST DOUBLE).

The stand-in's runner passes ``--preload <this file>`` to ``dask scheduler`` / ``dask worker`` when
``FlyteAdminStandIn.fake_versions`` is set, with the versions as JSON in
``FLYTE_ADMIN_STANDIN_FAKE_VERSIONS``.  Everything that asks distributed for versions (worker
registration, ``Client.get_versions()``, the scheduler's mismatch warning) then sees them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import distributed.versions as _versions

_FAKE: dict[str, str] = json.loads(os.environ.get("FLYTE_ADMIN_STANDIN_FAKE_VERSIONS", "{}"))
# distributed imports a preload more than once per process (nanny and worker, copies in the
# worker's local directory): keep the real functions from the first import only.
_real_package_info, _real_system_info = getattr(
    _versions,
    "_standin_real_functions",
    (_versions.get_package_info, _versions.get_system_info),
)
_versions._standin_real_functions = (_real_package_info, _real_system_info)  # type: ignore[attr-defined]


def _package_info(pkgs: Iterable[str]) -> dict[str, str | None]:
    info = _real_package_info(pkgs)
    info.update(_FAKE)
    return info


def _system_info() -> dict[str, Any]:
    info = _real_system_info()
    if "python" in _FAKE:
        info["python"] = _FAKE["python"]
    return info


_versions.get_package_info = _package_info
_versions.get_system_info = _system_info
