"""The run summary describes outputs from their metadata: it never computes and never raises."""

from __future__ import annotations

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from shell_helpers import magics

from dask_flyte_jupyter.run import RunHandle, TaskCounts, WorkerRestart, describe_value
from dask_flyte_jupyter.spec import ClusterSpec

META = pd.DataFrame({"x": pd.Series([], dtype="int64"), "y": pd.Series([], dtype="float64")})


class Computed(Exception):
    """Raised by a partition that is computed, and only then."""


@pytest.fixture
def loads() -> list[int]:
    return []


@pytest.fixture
def lazy_frame(loads):
    """A dask DataFrame of 3 partitions whose loading is counted in ``loads``, then raises."""

    def load(i: int) -> pd.DataFrame:
        loads.append(i)
        raise Computed(f"partition {i} was computed")

    return dd.from_delayed([dask.delayed(load)(i) for i in range(3)], meta=META)


def test_dask_dataframe_is_described_from_its_metadata(lazy_frame, loads):
    assert describe_value("df", lazy_frame) == (
        "df: dask DataFrame (3 partitions, divisions unknown, 2 columns)"
    )
    assert describe_value("s", lazy_frame.x) == "s: dask Series (3 partitions, divisions unknown)"
    known = dd.from_pandas(pd.DataFrame({"a": range(10)}), npartitions=2)
    expected = "k: dask DataFrame (2 partitions, divisions known, 1 column)"
    assert describe_value("k", known) == expected
    assert loads == []


@pytest.mark.parametrize("make", [lambda f: f.set_index("x"), lambda f: f.sort_values("x")])
def test_divisions_that_need_the_data_are_not_computed(lazy_frame, loads, make):
    # dask finds the partitions of a lazy set_index / sort_values by reading the data (its
    # npartitions and known_divisions would compute): the summary says they are not known yet.
    frame = make(lazy_frame)
    text = describe_value("indexed", frame)
    assert text.startswith("indexed: dask DataFrame (partitions known once computed")
    assert loads == []
    with pytest.raises(Computed):  # what describing it would have done
        frame.npartitions  # noqa: B018


def test_delayed_bag_and_scalar_are_never_computed(loads):
    def count(i: int) -> int:
        loads.append(i)
        raise Computed("computed")

    assert describe_value("d", dask.delayed(count)(1)) == "d: dask Delayed"
    bag = db.from_sequence(range(8), npartitions=4).map(count)
    assert describe_value("b", bag) == "b: dask Bag (4 partitions)"
    frame = dd.from_pandas(pd.DataFrame({"a": range(6)}), npartitions=2)
    total = frame.a.map(count, meta=("a", "int64")).sum()
    assert describe_value("t", total) == "t: dask Scalar"
    assert loads == []


def test_dask_arrays_show_shape_chunks_dtype_and_size():
    grid = da.ones((1000, 1000), chunks=250)
    assert describe_value("g", grid) == "g: dask Array (1000 x 1000, 16 chunks, float64, 7.6 MiB)"
    ragged = grid[0][grid[0] > 0]  # boolean indexing: the length is unknown until computed
    assert describe_value("r", ragged) == "r: dask Array (nan, 4 chunks, float64)"


def test_plain_values():
    assert describe_value("n", np.zeros((10, 20))) == "n: ndarray (10 x 20, 1.6 KiB)"
    assert describe_value("f", pd.DataFrame({"a": [1, 2]})).startswith("f: DataFrame (2 x 1, ")
    assert describe_value("s", pd.Series([1, 2, 3])).startswith("s: Series (3, ")
    assert describe_value("x", np.float64(2.0)) == "x: float64"
    assert describe_value("l", [1, 2, 3]) == "l: list (len 3)"
    assert describe_value("t", (1,)) == "t: tuple (len 1)"
    assert describe_value("d", {"a": 1}) == "d: dict (len 1)"
    assert describe_value("w", "word") == "w: str (len 4)"
    assert describe_value("i", 7) == "i: int"
    assert describe_value("c", pd.DataFrame) == "c: type"


