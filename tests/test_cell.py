"""Unit tests for dask_flyte_jupyter.cell: what a cell reads and writes."""

from __future__ import annotations

import os
import textwrap
import types
import xml.etree.ElementTree as ET

import pytest

from dask_flyte_jupyter.cell import (
    CellError,
    CellProgram,
    ImportBinding,
    ModuleInput,
    analyse_cell,
)

INCREMENT = """\
from distributed import Client
client = Client()
futures = client.map(inc, range(n))
result = client.gather(futures)
sum(result)
"""


def inc(x: int) -> int:
    return x + 1


def cell(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def fake_module(name: str) -> types.ModuleType:
    return types.ModuleType(name)


# --- the increment example -------------------------------------------------------------------


def test_increment_example() -> None:
    program = analyse_cell(INCREMENT, {"inc": inc, "n": 10})
    assert program == CellProgram(
        body=INCREMENT,
        inputs=("inc", "n"),
        modules=(),
        outputs=("client", "futures", "result"),
        last_expression=True,
        imports=("distributed",),
        imported=(ImportBinding("Client", "distributed", "Client"),),
        annotations={},
    )


def test_increment_example_needs_its_inputs() -> None:
    with pytest.raises(CellError) as info:
        analyse_cell(INCREMENT, {"inc": inc})
    assert str(info.value).startswith("line 4: name 'n' is not defined in the notebook")
    assert info.value.line == 4


def test_program_is_hashable_and_body_unchanged() -> None:
    body = "x = 1  # keep me\n\n"
    program = analyse_cell(body, {})
    assert program.body == body
    assert hash(program) == hash(analyse_cell(body, {}))


# --- inputs: read before bind ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "namespace", "inputs", "outputs"),
    [
        ("y = x\nx = 2", {"x": 1}, ("x",), ("y", "x")),
        ("x += 1", {"x": 1}, ("x",), ("x",)),
        ("x = x + 1", {"x": 1}, ("x",), ("x",)),
        ("x = 1\ny = x", {"x": 5}, (), ("x", "y")),
        ("a, *rest = seq\nb = a", {"seq": [1, 2]}, ("seq",), ("a", "rest", "b")),
        ("obj.attr = value", {"obj": object(), "value": 1}, ("obj", "value"), ()),
        ("items[0] += 1", {"items": [1]}, ("items",), ()),
        # Bound in an earlier statement, even conditionally: not an input.
        ("if flag:\n    x = 1\ny = x", {"flag": True, "x": 0}, ("flag",), ("x", "y")),
        # Read in the loop body before the binding that follows it: an input.
        (
            "for i in items:\n    total = total + i",
            {"items": [], "total": 0},
            ("items", "total"),
            ("i", "total"),
        ),
        ("with open_it() as fh:\n    data = fh", {"open_it": print}, ("open_it",), ("fh", "data")),
        ("(y := z)\nw = y", {"z": 3}, ("z",), ("y", "w")),
        ("unused = 1", {"other": 2}, (), ("unused",)),
    ],
)
def test_inputs_and_outputs(
    body: str, namespace: dict[str, object], inputs: tuple[str, ...], outputs: tuple[str, ...]
) -> None:
    program = analyse_cell(body, namespace)
    assert program.inputs == inputs
    assert program.outputs == outputs


def test_inputs_are_sorted() -> None:
    program = analyse_cell("r = zeta + alpha + mid", {"zeta": 1, "alpha": 2, "mid": 3})
    assert program.inputs == ("alpha", "mid", "zeta")


# --- functions, classes, lambdas, comprehensions ---------------------------------------------


def test_function_free_names_are_inputs_and_its_name_an_output() -> None:
    body = cell(
        """
        @decorate
        def scale(v, factor=default_factor, *args, key: KeyType = None, **kw):
            local = v * factor * k
            return local
        """
    )
    namespace = {"decorate": print, "default_factor": 2, "k": 3, "KeyType": int}
    program = analyse_cell(body, namespace)
    assert program.inputs == ("KeyType", "decorate", "default_factor", "k")
    assert program.outputs == ("scale",)


def test_function_free_name_missing_from_notebook_is_an_error_at_its_line() -> None:
    with pytest.raises(CellError, match=r"^line 3: name 'missing' is not defined"):
        analyse_cell("def f():\n    return missing", {})


