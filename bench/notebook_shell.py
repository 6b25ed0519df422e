"""The shell every benchmark drives: a real IPython shell with the extension loaded and ``inc``
defined by a cell, as in the notebooks."""

from __future__ import annotations

from typing import Any


def notebook_shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "dask_flyte_jupyter")
    shell.run_cell("def inc(x):\n    return x + 1\n", store_history=False)
    return shell
