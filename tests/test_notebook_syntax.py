"""Notebook syntax inside a `%%flyte_dask` cell: `%time`, `%timeit`, `%%time` and a trailing `;`.

Translation tests check the Python the cell becomes (line for line); run-time tests run it as the
task runs it (a function with timing.TIMING_GLOBALS in its globals) and compare what it prints
with what IPython's own magics print in a real InteractiveShell.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displayhook import DisplayHook
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magics.execution import TimeitResult, _format_time

from dask_flyte_jupyter import notebook_syntax, timing
from dask_flyte_jupyter.cell import CellError, analyse_cell
from dask_flyte_jupyter.notebook_syntax import (
    TranslatedCell,
    semicolon_at_end,
    translate_cell,
    wrap_cell_timer,
)
from dask_flyte_jupyter.timing import TIMING_GLOBALS, format_time, format_timeit

VALUE = "flyte_dask_value"
NO_VALUE = object()

# One measured duration as IPython writes it: `12.3 ms`, `0 ns`, `1e+03 μs`.
_DURATION = re.compile(r"\d+(?:\.\d+)?(?:e[+-]\d+)? (?:ns|\u03bcs|us|ms|s)\b")
_LOOPS = re.compile(r"[\d,]+ loops? each")


def cell(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def lines(text: str) -> int:
    return len(text.split("\n"))


# --- translation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "%time y = f(x)\ny",
        "x = 1\n%timeit -n 3 -r 2 f(x)\nx\n",
        "%%time\nx = f(1)\nx",
        "for i in range(3):\n    %time y = f(i)\n    %timeit f(i)\n%time y",
        "%time z = f(1, \\\n    2)\n%timeit f(1, \\\n    2)\nz",
        "s = '''\n%time not magic\n'''\n%time s;",
        "\n\n%%time\n\nx = 1\n",
    ],
)
def test_translation_keeps_every_line_where_it_was(body: str) -> None:
    source = translate_cell(body).source
    assert lines(source) == lines(body)
    in_timeit = False  # the `\\` continuation lines of a %timeit become blank
    for number, (old, new) in enumerate(zip(body.split("\n"), source.split("\n"), strict=True)):
        if in_timeit:
            assert new == ""
        elif not old.lstrip().startswith(("%", "!")):
            assert new == old, f"line {number + 1} changed"
        in_timeit = (in_timeit or old.lstrip().startswith("%timeit")) and old.endswith("\\")
    assert ast.parse(source)


def test_time_statement_binds_in_the_cell_scope() -> None:
    source = translate_cell("%time total = f(x)  # why\ntotal").source
    assert source == "with flyte_dask_time(): total = f(x)  # why\ntotal"


def test_time_at_any_indentation() -> None:
    body = cell(
        """
        def g(n):
            for i in range(n):
                %time y = i * 2
            return y
        """
    )
    assert "        with flyte_dask_time(): y = i * 2\n" in translate_cell(body).source


def test_last_time_expression_stays_the_cells_last_expression() -> None:
    translated = translate_cell("x = 1\n%time f(x)  # the value")
    assert translated.source == "x = 1\nflyte_dask_time().result((f(x)))  # the value"
    assert isinstance(ast.parse(translated.source).body[-1], ast.Expr)
    assert not translated.quiet


def test_last_time_expression_spanning_lines_and_with_a_walrus() -> None:
    source = translate_cell("%time (w := f(1,\n      2))").source
    assert source == "flyte_dask_time().result(((w := f(1,\n      2))))"
    assert translate_cell("%time a, 'é'").source == "flyte_dask_time().result((a, 'é'))"


def test_time_expression_not_last_and_quiet_time_stay_statements() -> None:
    assert translate_cell("%time f(x)\ny = 1").source == "with flyte_dask_time(): f(x)\ny = 1"
    quiet = translate_cell("%time f(x);  # hidden")
    assert quiet.source == "with flyte_dask_time(): f(x);  # hidden"
    assert quiet.quiet
    # Two statements: IPython returns no value for them.
    assert translate_cell("%time a; b").source == "with flyte_dask_time(): a; b"


def test_empty_time_times_nothing() -> None:
    assert translate_cell("%time\n%time  # c").source == (
        "with flyte_dask_time(): pass\nwith flyte_dask_time(): pass  # c"
    )


def test_timeit_passes_the_statement_and_the_names_it_reads() -> None:
    source = translate_cell("%timeit -n 10 -r3 sorted(xs, key=lambda v: v[k])").source
    assert source == (
        "flyte_dask_timeit('sorted(xs, key=lambda v: v[k])', "
        "{'k': k, 'sorted': sorted, 'xs': xs}, number=10, repeat=3)"
    )


def test_timeit_names_bound_by_the_statement_are_its_own() -> None:
    source = translate_cell("%timeit y = [i for i in data]; y.sort()").source
    assert "{'data': data}" in source


@pytest.mark.parametrize(
    ("line", "options"),
    [
        ("%timeit f()", ""),
        ("%timeit -q -n5 f()", ", quiet=True, number=5"),
        ("%timeit -qn 5 -r 1 f()", ", quiet=True, number=5, repeat=1"),
        ("%timeit -p 4 -t f()", ", precision=4, timer='time'"),
        ("%timeit -c -- -f()", ", timer='clock'"),
        ("%timeit -n 0 f()", ", number=0"),
    ],
)
def test_timeit_options(line: str, options: str) -> None:
    statement = "-f()" if "--" in line else "f()"
    expected = f"flyte_dask_timeit({statement!r}, {{'f': f}}{options})"
    assert translate_cell(line).source == expected


def test_timeit_continuation_lines_become_blank() -> None:
    source = translate_cell("    %timeit f(1, \\\n 2)\nx").source
    assert source == "    flyte_dask_timeit('f(1,  2)', {'f': f})\n\nx"


def test_cell_timer_first_line_becomes_pass() -> None:
    translated = translate_cell("%%time\nx = f(1)\nx")
    assert translated == TranslatedCell(
        source="pass  # %%time\nx = f(1)\nx", quiet=False, cell_timer=True
    )
    assert translate_cell("\n  \n%%time\nx").cell_timer
    assert not translate_cell("x = 1").cell_timer


@pytest.mark.parametrize(
    "body",
    [
        'x = "%time f()"',
        "y = a % b\n",
        "y = (a\n% b)",
        "y = a \\\n% b",
        "s = '''\n%time f()\n!ls\n'''",
        's = """abc\n%timeit x"""',
        "# %time f()\n",
        "y = f(x)  # !ls",
    ],
)
def test_percent_and_bang_in_python_are_untouched(body: str) -> None:
    assert translate_cell(body) == TranslatedCell(source=body, quiet=False, cell_timer=False)


# --- the `;` rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "x",
        "x;",
        "x;  # a comment",
        "x  # a comment;",
        "x; y",
        "x;\n\n",
        "x = 1;",
        "'a;'",
        "s = '''\n;'''",
        "f(\n  1);",
        "if a:\n    b;",
        "x;;",
        "",
    ],
)
def test_semicolon_rule_is_ipythons(body: str) -> None:
    assert semicolon_at_end(body) is bool(DisplayHook.semicolon_at_end_of_expression(body))
    assert translate_cell(body).quiet is semicolon_at_end(body)


def test_semicolon_after_timed_expression_is_quiet() -> None:
    assert translate_cell("%time f(x);").quiet
    assert not translate_cell("%time f(x)  # ;").quiet


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "text"),
    [
        ("x = 1\n!ls -l", 3, "shell commands (`!cmd`) cannot run inside a Flyte task"),
        ("%matplotlib inline", 2, "`%matplotlib` cannot run inside a Flyte task"),
        ("x = 1\n  %who", 3, "`%who` cannot run"),
        ("%%capture\nx = 1", 2, "`%%capture` cannot run inside a Flyte task"),
        ("%%timeit\nx = 1", 2, "`%%timeit` cannot run"),
        ("x = 1\n%%time\ny = 2", 3, "`%%time` must be the first line of the cell body"),
        ("%%time x = 1\ny", 2, "Can't use statement directly after '%%time'!"),
        ("%%time --no-raise-error\ny", 2, "`--no-raise-error` is not supported"),
        ("%time --no-raise-error f()", 2, "`--no-raise-error` is not supported"),
        ("%time for i in x: f(i)", 2, "`%time` can time a simple statement only, not `for`"),
        ("%time @dec", 2, "not `@`"),
        ("%timeit -o f()", 2, "`%timeit -o` / `-v`"),
        ("%timeit -v result f()", 2, "`%timeit -o` / `-v`"),
        ("%timeit -x", 2, "%timeit: option -x not recognized"),
        ("%timeit -r 0 f()", 2, "%timeit: -r needs a whole number >= 1, not '0'"),
        ("%timeit -n many f()", 2, "%timeit: -n needs a whole number >= 0, not 'many'"),
        ("%timeit -n", 2, "%timeit: -n needs a whole number >= 0, not ''"),
        ("%timeit f(", 2, "%timeit: "),
        ("%timeit return 1", 2, "%timeit: 'return' outside function"),
    ],
)
def test_refusals_name_the_line(body: str, line: int, text: str) -> None:
    with pytest.raises(CellError) as error:
        translate_cell(body)
    assert error.value.line == line
    assert text in str(error.value)
    assert "\n" not in str(error.value)


def test_refusal_line_numbers_follow_line_offset() -> None:
    with pytest.raises(CellError) as error:
        translate_cell("x = 1\n%load_ext foo", line_offset=10)
    assert error.value.line == 12


def test_magic_assignments_keep_cell_pys_refusal() -> None:
    body = "x = !ls\ny = %time f()"
    assert translate_cell(body).source == body  # not notebook syntax at a statement start
    with pytest.raises(CellError, match="IPython syntax"):
        analyse_cell(body, {"f": len})


def test_an_earlier_syntax_error_is_left_for_python_to_report() -> None:
    body = "if x:\n        a = 1\n    b = 2\n!ls"
    assert translate_cell(body).source == body


def test_translated_cell_is_analysed_with_the_names_it_reads() -> None:
    body = cell(
        """
        %time total = f(x)
        %timeit g(total, n)
        total
        """
    )
    translated = translate_cell(body)
    namespace = {"f": abs, "g": max, "x": -3, "n": 2, **TIMING_GLOBALS}
    program = analyse_cell(translated.source, namespace)
    assert {"f", "g", "x", "n"} <= set(program.inputs)
    assert "total" in program.outputs
    assert program.last_expression


# --- running the translation as the task does ----------------------------------------------


def run_as_task(body: str, **inputs: Any) -> tuple[dict[str, Any], Any]:
    """Runs a body the way task.py runs a cell: a function, its statements on the cell's lines.

    Returns the function's locals and the last expression's value (NO_VALUE when not shown).
    """
    translated = translate_cell(body)
    statements = ast.parse(translated.source).body
    ast.increment_lineno(ast.Module(body=statements, type_ignores=[]), 1)
    keep_value = isinstance(statements[-1], ast.Expr) and not translated.quiet
    if keep_value:
        last = statements[-1]
        assert isinstance(last, ast.Expr)
        assign = ast.Assign(targets=[ast.Name(VALUE, ast.Store())], value=last.value)
        statements[-1] = ast.copy_location(assign, last)
    if translated.cell_timer:
        statements = wrap_cell_timer(statements)
    collect = ast.parse("return dict(locals())").body[0]
    ast.increment_lineno(collect, lines(body) + 1)
    function = ast.FunctionDef(
        name="cell",
        args=ast.arguments(
            posonlyargs=[],
            args=[ast.arg(arg=name) for name in inputs],
            kwonlyargs=[],
            kw_defaults=[],
            defaults=[],
        ),
        body=[*statements, collect],
        decorator_list=[],
        lineno=1,
        col_offset=0,
    )
    module = ast.fix_missing_locations(ast.Module(body=[function], type_ignores=[]))
    scope: dict[str, Any] = {"__name__": "__main__", **TIMING_GLOBALS}
    exec(compile(module, "<flyte_dask cell>", "exec"), scope)
    scope_locals: dict[str, Any] = scope["cell"](**inputs)
    return scope_locals, scope_locals.pop(VALUE, NO_VALUE)


@contextlib.contextmanager
def captured(encoding: str = "utf-8") -> Iterator[io.TextIOWrapper]:
    """sys.stdout as a real encoded stream (the encoding decides `µs` and `±`)."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding, newline="\n")
    with contextlib.redirect_stdout(stream):
        yield stream


