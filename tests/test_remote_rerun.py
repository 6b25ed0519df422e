"""Issue 14: an unchanged re-run of a ``%%flyte_dask --remote`` cell uploads and registers
nothing; whatever changed (the cell, an input, the image) is uploaded or registered again.

A real InteractiveShell and the real FlyteRemote client against the Flyte Admin stand-in
(tests/flyte_admin, a test double), whose call log counts what was registered (``CreateTask``)
and uploaded (``CreateUploadLocation``: the pickled code as ``….pkl.gz``, inputs under a
``filename_root``). ``first`` runs the cell once; each test then re-runs it, changing one thing
or nothing. A kernel restart is a new Python process running the same cell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from flyte_admin import FlyteAdminStandIn
from test_remote import IMAGE, code_uploads, execution_of

CELL = """\
from distributed import Client
client = Client()
result = client.gather(client.map(inc, range(n)))
scaled = frame.assign(value=frame.value * n)
sum(result)
"""
INC = "def inc(x):\n    return x + 1\n"


def define_inputs(shell, inc: str = INC, values: range = range(6)) -> None:
    """``inc`` (a notebook function: a pickle), ``n`` (an integer literal) and ``frame`` (a
    DataFrame: a structured dataset, uploaded)."""
    shell.run_cell(inc, store_history=False)
    shell.user_ns["n"] = 5
    shell.user_ns["frame"] = pd.DataFrame({"key": [i % 2 for i in values], "value": values})


def line(admin: FlyteAdminStandIn, extra: str = "") -> str:
    return f"--remote --config {admin.config_path} --image {IMAGE} --workers 1 {extra}".strip()


def run(shell, admin: FlyteAdminStandIn, cell: str = CELL, extra: str = ""):
    value = shell.run_cell_magic("flyte_dask", line(admin, f"{extra} --out run"), cell)
    handle = shell.user_ns["run"]
    assert handle.status == "succeeded", handle.error_text
    return value, handle


def input_uploads(admin: FlyteAdminStandIn) -> list:
    return [
        c
        for c in admin.calls_to("CreateUploadLocation", "OK")
        if not str(c.fields.get("filename", "")).endswith("pkl.gz")
    ]


def input_uris(admin: FlyteAdminStandIn, handle) -> dict[str, str]:
    """Where the execution's DataFrame and pickled inputs were read from."""
    literals = execution_of(admin, handle).inputs.literals
    frame = literals["frame"].scalar.structured_dataset.uri
    pickled = literals["inc"].scalar.union.value.scalar.blob.uri
    return {"frame": frame, "inc": pickled}


@pytest.fixture(scope="module")
def first(admin, _ipython):
    """The cell's first run in this kernel: a new version, registered and uploaded."""
    shell = _ipython
    shell.reset(new_session=False)
    admin.clear_calls()
    define_inputs(shell)
    value, handle = run(shell, admin)
    assert len(admin.calls_to("CreateTask", "OK")) == 1 and len(code_uploads(admin)) == 1
    assert len(input_uploads(admin)) >= 2  # the frame and the pickled function
    outputs = {"value": value, "result": shell.user_ns["result"], "scaled": shell.user_ns["scaled"]}
    shell.reset(new_session=False)
    return handle, outputs, input_uris(admin, handle)


@pytest.fixture
def stand_in(admin: FlyteAdminStandIn) -> FlyteAdminStandIn:
    admin.clear_calls()
    return admin


def test_an_unchanged_rerun_uploads_and_registers_nothing(shell, stand_in, first):
    admin = stand_in
    handle, outputs, uris = first
    define_inputs(shell)  # the same values, defined again as a notebook re-run does
    value, again = run(shell, admin)
    assert value == outputs["value"] == sum(i + 1 for i in range(5))
    assert shell.user_ns["result"] == outputs["result"]
    pd.testing.assert_frame_equal(shell.user_ns["scaled"], outputs["scaled"])
    assert again.version == handle.version
    assert not admin.calls_to("CreateTask") and not admin.calls_to("CreateUploadLocation")
    assert "uploading code" not in again.phases and "registering" not in again.phases
    assert "nothing uploaded" in again.details["code"]
    assert "not uploaded again" in again.details["inputs"]
    # the new execution reads the inputs the first run uploaded
    assert input_uris(admin, again) == uris
    assert admin.calls_to("CreateExecution", "OK")


