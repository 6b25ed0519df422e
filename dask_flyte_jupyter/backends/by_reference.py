"""Inputs and outputs of a local, uncached run, passed at memory speed.

flytekit's local execution converts every input to a literal and back (a DataFrame is written to
parquet and read again, anything else pickled to a file), then does the same with every output.
A local run that is not cached needs none of those files: the values never leave this process.
What the conversion gives is kept:

- a cell that mutates an input in place leaves the notebook's value as it was: the task gets a
  copy, as it gets an unpickled copy today and remotely. A pandas object is copied shallowly
  (copy-on-write makes that safe); anything else goes through an in-memory pickle whose large
  buffers (arrays, DataFrame columns) are copied once, at memory speed;
- an output that could not travel remotely fails the same way here: each is pickled into a sink
  that keeps nothing (large buffers are not even copied), and the value itself comes back;
- plain values (numbers, strings, lists and dicts of them, files) still go through flytekit's
  own conversion, which checks and normalises them (they are small);
- anything that does not pass these checks is handed back to flytekit's conversion, which gives
  its own error (``errors.py`` reads it).

A cached run keeps flytekit's whole path: the local cache stores literals.
"""

from __future__ import annotations

import io
import pickle
import typing
from collections.abc import Mapping
from typing import Any

#: Declared types whose values pass by reference (flytekit's pickle type and DataFrames).
_PICKLED = Any | None


class Passing:
    """One run's inputs, as the task gets them, and its outputs, as the notebook gets them."""

    def __init__(self) -> None:
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] | None = None

    def take_inputs(self, ctx: Any, kwargs: Mapping[str, Any], types: Mapping[str, Any]) -> None:
        """The task's inputs from the notebook's values, each a copy the cell may change."""
        self.inputs = {name: _input_copy(ctx, value, types[name]) for name, value in kwargs.items()}

    def give_outputs(self, ctx: Any, outputs: Mapping[str, Any], types: Mapping[str, Any]) -> None:
        """Checks the outputs as flytekit would; raises when one does not pass."""
        self.outputs = {name: _output(ctx, value, types[name]) for name, value in outputs.items()}


def _bare(python_type: Any) -> Any:
    """The type without its ``Annotated`` extras (the cache key's hash method)."""
    if typing.get_origin(python_type) is typing.Annotated:
        return typing.get_args(python_type)[0]
    return python_type


def _by_reference(python_type: Any) -> bool:
    bare = _bare(python_type)
    return bool(bare == _PICKLED or _is_frame_type(bare) or _is_array_type(bare))


def _is_frame_type(python_type: Any) -> bool:
    return getattr(python_type, "__module__", "").startswith("pandas") and isinstance(
        python_type, type
    )


def _is_array_type(python_type: Any) -> bool:
    return getattr(python_type, "__module__", "") == "numpy" and isinstance(python_type, type)


def _input_copy(ctx: Any, value: Any, python_type: Any) -> Any:
    if not _by_reference(python_type):
        return _through_flytekit(ctx, value, python_type)
    bare = _bare(python_type)
    if bare != _PICKLED and not isinstance(value, bare):
        return _through_flytekit(ctx, value, python_type)  # flytekit says what is wrong
    if _is_pandas_object(value):
        return value.copy(deep=False)  # copy-on-write: the cell's changes stay its own
    return _pickled_copy(value)


def _output(ctx: Any, value: Any, python_type: Any) -> Any:
    if not _by_reference(python_type):
        return _through_flytekit(ctx, value, python_type)
    bare = _bare(python_type)
    if bare != _PICKLED:
        if not isinstance(value, bare):
            raise TypeError(f"{type(value).__name__} is not {bare.__name__}")
        return value
    if value is not None and not _plain_data(value):
        _check_pickles(value)
    return value


