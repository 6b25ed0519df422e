"""How a cell task is serialized for registration: one path for ``--remote`` and ``--dry-run``.

``--remote`` registers through flytekit's ``FlyteRemote.register_task`` in notebook mode, which
(1) sets flytekit's notebook task resolver on the task (``_get_pickled_target_dict``), (2) uploads
the pickled task and records where (``FastSerializationSettings``), (3) serializes the task with
``get_serializable`` under the settings below. The dry run does (1) and (3) the same way and
stands a placeholder in for the upload's address in (2), so the TaskTemplate it shows is the one
``--remote`` registers, byte for byte, but for that one argument.

Imported by remote runs and dry runs only (it imports flytekit).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

#: Stands for the ``s3://…/fast….pkl.gz`` address of the uploaded code (known after upload).
UPLOADED_CODE = "<uploaded pkl.gz>"


def registration_settings(project: str, domain: str, version: str) -> Any:
    """The ``SerializationSettings`` a cell task is registered with (``--remote``)."""
    from flytekit.configuration import ImageConfig, SerializationSettings

    return SerializationSettings(
        image_config=ImageConfig.auto_default_image(),
        project=project,
        domain=domain,
        version=version,
    )


def registered_template(task: Any, project: str, domain: str, version: str) -> Any:
    """The ``TaskTemplate`` model ``FlyteRemote.register_task`` registers for ``task`` in
    notebook mode, with :data:`UPLOADED_CODE` as the code's address. Nothing is uploaded."""
    from flytekit.configuration import FastSerializationSettings
    from flytekit.remote.remote import _get_pickled_target_dict
    from flytekit.tools.translator import get_serializable

    _get_pickled_target_dict(task)  # sets the notebook resolver, as register_task does
    settings = registration_settings(project, domain, version)
    settings.fast_serialization_settings = FastSerializationSettings(
        enabled=True, distribution_location=UPLOADED_CODE, destination_dir="."
    )
    return get_serializable(OrderedDict(), settings, task).template
