"""The notebook syntax a `%%flyte_dask` cell may use, translated into plain Python line for line.

`%time` and `%timeit` lines (at any indentation, as IPython allows) and a `%%time` first body
line work inside the task as in a normal cell, and a trailing `;` hides the cell's value. Each
translated line stays on the line it came from, so errors keep the cell's line numbers; the
translation calls the helpers of timing.py, which the task gets in its globals. Any other
`%` / `!` syntax is refused in one line. Pure: no IPython, no I/O.
"""

from __future__ import annotations

import ast
import io
import re
import symtable
import tokenize
from dataclasses import dataclass
from typing import Final

from .cell import CellError
from .timing import TIME_NAME, TIMEIT_NAME

_SUPPORTED: Final = "a %%flyte_dask cell supports %time, %timeit and a first-line %%time"
_SHELL_MESSAGE: Final = (
    "shell commands (`!cmd`) cannot run inside a Flyte task;"
    " use subprocess.run(...) or move the command to its own cell"
)
_CELL_TIME_MESSAGE: Final = (
    "`%%time` must be the first line of the cell body; use `%time` on a line"
)
_TIMEIT_RESULT_MESSAGE: Final = (
    "`%timeit -o` / `-v` (keeping the TimeitResult) are not supported in a %%flyte_dask cell;"
    " use timeit.repeat(...) to keep timings"
)
_NO_RAISE_MESSAGE: Final = "`--no-raise-error` is not supported in a %%flyte_dask cell"
# Statements that need a block of their own, so cannot follow `with ...:` on one line.
_COMPOUND: Final = frozenset(
    {"if", "elif", "else", "for", "while", "with", "try", "except", "finally", "def", "class"}
    | {"async", "@"}
)
_FIRST_WORD: Final = re.compile(r"[A-Za-z_]\w*|@")
_TIME_PREFIX: Final = f"with {TIME_NAME}(): "
_VALUE_PREFIX: Final = f"{TIME_NAME}().result(("
# %timeit options: the ones taking a number, and the flags (IPython's "n:r:tcp:qov:").
_TIMEIT_NUMBERS: Final = {"n": "number", "r": "repeat", "p": "precision"}
_TIMEIT_FLAGS: Final[dict[str, tuple[str, object]]] = {
    "q": ("quiet", True),
    "t": ("timer", "time"),
    "c": ("timer", "clock"),
}
_TIMEIT_HELP: Final = "supported: -n N, -r R, -p P, -q, -t, -c"


@dataclass(frozen=True)
class TranslatedCell:
    """A cell body with its notebook syntax turned into Python."""

    source: str  # valid Python (if the body was), each statement on the body line it came from
    quiet: bool  # the cell ends with `;`: its value is not displayed (IPython's rule)
    cell_timer: bool  # the first body line was `%%time` (now `pass`): see wrap_cell_timer


def translate_cell(body: str, *, line_offset: int = 1) -> TranslatedCell:
    """Translates `%time`, `%timeit` and `%%time`; raises CellError for other IPython syntax.

    Error line numbers are `body line + line_offset`, as in cell.analyse_cell.
    """
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    timer_line = _cell_timer_line(lines, line_offset)
    out, timed = _translate_lines(lines, timer_line, line_offset)
    quiet = semicolon_at_end("\n".join(out))
    if not quiet:
        _keep_timed_value(out, timed)
    return TranslatedCell(source="\n".join(out), quiet=quiet, cell_timer=timer_line is not None)


def _translate_lines(
    lines: list[str], timer_line: int | None, line_offset: int
) -> tuple[list[str], set[int]]:
    """The translated lines, and the (1-based) lines that became `with flyte_dask_time(): ...`."""
    starts = _statement_starts(lines)
    out: list[str] = []
    timed: set[int] = set()
    index = 0
    while index < len(lines):
        line = lines[index]
        if index == timer_line:
            out.append("pass  # %%time")
        elif line.lstrip()[:1] in ("%", "!"):
            start = index in starts if starts is not None else _at_statement_start(out)
            if start is None:  # the cell does not parse before this line: Python says why
                return [*out, *lines[index:]], timed
            if start:
                translated = _translate_line(lines, index, index + 1 + line_offset)
                if translated[0].lstrip().startswith(_TIME_PREFIX):
                    timed.add(index + 1)
                out.extend(translated)
                index += len(translated)
                continue
            out.append(line)  # inside a string or bracket: not notebook syntax
        else:
            out.append(line)
        index += 1
    return out, timed


