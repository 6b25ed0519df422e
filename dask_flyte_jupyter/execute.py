"""One run of a cell: build the task, run it on a backend, put the results into the notebook.

Imported on the first run, not at ``%load_ext``, because it pulls in flytekit.
"""

from __future__ import annotations

import ast
import base64
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError

from .backends.local import LocalBackend
from .cell import CellProgram, ImportBinding
from .display import progress_mode, show_progress
from .errors import attach_readable_traceback, explain_failure, restore_message
from .run import RunHandle
from .spec import ClusterSpec
from .task import VALUE_OUTPUT, Unpacked, default_task_name, unpack_outputs


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
    magics: Any,
    program: CellProgram,
    spec: ClusterSpec,
    out_var: str | None,
    progress: bool,
    backend: Any = None,
) -> Any:
    """Runs ``program`` with ``spec`` on ``backend`` (default: local); returns the value of the
    cell's last expression, or the run handle of a run that goes on without waiting for it."""
    shell = magics.shell
    prepare_flytekit(shell)
    if backend is None:
        backend = LocalBackend()
    handle = RunHandle(
        name=spec.name or default_task_name(program.body), spec=spec, backend=backend.name
    )
    handle.begin("packaging")
    try:
        cell_task = backend.build(program, spec, shell.user_ns)
    except (ValueError, TypeError) as error:
        handle.finish("failed", error)
        raise UsageError(f"cannot build the task: {error}") from None
    handle.version = cell_task.version
    refuse_notebook_dask_state(program, shell.user_ns)
    magics.runs.append(handle)
    for borrowed in program.handles:
        handle.note(handle_note(borrowed))
    inputs = cell_task.task_inputs(shell.user_ns, program.inputs)

    mode = progress_mode(shell) if progress else "none"
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
            held = futures_of(value) if _may_hold_futures(value) else []
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


def _may_hold_futures(value: object) -> bool:
    if hasattr(type(value), "__dask_graph__") and not isinstance(value, type):
        return True
    return type(value) in (list, tuple, dict, set)


class Results:
    """Puts a run's results into the notebook, all at once, only when nothing failed."""

    def __init__(
        self,
        shell: Any,
        magics: Any,
        handle: RunHandle,
        out_var: str | None,
        *,
        remote: bool,
        imports: tuple[ImportBinding, ...] = (),
    ) -> None:
        self.shell, self.magics, self.handle = shell, magics, handle
        self.out_var, self.remote = out_var, remote
        self.imports = {binding.name: binding for binding in imports}
        self.figures: list[str] = []
        self._figures_before = _figure_numbers()

    def bring_back(self, outputs: dict[str, Any]) -> None:
        handle = self.handle
        handle.begin("gathering results")
        unpacked = unpack_outputs(outputs)
        updates = dict(unpacked.outputs)
        handle.value = updates.pop(VALUE_OUTPUT, None)
        updates.update(self._imports(unpacked))
        handle.dropped = sorted(
            n for n, why in unpacked.dropped.items() if why != "unbound" and n != VALUE_OUTPUT
        )
        handle.outputs = updates
        for text in unpacked.notes:
            handle.note(text)
        if unpacked.materialized:
            handle.details["brought back"] = (
                f"{', '.join(unpacked.materialized)}: "
                f"{_size(unpacked.materialized_bytes)} of dask data"
            )
        if self.remote and unpacked.stdout:
            sys.stdout.write(unpacked.stdout)
        self.shell.user_ns.update(updates)
        self._forget_unpickled_figures({**updates, VALUE_OUTPUT: handle.value})
        ended = self.magics.ended_handles
        for name in updates:
            ended.pop(name, None)
        for name, why in unpacked.dropped.items():
            if why in ("client", "cluster"):
                ended[name] = (why, handle.name)
        if self.out_var is not None:
            self.shell.user_ns[self.out_var] = handle
        self.figures = unpacked.figures

    def _imports(self, unpacked: Unpacked) -> dict[str, Any]:
        """The cell's imports and module outputs, re-imported in the kernel (never pickled)."""
        values: dict[str, Any] = {}
        for name, module in unpacked.modules.items():
            values[name] = self._import(name, module, None)
        for name in unpacked.imports:
            binding = self.imports.get(name)
            if binding is not None:
                values[name] = self._import(name, binding.module, binding.attribute)
        return {k: v for k, v in values.items() if v is not _MISSING}

    def _import(self, name: str, module: str, attribute: str | None) -> Any:
        import importlib

        try:
            imported = importlib.import_module(module)
            if attribute is None:
                return imported
            try:
                return getattr(imported, attribute)
            except AttributeError:
                return importlib.import_module(f"{module}.{attribute}")
        except ImportError as error:
            self.handle.note(f"{name} is not bound here: {error} in this kernel")
            return _MISSING

    def _forget_unpickled_figures(self, values: dict[str, Any]) -> None:
        """Figures among the outputs are copies, registered with pyplot when unpickled: the
        inline backend would show them next to the figures the cell drew."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        new = _figure_numbers() - self._figures_before
        for figure in _figures_in(values.values()):
            manager = getattr(figure.canvas, "manager", None)
            if manager is not None and manager.num in new:
                pyplot.close(figure)

    def show_figures(self) -> None:
        from IPython.display import Image, display

        for png in self.figures:
            display(Image(data=base64.b64decode(png), format="png"))


_MISSING = object()


def _figures_in(values: Any) -> list[Any]:
    """Matplotlib figures that values are or belong to (a figure, axes, a list of lines)."""
    from matplotlib.figure import Figure

    found = []
    for value in values:
        items = value if type(value) in (list, tuple) else [value]
        for item in items:
            figure = item if isinstance(item, Figure) else getattr(item, "figure", None)
            if isinstance(figure, Figure):
                found.append(figure)
    return found


def _figure_numbers() -> set[int]:
    pyplot = sys.modules.get("matplotlib.pyplot")
    return set(pyplot.get_fignums()) if pyplot is not None else set()


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def follow_run(
    handle: RunHandle,
    run: Callable[[], dict[str, Any] | None],
    mode: str,
    results: Results,
    cell_filename: str,
    files: dict[str, str],
) -> bool:
    """Shows the run live while ``run()`` runs it, then puts its outputs into the notebook.

    Returns False when ``run()`` returns None: the run goes on without waiting (``--no-wait``).
    A failed run raises its error with a readable traceback; an interrupted one re-raises.
    """
    with show_progress(handle, mode) as handle.view:
        try:
            outputs = run()
        except KeyboardInterrupt as error:
            handle.finish("interrupted", error)
            what = getattr(error, "flyte_dask_message", "the cell's cluster was shut down")
            sys.stderr.write(f"flyte_dask: interrupted; {what}\n")
            raise
        except Exception as error:
            handle.finish("failed", error)
            restore_message(error)
            lines = getattr(error, "flyte_dask_explanation", None) or explain_failure(
                error, handle.failed_phase, cell_filename, handle.name, files, run=handle
            )
            attach_readable_traceback(error, lines)
            raise
        if outputs is None:
            return False
        results.bring_back(outputs)
        handle.finish("cached" if handle.cache_hit else "succeeded")
    results.show_figures()
    return True