def printed(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode(stream.encoding)


def shape(text: str, *, loops: bool = False) -> list[str]:
    """Printed timing lines with the measured numbers (and chosen loop counts) taken out."""
    kept = [
        line
        for line in text.splitlines()
        if not line.startswith(("Out[", "The slowest run took", "Compiler"))
    ]
    timed = [_DURATION.sub("T", line) for line in kept]
    return [_LOOPS.sub("N loops each", line) for line in timed] if loops else timed


@pytest.fixture
def ipython() -> Iterator[InteractiveShell]:
    """IPython's own shell, to see what its magics print."""
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    yield shell
    shell.reset(new_session=False)


def ipython_prints(shell: InteractiveShell, code: str) -> tuple[str, Any]:
    with captured() as stream:
        result = shell.run_cell(code)
    return printed(stream), result.result


TIME_SHAPE = ["CPU times: user T, sys: T, total: T", "Wall time: T"]


def test_time_statement_prints_ipythons_lines_and_binds(ipython: InteractiveShell) -> None:
    body = "%time y = sum(range(n))"
    ipython.push({"n": 1000})
    expected, _ = ipython_prints(ipython, body)
    with captured() as stream:
        scope, value = run_as_task(body + "\ny", n=1000)
    assert shape(printed(stream)) == shape(expected) == TIME_SHAPE
    assert scope["y"] == ipython.user_ns["y"] == 499500
    assert value == 499500


def test_time_expression_last_is_the_value(ipython: InteractiveShell) -> None:
    expected, ipython_value = ipython_prints(ipython, "%time sum(range(10))")
    with captured() as stream:
        _, value = run_as_task("%time sum(range(10))")
    assert shape(printed(stream)) == shape(expected) == TIME_SHAPE
    assert value == ipython_value == 45


def test_time_expression_with_semicolon_shows_nothing(ipython: InteractiveShell) -> None:
    expected, ipython_value = ipython_prints(ipython, "%time sum(range(10));")
    with captured() as stream:
        _, value = run_as_task("%time sum(range(10));")
    assert shape(printed(stream)) == shape(expected) == TIME_SHAPE
    assert ipython_value is None
    assert value is NO_VALUE


def test_last_time_walrus_binds_in_the_cell() -> None:
    with captured():
        scope, value = run_as_task("%time (w := 6 * 7)")
    assert scope["w"] == value == 42


def test_time_inside_a_loop_times_each_statement() -> None:
    body = cell(
        """
        total = 0
        for i in range(3):
            %time total += i
        total
        """
    )
    with captured() as stream:
        _, value = run_as_task(body)
    assert shape(printed(stream)) == TIME_SHAPE * 3
    assert value == 3


def test_time_prints_before_an_error_propagates(ipython: InteractiveShell) -> None:
    expected, _ = ipython_prints(ipython, "%time x = 1 / 0")
    with captured() as stream, pytest.raises(ZeroDivisionError):
        run_as_task("%time x = 1 / 0\nx")
    assert shape(printed(stream)) == TIME_SHAPE
    assert shape(expected)[:2] == TIME_SHAPE


def test_timeit_prints_ipythons_line(ipython: InteractiveShell) -> None:
    body = "%timeit -n 3 -r 2 sorted(data)"
    ipython.push({"data": list(range(50))})
    expected, _ = ipython_prints(ipython, body)
    with captured() as stream:
        _, value = run_as_task(body, data=list(range(50)))
    ours = shape(printed(stream))
    assert ours == shape(expected) == ["T ± T per loop (mean ± std. dev. of 2 runs, 3 loops each)"]
    assert value is None  # like IPython's %timeit without -o


def test_timeit_autorange_matches_ipython(ipython: InteractiveShell) -> None:
    ipython.push({"x": 5})
    expected, _ = ipython_prints(ipython, "%timeit -r 2 x + 1")
    with captured() as stream:
        run_as_task("%timeit -r 2 x + 1", x=5)
    ours = printed(stream)
    assert shape(ours, loops=True) == shape(expected, loops=True)
    assert shape(ours, loops=True) == ["T ± T per loop (mean ± std. dev. of 2 runs, N loops each)"]
    loops = re.search(r"of 2 runs, ([\d,]+) loops each", ours)
    assert loops and re.fullmatch(r"10*", loops.group(1).replace(",", ""))  # a power of ten


def test_timeit_sees_the_cells_locals_and_binds_nothing(ipython: InteractiveShell) -> None:
    calls: list[int] = []
    body = cell(
        """
        local = 7
        %timeit -q -n 1 -r 1 q = record(local)
        """
    )
    with captured() as stream:
        scope, _ = run_as_task(body, record=calls.append)
    assert printed(stream) == ""
    assert calls == [7]  # -n 1 -r 1: run once, no autorange
    assert "q" not in scope
    ipython.push({"record": calls.append, "local": 8})
    ipython_prints(ipython, "%timeit -q -n 1 -r 1 q = record(local)")
    assert "q" not in ipython.user_ns
    assert calls == [7, 8]


def test_timeit_inside_a_function_defined_in_the_cell() -> None:
    body = cell(
        """
        def bench(items):
            %timeit -n 2 -r 1 len(items)
        bench([1, 2])
        """
    )
    with captured() as stream:
        run_as_task(body)
    assert shape(printed(stream)) == ["T ± T per loop (mean ± std. dev. of 1 run, 2 loops each)"]


def test_cell_timer_times_the_whole_cell(ipython: InteractiveShell) -> None:
    body = "%%time\nimport math\nv = math.factorial(20)\nv"
    expected, ipython_value = ipython_prints(ipython, body)
    with captured() as stream:
        scope, value = run_as_task(body)
    assert shape(printed(stream)) == shape(expected) == TIME_SHAPE
    assert value == ipython_value == scope["v"]


def test_cell_timer_prints_when_the_cell_fails(ipython: InteractiveShell) -> None:
    body = "%%time\nx = 1\nx / 0"
    expected, _ = ipython_prints(ipython, body)
    with captured() as stream, pytest.raises(ZeroDivisionError):
        run_as_task(body)
    assert shape(printed(stream)) == TIME_SHAPE == shape(expected)[:2]


def test_cell_timer_prints_after_the_cells_own_output() -> None:
    with captured() as stream:
        run_as_task("%%time\nprint('working')\n%time y = 1\nprint('done')")
    assert shape(printed(stream)) == ["working", *TIME_SHAPE, "done", *TIME_SHAPE]


def test_cell_timer_keeps_statement_lines_for_tracebacks() -> None:
    with captured(), pytest.raises(ZeroDivisionError) as error:
        run_as_task("%%time\nx = 1\n\ny = x / 0")
    assert error.traceback[-1].lineno + 1 == 5  # cell line 5 (pytest's lineno is 0-based)


# --- formats, exactly ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds",
    [0.0, 1e-10, 3e-9, 999.5e-9, 1e-6, 2.5e-5, 0.0009996, 0.001, 0.25, 1.0, 59.99, 60.0, 3725.4],
)
@pytest.mark.parametrize("precision", [1, 3, 5])
def test_format_time_is_ipythons(seconds: float, precision: int) -> None:
    with captured():
        assert format_time(seconds, precision) == _format_time(seconds, precision)