def _plain_data(value: Any) -> bool:
    """An array or pandas object without Python objects in it: it pickles, and a check would
    only cost a pass over it (a copy, for a non-contiguous block)."""
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "dtype"):
        return bool(value.dtype.kind != "O")
    if not module.startswith("pandas"):
        return False
    dtypes: list[Any] = []
    for part in (value, getattr(value, "index", None)):
        if part is None:
            continue
        many: Any = getattr(part, "dtypes", None)  # a frame's (a Series), a MultiIndex's
        dtypes.extend(many.tolist() if hasattr(many, "tolist") else [part.dtype])
    # numbers, booleans, dates: not objects, strings (arrow) or categories, which are checked
    return all(getattr(dtype, "kind", "O") != "O" for dtype in dtypes)


def _is_pandas_object(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and hasattr(value, "copy")


def _pickled_copy(value: Any) -> Any:
    """A copy as flytekit's pickle type makes one, without the file: large buffers are copied
    once (writable, as after unpickling), the rest re-created by pickle."""
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=[bytearray(buffer.raw()) for buffer in buffers])


class _Discard(io.RawIOBase):
    """A file that keeps nothing: pickling into it only checks that the value pickles."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def _check_pickles(value: Any) -> None:
    import cloudpickle

    pickler = cloudpickle.CloudPickler(_Discard(), protocol=5, buffer_callback=_keep_nothing)
    pickler.dump(value)


def _keep_nothing(buffer: pickle.PickleBuffer) -> None:
    """Out-of-band buffers are handed here instead of being copied into the pickle."""


def _through_flytekit(ctx: Any, value: Any, python_type: Any) -> Any:
    """flytekit's own conversion of one value to its literal and back."""
    from flytekit.core.type_engine import TypeEngine

    literal_type = TypeEngine.to_literal_type(python_type)
    literal = TypeEngine.to_literal(ctx, value, python_type, literal_type)
    return TypeEngine.to_python_value(ctx, literal, python_type)


def run(task: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Runs ``task`` as ``task(**inputs)`` would start a local execution, its values passed
    by reference; returns the outputs by name."""
    from flytekit.core.context_manager import FlyteContextManager, OutputMetadataTracker

    ctx = FlyteContextManager.current_context()
    state = ctx.new_execution_state().with_params(mode=task.local_execution_mode())
    passing = Passing()
    task.passing = passing
    try:
        with FlyteContextManager.with_context(
            ctx.with_execution_state(state).with_output_metadata_tracker(OutputMetadataTracker())
        ) as child:
            child.user_space_params._decks = []
            task.local_execute(child, **inputs)
    finally:
        task.passing = None
    assert passing.outputs is not None
    return passing.outputs


async def outputs_or_flytekits_error(
    task: Any, native_outputs: Any, ctx: Any, convert: Any
) -> tuple[Any, dict[str, Any]]:
    """The task's ``_output_to_literal_map`` while passing by reference: the outputs checked
    and kept; any that does not pass goes through flytekit's ``convert`` (its own error)."""
    from flytekit.models.literals import LiteralMap

    names = list(task.python_interface.outputs)
    native_outputs_as_map = dict(zip(names, _as_tuple(native_outputs, len(names)), strict=True))
    try:
        task.passing.give_outputs(ctx, native_outputs_as_map, task.python_interface.outputs)
    except Exception:
        literals, native_outputs_as_map = await convert(native_outputs, ctx)
        task.passing.outputs = _from_literals(ctx, literals, task.python_interface.outputs)
        return literals, native_outputs_as_map
    return LiteralMap(literals={}), native_outputs_as_map


def _as_tuple(native_outputs: Any, count: int) -> tuple[Any, ...]:
    """The outputs in order (a cell's task returns its ``CellOutputs`` named tuple)."""
    if isinstance(native_outputs, tuple) and len(native_outputs) == count:
        return tuple(native_outputs)
    return (native_outputs,)


def _from_literals(ctx: Any, literals: Any, types: Mapping[str, Any]) -> dict[str, Any]:
    from flytekit.core.type_engine import TypeEngine

    return dict(TypeEngine.literal_map_to_kwargs(ctx, literals, types))