def test_recursion_and_helpers_defined_later_are_not_inputs() -> None:
    body = cell(
        """
        def main():
            return helper() + fact(3)
        def fact(n):
            return 1 if n < 2 else n * fact(n - 1)
        def helper():
            return 1
        main()
        """
    )
    program = analyse_cell(body, {})
    assert program.inputs == ()
    assert program.outputs == ("main", "fact", "helper")


def test_function_reading_a_notebook_name_the_cell_rebinds_later_takes_the_notebook_one() -> None:
    program = analyse_cell("def f():\n    return x\ny = f()\nx = 5", {"x": 1})
    assert program.inputs == ("x",)
    assert program.outputs == ("f", "y", "x")


def test_nested_function_locals_and_nonlocal() -> None:
    body = cell(
        """
        def outer():
            count = 0
            def bump():
                nonlocal count
                count += step
                return count
            return bump
        """
    )
    assert analyse_cell(body, {"step": 1}).inputs == ("step",)


def test_class_body_and_methods() -> None:
    body = cell(
        """
        class Model(Base, metaclass=Meta):
            scale = factor
            field: FieldType
            def predict(self, x):
                return x * scale
        """
    )
    namespace = {"Base": object, "Meta": type, "factor": 2, "FieldType": int, "scale": 9}
    program = analyse_cell(body, namespace)
    # Methods do not see class attributes: `scale` in predict is the notebook's.
    assert program.inputs == ("Base", "FieldType", "Meta", "factor", "scale")
    assert program.outputs == ("Model",)


def test_method_reading_a_class_attribute_by_bare_name_is_undefined() -> None:
    body = "class A:\n    k = 1\n    def m(self):\n        return k"
    with pytest.raises(CellError, match=r"^line 5: name 'k' is not defined"):
        analyse_cell(body, {})


@pytest.mark.parametrize(
    ("body", "namespace", "inputs", "outputs"),
    [
        ("ys = [x * k for x in xs if x]", {"xs": [], "k": 2}, ("k", "xs"), ("ys",)),
        ("d = {a: b for a, b in pairs}", {"pairs": []}, ("pairs",), ("d",)),
        ("s = {i for row in grid for i in row}", {"grid": []}, ("grid",), ("s",)),
        ("g = sum(v for v in vals)", {"vals": []}, ("vals",), ("g",)),
        # The comprehension variable never leaks, even if the notebook has one.
        ("ys = [x for x in range(3)]", {"x": 1}, (), ("ys",)),
        # `:=` in a comprehension binds in the cell, before the assignment around it.
        ("last = [seen := v for v in vals]", {"vals": []}, ("vals",), ("seen", "last")),
        ("f = lambda v, w=dflt: v + w + z", {"z": 1, "dflt": 2}, ("dflt", "z"), ("f",)),
        ("f = lambda: later\nlater = 1", {}, (), ("f", "later")),
    ],
)
def test_comprehensions_and_lambdas(
    body: str, namespace: dict[str, object], inputs: tuple[str, ...], outputs: tuple[str, ...]
) -> None:
    program = analyse_cell(body, namespace)
    assert program.inputs == inputs
    assert program.outputs == outputs


def test_comprehension_variable_is_not_defined_outside_it() -> None:
    with pytest.raises(CellError, match=r"^line 3: name 'x' is not defined"):
        analyse_cell("ys = [x for x in range(3)]\nz = x", {})


# --- del, global, try, match, underscores ----------------------------------------------------


def test_del_removes_outputs_and_reading_before_del_is_an_input() -> None:
    program = analyse_cell("a = 1\ndel a\nb = big\ndel big", {"big": [1]})
    assert program.inputs == ("big",)
    assert program.outputs == ("b",)


def test_rebinding_after_del_is_an_output_again() -> None:
    assert analyse_cell("a = 1\ndel a\na = 2", {}).outputs == ("a",)


def test_global_is_input_and_output() -> None:
    program = analyse_cell("global acc\nacc.append(1)", {"acc": []})
    assert program.inputs == ("acc",)
    assert program.outputs == ("acc",)


def test_global_not_in_notebook_is_only_an_output() -> None:
    program = analyse_cell("global counter\ncounter = 0\ncounter += 1", {})
    assert program.inputs == ()
    assert program.outputs == ("counter",)


