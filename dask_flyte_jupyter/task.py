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
import sys
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import cache_key, dask_state, runtime, timing
from .accelerators import flytekit_accelerator
from .cell import CellProgram
from .notebook_syntax import wrap_cell_timer
from .spec import ClusterSpec, to_dask_config

#: Output carrying the value of the cell's last expression.
VALUE_OUTPUT = "flyte_dask_value"
#: Output with the run's report (JSON, ``runtime.py``): names not sent back, modules, notes...
REPORT_OUTPUT = runtime.REPORT_OUTPUT
META_OUTPUTS = (REPORT_OUTPUT,)
#: Output with the versions of job runner, scheduler and workers (remote builds only, JSON).
VERSIONS_OUTPUT = "flyte_dask_versions"
#: Output with the run's dask performance report, an HTML file (remote builds only; None when
#: the job runner could not make it). The kernel saves it like a local run's (``reports.py``).
PERFORMANCE_REPORT_OUTPUT = "flyte_dask_performance_report"
#: Environment override of how many bytes of dask data a cell may bring back.
LIMIT_VARIABLE = "FLYTE_DASK_BRING_BACK_LIMIT"
#: Prefix of the parameter of an input the cell declares ``global`` (a parameter cannot be).
GLOBAL_PARAM = "flyte_dask_global_"
RESERVED_NAMES = (
    *META_OUTPUTS,
    VALUE_OUTPUT,
    VERSIONS_OUTPUT,
    PERFORMANCE_REPORT_OUTPUT,
    "flyte_dask_session",
    "flyte_dask_start",
    "flyte_dask_settings",
    "flyte_dask_extra",
    "CellOutputs",
    *timing.TIMING_GLOBALS,
)
#: Declared type of values that travel as pickles (flytekit's pickle type; None allowed).
PICKLED: Any = Any | None
# Bumped when the generated function changes shape, so old versions are not reused.
_FORMAT = "2"