@pytest.mark.parametrize(
    ("runs", "loops"),
    [([0.5], 1), ([0.002, 0.003, 0.0025], 1000), ([1.2e-3] * 7, 10_000_000), ([90.0, 91.0], 2)],
)
@pytest.mark.parametrize("precision", [1, 3, 5])
def test_timeit_line_is_ipythons(runs: list[float], loops: int, precision: int) -> None:
    for encoding in ("utf-8", "ascii"):
        with captured(encoding):
            result = TimeitResult(loops, len(runs), min(runs), max(runs), runs, 0.0, precision)
            assert format_timeit(runs, loops, precision) == str(result)


def test_ascii_stdout_gets_ipythons_fallbacks() -> None:
    with captured("ascii"):
        assert format_time(2e-6) == _format_time(2e-6) == "2 us"
        assert "+-" in format_timeit([1e-6, 2e-6], 1)


def test_stdout_without_encoding_prints_for_the_notebook() -> None:
    # A capture buffer names no encoding; its text is shown in the (UTF-8) notebook.
    with contextlib.redirect_stdout(io.StringIO()):
        assert format_time(2e-6) == "2 \u03bcs"


# --- timing.py runs where this package does not --------------------------------------------


def test_timing_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(timing.__file__).read_text())
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.append(node.module or "")
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
    top = {name.split(".")[0] for name in modules}
    assert "dask_flyte_jupyter" not in top
    assert top <= set(sys.stdlib_module_names) | {"__future__"}, top - set(sys.stdlib_module_names)


