"""The cell as a real flytekit dask task: types, names and versions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import typing

import numpy as np
import pandas as pd
import pytest
from flytekitplugins.dask.task import DaskTask

from dask_flyte_jupyter.cell import analyse_cell
from dask_flyte_jupyter.spec import ClusterSpec, WorkerSpec
from dask_flyte_jupyter.task import build_task, content_hash, input_type, type_label

BODY = "total = sum(values) * factor\nlabel = name.upper()\ntotal\n"


def build(body=BODY, spec=None, **namespace):
    namespace = namespace or {"values": [1, 2, 3], "factor": 2.5, "name": "x"}
    program = analyse_cell(body, namespace)
    return build_task(program, spec or ClusterSpec(), namespace)


@pytest.fixture
def cell_cluster():
    """A small in-process cluster that ``Client()`` finds, as the backends arrange it."""
    import dask
    from distributed import LocalCluster

    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        dask.config.set({"scheduler-address": cluster.scheduler_address}),
    ):
        yield cluster


def test_task_is_a_real_dask_task_with_typed_interface():
    cell_task = build()
    assert isinstance(cell_task.task, DaskTask)
    inputs = cell_task.task.python_interface.inputs
    assert inputs == {"values": list[int], "factor": float, "name": str}
    outputs = cell_task.task.python_interface.outputs
    assert list(outputs) == [
        "total",
        "label",
        "flyte_dask_value",
        "flyte_dask_report",
    ]
    assert cell_task.task.name == cell_task.name and cell_task.name.startswith("cell_")


def test_task_runs_locally_on_the_cluster_it_is_given(cell_cluster):
    from dask_flyte_jupyter.task import unpack_outputs

    cell_task = build()
    out = cell_task.task(values=[1, 2, 3], factor=2.5, name="x")
    assert (out.total, out.label, out.flyte_dask_value) == (15.0, "X", 15.0)
    assert unpack_outputs(out._asdict()).dropped == {}


def test_task_without_its_cluster_says_so():
    cell_task = build()
    with pytest.raises(RuntimeError, match="no dask cluster was started for this cell"):
        cell_task.task(values=[1, 2, 3], factor=2.5, name="x")


def test_input_types_are_flyte_native_where_possible():
    assert input_type(3) is int and input_type(True) is bool and input_type("s") is str
    assert input_type({"a": 1.0}) == dict[str, float]
    assert type_label(input_type(pd.DataFrame({"a": [1]}))) == "DataFrame"
    assert type_label(input_type(np.arange(3))) == "ndarray"
    assert type_label(input_type(object())) == "pickle"
    assert type_label(input_type([1, "mixed"])) == "pickle"


def test_version_changes_with_body_spec_and_input_types_only():
    base = build().version
    assert build().version == base
    assert build(BODY + "label\n").version != base
    assert build(spec=ClusterSpec(workers=WorkerSpec(count=3))).version != base
    assert build(values=[1.5], factor=2.5, name="x").version != base  # list[float] now
    assert build(values=[9, 9], factor=1.0, name="y").version == base  # same types


def test_version_is_stable_across_processes():
    script = textwrap.dedent(
        f"""
        from dask_flyte_jupyter.cell import analyse_cell
        from dask_flyte_jupyter.spec import ClusterSpec
        from dask_flyte_jupyter.task import build_task
        ns = {{"values": [1, 2, 3], "factor": 2.5, "name": "x"}}
        t = build_task(analyse_cell({BODY!r}, ns), ClusterSpec(), ns)
        print(t.name, t.version)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    cell_task = build()
    assert out.stdout.split() == [cell_task.name, cell_task.version]


def test_cell_frames_keep_the_cell_line_numbers(cell_cluster):
    cell_task = build("x = 1\ny = 2\nz = x / 0\n", x=0)
    try:
        cell_task.task()
    except ZeroDivisionError as error:
        tb = error.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        assert tb.tb_frame.f_code.co_filename == cell_task.filename
        assert tb.tb_lineno == 4  # body line 3 + the %%flyte_dask line
    else:
        raise AssertionError("the cell should have failed")


def test_content_hash_is_by_content():
    frame = pd.DataFrame({"a": [1, 2]})
    assert content_hash(frame) == content_hash(frame.copy())
    assert content_hash(frame) != content_hash(pd.DataFrame({"a": [1, 3]}))
    assert content_hash(np.arange(3)) != content_hash(np.arange(4))


def test_tuple_outputs_travel_boxed_and_come_back_as_tuples(cell_cluster):
    import json

    from dask_flyte_jupyter.task import unpack_outputs

    cell_task = build("pair = (a, a + 1)\npair\n", a=1)
    out = cell_task.task(a=1)
    assert json.loads(out.flyte_dask_report)["boxed"] == ["pair", "flyte_dask_value"]
    assert out.pair == [(1, 2)]
    unpacked = unpack_outputs(out._asdict())
    assert unpacked.outputs == {"pair": (1, 2), "flyte_dask_value": (1, 2)}
    assert unpacked.dropped == {}


def test_inputs_are_content_hashed_only_for_cached_tasks():
    frame = pd.DataFrame({"a": [1, 2]})
    plain = build("b = frame\n", frame=frame)
    cached = build("b = frame\n", spec=ClusterSpec(cache=True), frame=frame)
    assert typing.get_origin(plain.input_types["frame"]) is not typing.Annotated
    assert typing.get_origin(cached.input_types["frame"]) is typing.Annotated
    # the hash is not part of the declared type (nor of the version) ...
    assert build("b = frame\n", spec=ClusterSpec(cache=True), frame=frame.head(1)).version == (
        cached.version
    )
    # ... but caching is: a registered task with or without it, or with another cache version,
    # is another template, so another version (else Flyte runs whichever was registered first)
    versioned = build("b = frame\n", spec=ClusterSpec(cache=True, cache_version="v2"), frame=frame)
    assert len({plain.version, cached.version, versioned.version}) == 3
