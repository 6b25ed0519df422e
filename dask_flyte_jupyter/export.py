"""``--export PATH``: a ``%%flyte_dask`` cell as a standalone, readable flytekit module.

The module holds: the imports the cell needs from the notebook, one ``@task`` whose
``task_config=Dask(...)`` is written from :func:`spec.to_dask_config` (the one translation point),
a ``@workflow`` around it and a ``__main__`` guard; importing it runs nothing.

What the cell reads from the notebook becomes, in this order of preference:

- modules, and functions / classes importable from a real module: imports at the top;
- functions and classes defined in the notebook: their source, written at the top of the task
  body (with what they use from the notebook, transitively). Nested in the task they travel to
  the dask workers by value, as in the notebook: workers cannot import the exported file;
- values with a Flyte type (int, float, str, bool, lists / dicts of those, pandas DataFrame,
  numpy array): task parameters and workflow inputs, the notebook's value as the default where
  it is a literal;
- other literals (None, tuples, empty lists...): assignments at the top of the task body;
- anything else (say a model object, or a lock): :class:`ExportError`, naming every culprit.

Outputs are the cell's top-level names, plus the last expression as ``value`` (``cell_value``
if the cell already uses that name), in a NamedTuple ``CellOutputs``. Live dask objects
cannot be returned, and without running the cell they are recognised by how they are made: a
name assigned from ``Client(...)``, ``get_client()``, ``<anything>Cluster(...)``,
``<client>.map / submit / scatter / compute / persist(...)`` (or a list / comprehension of those),
or bound by ``with Client(...) as name``, is not returned.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import io
import json
import linecache
import math
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .accelerators import accelerator_source
from .cell import CellError, CellProgram, ModuleInput, analyse_cell
from .spec import ClusterSpec, to_dask_config
from .task import input_type, output_type

_LINE = 88  # black / ruff default: the exported file lands in someone else's project
_INDENT = "    "
_LIVE_METHODS = frozenset({"map", "submit", "scatter", "compute", "persist"})
_CLIENT_MAKERS = frozenset({"Client", "get_client"})
_MAX_LITERAL = 2000  # characters; a longer value is a required input, not a wall of text
#: Written into modules with pickled outputs: flytekit refuses a tuple as an output value.
_AS_OUTPUT = (
    "def _as_output(value: typing.Any) -> typing.Any:\n"
    '    """flytekit refuses tuple outputs, so a tuple is returned as a list."""\n'
    "    return list(value) if isinstance(value, tuple) else value\n\n"
)
#: The first line of every exported module (after the docstring's quotes): how a file that an
#: export wrote, and that a later export may replace, is recognised.
HEADER = "A notebook cell exported by dask_flyte_jupyter from:"
_PICKLED = "typing.Any | None"  # flytekit pickles it; None is a value too (say `print(...)`)
_FLYTEKIT_NAMES = frozenset(
    {"typing", "task", "workflow", "Resources", "Dask", "Scheduler", "WorkerGroup", "CellOutputs"}
)


class ExportError(ValueError):
    """The cell cannot be exported; the message names every culprit."""


@dataclass
class _Plan:
    """What the exported module needs from the notebook, found by walking the cell's inputs."""

    imports: dict[str, str] = field(default_factory=dict)  # bound name -> import statement
    definitions: dict[str, str] = field(default_factory=dict)  # name -> source, deps first
    params: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # type, default
    constants: dict[str, str] = field(default_factory=dict)  # name -> literal source
    shared: set[str] = field(default_factory=set)  # our own top-level names the cell uses too
    problems: list[str] = field(default_factory=list)
    visiting: set[str] = field(default_factory=set)


def export_source(program: CellProgram, spec: ClusterSpec, namespace: Mapping[str, object]) -> str:
    """The module text for an analysed cell; raises :class:`ExportError`."""
    spec.validate()
    plan = _Plan()
    for module in program.modules:
        plan.imports[module.name] = module.import_statement()
    for name in program.inputs:
        _add(plan, name, namespace)
    _check_clashes(plan, namespace)
    if plan.problems:
        raise ExportError("cannot export this cell:\n" + "\n".join(f"- {p}" for p in plan.problems))
    return _Writer(program, spec, plan).module()


