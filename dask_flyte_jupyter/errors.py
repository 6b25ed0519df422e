"""Readable errors: the cell's own frames, with the cell's own line numbers."""

from __future__ import annotations

import contextlib
import os
import re
import sysconfig
import traceback
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


def user_frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    """The frames of a traceback that belong to the user's code, not to libraries."""
    roots = _library_roots()
    return [frame for frame in traceback.extract_tb(tb) if _is_user_frame(frame.filename, roots)]


def readable_traceback(error: BaseException, cell_filename: str, footer: str) -> list[str]:
    """Lines describing ``error``: user frames only, the cell's frames as "cell line N"."""
    lines = ["Traceback (your code only, most recent call last):"]
    for frame in user_frames(error.__traceback__):
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


def attach_readable_traceback(error: BaseException, lines: list[str]) -> None:
    """Makes IPython (and so ipykernel and nbclient) show ``lines`` instead of the traceback.

    IPython renders any exception that has ``_render_traceback_`` with it; the exception keeps its
    own type, so "Run All" and nbclient report the real error.
    """
    text = list(lines)
    # Exceptions with __slots__ cannot take it; they keep the default display.
    with contextlib.suppress(AttributeError):
        error._render_traceback_ = lambda: text  # type: ignore[attr-defined]
