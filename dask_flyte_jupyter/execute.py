"""One run of a cell: build the task, run it on a backend, put the results into the notebook.

Imported on the first run, not at ``%load_ext``, because it pulls in flytekit.
"""

from __future__ import annotations

import ast
import signal
import sys
import threading
from collections.abc import Callable
from types import CodeType
from typing import Any

from IPython.core.error import UsageError

from .backends.local import LocalBackend
from .cell import CellProgram
from .dask_state import is_collection
from .display import View, discard_view, progress_mode, show_progress
from .errors import attach_readable_traceback, explain_failure, restore_message
from .results import Results
from .run import RunHandle, kept_as_summary, record_run, start_run
from .spec import ClusterSpec
from .task import default_task_name


def prepare_flytekit(shell: Any) -> None:
    """Imports flytekit without letting it take over the notebook's tracebacks and Ctrl-C.

    On import flytekit installs rich's traceback hook, which replaces IPython's traceback display
    for every later error (ignoring ``_render_traceback_``), and a SIGINT handler that calls
    ``exit(1)``, which would turn "interrupt the kernel" into killing it.
    """
    excepthook = sys.excepthook
    sigint = signal.getsignal(signal.SIGINT)

    from flytekit import FlyteContextManager

    FlyteContextManager.current_context()  # initialises (and installs its handler) now, not mid-run
    if threading.current_thread() is threading.main_thread():
        if not callable(sigint) or getattr(sigint, "__module__", "").startswith("flytekit"):
            sigint = signal.default_int_handler
        signal.signal(signal.SIGINT, sigint)
    sys.excepthook = excepthook
    for name in ("showtraceback", "_showtraceback", "showsyntaxerror"):
        hook = shell.__dict__.get(name)
        if getattr(hook, "__module__", "") == "rich.traceback":
            del shell.__dict__[name]


def code_files(program: CellProgram, inputs: dict[str, Any], cell_file: str) -> dict[str, str]:
    """Where the code a failing cell may have run on a worker comes from, for its traceback:
    ``"name@first line"`` and ``"name"`` -> source file. cloudpickle ships this code with the
    file name "<dynamic-code>"; the cell's functions, lambdas and comprehensions map back to the
    cell, those of notebook functions among the inputs to their own cells."""
    files: dict[str, str] = {}
    for node in ast.walk(ast.parse(program.body)):
        name = _code_name(node)
        if name is not None and isinstance(node, (ast.expr, ast.stmt)):
            decorators = getattr(node, "decorator_list", [])
            first = min([node.lineno, *(d.lineno for d in decorators)])
            files[f"{name}@{first + 1}"] = cell_file  # body line 1 is cell line 2
            files.setdefault(name, cell_file)
    for value in inputs.values():
        for code in _codes(getattr(value, "__code__", None)):
            files.setdefault(f"{code.co_name}@{code.co_firstlineno}", code.co_filename)
            files.setdefault(code.co_name, code.co_filename)
    return files


#: Code objects Python names after their kind, not a name in the source.
_ANONYMOUS = {
    ast.Lambda: "<lambda>",
    ast.ListComp: "<listcomp>",
    ast.SetComp: "<setcomp>",
    ast.DictComp: "<dictcomp>",
    ast.GeneratorExp: "<genexpr>",
}


def _code_name(node: ast.AST) -> str | None:
    """The ``co_name`` of the code object a node compiles to, if it makes one."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    return _ANONYMOUS.get(type(node))


def _codes(code: Any) -> list[Any]:
    """A code object and the code objects nested in it (its lambdas, inner functions)."""
    if not isinstance(code, CodeType):
        return []
    found = [code]
    for const in code.co_consts:
        found += _codes(const)
    return found


def execute_cell(
    magics: Any,
    program: CellProgram,
    spec: ClusterSpec,
    out_var: str | None,
    progress: bool,
    backend: Any = None,
    handle: RunHandle | None = None,
    view: View | None = None,
) -> Any:
    """Runs ``program`` with ``spec`` on ``backend`` (default: local); returns the value of the
    cell's last expression, or the run handle of a run that goes on without waiting for it.
    ``handle`` and ``view``: the run's, already shown (``display.first_view``)."""
    shell = magics.shell
    mode = progress_mode(shell) if progress else "none"
    if backend is None:
        backend = LocalBackend()
    if handle is None:
        name = spec.name or default_task_name(program.body)
        handle = start_run(name, spec, backend.name, magics.runs)
    try:
        prepare_flytekit(shell)
        try:
            cell_task = backend.build(program, spec, shell.user_ns)
        except (ValueError, TypeError) as error:
            handle.finish("failed", error)
            raise UsageError(f"cannot build the task: {error}") from None
        handle.version = cell_task.version
        refuse_notebook_dask_state(program, shell.user_ns)
    except BaseException:
        if view is not None:  # the run never started: the error alone says why
            discard_view(view)
        raise
    record_run(magics.runs, handle)
    for borrowed in program.handles:
        handle.note(handle_note(borrowed))
    inputs = cell_task.task_inputs(shell.user_ns, program.inputs)

    files = code_files(program, inputs, cell_task.filename)
    bring_back = Results(
        shell, magics, handle, out_var, remote=backend.name != "local", imports=program.imported
    )
    if follow_run(
        handle,
        lambda: backend.run(cell_task, inputs, handle),
        mode,
        bring_back,
        cell_task.filename,
        files,
        view,
    ):
        return handle.value if program.last_expression and not program.quiet else None

    def follow(timeout: float | None = None) -> Any:  # handle.wait()
        def run() -> dict[str, Any]:
            return backend.follow(handle, timeout)  # type: ignore[no-any-return]

        follow_run(handle, run, mode, bring_back, cell_task.filename, files)
        return handle.value

    handle.follower = follow
    if out_var is not None:
        shell.user_ns[out_var] = handle
    return handle