def export_cell(
    program: CellProgram,
    spec: ClusterSpec,
    namespace: Mapping[str, object],
    path: str | Path,
    force: bool = False,
) -> Path:
    """Writes the cell as a flytekit module at ``path``; returns the path written.

    An existing file is replaced only when an export wrote it (it starts with the exported
    module's header), or with ``force``: anything else at ``path`` is someone's work.
    """
    target = Path(path).expanduser()
    source = export_source(program, spec, namespace)
    if target.is_dir():
        raise ExportError(f"cannot write {target}: it is a directory")
    if target.exists() and not force and not _written_by_export(target):
        raise ExportError(
            f"{target} exists and was not written by --export: not overwritten (choose "
            "another PATH, or add --force to replace it)"
        )
    try:
        target.write_text(source, encoding="utf-8")
    except OSError as error:
        raise ExportError(f"cannot write {target}: {error.strerror or error}") from None
    return target


def full_magic_line(spec: ClusterSpec) -> str:
    """The spec's ``%%flyte_dask`` line with the worker count always given, as the module's
    code always sets ``number_of_workers``: the header states the cluster's whole shape."""
    line = spec.magic_line()
    if "workers" in spec.to_options():
        return line
    return line.replace("%%flyte_dask", f"%%flyte_dask --workers {spec.workers.count}", 1)


#: Lines of the written module that ``--export`` shows: its header and the task's decorator.
PREVIEW_LINES = 12


def preview(source: str) -> list[str]:
    """The first lines of an exported module (its header), then its task's decorator and
    ``def`` line: enough to see what was written without opening the file."""
    lines = source.splitlines()
    closing = next((i for i, line in enumerate(lines[1:], 1) if line.endswith('"""')), 0)
    head = lines[: min(closing + 1, PREVIEW_LINES)]  # the docstring: source, line, how to run
    start = next((i for i, line in enumerate(lines) if line.startswith("@task(")), None)
    if start is None:
        return head
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("def ")), start)
    task = lines[start : end + 1]
    if len(task) > PREVIEW_LINES:
        task = [*task[: PREVIEW_LINES - 1], "    ..."]
    return [*head, "...", *task, "..."]


def _written_by_export(path: Path) -> bool:
    """Whether the file at ``path`` starts with the header of an exported module."""
    try:
        with path.open(encoding="utf-8") as file:
            return file.read(len(HEADER) + 3) == f'"""{HEADER}'
    except (OSError, UnicodeDecodeError):
        return False


def _check_clashes(plan: _Plan, namespace: Mapping[str, object]) -> None:
    """Notebook imports may not rebind the module-level names the exported module uses."""
    ours = _module_names()
    for name in sorted(set(plan.imports) & set(ours)):
        if namespace.get(name) is ours[name]:
            del plan.imports[name]  # the same object: our own import provides it
            plan.shared.add(name)
        else:
            plan.problems.append(
                f"`{name}` ({plan.imports[name]}) clashes with a name the exported module "
                "needs; rename it in the notebook"
            )


def _module_names() -> dict[str, object]:
    """The names the exported module binds at its top, and what they are bound to."""
    import flytekit
    import flytekitplugins.dask
    import numpy
    import pandas

    names: dict[str, object] = {"typing": typing, "pandas": pandas, "numpy": numpy}
    names.update({n: getattr(flytekit, n) for n in ("task", "workflow", "Resources")})
    plugin = flytekitplugins.dask
    names.update({n: getattr(plugin, n) for n in ("Dask", "Scheduler", "WorkerGroup")})
    names["CellOutputs"] = object()  # ours alone
    return names


# --- what the cell needs from the notebook --------------------------------------------------


