"""The kernel's defaults for the next ``%%flyte_dask`` cell, observable so that the magics, a
displayed resource picker and ``%flyte_dask_config`` stay in sync. No ipywidgets here: this is
imported at ``%load_ext``."""

from __future__ import annotations

from typing import Any

import traitlets

from .backends.spare import IDLE_TIMEOUT, enabled_by_default
from .spec import ClusterSpec, format_option


class KernelDefaults(traitlets.HasTraits):
    """A kernel's defaults for the next ``%%flyte_dask`` cell: the spec and where to run it."""

    spec = traitlets.Instance(ClusterSpec, args=())
    remote = traitlets.Bool(False)
    project = traitlets.Unicode("")  # empty: the Flyte config's default
    domain = traitlets.Unicode("")
    #: A spare cluster of the last local run's shape waits for the next cell
    #: (``backends/spare.py``); shut down after ``spare_idle`` seconds unused.
    spare_cluster = traitlets.Bool()
    spare_idle = traitlets.Float(IDLE_TIMEOUT)

    @traitlets.default("spare_cluster")
    def _spare_default(self) -> bool:
        return enabled_by_default()

    @traitlets.validate("spec")
    def _valid_spec(self, proposal: dict[str, Any]) -> ClusterSpec:
        spec: ClusterSpec = proposal["value"]
        return spec.validate()

    def magic_line(self) -> str:
        """The ``%%flyte_dask`` line these defaults amount to (for ``--show``)."""
        return target_line(self.spec, self.remote, self.project, self.domain)

    def spare_line(self) -> str:
        """``%flyte_dask_config --spare-cluster off`` (and ``--spare-idle S``) when the spare
        settings differ from a kernel's starting ones, else empty (for ``--show``)."""
        flags = []
        if self.spare_cluster != enabled_by_default():
            flags.append(f"--spare-cluster {'on' if self.spare_cluster else 'off'}")
        if self.spare_idle != IDLE_TIMEOUT:
            flags.append(f"--spare-idle {self.spare_idle:g}")
        return " ".join(["%flyte_dask_config", *flags]) if flags else ""

    def reset_spare(self) -> None:
        self.spare_cluster, self.spare_idle = enabled_by_default(), IDLE_TIMEOUT


def target_line(spec: ClusterSpec, remote: bool, project: str, domain: str) -> str:
    """``spec.magic_line()`` plus ``--remote --project P --domain D`` when running remotely."""
    line = spec.magic_line()
    if remote:
        line += " --remote"
        for flag, text in (("project", project), ("domain", domain)):
            if text.strip():
                line += " " + format_option(flag, text.strip())
    return line
