"""The analysed cell as a real flytekit dask task.

The cell body becomes the body of a function defined in the notebook's ``__main__`` (so cloudpickle
ships it by value), compiled from the AST so its line numbers are the notebook cell's own (line 1
is the ``%%flyte_dask`` line, which the ``def`` line stands in for). Its readable source goes into
``linecache`` because flytekit inspects it. Inputs are typed from their values; outputs are
``Optional[Any]`` (flytekit's pickle type) unless the cell annotates them.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
import linecache
import logging
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .cell import CellProgram
from .spec import ClusterSpec, to_dask_config

#: Output carrying the value of the cell's last expression.
VALUE_OUTPUT = "flyte_dask_value"
#: Output listing outputs that were not returned (unbound, or live cluster objects).
DROPPED_OUTPUT = "flyte_dask_dropped"
#: Output listing outputs sent inside a one-element list: flytekit refuses tuple output values.
BOXED_OUTPUT = "flyte_dask_boxed"
META_OUTPUTS = (DROPPED_OUTPUT, BOXED_OUTPUT)
#: Output with the versions of job runner, scheduler and workers (remote builds only, JSON).
VERSIONS_OUTPUT = "flyte_dask_versions"
RESERVED_NAMES = (
    *META_OUTPUTS,
    VALUE_OUTPUT,
    VERSIONS_OUTPUT,
    "flyte_dask_collect",
    "flyte_dask_extra",
    "CellOutputs",
)
#: Declared type of values that travel as pickles (flytekit's pickle type; None allowed).
PICKLED: Any = Any | None
# Bumped when the generated function changes shape, so old versions are not reused.
_FORMAT = "1"


@dataclass(frozen=True)
class CellTask:
    """A built task and what the backends need to know about it."""

    task: Any  # flytekitplugins.dask.task.DaskTask
    name: str
    version: str
    cache_version: str
    input_types: Mapping[str, Any]
    output_names: tuple[str, ...]  # the cell's outputs (and its value), without META_OUTPUTS
    last_expression: bool
    filename: str
    source: str


def unpack_outputs(outputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The cell's outputs as the user wrote them, and the names that were not sent back."""
    dropped = list(outputs.pop(DROPPED_OUTPUT, []))
    for name in outputs.pop(BOXED_OUTPUT, []):
        outputs[name] = outputs[name][0]
    return {name: value for name, value in outputs.items() if name not in dropped}, dropped


def content_hash(value: object) -> str:
    """A hash of an input's content, stable across kernel restarts where possible.

    Functions and classes hash by source (their pickles record the cell file name, which changes
    each time the defining cell runs); frames and arrays by their data; the rest by pickle.
    """
    import cloudpickle

    digest = hashlib.sha256()
    if isinstance(value, (types.FunctionType, type)):
        try:
            import inspect

            digest.update(inspect.getsource(value).encode())
            return digest.hexdigest()
        except (OSError, TypeError):
            pass
    type_name = f"{type(value).__module__}.{type(value).__qualname__}"
    if type_name == "pandas.DataFrame":
        import pandas as pd

        digest.update(pd.util.hash_pandas_object(value, index=True).values.tobytes())
        digest.update(repr(list(value.columns)).encode())  # type: ignore[attr-defined]
        return digest.hexdigest()
    if type_name == "numpy.ndarray":
        digest.update(repr((value.dtype, value.shape)).encode())  # type: ignore[attr-defined]
        digest.update(value.tobytes())  # type: ignore[attr-defined]
        return digest.hexdigest()
    digest.update(cloudpickle.dumps(value))
    return digest.hexdigest()


def _hashed(python_type: Any) -> Any:
    from flytekit.core.hash import HashMethod

    return typing.Annotated[python_type, HashMethod(content_hash)]


def _plain_type(value: object) -> Any:
    """The Flyte-native Python type of a plain value, or None when it has none."""
    for simple in (bool, int, float, str):
        if type(value) is simple:
            return simple
    if isinstance(value, list) and value:
        item_types = {_plain_type(item) for item in value}
        if len(item_types) == 1 and None not in item_types:
            return list[item_types.pop()]  # type: ignore[misc]
    if isinstance(value, dict) and value and all(type(k) is str for k in value):
        value_types = {_plain_type(item) for item in value.values()}
        if len(value_types) == 1 and None not in value_types:
            return dict[str, value_types.pop()]  # type: ignore[misc]
    return None