def wrap_cell_timer(statements: list[ast.stmt]) -> list[ast.stmt]:
    """`%%time`: the task's statements inside `with flyte_dask_time():`, at the first one's line.

    Give it the statements that run the cell, including the one that keeps its last value, but
    not the `return` that collects the outputs: IPython times the whole cell, the last
    expression too, and prints the times also when the cell raises.
    """
    first, last = statements[0], statements[-1]
    call = ast.Call(func=ast.Name(TIME_NAME, ast.Load()), args=[], keywords=[])
    node = ast.With(items=[ast.withitem(context_expr=call)], body=statements)
    ast.copy_location(node, first)
    node.end_lineno, node.end_col_offset = last.end_lineno, last.end_col_offset
    return [ast.fix_missing_locations(node)]


def semicolon_at_end(source: str) -> bool:
    """IPython's `DisplayHook.semicolon_at_end_of_expression`: is the last token a `;`?

    Comments and blank lines after it do not count; a `;` inside a string is not a token.
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return False  # the cell does not parse; its error is reported elsewhere
    skipped = (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)
    for token in reversed(tokens):
        if token.type not in skipped:
            return token.type == tokenize.OP and token.string == ";"
    return False


def _cell_timer_line(lines: list[str], line_offset: int) -> int | None:
    """The index of a `%%time` first line (after blank lines, which IPython skips too)."""
    for index, line in enumerate(lines):
        escaped = line.strip()
        if not escaped:
            continue
        if not escaped.startswith("%%"):
            return None
        name, _, args = escaped[2:].partition(" ")
        if name != "time":
            return None  # refused later, as any other cell magic
        if args.strip().split(" ")[0] == "--no-raise-error":
            raise CellError(_NO_RAISE_MESSAGE, index + 1 + line_offset)
        if args.strip():  # IPython's own message
            raise CellError("Can't use statement directly after '%%time'!", index + 1 + line_offset)
        return index
    return None


def _statement_starts(lines: list[str]) -> set[int] | None:
    """Indexes of the lines that start a statement, from one pass of Python's tokenizer.

    The notebook syntax itself tokenizes (`%` is an operator, `!` an error token), and up to the
    first line that is refused it leaves the tokenizer where its translation would. None when
    the text does not tokenize (an unclosed string, bad indentation, a stricter Python): then
    each line is decided from the translation before it.
    """
    text = "".join(f"{line}\n" for line in lines)
    layout = (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    starts: set[int] = set()
    at_start = True
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.NEWLINE:
                at_start = True
            elif at_start and token.type not in layout:
                starts.add(token.start[0] - 1)
                at_start = False
    except (tokenize.TokenError, SyntaxError):
        return None
    return starts


def _at_statement_start(lines: list[str]) -> bool | None:
    """Whether a line after `lines` starts a statement: not inside a string, bracket or `\\`.

    None: the text before does not tokenize at all (bad indentation, ...).
    """
    text = "".join(f"{line}\n" for line in lines)
    try:
        for _ in tokenize.generate_tokens(io.StringIO(text).readline):
            pass
    except tokenize.TokenError:
        return False  # the text ends inside a multi-line string, a bracket or a continuation
    except SyntaxError:
        return None
    return True


def _translate_line(lines: list[str], index: int, line: int) -> list[str]:
    """The Python for the notebook syntax starting at `lines[index]` (one string per line)."""
    text = lines[index]
    indent = text[: len(text) - len(text.lstrip())]
    escaped = text.lstrip()
    if escaped.startswith("!"):
        raise CellError(_SHELL_MESSAGE, line)
    if escaped.startswith("%%"):
        if escaped[2:].partition(" ")[0] == "time":
            raise CellError(_CELL_TIME_MESSAGE, line)
        raise _unsupported(escaped, line)
    name, _, args = escaped[1:].partition(" ")  # IPython splits the name off at a space
    if name == "time":
        return [indent + _time_line(args, line)]
    if name == "timeit":
        statement, count = _continued(lines, index, args)
        return [indent + _timeit_line(statement, line)] + [""] * (count - 1)
    raise _unsupported(escaped, line)


def _unsupported(escaped: str, line: int) -> CellError:
    magic = escaped.split(" ")[0] or escaped
    return CellError(
        f"`{magic}` cannot run inside a Flyte task; move it to its own cell ({_SUPPORTED})", line
    )


def _time_line(args: str, line: int) -> str:
    """`%time STATEMENT` -> `with flyte_dask_time(): STATEMENT`: names bind in the cell's scope.

    The statement's text stays as it is, so a `\\` or bracket continuing it onto the next lines
    keeps working as Python.
    """
    statement = args.strip()
    if statement.split(" ")[0] == "--no-raise-error":
        raise CellError(_NO_RAISE_MESSAGE, line)
    if not statement or statement.startswith("#"):
        return f"{_TIME_PREFIX}pass  {statement}".rstrip()
    first = _FIRST_WORD.match(statement)
    if first and first.group() in _COMPOUND:
        raise CellError(
            f"`%time` can time a simple statement only, not `{first.group()}` in a %%flyte_dask"
            " cell; put `%%time` on the cell's first line, or time a function call",
            line,
        )
    return _TIME_PREFIX + statement


def _continued(lines: list[str], index: int, args: str) -> tuple[str, int]:
    """The statement of a line magic and its `\\` continuation lines, joined as IPython does."""
    parts, count = [args], 1
    while parts[-1].endswith("\\") and index + count < len(lines):
        parts[-1] = parts[-1][:-1]
        parts.append(lines[index + count])
        count += 1
    return "".join(parts), count


def _timeit_line(args: str, line: int) -> str:
    """`%timeit ... STATEMENT` -> `flyte_dask_timeit('STATEMENT', {names it reads}, options)`.

    The statement runs as a string compiled into timeit's loop (as in IPython: it binds no
    names); the names it reads are passed as a dict, so the cell's analysis sees them as reads.
    """
    options, statement = _timeit_options(args, line)
    try:
        tree = ast.parse(statement, "<magic-timeit-stmt>")
        compile(tree, "<magic-timeit-stmt>", "exec")  # `return` outside a function, ...
    except SyntaxError as exc:
        raise CellError(f"%timeit: {exc.msg}", line) from None
    if not tree.body:
        return "pass"  # IPython does nothing for an empty statement
    names = ", ".join(f"{name!r}: {name}" for name in _free_names(statement))
    extra = "".join(f", {key}={value!r}" for key, value in options.items())
    return f"{TIMEIT_NAME}({statement!r}, {{{names}}}{extra})"


def _timeit_options(args: str, line: int) -> tuple[dict[str, object], str]:
    """Splits `-n 10 -r3 -q STATEMENT` like getopt (IPython's parse_options) does."""
    options: dict[str, object] = {}
    rest = args.strip()
    while True:
        word, _, after = rest.partition(" ")
        if word == "--":
            return options, after.strip()
        if not word.startswith("-") or word == "-":
            return options, rest
        rest = _timeit_cluster(word[1:], after.strip(), options, line)


def _timeit_cluster(letters: str, after: str, options: dict[str, object], line: int) -> str:
    """Reads one `-qn10`-style word into `options`; returns the text after it."""
    for position, letter in enumerate(letters):
        if letter in _TIMEIT_FLAGS:
            key, flag = _TIMEIT_FLAGS[letter]
            options[key] = flag
        elif letter in _TIMEIT_NUMBERS:
            value = letters[position + 1 :]
            if not value:
                value, _, after = after.partition(" ")
                after = after.strip()
            options[_TIMEIT_NUMBERS[letter]] = _timeit_number(letter, value, line)
            return after
        elif letter in "ov":
            raise CellError(_TIMEIT_RESULT_MESSAGE, line)
        else:
            raise CellError(f"%timeit: option -{letter} not recognized ({_TIMEIT_HELP})", line)
    return after


def _timeit_number(letter: str, value: str, line: int) -> int:
    lowest = 1 if letter == "r" else 0  # -n 0 lets IPython choose the loop count
    try:
        number = int(value)
    except ValueError:
        number = lowest - 1
    if number < lowest:
        raise CellError(f"%timeit: -{letter} needs a whole number >= {lowest}, not {value!r}", line)
    return number


def _free_names(statement: str) -> list[str]:
    """The names `statement` reads from outside, when run as the body of a function."""
    wrapper = symtable.symtable(f"def _timed():\n {statement}\n", "<magic-timeit>", "exec")
    names: set[str] = set()
    tables = list(wrapper.get_children())
    while tables:
        table = tables.pop()
        names.update(
            s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()
        )
        tables.extend(table.get_children())
    return sorted(names)


def _keep_timed_value(lines: list[str], timed: set[int]) -> None:
    """A last `%time EXPR` stays the cell's last expression: `flyte_dask_time().result((EXPR))`.

    No lambda: EXPR is evaluated in the cell's own scope (a walrus binds there), and Python
    evaluates the call's argument after making the timer, so the timer brackets EXPR exactly.
    """
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return
    last = tree.body[-1] if tree.body else None
    if not (isinstance(last, ast.With) and last.lineno in timed and len(last.body) == 1):
        return
    expression = last.body[0]
    if not isinstance(expression, ast.Expr):
        return
    value = expression.value
    if value.end_lineno is None or value.end_col_offset is None:  # pragma: no cover - parsed
        return
    text = lines[value.end_lineno - 1]
    column = len(text.encode()[: value.end_col_offset].decode())  # the offset is in UTF-8 bytes
    lines[value.end_lineno - 1] = f"{text[:column]})){text[column:]}"
    start = last.lineno - 1
    lines[start] = lines[start].replace(_TIME_PREFIX, _VALUE_PREFIX, 1)
