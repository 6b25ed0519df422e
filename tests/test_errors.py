"""Errors users hit on real code, through a real InteractiveShell: a worker killed for exceeding
``--worker-mem``, an output that cannot be sent back, ``%tb``, top-level ``await``."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from distributed.scheduler import KilledWorker
from IPython.core.error import UsageError
from shell_helpers import magics

from dask_flyte_jupyter.errors import (
    explain_failure,
    fold_repeats,
    restore_message,
    unsent_output_text,
)
from dask_flyte_jupyter.run import RunHandle, TaskCounts, WorkerRestart
from dask_flyte_jupyter.spec import LocalShape, spec_from_options

ANSI = re.compile(r"\x1b\[[0-9;]*m")
MiB = 2**20


def flytekit_rewrites(error: BaseException, task: str = "cell_0123456789") -> BaseException:
    """What flytekit's local execution does to an exception the task raised (base_task.py,
    dispatch_execute): its args become one string."""
    error.args = (f"Error encountered while executing '{task}':\n  {error}",)
    return error


def killed_worker() -> KilledWorker:
    worker = SimpleNamespace(address="tcp://127.0.0.1:4567", memory_limit=200 * MiB)
    return KilledWorker("allocate-9d7507af6e42d998dd496d80a45f55a8", worker, 3)


def test_a_killed_worker_prints_again_after_flytekit_rewrote_its_args():
    error = flytekit_rewrites(killed_worker())
    with pytest.raises(IndexError):  # what IPython, ipykernel and nbclient used to hit
        str(error)
    restore_message(error)
    assert str(error).startswith(
        "Attempted to run task 'allocate-9d7507af6e42d998dd496d80a45f55a8' on 4 different workers"
    )
    assert isinstance(error, KilledWorker)
    assert (type(error).__module__, type(error).__qualname__) == (
        "distributed.scheduler",
        "KilledWorker",
    )


def test_saved_args_are_put_back_whole():
    error = killed_worker()
    error.flyte_dask_args = error.args  # a backend saved them before flytekit's rewrite
    flytekit_rewrites(error)
    restore_message(error)
    assert type(error) is KilledWorker and error.task.startswith("allocate-")


def test_killed_worker_explanation_names_the_task_the_limit_and_the_flag():
    spec = spec_from_options({"workers": 1, "worker-mem": "200Mi"})
    run = RunHandle(name="cell_x", spec=spec)
    run.shape = LocalShape(1, 1, 200 * MiB, ())
    key = "allocate-9d7507af6e42d998dd496d80a45f55a8"
    restarts = tuple(WorkerRestart(f"tcp://w{i}", 230 * MiB, 200 * MiB, (key,)) for i in range(4))
    run.task_source = lambda: TaskCounts(total=1, erred=1, restarts=restarts)
    error = flytekit_rewrites(killed_worker())
    restore_message(error)
    lines = explain_failure(error, "running", "<cell>", "cell_x", {}, run=run)
    shown = "\n".join(lines)
    assert f"the dask task '{key}' (function allocate) was tried on 4 workers" in shown
    assert "memory limit of 200 MiB (--worker-mem 200Mi)" in shown
    assert "4 restarts" in shown and "Raise --worker-mem" in shown
    assert len(lines) <= 6 and lines[-1].startswith("flyte_dask: the cell failed while running")


ALLOCATE = """\
from distributed import Client
def allocate(size):
    import time
    block = "x" * size
    time.sleep(3)  # long enough for the nanny's memory monitor to see it
    return len(block)