def _add(plan: _Plan, name: str, namespace: Mapping[str, object]) -> None:
    """Decides how ``name`` reaches the exported module; records a problem if it cannot."""
    if name in plan.visiting or any(
        name in known for known in (plan.imports, plan.definitions, plan.params, plan.constants)
    ):
        return
    value = namespace[name]
    if isinstance(value, types.ModuleType):
        plan.imports[name] = ModuleInput(name, value.__name__).import_statement()
        return
    if _defined_in_notebook(value):
        plan.visiting.add(name)
        source = _notebook_source(plan, name, value)
        if source is not None:
            _add_dependencies(plan, name, source, namespace)
            plan.definitions[name] = source
        plan.visiting.discard(name)
        return
    statement = _import_statement(name, value)
    if statement is not None:
        plan.imports[name] = statement
        return
    declared = input_type(value)
    literal = _literal(value)
    if typing.get_origin(declared) is typing.Annotated:
        frame_or_array = typing.get_args(declared)[0]
        if frame_or_array in _frame_types():
            plan.params[name] = (_frame_types()[frame_or_array], None)
        elif literal is not None:
            plan.constants[name] = literal
        else:
            what = f"{type(value).__module__}.{type(value).__qualname__}"
            plan.problems.append(
                f"`{name}` (a {what}) has no source and no literal value: build it in the cell, "
                "or pass it as data (a DataFrame, an array, a file path)"
            )
        return
    plan.params[name] = (_type_source(declared), literal)


def _frame_types() -> dict[type, str]:  # pandas is heavy: imported when needed
    import numpy
    import pandas

    return {pandas.DataFrame: "pandas.DataFrame", numpy.ndarray: "numpy.ndarray"}


def _defined_in_notebook(value: object) -> bool:
    """A function or class defined in the notebook (an instance is data, not a definition)."""
    definition = isinstance(value, type) or inspect.isfunction(inspect.unwrap(value))  # type: ignore[arg-type]
    return definition and getattr(value, "__module__", None) == "__main__"


def _notebook_source(plan: _Plan, name: str, value: object) -> str | None:
    """The source of a notebook function / class, checked to define ``name``."""
    qualname = getattr(value, "__qualname__", "")
    if "<locals>" in qualname:
        plan.problems.append(f"`{name}` is defined inside a function: move it to the top level")
        return None
    source = _class_source(value) if isinstance(value, type) else _function_source(value)
    if source is None:
        plan.problems.append(f"`{name}`: its source is not available (re-run its cell)")
        return None
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        plan.problems.append(f"`{name}`: its source cannot be parsed on its own")
        return None
    defines = _defined_name(tree)
    if defines is None:
        plan.problems.append(f"`{name}`: its source does not define it on its own")
        return None
    if defines != name:  # `g = f`: write f, then the notebook's name for it
        source = f"{source.rstrip()}\n\n{name} = {defines}\n"
    return source


def _defined_name(tree: ast.Module) -> str | None:
    """The one name a definition's source binds (a def, a class, or ``f = lambda ...``)."""
    if len(tree.body) != 1:
        return None
    node = tree.body[0]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Lambda)
    ):
        return node.targets[0].id
    return None


def _function_source(value: object) -> str | None:
    try:
        return inspect.getsource(value)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None


def _class_source(cls: type) -> str | None:
    """A notebook class's source. Python 3.11's inspect cannot find it (``__main__`` has no file):
    look for the ``class`` statement in the cell (in linecache) that defined one of its methods,
    else in the newest cell defining a class of that name."""
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        pass
    places = []
    for attribute in vars(cls).values():
        function = getattr(attribute, "__func__", getattr(attribute, "fget", attribute))
        code = getattr(function, "__code__", None)
        if code is not None:
            places.append((code.co_filename, code.co_firstlineno))
    for filename, line in places:
        found = _class_in(linecache.getlines(filename), cls.__name__, line)
        if found is not None:
            return found
    cells = [name for name, entry in linecache.cache.items() if len(entry) == 4 and not entry[1]]
    for filename in reversed(cells):  # in memory, no mtime: cells (IPython's, and ours)
        found = _class_in(linecache.getlines(filename), cls.__name__, None)
        if found is not None:
            return found
    return None


