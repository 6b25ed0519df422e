"""Readable errors: the cell's own frames, with the cell's own line numbers."""

from __future__ import annotations

import ast
import contextlib
import linecache
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from .run import memory_text
from .task import VALUE_OUTPUT as _VALUE_OUTPUT

if TYPE_CHECKING:
    from .run import RunHandle

# flytekit prefixes a task's error message with this; users want their own message back.
_FLYTEKIT_PREFIX = re.compile(r"^Error encountered while executing '[^']*':\n  ", re.DOTALL)
#: What flytekit says when an output of the task could not be converted to its Flyte type.
_OUTPUT_POSITION = re.compile(r"Failed to convert outputs of task '[^']*' at position (\w+)")
#: distributed's KilledWorker message (its args are gone once flytekit has rewritten them).
_KILLED_WORKER = re.compile(r"Attempted to run task (.+?) on (\d+) different workers")
#: The task's own outputs (the value, the report) all have names with this prefix.
_RESERVED_PREFIX = "flyte_dask_"


def restore_message(error: BaseException) -> None:
    """Gives the error back its own message after flytekit has rewritten it.

    Run locally, flytekit replaces a failing task's exception args with one string, its
    "Error encountered while executing" prefix plus the message. The prefix is removed. Args a
    backend saved before the rewrite (``flyte_dask_args``) are put back whole. An exception whose
    ``str()`` reads its own args (distributed's ``KilledWorker``: task, worker, allowed failures)
    would otherwise fail to print at all, and IPython, ipykernel and this module would show an
    ``IndexError`` instead: such an error becomes an instance of a subclass of its own type,
    with the same name and module, that prints the message.
    """
    saved = getattr(error, "flyte_dask_args", None)
    if isinstance(saved, tuple):
        error.args = saved
        return
    if error.args and isinstance(error.args[0], str):
        error.args = (_FLYTEKIT_PREFIX.sub("", error.args[0]), *error.args[1:])
    try:
        str(error)
    except Exception:
        _print_message_only(error)


def _message_only(self: BaseException) -> str:
    return str(self.args[0]) if self.args else ""


