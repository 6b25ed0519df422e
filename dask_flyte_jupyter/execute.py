"""One run of a cell: build the task, run it on a backend, put the results into the notebook.

Imported on the first run, not at ``%load_ext``, because it pulls in flytekit.
"""

from __future__ import annotations

import ast
import signal
import sys
import threading
from typing import Any

from IPython.core.error import UsageError

from .backends.local import LocalBackend
from .cell import CellProgram
from .display import progress_mode, show_progress
from .errors import attach_readable_traceback, explain_failure, restore_message
from .run import RunHandle
from .spec import ClusterSpec
from .task import VALUE_OUTPUT, default_task_name, unpack_outputs


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
    """Function name -> source file, for the functions a failing cell may have run on a worker."""
    files = {
        node.name: cell_file
        for node in ast.walk(ast.parse(program.body))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    for value in inputs.values():
        code = getattr(value, "__code__", None)
        if code is not None:
            files.setdefault(code.co_name, code.co_filename)
    return files


def execute_cell(
    magics: Any, program: CellProgram, spec: ClusterSpec, out_var: str | None, progress: bool
) -> Any:
    """Runs ``program`` with ``spec``; returns the value of the cell's last expression."""
    shell = magics.shell
    prepare_flytekit(shell)
    backend = LocalBackend()
    handle = RunHandle(name=spec.name or default_task_name(program.body), spec=spec)
    handle.begin("packaging")
    try:
        cell_task = backend.build(program, spec, shell.user_ns)
    except (ValueError, TypeError) as error:
        handle.finish("failed", error)
        raise UsageError(f"cannot build the task: {error}") from None
    handle.version = cell_task.version
    magics.runs.append(handle)
    inputs = {name: shell.user_ns[name] for name in program.inputs}

    mode = progress_mode(shell) if progress else "none"
    with show_progress(handle, mode) as handle.view:
        try:
            outputs = backend.run(cell_task, inputs, handle)
        except KeyboardInterrupt as error:
            handle.finish("interrupted", error)
            sys.stderr.write("flyte_dask: interrupted; the cell's cluster was shut down\n")
            raise
        except Exception as error:
            handle.finish("failed", error)
            restore_message(error)
            lines = explain_failure(
                error,
                handle.failed_phase,
                cell_task.filename,
                handle.name,
                code_files(program, inputs, cell_task.filename),
            )
            attach_readable_traceback(error, lines)
            raise

        handle.begin("gathering results")
        kept, dropped = unpack_outputs(outputs)
        handle.value = kept.pop(VALUE_OUTPUT, None)
        handle.dropped = sorted(set(dropped) - {VALUE_OUTPUT})
        handle.outputs = kept
        shell.user_ns.update(handle.outputs)
        if out_var is not None:
            shell.user_ns[out_var] = handle
        handle.finish("cached" if handle.cache_hit else "succeeded")
    return handle.value if program.last_expression else None