def _class_in(lines: list[str], name: str, line: int | None) -> str | None:
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    for node in reversed(tree.body):
        if not isinstance(node, ast.ClassDef) or node.name != name:
            continue
        end = node.end_lineno or node.lineno
        if line is None or node.lineno <= line <= end:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return "".join(lines[first - 1 : end])
    return None


def _add_dependencies(plan: _Plan, name: str, source: str, namespace: Mapping[str, object]) -> None:
    """Adds what a notebook definition itself reads from the notebook (before it, in order)."""
    try:
        program = analyse_cell(source, namespace, line_offset=0)
    except CellError as error:
        plan.problems.append(f"`{name}`: {error}")
        return
    for module in program.modules:
        plan.imports.setdefault(module.name, module.import_statement())
    for dependency in program.inputs:
        if dependency != name:
            _add(plan, dependency, namespace)


def _import_statement(name: str, value: object) -> str | None:
    """``from module import thing [as name]`` when ``value`` is importable as it is.

    The shortest module path that has it wins: ``from pandas import DataFrame``, not
    ``from pandas.core.frame import DataFrame``.
    """
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "." in qualname:
        return None
    if not callable(value) or module == "__main__":
        return None
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        candidate = ".".join(parts[:end])
        if getattr(sys.modules.get(candidate), qualname, None) is value:
            alias = "" if qualname == name else f" as {name}"
            return f"from {candidate} import {qualname}{alias}"
    return None


def _type_source(declared: object) -> str:
    if isinstance(declared, type) and not typing.get_args(declared):
        return declared.__name__
    return str(declared)  # list[int], dict[str, float]


def _literal(value: object) -> str | None:
    """Black-style source for a literal value, or None when it is not one (or too long)."""
    try:
        text = _literal_text(value)
    except ValueError:
        return None
    if len(text) > _MAX_LITERAL:
        return None
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError, RecursionError):
        return None
    return text if same else None


def _literal_text(value: object) -> str:
    if value is None or type(value) in (bool, int):
        return repr(value)
    if type(value) is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError("no literal for nan / inf")
        return repr(value)
    if type(value) is str:
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a Python literal
    if type(value) in (list, tuple):
        items = [_literal_text(item) for item in value]  # type: ignore[attr-defined]
        if type(value) is tuple:
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if type(value) is dict:
        pairs = value.items()  # type: ignore[attr-defined]
        return "{" + ", ".join(f"{_literal_text(k)}: {_literal_text(v)}" for k, v in pairs) + "}"
    raise ValueError(f"no literal for {type(value).__name__}")


# --- live dask objects among the outputs ----------------------------------------------------


def live_outputs(body: str) -> set[str]:
    """Names the cell binds to clients, clusters or futures (see the module docstring)."""
    tree = ast.parse(body)
    statements = list(_cell_level(tree))
    clients: set[str] = set()
    live: set[str] = set()
    for node in statements:  # clients first: `client.map` needs to know `client`
        if isinstance(node, ast.Assign) and _makes(node.value, _CLIENT_MAKERS):
            clients.update(_names(node.targets))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None and _is_live(item.context_expr, clients):
                    bound = _names([item.optional_vars])
                    live.update(bound)
                    if _makes(item.context_expr, _CLIENT_MAKERS):
                        clients.update(bound)
    for node in statements:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            if not _is_live(node.value, clients):
                continue
            targets: list[ast.expr] = (
                node.targets if isinstance(node, ast.Assign) else [node.target]
            )
            live.update(_names(targets))
    return live | clients