def test_timing_helpers_ship_by_value_and_run_without_the_package(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    body = "%%time\n%time a = sum(range(10))\n%timeit -n 2 -r 2 a + 1\na"
    translated = translate_cell(body)
    cloudpickle.register_pickle_by_value(timing)
    try:
        payload = cloudpickle.dumps((TIMING_GLOBALS, translated.source))
    finally:
        cloudpickle.unregister_pickle_by_value(timing)
    (tmp_path / "payload.pkl").write_bytes(payload)
    script = textwrap.dedent(
        """
        import sys
        sys.modules["dask_flyte_jupyter"] = None  # the package is not installed here
        sys.modules["IPython"] = None  # nor IPython
        import pickle
        helpers, source = pickle.loads(open(sys.argv[1], "rb").read())
        scope = dict(helpers)
        with helpers["flyte_dask_time"]():
            exec(source, scope)
        print("a =", scope["a"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "payload.pkl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert done.returncode == 0, done.stderr
    assert shape(done.stdout) == [
        *TIME_SHAPE,
        "T ± T per loop (mean ± std. dev. of 2 runs, 2 loops each)",
        *TIME_SHAPE,
        "a = 45",
    ]


@pytest.mark.parametrize(
    "body",
    [
        "%time y = f(x)\ny",
        "for i in range(3):\n    %time y = f(i)\n    %timeit f(i)\n%time y",
        "s = '''\n%time not magic\n'''\n%time s;",
        "y = (a\n% b)\n%time c = a \\\n% b\n%timeit a \\\n% b\nc",
        "%%time\n%time x = 1\nx",
    ],
)
def test_one_tokenizer_pass_decides_as_the_line_by_line_fallback(
    body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = translate_cell(body)
    monkeypatch.setattr(notebook_syntax, "_statement_starts", lambda lines: None)
    assert translate_cell(body) == fast


def test_a_cell_that_does_not_tokenize_is_still_translated_up_to_its_error() -> None:
    source = translate_cell("%time x = 1\ns = '''never closed").source
    assert source == "with flyte_dask_time(): x = 1\ns = '''never closed"


@pytest.mark.parametrize("flags", ["-t", "-c", "-p 5", "-q"])
def test_timeit_timer_and_precision_flags_print_as_ipython(
    flags: str, ipython: InteractiveShell
) -> None:
    body = f"%timeit -n 2 -r 2 {flags} sum(range(20))"
    expected, _ = ipython_prints(ipython, body)
    with captured() as stream:
        run_as_task(body)
    assert shape(printed(stream)) == shape(expected)