def input_type(value: object, *, hashed: bool = True) -> Any:
    """The type an input is declared with: Flyte-native where there is one, else pickle.

    ``hashed`` adds a content hash for the cache key; without ``--cache`` it would only cost a
    pass over every DataFrame and array on each run.
    """
    plain = _plain_type(value)
    if plain is not None:
        return plain
    type_name = f"{type(value).__module__}.{type(value).__qualname__}"
    if type_name.startswith(("flytekit.types.file.", "flytekit.types.directory.")):
        return type(value)  # FlyteFile / FlyteDirectory: uploaded by flytekit, not pickled
    declared = type(value) if type_name in ("pandas.DataFrame", "numpy.ndarray") else PICKLED
    return _hashed(declared) if hashed else declared


_ANNOTATIONS: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
}


def output_type(annotation: str | None) -> Any:
    """Declared type of an output: a simple annotation the cell wrote, else pickle."""
    if annotation is not None:
        simple = _ANNOTATIONS.get(annotation.strip())
        if simple is not None:
            return simple
        if annotation.strip().split(".")[-1] == "DataFrame":
            import pandas as pd

            return pd.DataFrame
    return PICKLED


def type_label(python_type: Any) -> str:
    """Short name of a declared type, for versions and summaries."""
    if typing.get_origin(python_type) is typing.Annotated:
        python_type = typing.get_args(python_type)[0]
    if python_type == PICKLED:
        return "pickle"
    if isinstance(python_type, type) and not typing.get_args(python_type):
        return python_type.__qualname__
    return str(python_type).replace("typing.", "")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def default_task_name(body: str) -> str:
    """Stable task name derived from the cell text."""
    return f"cell_{_digest(body)[:10]}"


def _function_ast(program: CellProgram, params: list[str], filename: str) -> ast.Module:
    """The task function as an AST whose statements keep the cell's line numbers."""
    cell = ast.parse(program.body, filename=filename)
    ast.increment_lineno(cell, 1)  # body line 1 is cell line 2
    body = list(cell.body)
    if program.last_expression and isinstance(body[-1], ast.Expr):
        last = body[-1]
        body[-1] = ast.copy_location(
            ast.Assign(targets=[ast.Name(VALUE_OUTPUT, ast.Store())], value=last.value), last
        )
    end = (body[-1].end_lineno or body[-1].lineno) + 1
    collect = ast.parse("return flyte_dask_collect(locals(), globals())").body[0]
    ast.increment_lineno(collect, end - 1)
    body.append(collect)
    function = ast.FunctionDef(
        name="cell",
        args=ast.arguments(
            posonlyargs=[],
            args=[ast.arg(arg=name) for name in params],
            kwonlyargs=[],
            kw_defaults=[],
            defaults=[],
        ),
        body=body,
        decorator_list=[],
        returns=ast.Name("CellOutputs", ast.Load()),
        lineno=1,
        col_offset=0,
    )
    module = ast.Module(body=[function], type_ignores=[])
    return ast.fix_missing_locations(module)


def _readable_source(program: CellProgram, params: list[str]) -> str:
    """Text matching the compiled function line by line (for linecache and flytekit)."""
    lines = program.body.splitlines()
    header = f"def cell({', '.join(params)}) -> CellOutputs:"
    footer = "return flyte_dask_collect(locals(), globals())"
    return (
        "\n".join([header, *textwrap.indent("\n".join([*lines, footer]), "    ").splitlines()])
        + "\n"
    )


def _collect_function(output_names: tuple[str, ...], cell_outputs: type) -> Callable[..., Any]:
    """Builds ``flyte_dask_collect``: picks the outputs out of the task function's scope.

    It is generated (not imported) so the task pickles without this package installed.
    """
    source = textwrap.dedent(
        f"""
        def flyte_dask_collect(scope, module_scope):
            values, dropped, boxed = {{}}, [], []
            for name in {output_names!r}:
                if name in scope:
                    value = scope[name]
                elif name in module_scope:
                    value = module_scope[name]
                else:
                    dropped.append(name)
                    continue
                # Clients, futures and clusters cannot outlive the cluster.
                if is_live(value):
                    dropped.append(name)
                    value = None
                elif isinstance(value, tuple):
                    boxed.append(name)
                    value = [value]
                values[name] = value
            for name in dropped:
                values.setdefault(name, None)
            try:  # remote builds: the versions of the cluster (parity.py)
                extra = flyte_dask_extra()
            except NameError:
                extra = {{}}
            return CellOutputs(
                flyte_dask_dropped=dropped, flyte_dask_boxed=boxed, **values, **extra
            )

        def is_live(value, depth=0):
            if type(value).__module__.split(".")[0] == "distributed":
                return True
            if depth < 2 and isinstance(value, (list, tuple, set, frozenset)):
                return any(is_live(item, depth + 1) for item in list(value)[:100])
            if depth < 2 and isinstance(value, dict):
                return any(is_live(item, depth + 1) for item in list(value.values())[:100])
            return False
        """
    )
    namespace: dict[str, Any] = {"__name__": "__main__", "CellOutputs": cell_outputs}
    exec(compile(source, "<flyte_dask collect>", "exec"), namespace)
    return typing.cast(Callable[..., Any], namespace["flyte_dask_collect"])


