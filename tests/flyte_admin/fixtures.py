"""pytest fixture of the Flyte Admin stand-in (TEST DOUBLE).

Use it from a conftest: ``from flyte_admin.fixtures import flyte_admin  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FlyteAdminStandIn


@pytest.fixture
def flyte_admin() -> Iterator[FlyteAdminStandIn]:
    """A started Flyte Admin stand-in; closed (every process killed) after the test."""
    standin = FlyteAdminStandIn()
    try:
        yield standin
    finally:
        standin.close()
