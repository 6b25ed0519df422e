"""pytest fixtures of the Flyte Admin stand-in (TEST DOUBLE).

Use them from a conftest or a test module:
``from flyte_admin.fixtures import admin, flyte_admin, standin_image_builder  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .images import (
    STANDIN_REGISTRY,
    ImageStore,
    StandInImageBuilder,
    register_builder,
    unregister_builder,
)
from .server import FlyteAdminStandIn


@pytest.fixture
def flyte_admin() -> Iterator[FlyteAdminStandIn]:
    """A started Flyte Admin stand-in; closed (every process killed) after the test."""
    standin = FlyteAdminStandIn()
    try:
        yield standin
    finally:
        standin.close()


@pytest.fixture(scope="module")
def admin() -> Iterator[FlyteAdminStandIn]:
    """One stand-in for a whole test module, its runner without nannies (about a second less
    per run); closed after the module."""
    standin = FlyteAdminStandIn()
    standin.runner.nanny = False
    try:
        yield standin
    finally:
        standin.close()


@pytest.fixture
def standin_image_builder(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInImageBuilder]:
    """flytekit's image builder for the stand-in (highest priority): an ImageSpec — the default
    image of a ``%%flyte_dask --remote`` cell without ``--image`` — is built into a cached venv
    that the stand-in's runner then runs (images.py). Sets ``FLYTE_DASK_IMAGE_REGISTRY`` (the
    default image needs one) and unregisters the builder afterwards."""
    from dask_flyte_jupyter.image import REGISTRY_VARIABLE

    monkeypatch.setenv(REGISTRY_VARIABLE, STANDIN_REGISTRY)
    builder = StandInImageBuilder(ImageStore())
    register_builder(builder)
    try:
        yield builder
    finally:
        unregister_builder()