@dataclass(frozen=True)
class CellTask:
    """A built task and what the backends need to know about it."""

    task: Any  # flytekitplugins.dask.task.DaskTask
    name: str
    version: str
    cache_version: str
    input_types: Mapping[str, Any]  # by parameter name
    output_names: tuple[str, ...]  # the cell's outputs (and its value), without META_OUTPUTS
    last_expression: bool
    filename: str
    source: str
    #: Notebook name -> task parameter name, for inputs whose parameter is renamed.
    parameters: Mapping[str, str] = field(default_factory=dict)

    def task_inputs(self, namespace: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
        """The task's keyword arguments for the notebook values of ``names``."""
        return {self.parameters.get(name, name): namespace[name] for name in names}


@dataclass
class Unpacked:
    """The outputs of a run as the notebook gets them, and what the run reported."""

    outputs: dict[str, Any]
    dropped: dict[str, str]  # name -> why ("client", "cluster", "unbound")
    modules: dict[str, str]  # name -> module to re-import
    imports: list[str]  # names of the cell's imports that were bound
    notes: list[str]
    materialized: list[str]
    materialized_bytes: int
    figures: list[str]  # PNG, base64
    stdout: str | None


def unpack_outputs(outputs: dict[str, Any]) -> Unpacked:
    """The cell's outputs as the user wrote them, and the run's report."""
    report = json.loads(outputs.pop(REPORT_OUTPUT, None) or "{}")
    for name in report.get("boxed", []):
        outputs[name] = outputs[name][0]
    dropped = dict(report.get("dropped", {}))
    modules = dict(report.get("modules", {}))
    kept = {k: v for k, v in outputs.items() if k not in dropped and k not in modules}
    return Unpacked(
        outputs=kept,
        dropped=dropped,
        modules=modules,
        imports=list(report.get("imports", [])),
        notes=list(report.get("notes", [])),
        materialized=list(report.get("materialized", [])),
        materialized_bytes=int(report.get("materialized_bytes", 0)),
        figures=list(report.get("figures", [])),
        stdout=report.get("stdout"),
    )


def content_hash(value: object) -> str:
    """A hash of an input's content for the cache key (``cache_key.py``): functions and classes
    by their code and everything they read, frames and arrays by their data, the rest by pickle."""
    return cache_key.content_hash(value)


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


def _statements(source: str, line: int) -> list[ast.stmt]:
    """Generated statements, all on cell line ``line`` (the ``%%flyte_dask`` line for the
    prologue: a traceback through them points at the magic line, not into the cell)."""
    nodes = ast.parse(source).body
    for node in nodes:
        for child in ast.walk(node):
            if hasattr(child, "lineno"):
                child.lineno = child.end_lineno = line  # type: ignore[attr-defined]
    return nodes


def _inline_figures() -> bool:
    """Whether this kernel shows the figures a cell draws (matplotlib's inline backend)."""
    import sys

    matplotlib = sys.modules.get("matplotlib")
    backend = str(matplotlib.get_backend()) if matplotlib is not None else ""
    return "inline" in backend


_START = "flyte_dask_session = flyte_dask_start(flyte_dask_settings)"


def _function_ast(program: CellProgram, params: Mapping[str, str], filename: str) -> ast.Module:
    """The task function as an AST whose statements keep the cell's line numbers.

    The cell's statements run inside the run's session (``runtime.py``): opened first, outputs
    collected while the cluster still runs, closed whatever happens::

        def cell(a, b) -> CellOutputs:
            flyte_dask_session = flyte_dask_start(flyte_dask_settings)
            try:
                a, b = flyte_dask_session.place((a, b))
                client = flyte_dask_session.handle("client", "client")
                <the cell>
                return flyte_dask_session.collect(locals(), globals(), CellOutputs, ...)
            finally:
                flyte_dask_session.stop()
    """
    cell = ast.parse(program.body, filename=filename)
    ast.increment_lineno(cell, 1)  # body line 1 is cell line 2
    body = list(cell.body)
    if program.last_expression and isinstance(body[-1], ast.Expr):
        last = body[-1]
        body[-1] = ast.copy_location(
            ast.Assign(targets=[ast.Name(VALUE_OUTPUT, ast.Store())], value=last.value), last
        )
    if program.cell_timer:  # %%time: the whole cell, its last value too
        body = wrap_cell_timer(body)
    names = list(program.inputs)
    prologue = []
    if names:
        targets = ", ".join(params.get(n, n) for n in names)
        prologue.append(f"{targets}, = flyte_dask_session.place(({targets},))")
    for name in program.global_inputs:
        # Not `K = ...`: the cell's own `global K` must still come before any binding of K.
        prologue.append(f"globals()[{name!r}] = {params[name]}")
    for handle in program.handles:
        prologue.append(
            f"{handle.name} = flyte_dask_session.handle({handle.name!r}, {handle.kind!r})"
        )
    end = (body[-1].end_lineno or body[-1].lineno) + 1
    collect = _statements(
        "return flyte_dask_session.collect(locals(), globals(), CellOutputs, flyte_dask_extra)",
        end,
    )
    guarded = ast.Try(
        body=[*_statements("\n".join(prologue), 1), *body, *collect],
        handlers=[],
        orelse=[],
        finalbody=_statements("flyte_dask_session.stop()", 1),
    )
    function = ast.FunctionDef(
        name="cell",
        args=ast.arguments(
            posonlyargs=[],
            args=[ast.arg(arg=params.get(name, name)) for name in names],
            kwonlyargs=[],
            kw_defaults=[],
            defaults=[],
        ),
        body=[*_statements(_START, 1), guarded],
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
    footer = "return flyte_dask_session.collect(locals(), globals(), CellOutputs)"
    return (
        "\n".join([header, *textwrap.indent("\n".join([*lines, footer]), "    ").splitlines()])
        + "\n"
    )


def run_settings(
    program: CellProgram, spec: ClusterSpec, output_names: tuple[str, ...], *, remote: bool
) -> dict[str, Any]:
    """What the session needs to know at run time, fixed when the task is built."""
    import os

    import psutil

    # Dask data a cell may bring back: half of this kernel's machine, unless set.
    limit = os.environ.get(LIMIT_VARIABLE, "").strip()
    return {
        "outputs": list(output_names),
        "imports": [binding.name for binding in program.imported],
        "workers": spec.workers.count,
        "remote": remote,
        "figures": remote and _inline_figures(),
        "limit": int(limit) if limit.isdigit() else psutil.virtual_memory().total // 2,
    }


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

    params = {name: GLOBAL_PARAM + name for name in program.global_inputs}
    input_types = {
        params.get(name, name): input_type(namespace[name], hashed=spec.cache)
        for name in program.inputs
    }
    output_names = program.outputs + ((VALUE_OUTPUT,) if program.last_expression else ())
    output_fields = [
        (name, output_type(program.annotations.get(name))) for name in output_names
    ] + [(REPORT_OUTPUT, str)]
    if report_versions:
        from flytekit.types.file import FlyteFile

        output_fields.append((VERSIONS_OUTPUT, str))
        output_fields.append((PERFORMANCE_REPORT_OUTPUT, FlyteFile | None))
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
            "handles": [[h.name, h.kind] for h in program.handles],
            # A cached task is another template (discoverable, its cache version), so another
            # version: Flyte would otherwise run the one registered first under either flags.
            **({"cache": spec.cache_version or ""} if spec.cache else {}),
        },
        sort_keys=True,
    )
    version = _digest(signature)[:16]
    cache_version = spec.cache_version or version

    filename = f"<flyte_dask {name} {version}>"
    source = _readable_source(program, list(input_types))
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)

    module_globals: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "CellOutputs": cell_outputs,
        "flyte_dask_start": runtime.start,
        "flyte_dask_settings": run_settings(program, spec, output_names, remote=report_versions),
        "flyte_dask_extra": None,
        # IPython takes exit/quit out of builtins while a cell runs; in the task they exit as in
        # a script, so that the run can say they cannot end a task (execute.py)
        "exit": sys.exit,
        "quit": sys.exit,
        **timing.TIMING_GLOBALS,
    }
    if report_versions:
        import cloudpickle

        from . import reports
        from .parity import collector

        # The job runner has no dask_flyte_jupyter: the session's code travels in the pickle.
        cloudpickle.register_pickle_by_value(runtime)
        cloudpickle.register_pickle_by_value(dask_state)
        cloudpickle.register_pickle_by_value(timing)
        cloudpickle.register_pickle_by_value(reports)
        if spec.cache:  # the inputs' HashMethod(content_hash) is part of the task's interface
            cloudpickle.register_pickle_by_value(sys.modules[__name__])
            cloudpickle.register_pickle_by_value(cache_key)
        # The job runner also makes the run's performance report, from the session's start.
        recorder = reports.RemoteRecorder(
            PERFORMANCE_REPORT_OUTPUT, program.body, runtime.start, collector(VERSIONS_OUTPUT)
        )
        module_globals["flyte_dask_start"] = recorder.start
        module_globals["flyte_dask_extra"] = recorder.outputs
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
            pod_template_name=spec.pod_template,
            accelerator=flytekit_accelerator(spec.accelerator),
        )
    # flytekit prefixes the name with the module it was built from (found by walking the stack);
    # a cell task belongs to no module, and its name must not depend on who called us.
    dask_task._name = name
    dask_task._instantiated_in = None
    _forget_entity(dask_task)
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
        parameters=types.MappingProxyType(params),
    )


def _forget_entity(task: Any) -> None:
    """Takes ``task`` out of the list where flytekit keeps every task it ever made (for
    ``pyflyte register``): a cell's task lives for one run, and through its function's globals
    and hooks it may hold what the cell bound."""
    from flytekit.core.context_manager import FlyteEntities

    entities = FlyteEntities.entities
    for at in range(len(entities) - 1, -1, -1):  # it was just added: the last one
        if entities[at] is task:
            del entities[at]
            return


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