def _cell_level(tree: ast.AST) -> typing.Iterator[ast.AST]:
    """Statements at the cell's own level (inside if / for / with / try, not in defs)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.stmt):
            yield node
            yield from _cell_level(node)


def _names(targets: typing.Sequence[ast.expr]) -> set[str]:
    """Names bound by assignment targets (`a`, `a, *b`), not `obj.attr` or `d[key]`."""
    names: set[str] = set()
    for target in targets:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            names |= _names(target.elts)
        elif isinstance(target, ast.Starred):
            names |= _names([target.value])
    return names


def _callee(node: ast.expr) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _makes(node: ast.expr, names: frozenset[str]) -> bool:
    return _callee(node) in names


def _is_live(node: ast.expr, clients: set[str]) -> bool:
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return any(_is_live(item, clients) for item in node.elts)
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
        return _is_live(node.elt, clients)
    name = _callee(node)
    if name is None:
        return False
    if name in _CLIENT_MAKERS or name.endswith("Cluster"):
        return True
    func = node.func  # type: ignore[attr-defined]
    return (
        name in _LIVE_METHODS
        and isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in clients
    )


# --- writing the module ---------------------------------------------------------------------


class _Writer:
    """Lays out the module text; every piece is formatted the way ruff / black would."""

    def __init__(self, program: CellProgram, spec: ClusterSpec, plan: _Plan) -> None:
        self.program, self.spec, self.plan = program, spec, plan
        live = live_outputs(program.body)
        self.outputs = [n for n in program.outputs if n not in live]
        self.dropped = [n for n in program.outputs if n in live]
        taken = set(plan.params) | set(plan.imports) | set(plan.definitions) | _FLYTEKIT_NAMES
        taken |= set(plan.constants)
        self.value_name = None
        if program.last_expression:
            self.value_name = next(
                n
                for n in ("value", "cell_value", "last_value", "flyte_dask_value")
                if n not in taken and n not in program.outputs
            )
        base = _identifier(spec.name) if spec.name else "cell"
        self.task_name = base if base not in taken else f"{base}_task"
        self.workflow_name = "wf" if "wf" not in taken | {self.task_name} else "cell_workflow"
        # `pandas.DataFrame` reads `pd.DataFrame` where the notebook imports pandas as pd.
        self.aliases = {
            module: name
            for name, statement in plan.imports.items()
            for module in ("pandas", "numpy")
            if statement in (f"import {module}", f"import {module} as {name}")
        }
        self.params = {n: (self.retype(t), d) for n, (t, d) in plan.params.items()}

    def retype(self, kind: str) -> str:
        module, _, rest = kind.partition(".")
        return f"{self.aliases[module]}.{rest}" if rest and module in self.aliases else kind

    def fields(self) -> list[tuple[str, str]]:
        annotations = self.program.annotations
        fields = [(n, self.retype(_output_source(annotations.get(n)))) for n in self.outputs]
        if self.value_name is not None:
            fields.append((self.value_name, _PICKLED))
        return fields

    def module(self) -> str:
        fields = self.fields()
        parts = [self.docstring(), self.imports(fields)]
        if fields:
            body = "\n".join(f"{_INDENT}{name}: {kind}" for name, kind in fields)
            parts.append(f"class CellOutputs(typing.NamedTuple):\n{body}\n\n")
            if any(kind == _PICKLED for _, kind in fields):
                parts.append(_AS_OUTPUT)
        parts += [self.task(fields), self.workflow(fields), self.main()]
        return "\n".join(parts)  # each part ends with the blank lines ruff puts after it

    def docstring(self) -> str:
        line = full_magic_line(self.spec).replace("\\", "\\\\").replace('"""', '\\"""')
        return (
            f'"""{HEADER}\n\n    {line}\n\n'
            f"Run it locally with ``python <this file>``, or with\n"
            f"``pyflyte run [--remote] <this file> {self.workflow_name}"
            f"{''.join(f' --{n} ...' for n in self.params)}``.\n"
            '"""\n'
        )  # one blank line after it: the joining newline

    def imports(self, fields: list[tuple[str, str]]) -> str:
        kinds = [t for t, _ in self.params.values()] + [t for _, t in fields]
        notebook = set(self.plan.imports.values())
        if fields or "typing" in self.plan.shared:
            notebook.add("import typing")
        for module in ("pandas", "numpy"):
            if module in self.plan.shared or any(k.startswith(f"{module}.") for k in kinds):
                notebook.add(f"import {module}")
        config = to_dask_config(self.spec)
        flytekit = ["task", "workflow"]
        if "Resources" in self.plan.shared or "Resources(" in _dask_source(config, 0, ""):
            flytekit.insert(0, "Resources")
        notebook.add(f"from flytekit import {', '.join(flytekit)}")
        notebook.add("from flytekitplugins.dask import Dask, Scheduler, WorkerGroup")
        if self.spec.accelerator is not None:
            notebook.add(accelerator_source(self.spec.accelerator)[0])
        # isort's layout: the standard library, then the rest; plain imports first, then `from`.
        lines = sorted(notebook, key=_import_order)
        standard = [line for line in lines if _top_module(line) in sys.stdlib_module_names]
        others = [line for line in lines if line not in standard]
        return "\n\n".join("\n".join(group) for group in (standard, others) if group) + "\n\n"

    def decorator(self) -> str:
        arguments = [f"task_config={_dask_source(to_dask_config(self.spec), 1, 'task_config=')}"]
        if self.spec.cache:
            version = self.spec.cache_version or _digest(self.program.body, self.spec)
            arguments += ["cache=True", f"cache_version={json.dumps(version)}"]
        if self.spec.interruptible:
            arguments.append("interruptible=True")
        if self.spec.image is not None:
            arguments.append(f"container_image={json.dumps(self.spec.image)}")
        if self.spec.pod_template is not None:
            arguments.append(f"pod_template_name={json.dumps(self.spec.pod_template)}")
        if self.spec.accelerator is not None:
            arguments.append(f"accelerator={accelerator_source(self.spec.accelerator)[1]}")
        inner = "".join(f"{_INDENT}{argument},\n" for argument in arguments)
        return f"@task(\n{inner})\n"

    def task(self, fields: list[tuple[str, str]]) -> str:
        params = ", ".join(f"{n}: {kind}" for n, (kind, _) in self.params.items())
        returns = "CellOutputs" if fields else "None"
        header = _wrap_def(self.task_name, params, returns)
        body: list[str] = []
        if self.plan.constants or self.plan.definitions:
            body.append(
                "# From the notebook. Defined in the task so that dask sends them to the "
                "workers\n# by value: the workers cannot import this file.\n"
            )
            body += [f"{n} = {v}\n" for n, v in self.plan.constants.items()]
            definitions = list(self.plan.definitions.values())
            if self.plan.constants and definitions:
                body.append("\n")
            body.append("\n".join(d.rstrip("\n") + "\n" for d in definitions))
            body.append("\n")
        body.append(self.cell_body())
        if self.dropped:
            body.append(
                f"# Not returned: {', '.join(self.dropped)} (live dask objects end with the "
                "cluster).\n"
            )
        if fields:
            values = ", ".join(
                f"{n}=_as_output({n})" if kind == _PICKLED else f"{n}={n}" for n, kind in fields
            )
            body.append(_wrap_call("return CellOutputs", values, 1))
        return self.decorator() + header + _indent("".join(body)) + "\n"

    def cell_body(self) -> str:
        body = self.program.body.rstrip() + "\n"
        if self.value_name is None:
            return body
        last = ast.parse(body).body[-1]
        lines = body.splitlines(keepends=True)
        line = lines[last.lineno - 1]
        column = len(line.encode()[: last.col_offset].decode())
        lines[last.lineno - 1] = f"{line[:column]}{self.value_name} = {line[column:]}"
        return "".join(lines)

    def workflow(self, fields: list[tuple[str, str]]) -> str:
        # Python wants inputs without a default first.
        params = sorted(self.params.items(), key=lambda item: item[1][1] is not None)
        signature = ", ".join(
            f"{n}: {kind}" + ("" if default is None else f" = {default}")
            for n, (kind, default) in params
        )
        prefix = f"return {self.task_name}" if fields else self.task_name
        call = _wrap_call(prefix, ", ".join(f"{n}={n}" for n in self.params), 1)
        returns = "CellOutputs" if fields else "None"
        definition = _wrap_def(self.workflow_name, signature, returns)
        return f"@workflow\n{definition}{_indent(call)}\n"

    def main(self) -> str:
        required = [n for n, (_, default) in self.params.items() if default is None]
        if not required:
            return f'if __name__ == "__main__":\n{_INDENT}print({self.workflow_name}())\n'
        flags = " ".join(f"--{n} ..." for n in required)
        message = json.dumps(
            f"{', '.join(required)} has no default: "
            f"run `pyflyte run <this file> {self.workflow_name} {flags}`"
        )
        exit_call = _wrap_call("raise SystemExit", message, 1)
        return f'if __name__ == "__main__":\n{_indent(exit_call)}'


