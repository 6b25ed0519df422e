"""What a notebook run by a real kernel (nbclient) shows under ``%%flyte_dask`` cells: worker
prints once, exactly as printed; a failed cell's short error, and ``%tb``'s full traceback.

The kernel runs as in Jupyter: ipykernel captures the output of the worker processes at the file
descriptor level (``capture_fd_output``), which it does not do under pytest, so the kernel gets
the environment without ``PYTEST_CURRENT_TEST``.
"""

from __future__ import annotations

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")

PRINTS = """\
%%flyte_dask --workers 1
import sys
from distributed import Client
def whisper(text):
    print(text, file=sys.stderr)
    return text
client = Client()
client.submit(print, "hello").result()
heard = client.submit(whisper, "psst").result()
"""
FAILS = "%%flyte_dask --workers 1\nx = 1\n1/0\n"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory) -> nbformat.NotebookNode:
    cells = ["%load_ext dask_flyte_jupyter", PRINTS, FAILS, "%tb"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}},
    ).execute(env=env)
    return notebook


def stream(cell: nbformat.NotebookNode, name: str) -> str:
    return "".join(o["text"] for o in cell.outputs if o.output_type == "stream" and o.name == name)


def test_worker_prints_are_shown_once_as_printed(notebook):
    cell = notebook.cells[1]
    assert not [o for o in cell.outputs if o.output_type == "error"]
    stdout, stderr = stream(cell, "stdout"), stream(cell, "stderr")
    assert stdout.count("hello") == 1, stdout
    assert "hello\n" in stdout.splitlines(keepends=True)  # the line exactly as printed
    assert stderr.count("psst") == 1, stderr
    assert "psst" not in stdout and "[worker" not in stdout + stderr


def errors(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for o in cell.outputs if o.output_type == "error"]


def test_a_failed_cell_shows_the_short_error_and_tb_the_full_traceback(notebook):
    (error,) = errors(notebook.cells[2])
    assert (error.ename, error.evalue) == ("ZeroDivisionError", "division by zero")
    short = ANSI.sub("", "\n".join(error.traceback))
    assert "Cell line 3" in short and "site-packages" not in short
    # In a kernel, %tb's traceback is an error output too: the same error, rendered in full.
    (again,) = errors(notebook.cells[3])
    assert (again.ename, again.evalue) == ("ZeroDivisionError", "division by zero")
    full = ANSI.sub("", "\n".join(again.traceback))
    assert "flytekit/core/base_task.py" in full and "dispatch_execute" in full
    assert "Traceback (your code only" not in full