client = Client()
size = client.submit(allocate, 500 * 2**20).result()
"""


def test_worker_killed_for_exceeding_worker_mem_says_so(shell, capsys):
    shell.user_ns["size"] = "before"
    with pytest.raises(KilledWorker) as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1 --worker-mem 200Mi --no-progress", ALLOCATE)
    error = caught.value
    lines = error._render_traceback_()
    shown = "\n".join(lines)
    assert "IndexError" not in shown and "str() failed" not in shown
    assert "Cell line 9" in shown  # the .result() line of the cell
    assert "the dask task 'allocate-" in shown and "(function allocate)" in shown
    assert "--worker-mem 200Mi" in shown and "Raise --worker-mem" in shown
    assert "memory limit of 200 MiB" in shown  # needs the run handle in explain_failure
    assert len(lines) <= 8
    assert str(error).startswith("Attempted to run task 'allocate-")  # ename/evalue work
    # While dask retried, the cell said why, live.
    err = capsys.readouterr().err
    assert "a dask worker went over its memory limit of 200 MiB running allocate-" in err
    run = magics(shell).runs[-1]
    assert run.status == "failed" and len(run.tasks.restarts) >= 1
    assert shell.user_ns["size"] == "before"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "import threading\nlock = threading.Lock()\nx = 1\n",
            "output 'lock' cannot be sent back to the notebook: cannot pickle '_thread.lock' "
            "object; leave it out with --outputs x or del it at the end of the cell",
        ),
        (
            "squares = (i * i for i in range(3))\n",
            "output 'squares' cannot be sent back to the notebook: cannot pickle 'generator' "
            "object; leave it out with --outputs or del it at the end of the cell",
        ),
        (
            "(i * i for i in range(3))\n",
            "the cell's last expression cannot be sent back to the notebook: cannot pickle "
            "'generator' object",
        ),
        # Its repr raises an exception without args: flytekit's own error path then fails with
        # "IndexError: tuple index out of range" and loses the output's name.
        (
            "class Opaque:\n    def __repr__(self):\n        raise RuntimeError()\n"
            "    def __reduce__(self):\n        raise TypeError('Opaque objects stay home')\n"
            "opaque = Opaque()\n",
            "output 'opaque' cannot be sent back to the notebook: Opaque objects stay home; "
            "leave it out with --outputs Opaque or del it at the end of the cell",
        ),
    ],
    ids=["lock", "generator", "last-expression", "repr-raises"],
)
def test_an_output_that_cannot_be_sent_back_is_named_with_the_reason(shell, body, message):
    with pytest.raises(Exception) as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1 --no-progress", body)
    lines = caught.value._render_traceback_()
    assert lines[0].startswith(message)
    assert lines[-1].startswith("flyte_dask: the cell failed while")
    assert len(lines) == 2
    assert not {"lock", "x", "squares", "opaque", "Opaque"} & set(shell.user_ns)


def test_tb_shows_the_full_traceback_after_the_short_message(shell, capsys):
    result = shell.run_cell("%%flyte_dask --workers 1 --no-progress\nx = 1\n1/0\n", True)
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    first = ANSI.sub("", capsys.readouterr().out)
    assert "Cell line 3" in first and "ZeroDivisionError: division by zero" in first
    assert "site-packages" not in first and "flytekit" not in first
    # IPython renders it again to store it in the history; that stays short too
    assert "site-packages" not in "\n".join(result.error_in_exec._render_traceback_())

    shell.run_cell("%tb", store_history=True)
    full = ANSI.sub("", capsys.readouterr().out)
    assert "flytekit/core/base_task.py" in full  # the library frames the short one leaves out
    assert "dispatch_execute" in full and "1/0" in full
    assert "ZeroDivisionError" in full
    assert "Traceback (your code only" not in full


def test_top_level_await_keeps_its_clear_message(shell, capsys):
    runs = len(magics(shell).runs)
    cell = "%%flyte_dask --workers 1\nimport asyncio\nr = await asyncio.sleep(0)\n"
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError)
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "line 3: top-level `await`" in text and "use asyncio.run(...)" in text
    assert "Traceback" not in text
    assert len(magics(shell).runs) == runs  # nothing was started
    assert "r" not in shell.user_ns


def test_an_unsent_output_is_named_from_flytekits_text_alone():
    # A remote execution's error is text: what flytekit's pod said about the output.
    said = (
        "TypeTransformerFailedError: Failed to convert outputs of task 'cell_f1bb32dd5f' at "
        "position lock.\n      Failed to convert type <class '_thread.lock'> to type typing.Any "
        "| None.\n      Error Message: Cannot convert from <unlocked _thread.lock object> to "
        "typing.Any | None."
    )
    assert unsent_output_text(said) == (
        "output 'lock' cannot be sent back to the notebook: a _thread.lock cannot be pickled; "
        "leave it out with --outputs or del it at the end of the cell"
    )
    value = said.replace("position lock", "position flyte_dask_value")
    assert unsent_output_text(value).startswith("the cell's last expression cannot be sent back")
    # a value that does not fit the type the cell annotated is another problem
    assert unsent_output_text(said.replace("typing.Any | None.\n", "<class 'int'>.\n")) is None


RECURSION = """\
def r(n):
    return r(n + 1)
r(0)
"""


def test_deep_recursion_is_folded_as_python_folds_it(shell, capsys):
    result = shell.run_cell("%%flyte_dask --workers 1 --no-progress\n" + RECURSION, True)
    assert isinstance(result.error_in_exec, RecursionError)
    shown = capsys.readouterr()
    lines = ANSI.sub("", shown.out + shown.err).rstrip("\n").splitlines()
    assert len(lines) < 40, "\n".join(lines)
    text = "\n".join(lines)
    assert "RecursionError: maximum recursion depth exceeded" in text
    assert text.count("  Cell line 3\n    return r(n + 1)") == 3  # then folded, as Python does
    folded = re.search(r"^  \[Previous line repeated (\d+) more times\]$", text, re.MULTILINE)
    assert folded is not None and int(folded.group(1)) > 500
    assert magics(shell).runs[-1].error_text.startswith("RecursionError: maximum recursion")


def test_fold_repeats_follows_pythons_rule():
    def frames(*keys: str) -> list[tuple[str, list[str]]]:
        return [(key, [f"  {key}"]) for key in keys]

    assert fold_repeats(frames("a", "b", "b", "b", "c")) == ["  a", "  b", "  b", "  b", "  c"]
    assert fold_repeats(frames("a", *"b" * 4, "c")) == [
        "  a",
        *["  b"] * 3,
        "  [Previous line repeated 1 more time]",
        "  c",
    ]
    assert fold_repeats(frames(*"b" * 10))[-1] == "  [Previous line repeated 7 more times]"


def test_a_failing_lambda_on_a_worker_shows_the_cells_line_and_no_dask_log(shell, capfd):
    # capfd: the workers are processes of their own that write to the kernel's stderr
    cell = (
        "from distributed import Client\nclient = Client()\n"
        "values = client.gather(client.map(lambda x: 1/0, range(3)))\n"
    )
    with pytest.raises(ZeroDivisionError) as caught:
        shell.run_cell_magic("flyte_dask", "--workers 1", cell)
    shown = caught.value._render_traceback_()
    gather = "    values = client.gather(client.map(lambda x: 1/0, range(3)))"
    assert shown[1:5] == ["  Cell line 4", gather, "  Cell line 4, in <lambda>", gather]
    assert not any("dynamic-code" in line for line in shown)
    captured = capfd.readouterr()
    assert "Compute Failed" not in captured.out + captured.err
    assert "distributed.worker" not in captured.out + captured.err
