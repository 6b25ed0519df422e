"""Run notebooks top to bottom in a real kernel and print what each cell shows.

Usage: python scripts/run_notebook.py NOTEBOOK [NOTEBOOK ...]
Exits non-zero when a cell fails, after printing the failing cell's error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def shown_text(output: dict) -> str:
    """The text a person would see for one cell output."""
    if output["output_type"] == "stream":
        return str(output["text"])
    if output["output_type"] in ("execute_result", "display_data"):
        return str(output.get("data", {}).get("text/plain", "")) + "\n"
    if output["output_type"] == "error":
        return "\n".join(output.get("traceback", [])) + "\n"
    return ""


def run(path: Path) -> int:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": "."}}
    )
    print(f"=== {path}")
    failed = 0
    try:
        client.execute()
    except CellExecutionError:
        failed = 1
    for index, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code":
            continue
        text = "".join(shown_text(output) for output in cell.get("outputs", []))
        if text.strip():
            print(f"--- cell {index}: {cell.source.splitlines()[0] if cell.source else ''}")
            print(text.rstrip())
    print(f"=== {path}: {'FAILED' if failed else 'ok'}")
    return failed


if __name__ == "__main__":
    paths = [Path(arg) for arg in sys.argv[1:]]
    if not paths:
        sys.exit(__doc__)
    sys.exit(max(run(path) for path in paths))