class Hostile:
    """A user object whose every protocol method raises."""

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    @property
    def shape(self) -> tuple[int, ...]:
        raise RuntimeError("shape")


class SizedOverride(list):
    def __len__(self) -> int:
        raise RuntimeError("a user __len__ is never called")


def test_user_objects_that_raise_do_not_break_the_summary():
    assert describe_value("h", Hostile()) == "h: Hostile"
    assert describe_value("o", SizedOverride([1, 2])) == "o: SizedOverride (len 2)"

    class LazyLength:  # not a builtin container: its length is not asked for
        def __len__(self) -> int:
            raise AssertionError("computed")

    assert describe_value("z", LazyLength()) == "z: LazyLength"


def test_summary_record_and_repr_of_a_run_with_hostile_outputs(lazy_frame, loads):
    handle = RunHandle(name="t", spec=ClusterSpec())
    handle.outputs = {"h": Hostile(), "df": lazy_frame.set_index("x")}
    handle.value = Hostile()
    handle.finish("succeeded")
    text = handle.summary_text()
    assert "h: Hostile" in text and "df: dask DataFrame" in text
    assert "df: dask DataFrame" in handle.summary_html()
    assert handle.to_record()["outputs"] == {"h": "Hostile", "df": "dask DataFrame"}
    assert "Hostile" not in repr(handle)  # the handle's repr shows no user object
    assert loads == []


def test_record_of_an_error_whose_message_raises():
    class Broken(Exception):
        def __str__(self) -> str:
            raise IndexError("tuple index out of range")

    handle = RunHandle(name="t", spec=ClusterSpec())
    handle.finish("failed", Broken())
    assert handle.to_record()["error"] == "Broken"


def test_memory_restarts_are_in_the_summary():
    restart = WorkerRestart("tcp://127.0.0.1:1", 300 * 2**20, 200 * 2**20, ("f-1",))
    handle = RunHandle(name="t", spec=ClusterSpec())
    handle.task_source = lambda: TaskCounts(total=1, erred=1, restarts=(restart, restart))
    rows = dict(handle.summary_rows())
    assert rows["restarts"] == "2 workers restarted for going over the memory limit (--worker-mem)"


def test_a_lazy_dask_output_of_a_cell_is_not_computed_for_the_summary(shell):
    # Computing any partition raises; the old summary called len() on the frame, which computed
    # it in the kernel and made the succeeded cell fail.
    cell = """\
import dask
import dask.dataframe as dd
import pandas as pd
def load(i):
    raise RuntimeError(f"partition {i} was computed")
meta = pd.DataFrame({"x": pd.Series([], dtype="int64")})
lazy = dd.from_delayed([dask.delayed(load)(i) for i in range(3)], meta=meta)
"""
    shell.run_cell_magic("flyte_dask", "--workers 1 --no-progress", cell)
    run = magics(shell).runs[-1]
    assert run.status == "succeeded"
    text = run.summary_text()
    assert "lazy: dask DataFrame (3 partitions, divisions unknown, 1 column)" in text
    assert type(shell.user_ns["lazy"]).__name__ == "DataFrame"


def test_the_record_names_dask_collections_as_dask_types():
    handle = RunHandle(name="t", spec=ClusterSpec())
    frame = dd.from_pandas(pd.DataFrame({"a": range(1000)}), npartitions=4)
    handle.outputs = {
        "frame": frame,
        "array": da.ones((10, 10), chunks=5),
        "bag": db.from_sequence(range(4), npartitions=2),
        "plain": frame.head(3, compute=False).compute(),  # a pandas DataFrame
    }
    handle.finish("succeeded")
    assert handle.to_record()["outputs"] == {
        "frame": "dask DataFrame",
        "array": "dask Array",
        "bag": "dask Bag",
        "plain": "DataFrame",
    }
    assert "frame: dask DataFrame (4 partitions, divisions known, 1 column)" in (
        handle.summary_text()
    )
