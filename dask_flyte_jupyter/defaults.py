"""The kernel's defaults for the next ``%%flyte_dask`` cell, observable so that the magics, a
displayed resource picker and ``%flyte_dask_config`` stay in sync. No ipywidgets here: this is
imported at ``%load_ext``."""

from __future__ import annotations

from typing import Any

import traitlets

from .spec import ClusterSpec, format_option


class KernelDefaults(traitlets.HasTraits):
    """A kernel's defaults for the next ``%%flyte_dask`` cell: the spec and where to run it."""

    spec = traitlets.Instance(ClusterSpec, args=())
    remote = traitlets.Bool(False)
    project = traitlets.Unicode("")  # empty: the Flyte config's default
    domain = traitlets.Unicode("")

    @traitlets.validate("spec")
    def _valid_spec(self, proposal: dict[str, Any]) -> ClusterSpec:
        spec: ClusterSpec = proposal["value"]
        return spec.validate()

    def magic_line(self) -> str:
        """The ``%%flyte_dask`` line these defaults amount to (for ``--show``)."""
        return target_line(self.spec, self.remote, self.project, self.domain)


def target_line(spec: ClusterSpec, remote: bool, project: str, domain: str) -> str:
    """``spec.magic_line()`` plus ``--remote --project P --domain D`` when running remotely."""
    line = spec.magic_line()
    if remote:
        line += " --remote"
        for flag, text in (("project", project), ("domain", domain)):
            if text.strip():
                line += " " + format_option(flag, text.strip())
    return line
