"""What a `%%flyte_dask` cell reads and writes, found from its text alone.

The cell becomes the body of a task function, so Python's function scoping decides the answer:
an input is a name the cell reads before binding it, an output is a name the cell binds at its
own level. Pure: no IPython, no flytekit, no I/O.
"""

from __future__ import annotations

import ast
import builtins
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .dask_state import dask_kind
from .timing import TIME_NAME, TIMEIT_NAME

# The kernel provides these; a task process has no kernel to ask.
_KERNEL_ONLY = frozenset({"get_ipython", "In", "Out"})
# Provided by the kernel and harmless (or provided) in the task: never inputs.
# Names IPython puts into the namespace that are builtins everywhere else (its `open` wraps the
# builtin): never inputs, so they are not pickled into the task.
_KERNEL_BUILTINS = frozenset({"display", "exit", "quit", "open"})
# What translated notebook syntax (`%time`, notebook_syntax.py) calls: the task provides them.
_TASK_PROVIDED = frozenset({TIME_NAME, TIMEIT_NAME})
_BUILTINS = frozenset(dir(builtins))

# `!cmd`, `%magic`, `%%magic`, `?name`, `name?`, `x = !cmd`, `x = %magic`. Only consulted for the
# line a SyntaxError points at, so valid Python such as `a % b` or `"hi!"` is never misreported.
_IPYTHON_LINE = re.compile(r"^\s*[!%?]|^\s*[\w.,\[\]() *]+=\s*[!%]|^[^#'\"]*\?\s*$")
_IPYTHON_MESSAGE = (
    "IPython syntax (`!cmd`, `%magic`) cannot run inside a Flyte task; move it to its own cell"
)

_STAR_MESSAGE = "star imports (`from x import *`) cannot be analysed; import the names you use"
_AWAIT_MESSAGE = (
    "top-level `await` (or `async for` / `async with`) is not supported in a Flyte task;"
    " use asyncio.run(...)"
)
_UNDEFINED_MESSAGE = (
    "is not defined in the notebook (define it in an earlier cell or pass --inputs)"
)
_KERNEL_MESSAGE = "is only available in the notebook kernel, not inside a Flyte task"

_FUTURE_MESSAGE = (
    "is a future of the notebook's own dask cluster, which this cell's cluster cannot reach:"
    " bring its value into the notebook first (`{name}_value = {name}.result()`) and use that,"
    " or compute it in this cell"
)


_ScopeKind = Literal["cell", "function", "class", "comprehension"]