def test_except_name_is_not_an_output() -> None:
    body = "try:\n    v = risky()\nexcept ValueError as err:\n    msg = str(err)"
    program = analyse_cell(body, {"risky": print})
    assert program.outputs == ("v", "msg")


def test_match_captures_are_outputs() -> None:
    body = cell(
        """
        match command:
            case [first, *rest]:
                pass
            case {"k": value, **others}:
                pass
            case Point(x=px) as point:
                pass
        """
    )
    program = analyse_cell(body, {"command": [], "Point": object})
    assert program.inputs == ("Point", "command")
    assert program.outputs == ("first", "rest", "value", "others", "px", "point")


def test_underscore_names_are_not_outputs() -> None:
    program = analyse_cell("_tmp = 1\nkeep = _tmp\n_ = keep\ndef _helper(): pass", {})
    assert program.outputs == ("keep",)


# --- imports and modules ---------------------------------------------------------------------


def test_imports_are_collected_and_are_not_outputs() -> None:
    body = cell(
        """
        import os.path
        import numpy as np
        from xml.etree import ElementTree
        import pandas, numpy
        def load():
            import distributed.client
            from sklearn.linear_model import LinearRegression
        arr = np.arange(3)
        tree = ElementTree
        """
    )
    program = analyse_cell(body, {})
    assert program.imports == ("distributed", "numpy", "os", "pandas", "sklearn", "xml")
    assert program.outputs == ("load", "arr", "tree")
    assert program.inputs == ()
    assert program.modules == ()


def test_notebook_modules_are_reimported_not_inputs() -> None:
    np = fake_module("numpy")
    namespace = {"np": np, "os": os, "ET": ET, "data": [1], "unused": fake_module("json")}
    body = "v = np.asarray(data)\np = os.path.join('a', 'b')\nt = ET.fromstring('<a/>')"
    program = analyse_cell(body, namespace)
    assert program.inputs == ("data",)
    assert program.modules == (
        ModuleInput("ET", "xml.etree.ElementTree"),
        ModuleInput("np", "numpy"),
        ModuleInput("os", "os"),
    )
    assert [m.import_statement() for m in program.modules] == [
        "import xml.etree.ElementTree as ET",
        "import numpy as np",
        "import os",
    ]


@pytest.mark.parametrize(
    ("name", "module", "statement"),
    [
        ("numpy", "numpy", "import numpy"),
        ("np", "numpy", "import numpy as np"),
        ("os", "os", "import os"),  # `import os.path` binds `os`
        ("path", "os.path", "import os.path as path"),
        ("plt", "matplotlib.pyplot", "import matplotlib.pyplot as plt"),
    ],
)
def test_import_statement(name: str, module: str, statement: str) -> None:
    assert ModuleInput(name, module).import_statement() == statement


def test_relative_import_is_an_error() -> None:
    with pytest.raises(CellError, match=r"^line 3: relative imports"):
        analyse_cell("x = 1\nfrom .sibling import y", {})


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("from numpy import *", 2),
        ("x = 1\n\nfrom os.path import *", 4),
        ("def f():\n    from os import *", 3),
    ],
)
def test_star_import_is_an_error_with_its_line(body: str, line: int) -> None:
    with pytest.raises(CellError) as info:
        analyse_cell(body, {})
    assert str(info.value) == (
        f"line {line}: star imports (`from x import *`) cannot be analysed; "
        "import the names you use"
    )
    assert info.value.line == line


# --- syntax and statements that cannot be a task body ----------------------------------------


@pytest.mark.parametrize(
    ("line_offset", "expected"),
    [(1, "line 3: invalid syntax"), (5, "line 7: invalid syntax"), (0, "line 2: invalid syntax")],
)
def test_syntax_error_reports_cell_line(line_offset: int, expected: str) -> None:
    with pytest.raises(CellError) as info:
        analyse_cell("x = 1\nx y z\n", {}, line_offset=line_offset)
    assert str(info.value) == expected
    assert info.value.line == int(expected.split()[1].rstrip(":"))


def test_unclosed_bracket_and_bad_indent() -> None:
    with pytest.raises(CellError, match=r"^line 2: '\(' was never closed$"):
        analyse_cell("x = (1,\n", {})
    with pytest.raises(CellError, match=r"^line 3: unexpected indent$"):
        analyse_cell("a = 1\n    b = 2", {})