def build_task(
    program: CellProgram,
    spec: ClusterSpec,
    namespace: Mapping[str, object],
    task_class: type | None = None,
    *,
    report_versions: bool = False,
) -> CellTask:
    """Builds the flytekit dask task for an analysed cell.

    ``report_versions`` (remote runs) adds the output :data:`VERSIONS_OUTPUT`: the versions of
    the job runner, scheduler and workers, collected after the cell's code (``parity.py``).
    """
    from flytekit.core.base_task import TaskMetadata
    from flytekitplugins.dask.task import DaskTask

    clash = sorted(set(RESERVED_NAMES) & (set(program.outputs) | set(program.inputs)))
    if clash:
        raise ValueError(f"the cell uses reserved name(s) {', '.join(clash)}; rename them")

    input_types = {name: input_type(namespace[name], hashed=spec.cache) for name in program.inputs}
    output_names = program.outputs + ((VALUE_OUTPUT,) if program.last_expression else ())
    output_fields = [
        (name, output_type(program.annotations.get(name))) for name in output_names
    ] + [(name, list[str]) for name in META_OUTPUTS]
    if report_versions:
        output_fields.append((VERSIONS_OUTPUT, str))
    cell_outputs = typing.NamedTuple("CellOutputs", output_fields)  # type: ignore[misc]

    name = spec.name or default_task_name(program.body)
    signature = json.dumps(
        {
            "format": _FORMAT,
            "body": program.body,
            "spec": spec.fingerprint(),
            "inputs": {k: type_label(v) for k, v in input_types.items()},
            "outputs": [f"{n}:{type_label(t)}" for n, t in output_fields],
            "modules": [m.import_statement() for m in program.modules],
        },
        sort_keys=True,
    )
    version = _digest(signature)[:16]
    cache_version = spec.cache_version or version

    params = list(program.inputs)
    filename = f"<flyte_dask {name} {version}>"
    source = _readable_source(program, params)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)

    module_globals: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "CellOutputs": cell_outputs,
        "flyte_dask_collect": _collect_function(output_names, cell_outputs),
    }
    if report_versions:  # a global of the collector, so that cloudpickle ships it
        from .parity import collector

        collect = module_globals["flyte_dask_collect"]
        collect.__globals__["flyte_dask_extra"] = collector(VERSIONS_OUTPUT)
    for module in program.modules:
        module_globals[module.name] = _import(module.module)
    exec(compile(_function_ast(program, params, filename), filename, "exec"), module_globals)
    function = module_globals["cell"]
    function.__annotations__ = {**input_types, "return": cell_outputs}
    function.__name__ = function.__qualname__ = _identifier(name)

    plugin = task_class or DaskTask
    with quiet_flytekit():  # it warns about every pickled type; the summary shows types
        dask_task = plugin(
            task_config=to_dask_config(spec),
            task_function=function,
            metadata=TaskMetadata(
                cache=spec.cache,
                cache_version=cache_version if spec.cache else "",
                interruptible=spec.interruptible,
            ),
            container_image=spec.image,
        )
    # flytekit prefixes the name with the module it was built from (found by walking the stack);
    # a cell task belongs to no module, and its name must not depend on who called us.
    dask_task._name = name
    dask_task._instantiated_in = None
    return CellTask(
        task=dask_task,
        name=name,
        version=version,
        cache_version=cache_version,
        input_types=input_types,
        output_names=output_names,
        last_expression=program.last_expression,
        filename=filename,
        source=source,
    )


@contextmanager
def quiet_flytekit() -> Iterator[None]:
    """Only flytekit's errors while inside: it warns about every pickled type, and that notebook
    support is "alpha" on every remote client; the summary says what users need to know."""
    from flytekit.loggers import logger

    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _import(module_name: str) -> types.ModuleType:
    import importlib

    return importlib.import_module(module_name)


def _identifier(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return cleaned if cleaned[:1].isalpha() else f"cell_{cleaned}"