class CellError(ValueError):
    """A problem with the cell text the user must fix; str() is one short line."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line  # cell line number (body line + line_offset), or None


@dataclass(frozen=True)
class ModuleInput:
    """A notebook name bound to a module: re-imported in the task, never pickled."""

    name: str
    module: str

    def import_statement(self) -> str:
        if self.name == self.module:
            return f"import {self.module}"
        return f"import {self.module} as {self.name}"


@dataclass(frozen=True)
class ImportBinding:
    """A name a top-level import of the cell binds: re-imported in the kernel after the run."""

    name: str
    module: str
    attribute: str | None = None  # `from module import attribute as name`

    def import_statement(self) -> str:
        if self.attribute is not None:
            alias = "" if self.attribute == self.name else f" as {self.name}"
            return f"from {self.module} import {self.attribute}{alias}"
        if self.name == self.module.split(".")[0] and "." not in self.name:
            return f"import {self.module}"
        return f"import {self.module} as {self.name}"


@dataclass(frozen=True)
class DaskHandle:
    """A notebook client or cluster the cell names: inside the cell it is the cell's own.

    ``origin`` names the earlier ``%%flyte_dask`` cell that made it, when that cell's client
    ended with its cluster (the name is then not in the notebook at all)."""

    name: str
    kind: str  # "client" or "cluster"
    origin: str | None = None


@dataclass(frozen=True)
class CellProgram:
    """The analysed cell: what it needs from the notebook and what it gives back."""

    body: str
    inputs: tuple[str, ...]
    modules: tuple[ModuleInput, ...]
    outputs: tuple[str, ...]
    last_expression: bool
    imports: tuple[str, ...]
    #: Names the cell's top-level imports bind (brought back by re-importing them).
    imported: tuple[ImportBinding, ...] = ()
    #: Notebook clients and clusters the cell names.
    handles: tuple[DaskHandle, ...] = ()
    #: Inputs the cell declares `global`.
    global_inputs: tuple[str, ...] = ()
    #: The cell ends with `;`: its value is not displayed.
    quiet: bool = False
    #: The cell starts with `%%time`: the whole cell is timed.
    cell_timer: bool = False
    # A mapping is unhashable, so it takes part in equality only.
    annotations: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}), hash=False
    )


class _Scope(ast.NodeVisitor):
    """Walks one scope in evaluation order, noting names read before the scope binds them."""

    def __init__(self, kind: _ScopeKind) -> None:
        self.kind = kind
        self.bound: set[str] = set()  # every name bound so far (a later `del` does not undo it)
        self.reads: dict[str, int] = {}  # name -> first line, read when the code runs
        self.deferred: dict[str, int] = {}  # read by a function body, which runs later
        self.declared: set[str] = set()  # `global` / `nonlocal`: never local to this scope
        self.walrus: set[str] = set()  # comprehension `:=` targets, bound in the enclosing scope
        # Cell scope only:
        self.outputs: dict[str, None] = {}  # in binding order
        self.globals: dict[str, int] = {}
        self.annotated: dict[str, ast.expr] = {}

    def read(self, name: str, line: int, *, deferred: bool = False, nested: bool = False) -> None:
        # Code nested in a class body skips the class namespace, so its free names pass through.
        if name in self.bound and not (nested and self.kind == "class"):
            return
        (self.deferred if deferred else self.reads).setdefault(name, line)

    def bind(self, name: str, *, output: bool = True) -> None:
        if name in self.declared and self.kind != "cell":
            return
        self.bound.add(name)
        if self.kind == "cell" and output:
            self.outputs.setdefault(name)

    def free(self) -> tuple[dict[str, int], dict[str, int]]:
        """(names read at once, names read later) that this scope leaves to its parent."""
        if self.kind == "function":
            # Any binding makes a name local to a function, and its body runs only when called.
            merged = {**self.deferred, **self.reads}
            return {}, {n: line for n, line in merged.items() if n not in self.bound}
        return self.reads, self.deferred

    def absorb(self, inner: _Scope) -> None:
        immediate, deferred = inner.free()
        for name, line in immediate.items():
            self.read(name, line, nested=True)
        for name, line in deferred.items():
            self.read(name, line, deferred=True, nested=True)
        for name in inner.walrus:
            if self.kind == "comprehension":
                self.walrus.add(name)
            else:
                self.bind(name)

    def visit_all(self, nodes: Sequence[ast.AST | None]) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Store):
            self.read(node.id, node.lineno)
        if isinstance(node.ctx, ast.Del):
            self.bind(node.id, output=False)  # `del` makes a name local, like any binding
            self.outputs.pop(node.id, None)
        elif isinstance(node.ctx, ast.Store):
            self.bind(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit_all([node.value, *node.targets])

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.read(node.target.id, node.lineno)
        self.visit_all([node.value, node.target])

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit_all([node.value])
        if not isinstance(node.target, ast.Name):
            self.visit(node.target)  # `obj.attr: T = v`; the annotation is never evaluated
            return
        # Class bodies evaluate annotations (dataclass fields); the task types its outputs
        # from the cell's; a function body never evaluates them.
        if self.kind == "class" or (self.kind == "cell" and node.value is not None):
            self.visit(node.annotation)
        if node.value is not None:
            self.bind(node.target.id)
            if self.kind == "cell":
                self.annotated.setdefault(node.target.id, node.annotation)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        if self.kind == "comprehension":
            self.walrus.add(node.target.id)
        else:
            self.bind(node.target.id)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit_all([node.iter, node.target, *node.body, *node.orelse])

    visit_AsyncFor = visit_For

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self.visit_all([node.type])
        if node.name:
            self.bind(node.name, output=False)
        self.visit_all(node.body)
        if node.name:
            self.outputs.pop(node.name, None)  # Python deletes the `as` name after the handler

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:  # imports are re-run, not returned: never outputs
            self.bind(alias.asname or alias.name.split(".")[0], output=False)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self.bind(alias.asname or alias.name, output=False)

    def visit_Global(self, node: ast.Global) -> None:
        self.declared.update(node.names)
        if self.kind == "cell":
            for name in node.names:
                self.globals.setdefault(name, node.lineno)
                self.outputs.setdefault(name)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.declared.update(node.names)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # Decorators, defaults and annotations run when the `def` runs, in this scope.
        args = node.args
        annotations = [a.annotation for a in _arguments(args)]
        self.visit_all([*node.decorator_list, *args.defaults, *args.kw_defaults])
        self.visit_all([*annotations, node.returns])
        self.absorb(_function_scope(args, node.body))
        self.bind(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit_all([*node.args.defaults, *node.args.kw_defaults])
        self.absorb(_function_scope(node.args, [node.body]))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.visit_all([*node.decorator_list, *node.bases, *(k.value for k in node.keywords)])
        inner = _Scope("class")
        inner.visit_all(node.body)
        self.absorb(inner)
        self.bind(node.name)

    def comprehension(self, generators: list[ast.comprehension], elts: list[ast.expr]) -> None:
        # The first iterable is evaluated here; everything else in the comprehension's own scope.
        self.visit(generators[0].iter)
        inner = _Scope("comprehension")
        for i, gen in enumerate(generators):
            inner.visit_all([None if i == 0 else gen.iter, gen.target, *gen.ifs])
        inner.visit_all(elts)
        self.absorb(inner)

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        self.comprehension(node.generators, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self.comprehension(node.generators, [node.key, node.value])

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        self.visit_all([node.pattern])
        if node.name:
            self.bind(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.visit_all([*node.keys, *node.patterns])
        if node.rest:
            self.bind(node.rest)


def _arguments(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *extra]


def _function_scope(args: ast.arguments, body: Sequence[ast.AST]) -> _Scope:
    inner = _Scope("function")
    for arg in _arguments(args):
        inner.bind(arg.arg)
    inner.visit_all(body)
    return inner


def _parse(body: str, line_offset: int) -> ast.Module:
    try:
        return ast.parse(body, filename="<cell>")
    except SyntaxError as exc:
        line = exc.lineno
        if line is None:
            raise CellError(exc.msg) from None
        lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if line <= len(lines) and _IPYTHON_LINE.search(lines[line - 1]):
            raise CellError(_IPYTHON_MESSAGE, line + line_offset) from None
        raise CellError(exc.msg, line + line_offset) from None
    except ValueError as exc:  # e.g. null bytes in the text
        raise CellError(str(exc)) from None


def _first_problem(tree: ast.Module) -> tuple[int, str] | None:
    """The earliest construct that cannot be analysed or cannot run as a task body."""
    problems: list[tuple[int, str]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            line = getattr(child, "lineno", 0)
            if isinstance(child, ast.ImportFrom) and child.level:
                problems.append((line, "relative imports cannot run inside a Flyte task"))
            elif isinstance(child, ast.ImportFrom) and any(a.name == "*" for a in child.names):
                problems.append((line, _STAR_MESSAGE))
            elif not in_function and isinstance(child, ast.Return):
                problems.append((line, "'return' outside a function"))
            elif not in_function and isinstance(child, (ast.Yield, ast.YieldFrom)):
                problems.append((line, "'yield' outside a function"))
            elif not in_function and isinstance(child, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
                problems.append((line, _AWAIT_MESSAGE))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            walk(child, in_function or nested)

    walk(tree, False)
    return min(problems, default=None)


def _compile_as_function(tree: ast.Module, line_offset: int) -> None:
    """Let the compiler check the cell as the function body it becomes (`nonlocal`, `break`...)."""
    no_args = ast.arguments(
        posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
    )
    func = ast.FunctionDef(
        name="_cell", args=no_args, body=tree.body, decorator_list=[], returns=None, lineno=1
    )
    module = ast.fix_missing_locations(ast.Module(body=[func], type_ignores=[]))
    try:
        compile(module, "<cell>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise CellError(exc.msg, None if exc.lineno is None else exc.lineno + line_offset) from None


def _top_level_imports(tree: ast.Module) -> list[ImportBinding]:
    """Bindings of the cell's own imports: at its top level, or in its top-level if/try/with
    blocks (not in functions or classes, whose names stay local to them)."""
    bindings: dict[str, ImportBinding] = {}
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop(0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bindings[alias.asname] = ImportBinding(alias.asname, alias.name)
                else:
                    top = alias.name.split(".")[0]
                    bindings[top] = ImportBinding(top, top)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                name = alias.asname or alias.name
                bindings[name] = ImportBinding(name, node.module, alias.name)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    stack.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return list(bindings.values())


def _imports(tree: ast.Module) -> tuple[str, ...]:
    packages: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            packages.add(node.module.split(".")[0])
    return tuple(sorted(packages))


def analyse_cell(
    body: str,
    namespace: Mapping[str, object],
    *,
    line_offset: int = 1,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    ended: Mapping[str, tuple[str, str]] | None = None,
    quiet: bool = False,
    cell_timer: bool = False,
) -> CellProgram:
    """Find the inputs, outputs, last expression and imports of a cell body.

    `body` excludes the magic line; error line numbers are `body line + line_offset`.
    `inputs` / `outputs` replace the inferred names (`--inputs` / `--outputs`).
    `ended`: names of clients and clusters made by earlier `%%flyte_dask` cells, which ended
    with their clusters (name -> (kind, cell name)): in this cell they are its own.
    `quiet` / `cell_timer`: from the translation of notebook syntax (``translate_cell``).
    """
    ended = ended or {}
    tree = _parse(body, line_offset)
    if not tree.body:
        raise CellError("the cell is empty")
    problem = _first_problem(tree)
    if problem is not None:
        raise CellError(problem[1], problem[0] + line_offset)
    _compile_as_function(tree, line_offset)

    scope = _Scope("cell")
    scope.visit_all(tree.body)
    reads = dict(scope.reads)
    for name, line in scope.deferred.items():
        # A function body runs later, when a name bound anywhere in the cell is the cell's own;
        # but a name the notebook already has is taken from it, as in the notebook.
        if name in namespace or name not in scope.bound:
            reads.setdefault(name, line)
    for name, line in scope.globals.items():
        if name in namespace:
            reads.setdefault(name, line)

    chosen: list[str] = []
    handles: list[DaskHandle] = []
    for name, line in sorted(reads.items(), key=lambda item: (item[1], item[0])):
        if name in _KERNEL_ONLY:
            raise CellError(f"{name!r} {_KERNEL_MESSAGE}", line + line_offset)
        if name in _KERNEL_BUILTINS or name in _TASK_PROVIDED:
            continue
        if name in namespace:
            chosen.append(name)
        elif name in ended and name not in _BUILTINS:
            kind, origin = ended[name]
            handles.append(DaskHandle(name, kind, origin))
        elif name not in _BUILTINS and inputs is None:
            raise CellError(f"name {name!r} {_UNDEFINED_MESSAGE}", line + line_offset)
    if inputs is not None:
        chosen = list(dict.fromkeys(inputs))
        for name in chosen:
            if name in _KERNEL_ONLY:
                raise CellError(f"input {name!r} {_KERNEL_MESSAGE}")
            if name not in namespace:
                raise CellError(f"input {name!r} is not defined in the notebook")

    for name in chosen:
        found = dask_kind(namespace[name])
        if found == "future":
            raise CellError(f"input {name!r} {_FUTURE_MESSAGE.format(name=name)}")
        if found is not None:
            handles.append(DaskHandle(name, found))
    handle_names = {h.name for h in handles}
    chosen = [n for n in chosen if n not in handle_names]
    modules = [
        ModuleInput(name, value.__name__)
        for name in chosen
        if isinstance(value := namespace[name], types.ModuleType)
    ]
    module_names = {m.name for m in modules}

    if outputs is None:
        # A declared global the cell never binds is an output only if the notebook has it.
        kept = [n for n in scope.outputs if n in scope.bound or n in namespace]
        chosen_outputs = tuple(n for n in kept if not n.startswith("_"))
    else:
        chosen_outputs = tuple(dict.fromkeys(outputs))
        for name in chosen_outputs:
            if name not in scope.bound and name not in scope.globals:
                raise CellError(f"output {name!r} is never assigned by the cell")

    annotations = {
        name: ast.get_source_segment(body, node) or ast.unparse(node)
        for name, node in scope.annotated.items()
        if name in chosen_outputs
    }
    imported = tuple(
        binding
        for binding in _top_level_imports(tree)
        if binding.name not in chosen_outputs
        and not binding.name.startswith("_")
        and (outputs is None or binding.name in outputs)
    )
    plain_inputs = tuple(sorted(n for n in chosen if n not in module_names))
    return CellProgram(
        body=body,
        inputs=plain_inputs,
        modules=tuple(sorted(modules, key=lambda m: m.name)),
        outputs=chosen_outputs,
        last_expression=isinstance(tree.body[-1], ast.Expr) and not quiet,
        imports=_imports(tree),
        imported=imported,
        handles=tuple(handles),
        global_inputs=tuple(n for n in plain_inputs if n in scope.globals),
        quiet=quiet,
        cell_timer=cell_timer,
        annotations=types.MappingProxyType(annotations),
    )