def handle_note(borrowed: Any) -> str:
    """The summary's line for a notebook client or cluster the cell names."""
    if borrowed.origin is not None:
        return (
            f"{borrowed.name}: the {borrowed.kind} of cell {borrowed.origin} ended with its "
            f"cluster; here it is this cell's own {borrowed.kind}"
        )
    return f"{borrowed.name}: the notebook's {borrowed.kind} stands for this cell's own"


def refuse_notebook_dask_state(program: CellProgram, namespace: dict[str, Any]) -> None:
    """Inputs holding futures of the notebook's own cluster cannot reach the cell's cluster:
    one clear message, before anything starts."""
    from distributed import futures_of

    for name in program.inputs:
        value = namespace[name]
        try:
            may_hold = is_collection(value) or type(value) in (list, tuple, dict, set)
            held = futures_of(value) if may_hold else []
        except Exception:  # a value we cannot look into is not a future
            held = []
        if held:
            what = "persisted collection" if hasattr(value, "__dask_graph__") else "value"
            raise UsageError(
                f"input {name!r} is a {what} holding futures of the notebook's own dask "
                "cluster, which this cell's cluster cannot reach: compute it in this cell "
                f"instead, or bring its data into the notebook first ({name} = "
                f"{name}.compute() or client.gather({name}))"
            )


class CellExitError(RuntimeError):
    """The cell called ``sys.exit()``, ``exit()`` or ``quit()``, which cannot end a task."""


def _exit_code(error: SystemExit) -> str:
    return f" with {error.code!r}" if error.code is not None else ""


def follow_run(
    handle: RunHandle,
    run: Callable[[], dict[str, Any] | None],
    mode: str,
    results: Results,
    cell_filename: str,
    files: dict[str, str],
    view: View | None = None,
) -> bool:
    """Shows the run live while ``run()`` runs it, then puts its outputs into the notebook.

    Returns False when ``run()`` returns None: the run goes on without waiting (``--no-wait``).
    A failed run raises its error with a readable traceback; an interrupted one re-raises.
    """
    history = kept_as_summary(results.magics.runs, handle)  # not the outputs, nor the error
    with show_progress(handle, mode, view) as handle.view, history:
        try:
            outputs = run()
        except KeyboardInterrupt as error:
            handle.finish("interrupted", error)
            what = getattr(error, "flyte_dask_message", "the cell's cluster was shut down")
            # a few lines instead of flytekit's and dask's frames (%tb shows them all)
            attach_readable_traceback(error, [f"KeyboardInterrupt: {handle.name}: {what}"])
            raise
        except SystemExit as error:  # sys.exit() / exit() / quit() in the cell
            handle.finish("failed", error)
            raise CellExitError(
                f"sys.exit(), exit() and quit() cannot end a Flyte task (the cell called it"
                f"{_exit_code(error)}): it stopped there and nothing was kept; raise an "
                "exception to fail the cell, or let it finish"
            ) from None
        except Exception as error:
            handle.finish("failed", error)
            restore_message(error)
            lines = getattr(error, "flyte_dask_explanation", None) or explain_failure(
                error, handle.failed_phase, cell_filename, handle.name, files, run=handle
            )
            attach_readable_traceback(error, lines)
            raise
        except BaseException as error:  # GeneratorExit, BaseException(...) raised by the cell
            handle.finish("failed", error)
            detail = f": {error}" if str(error) else ""
            attach_readable_traceback(
                error, [f"{type(error).__name__}{detail} (raised by the cell; the run failed)"]
            )
            raise
        if outputs is None:
            return False
        results.bring_back(outputs)
        handle.finish("cached" if handle.cache_hit else "succeeded")
    results.show_figures()
    return True