def _output_source(annotation: str | None) -> str:
    declared = output_type(annotation)
    if isinstance(declared, type) and declared.__module__ == "builtins":
        return declared.__name__
    if isinstance(declared, type) and declared.__name__ == "DataFrame":
        return "pandas.DataFrame"
    return _PICKLED


def _import_order(line: str) -> tuple[bool, str]:
    return (line.startswith("from "), line.split()[1].lower())


def _top_module(line: str) -> str:
    return line.split()[1].split(".")[0]


def _digest(body: str, spec: ClusterSpec) -> str:
    return hashlib.sha256(f"{body}\0{spec.fingerprint()}".encode()).hexdigest()[:16]


def _identifier(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return cleaned if cleaned[:1].isalpha() else f"cell_{cleaned}"


_ALWAYS = frozenset({"scheduler", "workers", "number_of_workers"})  # spelt out even at default


def _dask_source(value: object, level: int, prefix: str) -> str:
    """Source for the Dask(...) config object: its dataclass fields that differ from defaults.

    It is written as ``{indent}{prefix}<source>,`` and split over lines like ruff would."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return json.dumps(value) if isinstance(value, str) else repr(value)
    arguments = []
    for item in dataclasses.fields(value):
        current = getattr(value, item.name)
        default = (
            item.default_factory()
            if item.default_factory is not dataclasses.MISSING
            else item.default
        )
        if current != default or item.name in _ALWAYS:
            key = f"{item.name}="
            arguments.append(f"{key}{_dask_source(current, level + 1, key)}")
    name = type(value).__name__
    inline = f"{name}({', '.join(arguments)})"
    if "\n" not in inline and len(_INDENT * level) + len(prefix) + len(inline) + 1 <= _LINE:
        return inline
    inner = "".join(f"{_INDENT * (level + 1)}{a},\n" for a in arguments)
    return f"{name}(\n{inner}{_INDENT * level})"


def _wrap_def(name: str, params: str, returns: str) -> str:
    line = f"def {name}({params}) -> {returns}:\n"
    if len(line) - 1 <= _LINE:
        return line
    inner = "".join(f"{_INDENT}{p.strip()},\n" for p in _split_params(params))
    return f"def {name}(\n{inner}) -> {returns}:\n"


def _wrap_call(prefix: str, arguments: str, level: int) -> str:
    line = f"{prefix}({arguments})\n"
    if len(_INDENT * level) + len(line) - 1 <= _LINE:
        return line
    inner = "".join(f"{_INDENT}{a.strip()},\n" for a in _split_params(arguments))
    return f"{prefix}(\n{inner})\n"


def _split_params(text: str) -> list[str]:
    """Splits ``a: int = 1, b: dict[str, int] = {...}`` at top-level commas only."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def _indent(code: str) -> str:
    """Indents code one level, except lines inside multi-line strings (their text is data)."""
    inside: set[int] = set()
    string_starts: list[int] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            kind = tokenize.tok_name[token.type]
            if kind == "FSTRING_START":
                string_starts.append(token.start[0])
            elif kind == "FSTRING_END":
                inside.update(range(string_starts.pop() + 1, token.end[0] + 1))
            elif token.type == tokenize.STRING:
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError, IndexError):
        pass  # the cell compiled, so this does not happen; indenting everything is the fallback
    lines = code.splitlines(keepends=True)
    return "".join(
        line if number in inside or not line.strip() else _INDENT + line
        for number, line in enumerate(lines, start=1)
    )