IPYTHON = (
    "IPython syntax (`!cmd`, `%magic`) cannot run inside a Flyte task; move it to its own cell"
)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("!ls", 2),
        ("x = 1\nfiles = !ls -l", 3),
        ("%timeit f()", 2),
        ("%%time\nx = 1", 2),
        ("%matplotlib inline\nimport numpy", 2),
        ("x = 1\nnp.sum?", 3),
        ("??np.sum", 2),
        ("out = %sx ls", 2),
        ("for f in files:\n    !echo {f}", 3),
    ],
)
def test_ipython_syntax_is_reported(body: str, line: int) -> None:
    with pytest.raises(CellError) as info:
        analyse_cell(body, {"f": print, "files": []})
    assert str(info.value) == f"line {line}: {IPYTHON}"


@pytest.mark.parametrize(
    ("body", "inputs"),
    [
        ("y = a % b", ("a", "b")),
        ("y = (a\n     % b)", ("a", "b")),
        ("s = 'hi! %d?' % a", ("a",)),
        ("flag = a != b", ("a", "b")),
        ("text = '''\n!not a command\n%not a magic\n'''", ()),
        ("y = a  # what?", ("a",)),
    ],
)
def test_valid_python_is_not_mistaken_for_ipython(body: str, inputs: tuple[str, ...]) -> None:
    assert analyse_cell(body, {"a": 1, "b": 2}).inputs == inputs


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x = a %", "line 2: invalid syntax"),
        ("x = = 1  # why?", "line 2: invalid syntax"),
        ("s = 'wow!' +", "line 2: invalid syntax"),
    ],
)
def test_broken_python_with_percent_or_bang_is_a_plain_syntax_error(
    body: str, message: str
) -> None:
    with pytest.raises(CellError) as info:
        analyse_cell(body, {"a": 1})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x = 1\nreturn x", "line 3: 'return' outside a function"),
        ("yield 1", "line 2: 'yield' outside a function"),
        ("x = yield from gen", "line 2: 'yield' outside a function"),
        ("r = await fetch()", "line 2: top-level `await`"),
        ("async for x in stream:\n    pass", "line 2: top-level `await`"),
        ("nonlocal q", "line 2: no binding for nonlocal 'q' found"),
        ("x = 1\nbreak", "line 3: 'break' outside loop"),
        ("x = 1\nglobal x", "line 3: name 'x' is assigned to before global declaration"),
    ],
)
def test_statements_that_cannot_be_a_task_body(body: str, message: str) -> None:
    with pytest.raises(CellError) as info:
        analyse_cell(body, {"gen": [], "fetch": print, "stream": []})
    assert str(info.value).startswith(message)


def test_return_yield_and_await_inside_functions_are_fine() -> None:
    body = cell(
        """
        def f():
            return 1
        def g():
            yield 2
        async def h():
            return await other()
        k = lambda: (yield)
        """
    )
    assert analyse_cell(body, {"other": print}).outputs == ("f", "g", "h", "k")


@pytest.mark.parametrize("body", ["", "   \n\n", "# just a comment\n  # another\n"])
def test_empty_cell(body: str) -> None:
    with pytest.raises(CellError) as info:
        analyse_cell(body, {})
    assert str(info.value) == "the cell is empty"
    assert info.value.line is None


def test_cell_error_is_a_value_error() -> None:
    assert issubclass(CellError, ValueError)
    assert CellError("boom", 3).line == 3
    assert str(CellError("boom", 3)) == "line 3: boom"


# --- names: undefined, builtins, kernel-only -------------------------------------------------


def test_unknown_name_error_names_the_first_one_and_its_line() -> None:
    with pytest.raises(CellError) as info:
        analyse_cell("a = 1\nb = second\nc = first_used + second", {}, line_offset=10)
    assert str(info.value) == (
        "line 12: name 'second' is not defined in the notebook "
        "(define it in an earlier cell or pass --inputs)"
    )


def test_builtins_are_not_inputs_unless_the_notebook_shadows_them() -> None:
    body = "r = list(range(len(data)))\nprint(sum(r))"
    assert analyse_cell(body, {"data": []}).inputs == ("data",)
    assert analyse_cell(body, {"data": [], "sum": len}).inputs == ("data", "sum")