def _print_message_only(error: BaseException) -> None:
    cls = type(error)
    namespace = {
        "__str__": _message_only,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    with contextlib.suppress(Exception):  # a type that cannot be subclassed keeps its own
        error.__class__ = type(cls.__name__, (cls,), namespace)


def _text(error: BaseException) -> str:
    """``str(error)``, or "" when the exception cannot say it."""
    try:
        return str(error)
    except Exception:
        return ""


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def _is_user_frame(filename: str, roots: tuple[str, ...]) -> bool:
    if filename.startswith("<frozen"):
        return False
    if filename.startswith("<"):
        return True  # generated code: the cell task, <ipython-input-…>
    return not os.path.realpath(filename).startswith(roots)


def _frames(
    tb: TracebackType | None, code_files: Mapping[str, str]
) -> list[traceback.FrameSummary]:
    """The frames of a traceback, with the file names of notebook functions run on a worker.

    cloudpickle ships functions defined in the notebook with their file name replaced by
    "<dynamic-code>" (line numbers are kept); ``code_files`` maps "name@first line", else the
    name, back to files (``execute.code_files``).
    """
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = code.co_filename
        if filename == "<dynamic-code>":
            located = code_files.get(f"{code.co_name}@{code.co_firstlineno}")
            filename = located or code_files.get(code.co_name, filename)
        line = linecache.getline(filename, tb.tb_lineno).strip() or None
        frames.append(traceback.FrameSummary(filename, tb.tb_lineno, code.co_name, line=line))
        tb = tb.tb_next
    return frames


def user_frames(
    tb: TracebackType | None, code_files: Mapping[str, str] | None = None
) -> list[traceback.FrameSummary]:
    """The frames of a traceback that belong to the user's code, not to libraries."""
    roots = _library_roots()
    frames = _frames(tb, code_files or {})
    return [frame for frame in frames if _is_user_frame(frame.filename, roots)]


#: Python shows a frame that repeats (recursion) this many times in a row, then says how many
#: more there were (``traceback.StackSummary.format``).
RECURSIVE_CUTOFF = 3


def fold_repeats(frames: Iterable[tuple[Hashable, list[str]]]) -> list[str]:
    """The lines of ``frames`` (each a key, such as file, line and function, and its lines),
    with a frame repeated in a row shown :data:`RECURSIVE_CUTOFF` times and then
    "[Previous line repeated N more times]", as Python folds a deep recursion."""
    lines: list[str] = []
    last: Hashable = object()
    count = 0

    def fold() -> None:
        if count > RECURSIVE_CUTOFF:
            more = count - RECURSIVE_CUTOFF
            lines.append(f"  [Previous line repeated {more} more time{'s' if more > 1 else ''}]")

    for key, frame_lines in frames:
        if key != last:
            fold()
            last, count = key, 0
        count += 1
        if count <= RECURSIVE_CUTOFF:
            lines.extend(frame_lines)
    fold()
    return lines


def readable_traceback(
    error: BaseException,
    cell_filename: str,
    footer: str,
    code_files: Mapping[str, str],
    message: list[str] | None = None,
) -> list[str]:
    """Lines describing ``error``: user frames only, the cell's frames as "cell line N", then
    ``message`` (default: the exception's own line)."""
    lines = ["Traceback (your code only, most recent call last):"]
    shown = []
    for frame in user_frames(error.__traceback__, code_files):
        if frame.filename != cell_filename:
            where = f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}'
        elif frame.name.startswith("<"):  # a lambda or comprehension: on the line it is on
            where = f"  Cell line {frame.lineno}, in {frame.name}"
        else:
            where = f"  Cell line {frame.lineno}"
        source = [f"    {frame.line.strip()}"] if frame.line else []
        shown.append(((frame.filename, frame.lineno, frame.name), [where, *source]))
    lines.extend(fold_repeats(shown))
    if message is None:
        message = traceback.format_exception_only(type(error), error)[-1].rstrip("\n").split("\n")
    lines.extend(message)
    lines.append(footer)
    return lines


