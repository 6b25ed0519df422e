"""Readable errors: the cell's own frames, with the cell's own line numbers."""

from __future__ import annotations

import contextlib
import linecache
import os
import re
import sysconfig
import traceback
from collections.abc import Mapping
from types import TracebackType

# flytekit prefixes a task's error message with this; users want their own message back.
_FLYTEKIT_PREFIX = re.compile(r"^Error encountered while executing '[^']*':\n  ", re.DOTALL)


def restore_message(error: BaseException) -> None:
    """Removes flytekit's "Error encountered while executing" prefix from the message."""
    if error.args and isinstance(error.args[0], str):
        error.args = (_FLYTEKIT_PREFIX.sub("", error.args[0]), *error.args[1:])


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
    "<dynamic-code>" (line numbers are kept); ``code_files`` maps function names back to files.
    """
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = code.co_filename
        if filename == "<dynamic-code>":
            filename = code_files.get(code.co_name, filename)
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


def readable_traceback(
    error: BaseException, cell_filename: str, footer: str, code_files: Mapping[str, str]
) -> list[str]:
    """Lines describing ``error``: user frames only, the cell's frames as "cell line N"."""
    lines = ["Traceback (your code only, most recent call last):"]
    for frame in user_frames(error.__traceback__, code_files):
        where = (
            f"  Cell line {frame.lineno}"
            if frame.filename == cell_filename
            else f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}'
        )
        lines.append(where)
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    lines.extend(traceback.format_exception_only(type(error), error)[-1].rstrip("\n").split("\n"))
    lines.append(footer)
    return lines


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def explain_failure(
    error: BaseException,
    phase: str | None,
    cell_filename: str,
    task: str,
    code_files: Mapping[str, str],
) -> list[str]:
    """What to show for a failed run: the user's own traceback when their code raised, else a
    short explanation of what went wrong and what to do."""
    footer = f"flyte_dask: the cell failed while {phase or 'starting'} (task {task})"
    message = str(error)
    if user_frames(error.__traceback__, code_files) and "convert outputs" not in message:
        return readable_traceback(error, cell_filename, footer, code_files)
    if phase == "starting cluster":
        advice = (
            "The dedicated dask cluster did not start. Ask for fewer workers or less memory per "
            "worker (--workers, --worker-mem), and check that this machine has room."
        )
    elif "convert outputs" in message:
        advice = (
            "An output of the cell could not be converted to its Flyte type. Annotate it with a "
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


def attach_readable_traceback(error: BaseException, lines: list[str]) -> None:
    """Makes IPython (and so ipykernel and nbclient) show ``lines`` instead of the traceback.

    IPython renders any exception that has ``_render_traceback_`` with it; the exception keeps its
    own type, so "Run All" and nbclient report the real error.
    """
    text = list(lines)
    # Exceptions with __slots__ cannot take it; they keep the default display.
    with contextlib.suppress(AttributeError):
        error._render_traceback_ = lambda: text  # type: ignore[attr-defined]