def test_changed_inputs_are_uploaded_again_the_task_is_not(shell, stand_in, first):
    admin = stand_in
    handle, _, uris = first
    define_inputs(shell, values=range(10, 16))
    _, changed = run(shell, admin)
    assert changed.version == handle.version and not admin.calls_to("CreateTask")
    assert not code_uploads(admin) and len(input_uploads(admin)) == 1  # the frame only
    assert shell.user_ns["scaled"]["value"].tolist() == [v * 5 for v in range(10, 16)]
    now = input_uris(admin, changed)
    assert now["frame"] != uris["frame"] and now["inc"] == uris["inc"]

    admin.clear_calls()
    define_inputs(shell, inc="def inc(x):\n    return x + 2\n")  # another function, same name
    value, changed = run(shell, admin)
    assert value == sum(i + 2 for i in range(5)) and shell.user_ns["result"] == [2, 3, 4, 5, 6]
    assert not admin.calls_to("CreateTask") and not code_uploads(admin)
    assert input_uris(admin, changed)["inc"] != uris["inc"]


def test_a_changed_cell_or_image_registers_a_new_version(shell, stand_in, first):
    admin = stand_in
    handle, outputs, _ = first
    define_inputs(shell)
    value, changed = run(shell, admin, CELL.replace("sum(result)", "sum(result) * 2"))
    assert value == 2 * outputs["value"] and shell.user_ns["result"] == outputs["result"]
    assert changed.version != handle.version
    assert len(admin.calls_to("CreateTask", "OK")) == 1 and len(code_uploads(admin)) == 1

    admin.clear_calls()
    image = IMAGE.replace("dask-cells", "dask-cells-gpu")
    value, other = run(shell, admin, extra=f"--image {image}")
    assert value == outputs["value"] and other.version not in (handle.version, changed.version)
    assert len(admin.calls_to("CreateTask", "OK")) == 1 and len(code_uploads(admin)) == 1
    template = execution_of(admin, other).task.closure.compiled_task.template
    assert template.container.image == image


RESTARTED_KERNEL = """
import sys
from IPython.core.interactiveshell import InteractiveShell
import pandas as pd

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "dask_flyte_jupyter")
shell.run_cell({inc!r}, store_history=False)
shell.user_ns["n"] = 5
shell.user_ns["frame"] = pd.DataFrame({{"key": [i % 2 for i in range(6)], "value": range(6)}})
value = shell.run_cell_magic("flyte_dask", {line!r} + " --no-progress --out run", {cell!r})
run = shell.user_ns["run"]
print("RESULT", run.status, run.version, value, run.details.get("code"))
"""


def test_a_kernel_restart_registers_nothing_new(stand_in, first, tmp_path: Path):
    """A new kernel (a new process: another pickle of the same cell) finds the version the
    first kernel registered: no CreateTask, no code upload."""
    admin = stand_in
    handle, outputs, _ = first
    script = RESTARTED_KERNEL.format(inc=INC, line=line(admin), cell=CELL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "DASK_"))}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    _, status, version, value, *_ = result.split()
    assert (status, version, int(value)) == ("succeeded", handle.version, outputs["value"])
    assert "nothing uploaded" in result
    assert not admin.calls_to("CreateTask") and not code_uploads(admin)
    assert len(admin.calls_to("CreateExecution", "OK")) == 1


FILE_CELL = """\
import pathlib
numbers = [int(x) for x in pathlib.Path(numbers_file).read_text().split()]
"""


def test_an_edited_input_file_is_uploaded_again(shell, stand_in, tmp_path):
    """A local path travels as a FlyteFile, uploaded by flytekit: unchanged, it is not uploaded
    again; edited, it is (its pickle, flytekit's cache key, names the path, not the content)."""
    admin = stand_in
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("1 2 3\n")
    shell.user_ns["numbers_file"] = numbers
    run(shell, admin, FILE_CELL)
    assert shell.user_ns["numbers"] == [1, 2, 3]

    admin.clear_calls()
    run(shell, admin, FILE_CELL)  # unchanged: nothing uploaded
    assert not admin.calls_to("CreateUploadLocation") and not admin.calls_to("CreateTask")
    assert shell.user_ns["numbers"] == [1, 2, 3]

    admin.clear_calls()
    numbers.write_text("4 5 6\n")  # the same size: only the content tells
    run(shell, admin, FILE_CELL)
    assert shell.user_ns["numbers"] == [4, 5, 6]
    assert len(input_uploads(admin)) == 1 and not admin.calls_to("CreateTask")
