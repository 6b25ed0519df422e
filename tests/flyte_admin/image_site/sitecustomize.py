"""Started in every process of the stand-in's "image" (job runner, scheduler, workers): the
packages a task image does not have cannot be imported there, as on a real cluster whose image
was built without them (the default ImageSpec holds flytekit, its dask plugin, dask and
distributed only). Names come from ``FLYTE_ADMIN_STANDIN_NOT_IN_IMAGE`` (comma-separated)."""

import importlib.abc
import os
import sys

_HIDDEN = tuple(n for n in os.environ.get("FLYTE_ADMIN_STANDIN_NOT_IN_IMAGE", "").split(",") if n)


class _NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not in the task image)")
        return None


if _HIDDEN:
    sys.meta_path.insert(0, _NotInImage())