def _first_line(error: BaseException) -> str:
    text = _text(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def explain_failure(
    error: BaseException,
    phase: str | None,
    cell_filename: str,
    task: str,
    code_files: Mapping[str, str],
    run: RunHandle | None = None,
) -> list[str]:
    """What to show for a failed run: the user's own traceback when their code raised, else a
    short explanation of what went wrong and what to do. ``run`` (the run's handle) lets the
    explanation name the cluster's shape, e.g. the memory limit of a worker that was killed."""
    footer = f"flyte_dask: the cell failed while {phase or 'starting'} (task {task})"
    killed = _killed_worker(error, run)
    if killed is not None:
        return readable_traceback(error, cell_filename, footer, code_files, killed)
    unsent = _unsent_output(error)
    if unsent is not None:
        return [unsent, footer]
    message = _text(error)
    if user_frames(error.__traceback__, code_files) and "convert outputs" not in message:
        return readable_traceback(error, cell_filename, footer, code_files)
    if phase == "starting cluster":
        advice = (
            "The dedicated dask cluster did not start. Ask for fewer workers or less memory per "
            "worker (--workers, --worker-mem), and check that this machine has room."
        )
    elif "convert outputs" in message:
        name = _OUTPUT_POSITION.search(message)
        which = f"Output {name.group(1)!r}" if name else "An output"
        advice = (
            f"{which} of the cell could not be converted to its Flyte type. Annotate it with a "
            "supported type, or leave it out with --outputs."
        )
    elif "convert inputs" in message or "converting inputs" in message:
        advice = (
            "An input of the cell could not be converted to its Flyte type (it may not be "
            "picklable). Leave it out with --inputs, or build it inside the cell."
        )
    else:
        advice = "This looks like an internal error; %tb shows the full traceback."
    return [_first_line(error), advice, footer]


# ---- a worker killed while running a task (most often: over its memory limit) ----------------


def _is_killed_worker(error: BaseException) -> bool:
    return any(
        cls.__name__ == "KilledWorker" and cls.__module__.startswith("distributed")
        for cls in type(error).__mro__
    )


def _killed_worker(error: BaseException, run: RunHandle | None) -> list[str] | None:
    """The lines that explain distributed's ``KilledWorker``: which task, how often it was
    tried, the memory limit of a worker and the flag that raises it."""
    if not _is_killed_worker(error):
        return None
    key: Any = None
    tries: int | None = None
    limit: int | None = None
    if len(error.args) == 3:  # as distributed made it: (task, last worker, allowed failures)
        key, worker, allowed = error.args
        tries = allowed + 1 if isinstance(allowed, int) else None
        limit = getattr(worker, "memory_limit", None) or None
    else:  # flytekit rewrote the args into one message
        found = _KILLED_WORKER.search(_text(error))
        if found:
            with contextlib.suppress(ValueError, SyntaxError):
                key = ast.literal_eval(found.group(1))
            tries = int(found.group(2))
    restarts = list(run.tasks.restarts) if run is not None else []
    if key is not None:  # the restarts while this task ran, when the scheduler said which
        restarts = [r for r in restarts if not r.tasks or str(key) in r.tasks] or restarts
    if limit is None:
        limit = next((r.memory_limit for r in restarts if r.memory_limit), None)
    if limit is None and run is not None and run.shape is not None:
        limit = run.shape.memory_limit
    requested = run.spec.workers.mem if run is not None else None

    task = f"the dask task {str(key)!r}" if key is not None else "a dask task"
    function = _function_of(key)
    if function:
        task += f" (function {function})"
    attempts = f"on {tries} workers" if tries else "on several workers"
    lines = [f"KilledWorker: {task} was tried {attempts}, and each of them died running it."]
    if requested:
        flag = f"--worker-mem {requested}"
        if run is not None and any(note.startswith("worker mem") for note in run.notes):
            flag += ", scaled down to fit this machine"  # local_shape's note says so
    elif run is not None:
        flag = "no --worker-mem: dask's default share of the machine"
    else:
        flag = "--worker-mem"
    advice = "Raise --worker-mem, or make the task need less memory (smaller chunks or partitions)."
    if restarts:
        count = len(restarts)
        of = f" of {memory_text(limit)}" if limit is not None else ""
        lines.append(
            f"Its workers went over their memory limit{of} ({flag}) and dask restarted them "
            f"({count} restart{'s' if count > 1 else ''}). {advice}"
        )
    elif limit is not None:
        lines.append(
            f"Each worker may use {memory_text(limit)} of memory ({flag}); a worker that goes "
            f"over it is restarted, the most common reason for this error. {advice}"
        )
    else:
        lines.append(
            f"A worker that goes over its memory limit ({flag}) is restarted, the most common "
            f"reason for this error. {advice}"
        )
    return lines


def _function_of(key: Any) -> str:
    """The function (dask's key prefix) of a task key: "allocate" for "allocate-3f2a…"."""
    if key is None:
        return ""
    try:
        from dask.utils import key_split

        return str(key_split(key))
    except Exception:
        return ""


# ---- an output that cannot be sent back to the notebook ----------------------------------


def _unsent_output(error: BaseException) -> str | None:
    """The message for an output that could not be pickled to be sent back, naming it and why.

    flytekit swallows the pickling error of an output (its message says only "Cannot convert
    from <value>"), and when that conversion error has no args its own error path fails with
    ``IndexError: tuple index out of range`` (``base_task.py``, ``_output_to_literal_map``)
    and loses even the output's name. Both times the outputs are still in that frame: the
    culprit is found, and its pickling error retold, from there.
    """
    values = _outputs_being_converted(error)
    if values is None:
        return None
    position = _OUTPUT_POSITION.search(_text(error))
    if position is not None:
        name = position.group(1)
        reason = _pickling_error(values[name]) if name in values else None
    else:
        name, reason = next(
            ((n, why) for n, v in values.items() if (why := _pickling_error(v)) is not None),
            ("", None),
        )
    if reason is None:
        return None  # not a pickling problem (a value that does not fit its annotation, ...)
    others = [n for n in values if n != name and not n.startswith(_RESERVED_PREFIX)]
    return _cannot_send_back(name, reason, others)


def _cannot_send_back(name: str, reason: str, others: list[str] | None = None) -> str:
    """The message for output ``name`` that cannot be pickled; ``others``: the outputs that
    can stay, for the ``--outputs`` hint."""
    if name == _VALUE_OUTPUT:
        return (
            f"the cell's last expression cannot be sent back to the notebook: {reason}; "
            "end the cell with a statement instead, or put `;` after it"
        )
    outputs = f"--outputs {','.join(others)}" if others else "--outputs"
    return (
        f"output {name!r} cannot be sent back to the notebook: {reason}; "
        f"leave it out with {outputs} or del it at the end of the cell"
    )


#: flytekit's message when a value could not be converted to the pickle type (``Any | None``).
_PICKLE_CONVERSION = re.compile(
    r"Failed to convert type <class '(?P<type>[^']+)'> to type "
    r"(typing\.Any \| None|typing\.Optional\[typing\.Any\]|typing\.Union\[typing\.Any, NoneType\])"
)


def unsent_output_text(message: str) -> str | None:
    """The same message from flytekit's error text alone, for runs whose outputs are gone
    (a remote execution's error): the output, its type, and what to do."""
    position = _OUTPUT_POSITION.search(message)
    pickled = _PICKLE_CONVERSION.search(message)
    if position is None or pickled is None:
        return None
    return _cannot_send_back(position.group(1), f"a {pickled.group('type')} cannot be pickled")


def _tracebacks(error: BaseException) -> Iterator[TracebackType]:
    tb = error.__traceback__
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _outputs_being_converted(error: BaseException) -> dict[str, Any] | None:
    """The task's outputs by name, when ``error`` was raised while flytekit converted them."""
    for tb in _tracebacks(error):
        frame: FrameType = tb.tb_frame
        if frame.f_code.co_name == "_output_to_literal_map":
            values = frame.f_locals.get("native_outputs_as_map")
            if isinstance(values, dict):
                return values
    return None


def _pickling_error(value: Any) -> str | None:
    """Why ``value`` cannot be pickled (cloudpickle, as flytekit's pickle type does), else None."""
    try:
        import cloudpickle

        cloudpickle.dumps(value)
    except Exception as problem:
        return _text(problem) or type(problem).__name__
    return None


# ---- showing the explanation ---------------------------------------------------------------


def attach_readable_traceback(error: BaseException, lines: list[str]) -> None:
    """Makes IPython (and so ipykernel and nbclient) show ``lines`` instead of the traceback.

    IPython renders any exception that has ``_render_traceback_`` with it; the exception keeps its
    own type, so "Run All" and nbclient report the real error. ``%tb`` renders it again: that
    shows the full traceback, as the messages promise.
    """
    text = list(lines)
    with contextlib.suppress(AttributeError):  # what the run's summary keeps (run.py)
        error.flyte_dask_lines = text  # type: ignore[attr-defined]

    def render() -> list[str]:
        return full_traceback(error) if _called_by_tb_magic() else text

    # Exceptions with __slots__ cannot take it; they keep the default display.
    with contextlib.suppress(AttributeError):
        error._render_traceback_ = render  # type: ignore[attr-defined]


def _called_by_tb_magic() -> bool:
    """Whether IPython's ``%tb`` magic is rendering the exception (it is on the stack)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if (
            frame.f_code.co_name == "tb"
            and frame.f_globals.get("__name__") == "IPython.core.magics.execution"
        ):
            return True
        frame = frame.f_back
    return False


def full_traceback(error: BaseException) -> list[str]:
    """The whole traceback of ``error``, library frames included, as IPython formats it (in the
    current ``%xmode``), or as Python does outside IPython."""
    formatter: Callable[..., list[str]] | None = None
    with contextlib.suppress(Exception):
        from IPython import get_ipython

        shell = get_ipython()  # type: ignore[no-untyped-call]
        if shell is not None:
            formatter = shell.InteractiveTB.structured_traceback
    if formatter is not None:
        with contextlib.suppress(Exception):
            return formatter(type(error), error, error.__traceback__)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text.rstrip("\n").split("\n")
