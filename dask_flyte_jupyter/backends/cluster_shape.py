"""The cluster a registered task really gets on a Flyte v1.16 deployment, for ``--remote``.

Two steps: read the deployment's task resource defaults and limits from Flyte Admin (the
project/domain ``TASK_RESOURCE`` attributes, on top of the platform file), then translate the
registered TaskTemplate the way v1.16's dask plugin does and read the workers' flags off it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..k8s import ManifestError, parse_quantity
from ..manifest import translate, worker_shape
from ..platform import Platform, from_task_resource_attributes
from ..spec import LocalShape


def with_admin_resources(platform: Platform, client: Any, project: str, domain: str) -> Platform:
    """``platform`` with Flyte Admin's ``TASK_RESOURCE`` attributes of project/domain, when Admin
    has any. Admin answers NOT_FOUND when only its own config applies (which it does not
    expose): then ``platform`` stays as it is. Other flytekit errors propagate."""
    from flytekit.exceptions.user import FlyteEntityNotExistException
    from flytekit.models.matchable_resource import MatchableResource

    try:
        found = client.get_project_domain_attributes(
            project, domain, MatchableResource.TASK_RESOURCE
        )
    except FlyteEntityNotExistException:
        return platform
    attributes = found.attributes.matching_attributes.task_resource_attributes
    defaults, limits = from_task_resource_attributes(attributes)
    if not defaults and not limits:
        return platform
    source = f"Flyte Admin: TASK_RESOURCE of {project}/{domain}"
    return platform.with_task_resources(defaults, limits, source)


@dataclass(frozen=True)
class ClusterShape:
    """What the summary and the notes say about the cluster a task gets."""

    detail: str  # "2 workers × --nthreads 2 --memory-limit 1Gi (Flyte v1.16 with ...)"
    notes: tuple[str, ...]  # one per pod whose resources a platform limit lowers
    shape: LocalShape  # the "used" row


def cluster_shape(template: Any, platform: Platform) -> ClusterShape | None:
    """The shape of ``template`` (a flytekit TaskTemplate model) on ``platform``; None for a
    task this package cannot translate (not a dask task)."""
    from google.protobuf.json_format import MessageToDict

    try:
        translation = translate(MessageToDict(template.to_flyte_idl()), platform=platform)
    except (ManifestError, ValueError, AttributeError):
        return None
    workers, nthreads, memory = worker_shape(translation.manifest)
    source = platform.resources_from if platform.resources_known else "platform unknown"
    notes = tuple(
        f"the platform's limits lower the {role}'s {', '.join(lowered)} ({source})"
        for role, lowered in translation.clamped.items()
    )
    return ClusterShape(
        detail=(
            f"{workers} workers × --nthreads {nthreads} --memory-limit {memory} "
            f"(Flyte v1.16 with {source})"
        ),
        notes=notes,
        shape=LocalShape(workers, int(nthreads), int(parse_quantity(memory)[0]) or None, notes),
    )
