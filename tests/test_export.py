"""``--export``: the cell as a standalone flytekit module, run for real in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import psutil
import pytest

from dask_flyte_jupyter.cell import analyse_cell
from dask_flyte_jupyter.export import ExportError, export_cell, export_source, live_outputs
from dask_flyte_jupyter.spec import spec_from_options, to_dask_config
from dask_flyte_jupyter.task import build_task

INCREMENT = """\
from distributed import Client

client = Client()
futures = client.map(inc, range(n))
result = client.gather(futures)
sum(result)
"""
INCREMENT_SPEC = {"workers": 4, "worker-cpu": "8", "worker-mem": "32Gi", "scheduler-cpu": "2"}
FRAME_CELL = """\
import dask.dataframe as dd
from distributed import Client

client = Client()
totals = dd.from_pandas(frame, npartitions=4).groupby("key").value.sum().compute()
totals.to_dict()
"""
BIN = Path(sys.executable).parent


def define_inc(shell, n=10):
    """`inc` defined by a real cell, so its source is in linecache as in a notebook."""
    shell.run_cell(f"def inc(x):\n    return x + 1\n\n\nn = {n}\n", store_history=False)


def export(shell, cell, tmp_path, options=None, name="exported_cell"):
    program = analyse_cell(cell, shell.user_ns)
    spec = spec_from_options(options or {})
    return export_cell(program, spec, shell.user_ns, tmp_path / f"{name}.py"), program, spec


def run(command, tmp_path, timeout=180):
    """Runs a command in its own session; asserts that nothing it started outlives it."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": ""}
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    deadline = time.monotonic() + 10  # what the command started may still be exiting
    while (running := _running_in_session(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running, f"processes left running: {[p.cmdline() for p in running]}"
    return process.returncode, out, err


def _running_in_session(session):
    # a zombie has exited already; it waits for a parent (maybe a container's pid 1) to reap it
    return [
        p
        for p in psutil.process_iter(["status"])
        if _session(p) == session and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def _session(process):
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def load(path, monkeypatch):
    """Imports the exported file as a module (as pyflyte does)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


def serialized_custom(task):
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    settings = SerializationSettings(image_config=ImageConfig.auto_default_image())
    return get_serializable(OrderedDict(), settings, task).template.custom


def test_increment_example_runs_as_a_script_and_prints_the_magic_result(shell, tmp_path):
    define_inc(shell)
    path, _, _ = export(shell, INCREMENT, tmp_path, INCREMENT_SPEC)
    source = path.read_text()
    compile(source, str(path), "exec")
    assert "def inc(x):\n        return x + 1\n" in source  # written in by source
    code, out, err = run([sys.executable, str(path)], tmp_path)
    assert code == 0, err
    expected = shell.run_cell_magic("flyte_dask", "--workers 2", INCREMENT)
    assert (
        out.splitlines()[-1] == f"CellOutputs(result={shell.user_ns['result']!r}, value={expected})"
    )
    assert expected == 55


def test_increment_example_runs_with_pyflyte_run(shell, tmp_path):
    define_inc(shell)
    path, _, _ = export(shell, INCREMENT, tmp_path, INCREMENT_SPEC)
    # workers cannot import the file: `inc` reaches them by value, as from the notebook
    code, out, err = run([str(BIN / "pyflyte"), "run", path.name, "wf", "--n", "5"], tmp_path)
    assert code == 0, err
    assert "CellOutputs(result=[1, 2, 3, 4, 5], value=15)" in out


def test_dataframe_input_becomes_a_typed_workflow_input(shell, tmp_path, monkeypatch):
    frame = pd.DataFrame({"key": [i % 5 for i in range(50)], "value": range(50)})
    shell.user_ns["frame"] = frame
    path, _, _ = export(shell, FRAME_CELL, tmp_path, {"workers": 2})
    module = load(path, monkeypatch)
    assert module.wf.python_interface.inputs == {"frame": pd.DataFrame}
    assert module.wf.python_interface.default_inputs_as_kwargs == {}  # no default: it is data
    assert "def wf(frame: pandas.DataFrame) -> CellOutputs:" in path.read_text()

    frame.to_parquet(tmp_path / "frame.parquet")
    command = [str(BIN / "pyflyte"), "run", path.name, "wf", "--frame", "frame.parquet"]
    code, out, err = run(command, tmp_path)
    assert code == 0, err
    expected = shell.run_cell_magic("flyte_dask", "--workers 2", FRAME_CELL)
    assert f"value={expected!r}" in out
    # without a value for it, the script says how to give one instead of failing obscurely
    code, out, err = run([sys.executable, str(path)], tmp_path)
    assert code == 1 and "frame has no default: run `pyflyte run" in err


@pytest.mark.parametrize(
    "options",
    [
        INCREMENT_SPEC,
        {"workers": 1},
        {"workers": 3, "worker-gpu": 1, "worker-mem": "512Mi", "scheduler-mem": "1Gi"},
        {"workers": 2, "cache": True, "cache-version": "v7", "interruptible": True, "image": "i:1"},
        {"workers": 2, "worker-gpu": 1, "accelerator": "A100:1g.5gb", "pod-template": "gpu"},
        {"workers": 2, "worker-gpu": 1, "accelerator": "nvidia-l4-vws"},
    ],
)
def test_dask_config_equals_the_magic_task(shell, tmp_path, monkeypatch, options):
    define_inc(shell)
    path, program, spec = export(shell, INCREMENT, tmp_path, options, name="golden")
    module = load(path, monkeypatch)
    exported = module.cell
    assert exported.task_config == to_dask_config(spec)
    magic = build_task(program, spec, shell.user_ns).task
    assert serialized_custom(exported) == serialized_custom(magic)
    assert exported.get_custom(None) == magic.get_custom(None)
    for setting in ("cache", "cache_version"):
        assert getattr(exported.metadata, setting) == getattr(magic.metadata, setting)
    # unset (None) lets a workflow's default decide; the magic says False
    assert bool(exported.metadata.interruptible) == magic.metadata.interruptible
    assert exported.container_image == magic.container_image
    assert exported.metadata.pod_template_name == magic.metadata.pod_template_name
    if spec.accelerator:
        assert exported.accelerator.to_flyte_idl() == magic.accelerator.to_flyte_idl()
    else:
        assert exported.accelerator is magic.accelerator is None


def test_importing_the_module_runs_nothing(shell, tmp_path, monkeypatch, capsys):
    define_inc(shell)
    shell.user_ns["boom"] = 1
    cell = (
        "import os\n"
        "os.environ['EXPORTED_RAN'] = str(boom)\n"
        "from distributed import Client\n"
        "Client()\n"
    )
    path, _, _ = export(shell, cell, tmp_path)
    load(path, monkeypatch)
    assert "EXPORTED_RAN" not in os.environ
    assert capsys.readouterr().out == ""
    # the no_leaks fixture checks no Client or cluster was started


def ruff(*arguments):
    """Runs ruff (a test dependency) with its defaults, not this project's settings."""
    command = shutil.which("ruff", path=str(BIN)) or "ruff"
    result = subprocess.run(
        [command, *arguments, "--isolated"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_exported_module_is_formatted_and_lint_clean(shell, tmp_path):
    define_inc(shell)
    path, _, _ = export(shell, INCREMENT, tmp_path, INCREMENT_SPEC)
    ruff("format", "--check", "--diff", str(path))
    ruff("check", "--select", "E,F,W,I", str(path))


def test_notebook_definitions_travel_with_what_they_use(shell, tmp_path, monkeypatch):
    shell.run_cell(
        "import math as m\n"
        "from statistics import mean\n"
        "offset = 3\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "class Scaler:\n"
        "    factor = 10\n"
        "    def apply(self, values):\n"
        "        return [double(v) * self.factor + offset for v in values]\n"
        "shift = lambda x: x - 1\n"
        "empty = ()\n"
        "values = [1.0, 4.0]\n",
        store_history=False,
    )
    cell = (
        'note = """kept\n  as written"""\n'
        "scaled = Scaler().apply(values)\n"
        "roots = [m.sqrt(shift(v)) for v in values] + list(empty)\n"
        "mean(scaled)\n"
    )
    path, _, _ = export(shell, cell, tmp_path)
    source = path.read_text()
    assert "import math as m\nimport typing\nfrom statistics import mean\n\nfrom flytekit" in source
    assert "class Scaler:" in source and "def double(x):" in source
    assert "shift = lambda x: x - 1" in source and "empty = ()" in source
    assert '"""kept\n  as written"""' in source  # a string's lines are not indented
    ruff("check", "--select", "F,I", str(path))  # imports sorted, none unused or missing
    module = load(path, monkeypatch)
    inputs = module.wf.python_interface.inputs
    assert inputs == {"offset": int, "values": list[float]}
    assert module.wf.python_interface.default_inputs_as_kwargs == {
        "offset": 3,
        "values": [1.0, 4.0],
    }
    outputs = module.wf()
    assert outputs.scaled == [23.0, 83.0] and outputs.value == 53.0
    assert outputs.note == "kept\n  as written" and outputs.roots == [0.0, pytest.approx(3**0.5)]
    assert module.wf(offset=0, values=[2.0]).scaled == [40.0]


def test_outputs_and_the_last_expression(shell, tmp_path, monkeypatch):
    shell.user_ns["value"] = 5
    cell = "value = value + 1\nprint(value)\n"
    path, _, _ = export(shell, cell, tmp_path)
    module = load(path, monkeypatch)
    # `value` is taken by the cell, so the last expression (None here) is `cell_value`
    assert module.wf()._asdict() == {"value": 6, "cell_value": None}


def test_what_cannot_be_exported_is_named_in_one_error(shell, tmp_path):
    shell.run_cell("class Model:\n    pass\nmodel = Model()\n", store_history=False)
    shell.user_ns.update(lock=threading.Lock(), n=3)
    program = analyse_cell("with lock:\n    fitted = (model, n)\n", shell.user_ns)
    with pytest.raises(ExportError) as caught:
        export_source(program, spec_from_options({}), shell.user_ns)
    message = str(caught.value)
    assert "`lock` (a _thread.lock) has no source and no literal value" in message
    assert "`model` (a __main__.Model) has no source" in message
    assert "`n`" not in message
    with pytest.raises(ExportError, match="cannot write"):
        export_cell(
            analyse_cell("x = n\n", shell.user_ns),
            spec_from_options({}),
            shell.user_ns,
            tmp_path / "missing" / "cell.py",
        )


def test_a_notebook_import_that_clashes_with_flytekit_names_is_reported(shell):
    shell.run_cell("import json as task\n", store_history=False)
    program = analyse_cell("x = task.dumps(1)\n", shell.user_ns)
    with pytest.raises(ExportError, match="`task` \\(import json as task\\) clashes"):
        export_source(program, spec_from_options({}), shell.user_ns)


@pytest.mark.parametrize(
    ("cell", "live"),
    [
        ("from distributed import Client\nclient = Client()\nx = client.gather(1)\n", {"client"}),
        ("c = Client()\nf = c.submit(g, 1)\nfs = [c.submit(g, i) for i in r]\n", {"c", "f", "fs"}),
        ("c = get_client()\nd = c.scatter(frame)\ntotal = ddf.compute()\n", {"c", "d"}),
        (
            "with LocalCluster() as cluster, Client(cluster) as c:\n    y = c.compute(z)\n",
            {"cluster", "c", "y"},
        ),
        ("import dask\ntotal = dask.compute(x)\nz = ddf.persist()\n", set()),
    ],
)
def test_live_outputs_are_recognised_by_how_they_are_made(cell, live):
    assert live_outputs(cell) == live


def test_a_tuple_value_is_returned_as_a_list(shell, tmp_path):
    """flytekit refuses tuple outputs; the exported module turns them into lists."""
    shell.user_ns["n"] = 3
    program = analyse_cell("pair = (n, n + 1)\npair\n", shell.user_ns)
    path = export_cell(program, spec_from_options({"workers": 1}), shell.user_ns, tmp_path / "t.py")
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=240, check=True
    )
    assert "pair=[3, 4]" in out.stdout and "value=[3, 4]" in out.stdout


def test_export_shows_the_absolute_path_and_a_preview(shell, tmp_path, monkeypatch, capsys):
    define_inc(shell)
    monkeypatch.chdir(tmp_path)
    shell.run_cell_magic("flyte_dask", "--worker-mem 1Gi --export flow.py", INCREMENT)
    out = capsys.readouterr().out
    absolute = str((tmp_path / "flow.py").resolve())
    assert f"exported the cell to flow.py ({absolute})" in out
    assert f"run it: python {absolute}" in out
    # the header states the whole shape: the code sets number_of_workers=2, the default
    assert "%%flyte_dask --workers 2 --worker-mem 1Gi" in out
    assert "number_of_workers=2" in out and "@task(" in out
    assert "def cell(" in out
    assert len(out.splitlines()) < 25  # a preview, not the module
    source = (tmp_path / "flow.py").read_text()
    assert "%%flyte_dask --workers 2 --worker-mem 1Gi" in source
