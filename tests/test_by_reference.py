"""A local, uncached run passes its values by reference (``backends/by_reference.py``): no file
round trip, while a mutated input still leaves the notebook's value as it was, an output that
could not travel remotely still fails, and an annotated output is still checked.

Real IPython shell, real local clusters, real flytekit local execution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from shell_helpers import magics

MUTATES_INPUTS = """\
import numpy as np
shared = pdf["x"].to_numpy().ctypes.data == pointer
pdf.loc[0, "x"] = -1.0
pdf["extra"] = 1
np.add(array, 1, out=array)
items.append("changed")
settings["changed"] = True
total = float(pdf["x"].sum()) + float(array.sum())
"""


def test_a_cell_that_mutates_its_inputs_leaves_the_notebooks_values_as_they_were(shell):
    pdf = pd.DataFrame({"x": np.arange(5, dtype=float)})
    array = np.arange(4)
    items, settings = ["a"], {"k": 1}
    shell.user_ns.update(
        pdf=pdf,
        array=array,
        items=items,
        settings=settings,
        pointer=pdf["x"].to_numpy().ctypes.data,
    )
    shell.run_cell_magic("flyte_dask", "--workers 1", MUTATES_INPUTS)
    ns = shell.user_ns
    # the cell saw its own changes ...
    assert ns["total"] == (-1 + 1 + 2 + 3 + 4) + (1 + 2 + 3 + 4)
    # ... and got the notebook's frame without a copy of its data (copy-on-write)
    assert ns["shared"] is True
    # the notebook's values did not change
    assert ns["pdf"] is pdf and list(pdf.columns) == ["x"] and pdf.loc[0, "x"] == 0.0
    assert ns["array"] is array and array.tolist() == [0, 1, 2, 3]
    assert items == ["a"] and settings == {"k": 1}


def test_a_large_output_comes_back_without_a_copy(shell):
    cell = (
        "import numpy as np, pandas as pd\n"
        "out = pd.DataFrame({'x': np.arange(1_000_000, dtype=float)})\n"
        "made_at = out['x'].to_numpy().ctypes.data\n"
        "values = np.ones(1_000_000)\n"
        "values_at = values.ctypes.data\n"
    )
    shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    ns = shell.user_ns
    assert ns["out"]["x"].to_numpy().ctypes.data == ns["made_at"]
    assert ns["values"].ctypes.data == ns["values_at"]
    assert ns["out"]["x"].sum() == sum(range(1_000_000))


def test_an_output_that_cannot_travel_still_fails_as_it_would_remotely(shell, capsys):
    runs = len(magics(shell).runs)
    shell.user_ns["kept"] = "before"
    result = shell.run_cell(
        "%%flyte_dask --workers 1\nimport threading\nkept = 'after'\nlock = threading.Lock()\n"
    )
    assert result.error_in_exec is not None
    text = capsys.readouterr()
    assert "output 'lock' cannot be sent back to the notebook" in text.out + text.err
    assert shell.user_ns["kept"] == "before"  # a failed cell changes nothing
    assert len(magics(shell).runs) == runs + 1


def test_an_annotated_output_is_still_checked_and_converted(shell, capsys):
    shell.run_cell_magic("flyte_dask", "--workers 1", "ratio: float = 3.5\nname: str = 'x'\n")
    assert shell.user_ns["ratio"] == 3.5 and shell.user_ns["name"] == "x"
    result = shell.run_cell("%%flyte_dask --workers 1\ncount: int = 'seven'\n")
    assert result.error_in_exec is not None
    shown = capsys.readouterr()
    # flytekit's own message, as without passing by reference
    assert "Failed to convert outputs of task" in shown.out + shown.err
    assert "at position count" in shown.out + shown.err
    assert shell.user_ns.get("count") is None


@pytest.mark.parametrize("cache", [False, True], ids=["by reference", "cached"])
def test_plain_inputs_and_a_frame_arrive_the_same_either_way(shell, cache):
    from flytekit.core.local_cache import LocalTaskCache

    LocalTaskCache.clear()
    shell.user_ns.update(n=3, scale=0.5, words=["a", "b"], frame=pd.DataFrame({"v": [1, 2]}))
    cell = "kinds = [type(n).__name__, type(scale).__name__, type(words).__name__]\n"
    cell += "doubled = frame.assign(w=frame.v * 2 * scale * n)\n"
    shell.run_cell_magic("flyte_dask", "--workers 1" + (" --cache" if cache else ""), cell)
    assert shell.user_ns["kinds"] == ["int", "float", "list"]
    assert shell.user_ns["doubled"]["w"].tolist() == [3.0, 6.0]


def test_only_data_without_python_objects_skips_the_pickling_check():
    import threading

    from dask_flyte_jupyter.backends.by_reference import _plain_data

    assert _plain_data(np.ones(3)) and _plain_data(pd.Series([1, 2]))
    assert _plain_data(pd.DataFrame({"t": pd.to_datetime(["2020-01-01"]), "x": [1.0]}))
    assert _plain_data(pd.DataFrame({"x": [1]}, index=pd.MultiIndex.from_tuples([(1, 2)])))
    # objects, strings and categories are checked: they may hold what cannot travel
    assert not _plain_data(np.array([object()]))
    assert not _plain_data(pd.DataFrame({"lock": [threading.Lock()]}))
    assert not _plain_data(pd.Series([1], index=pd.Index(["a"], dtype=object)))
    assert not _plain_data(pd.Series(["a"]).astype("category"))
    assert not _plain_data([1, 2])


def test_a_frame_holding_what_cannot_travel_still_fails(shell, capsys):
    cell = "import threading, pandas as pd\nlocks = pd.DataFrame({'l': [threading.Lock()]})\n"
    result = shell.run_cell("%%flyte_dask --workers 1\n" + cell)
    assert result.error_in_exec is not None
    shown = capsys.readouterr()
    assert "output 'locks' cannot be sent back to the notebook" in shown.out + shown.err
    assert "locks" not in shell.user_ns