@pytest.mark.parametrize("name", ["get_ipython", "In", "Out"])
def test_kernel_only_names_are_errors(name: str) -> None:
    namespace: dict[str, object] = {name: object()}
    with pytest.raises(CellError) as info:
        analyse_cell(f"x = 1\ny = {name}", namespace)
    assert str(info.value) == (
        f"line 3: {name!r} is only available in the notebook kernel, not inside a Flyte task"
    )


def test_kernel_provided_names_are_not_inputs() -> None:
    namespace: dict[str, object] = {"exit": print, "quit": print, "display": print, "v": 1}
    program = analyse_cell("display(v)\nif v > 3:\n    exit()\nquit", namespace)
    assert program.inputs == ("v",)


def test_cell_may_define_its_own_names_that_the_kernel_also_has() -> None:
    program = analyse_cell("Out = []\nOut.append(1)", {"Out": {}})
    assert program.inputs == ()
    assert program.outputs == ("Out",)


# --- overrides -------------------------------------------------------------------------------


def test_inputs_override_is_used_exactly() -> None:
    np = fake_module("numpy")
    namespace = {"inc": inc, "n": 10, "extra": 1, "np": np}
    program = analyse_cell(INCREMENT, namespace, inputs=["n", "extra", "inc", "np", "n"])
    assert program.inputs == ("extra", "inc", "n")
    assert program.modules == (ModuleInput("np", "numpy"),)


def test_inputs_override_skips_the_undefined_check() -> None:
    program = analyse_cell("y = x + later_known", {"x": 1}, inputs=["x"])
    assert program.inputs == ("x",)


def test_inputs_override_name_must_exist() -> None:
    with pytest.raises(CellError) as info:
        analyse_cell("y = 1", {}, inputs=["ghost"])
    assert str(info.value) == "input 'ghost' is not defined in the notebook"
    assert info.value.line is None


def test_inputs_override_cannot_pass_kernel_only_names() -> None:
    with pytest.raises(CellError, match=r"^input 'get_ipython' is only available in the notebook"):
        analyse_cell("y = 1", {"get_ipython": print}, inputs=["get_ipython"])


def test_outputs_override_is_used_exactly_in_its_order() -> None:
    body = "a = 1\n_b = 2\nc = 3\nimport json"
    program = analyse_cell(body, {}, outputs=["c", "_b", "a", "c"])
    assert program.outputs == ("c", "_b", "a")


@pytest.mark.parametrize("name", ["z", "inner", "x"])
def test_outputs_override_name_must_be_assigned(name: str) -> None:
    body = "def f():\n    inner = 1\nys = [x for x in range(3)]"
    with pytest.raises(CellError) as info:
        analyse_cell(body, {}, outputs=[name])
    assert str(info.value) == f"output {name!r} is never assigned by the cell"


# --- annotations and the last expression -----------------------------------------------------


def test_annotations_of_annotated_outputs() -> None:
    pd = fake_module("pandas")
    body = cell(
        """
        df: pd.DataFrame = pd.DataFrame()
        count: int = 0
        pending: list[str]
        _hidden: int = 1
        if count:
            scores: dict[str,  float] = {}
        """
    )
    program = analyse_cell(body, {"pd": pd})
    assert dict(program.annotations) == {
        "df": "pd.DataFrame",
        "count": "int",
        "scores": "dict[str,  float]",
    }
    assert program.outputs == ("df", "count", "scores")
    assert program.modules == (ModuleInput("pd", "pandas"),)


def test_annotation_names_must_be_known() -> None:
    with pytest.raises(CellError, match=r"^line 2: name 'Frame' is not defined"):
        analyse_cell("df: Frame = 1", {})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("x = 1", False),
        ("x = 1\nx", True),
        ("print(1)", True),
        ("x = 1\nx;", True),
        ("if True:\n    1", False),
        ("1\nx = 2", False),
        ("def f():\n    return 1", False),
    ],
)
def test_last_expression(body: str, expected: bool) -> None:
    assert analyse_cell(body, {}).last_expression is expected


def test_ipythons_open_in_the_namespace_is_not_an_input() -> None:
    program = analyse_cell("text = open('f.txt').read()\n", {"open": open})
    assert program.inputs == ()
