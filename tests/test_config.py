"""%flyte_dask_config: kernel defaults, the picker bound to them, and --export through the magic."""

from __future__ import annotations

import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from shell_helpers import magics

from dask_flyte_jupyter.picker import ResourcePicker
from dask_flyte_jupyter.spec import ClusterSpec

SHAPE = """\
from distributed import Client
workers = Client().scheduler_info()["workers"].values()
threads = sorted({w["nthreads"] for w in workers})
shape = (len(workers), threads, sorted({w["memory_limit"] for w in workers}))
"""


@pytest.fixture(autouse=True)
def fresh_defaults(shell):
    shell.run_line_magic("flyte_dask_config", "--reset")
    yield
    shell.run_line_magic("flyte_dask_config", "--reset")


def test_defaults_apply_to_the_next_cell_and_cell_flags_override_them(shell):
    shell.run_line_magic("flyte_dask_config", "--workers 3 --worker-mem 1Gi")
    shell.run_cell_magic("flyte_dask", "", SHAPE)
    assert shell.user_ns["shape"] == (3, [1], [2**30])
    shell.run_cell_magic("flyte_dask", "--workers 1 --worker-cpu 2", SHAPE)
    assert shell.user_ns["shape"] == (1, [2], [2**30])  # memory still from the defaults


def test_show_and_reset(shell, capsys):
    shell.run_line_magic("flyte_dask_config", "--workers 4 --cache")
    shell.run_line_magic("flyte_dask_config", "--show")
    assert capsys.readouterr().out.strip() == "%%flyte_dask --workers 4 --cache"
    shell.run_line_magic("flyte_dask_config", "--reset")
    assert magics(shell).defaults == ClusterSpec()


def test_bad_defaults_are_refused_and_change_nothing(shell):
    shell.run_line_magic("flyte_dask_config", "--workers 2")
    with pytest.raises(UsageError, match="--worker-mem: '3Gx'"):
        shell.run_line_magic("flyte_dask_config", "--worker-mem 3Gx")
    assert magics(shell).defaults.workers.count == 2 and magics(shell).defaults.workers.mem is None


def test_picker_and_config_stay_in_sync_both_ways(shell):
    picker = shell.run_line_magic("flyte_dask_config", "")
    assert isinstance(picker, ResourcePicker)
    shell.run_line_magic("flyte_dask_config", "--workers 5")
    assert picker.value.workers.count == 5  # the magic moved the widget
    picker.fields["worker-mem"].value = "2Gi"  # a person edits the widget
    assert magics(shell).defaults.workers.mem == "2Gi"  # the next cell gets it
    picker.fields["worker-mem"].value = "2Gx"  # invalid: message shown, defaults unchanged
    assert "2Gx" in picker.errors["worker-mem"]
    assert magics(shell).defaults.workers.mem == "2Gi"


def test_export_through_the_magic_writes_a_runnable_module(shell, tmp_path):
    shell.run_cell("def inc(x):\n    return x + 1\nn = 6", store_history=False)
    path = tmp_path / "increment_flow.py"
    cell = (
        "from distributed import Client\nclient = Client()\n"
        "result = client.gather(client.map(inc, range(n)))\nsum(result)\n"
    )
    shell.run_cell_magic("flyte_dask", f"--workers 2 --export {path}", cell)
    assert "result" not in shell.user_ns  # exporting runs nothing
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=240, check=True
    )
    assert "21" in out.stdout


def test_export_of_an_unexportable_input_is_one_clear_error(shell, tmp_path):
    import threading

    shell.user_ns["lock"] = threading.Lock()
    with pytest.raises(UsageError, match="lock"):
        shell.run_cell_magic(
            "flyte_dask", f"--export {tmp_path / 'x.py'}", "with lock:\n    y = 1\n"
        )
    assert not (tmp_path / "x.py").exists()
