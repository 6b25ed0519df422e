"""A Flyte Admin stand-in for tests — a TEST DOUBLE, not a product feature.

A real gRPC server implementing the part of flyteidl's ``AdminService`` / ``DataProxyService``
that flytekit's ``FlyteRemote`` uses, blob storage from moto's S3 server, and a runner that plays
propeller + the dask operator with local processes.  See README.md in this directory.

    with FlyteAdminStandIn() as admin:
        remote = FlyteRemote(Config.auto(config_file=str(admin.config_path)),
                             admin.project, admin.domain, interactive_mode_enabled=True)
"""

from .server import FlyteAdminStandIn
from .state import Call, StandInExecution, processes_gone

__all__ = ["Call", "FlyteAdminStandIn", "StandInExecution", "processes_gone"]
