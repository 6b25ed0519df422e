"""The cache key of an input value: what the result of a ``--cache`` cell depends on.

flytekit puts :func:`content_hash` (through ``HashMethod``) on every pickled input's literal:
the local cache keys on it, and so does Flyte's catalog for remote runs, so one function gives
the key in both places.

A function defined in the notebook travels by value (cloudpickle ships its code, the globals it
reads, its closure cells and defaults), so its key covers all of that, recursively through the
notebook functions and classes it reaches, and leaves out what cannot change its result: line
numbers, comments, whitespace and the cell file it was defined in (a new one each time a cell
runs). Functions, classes and modules that cloudpickle ships by reference (importable ones) count
by module name, qualified name and the package's version. Cycles (recursive functions, a class
whose methods name it) become back references. A value that cannot be hashed gets a fresh random
key: a cache miss, never a wrong hit.
"""

from __future__ import annotations

import abc
import dis
import hashlib
import io
import sys
import types
import uuid
from typing import Any

#: Bumped when the key of a value changes meaning, so old cache entries are not reused.
_FORMAT = "1"
#: Instructions naming a global (``*_NAME`` run in class bodies and fall back to globals).
_GLOBAL_OPS = frozenset(
    {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME"}
)
#: Entries of a class ``__dict__`` that are not its content (cloudpickle leaves them out too).
_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "_abc_impl", "__annotate_func__"})
#: ``type.__flags__`` bit of classes made by a class statement (the others are built in C).
_HEAP_TYPE = 1 << 9
_ATOMS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))


class Unhashable(Exception):
    """A value has no stable key; the caller gives it a random one."""


def content_hash(value: object) -> str:
    """A hash of an input's content, stable across kernel restarts where possible."""
    try:
        return _digest(_FORMAT, f"{sys.version_info[0]}.{sys.version_info[1]}", _Keys().key(value))
    except Exception:  # never fail the run (RecursionError included): miss the cache instead
        return _digest("unhashable", uuid.uuid4().hex)


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def code_key(code: types.CodeType) -> str:
    """What a code object does: its bytecode, names and constants; not where it was written
    (file, line numbers), so a change to only comments or whitespace keeps the key."""
    consts = tuple(
        code_key(c) if isinstance(c, types.CodeType) else _const_key(c) for c in code.co_consts
    )
    return _digest(
        "code",
        code.co_name,
        code.co_qualname,
        code.co_code,
        consts,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_exceptiontable,
    )


def _const_key(const: object) -> str:
    if isinstance(const, (tuple, frozenset)):
        items = [_const_key(item) for item in const]
        return _digest(
            type(const).__name__, sorted(items) if isinstance(const, frozenset) else items
        )
    return _digest(type(const).__name__, repr(const))


def global_names(code: types.CodeType) -> list[str]:
    """Names of globals the code (and the code nested in it) reads or writes, sorted."""
    names: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in _GLOBAL_OPS:
            names.add(str(instruction.argval))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(global_names(const))
    return sorted(names)


def by_reference(obj: Any) -> bool:
    """Whether cloudpickle ships ``obj`` (a function or class) by reference: importable under
    its module and qualified name, and not in a module registered to go by value."""
    import cloudpickle

    module_name = getattr(obj, "__module__", None)
    if not isinstance(module_name, str) or module_name in ("__main__", "__mp_main__"):
        return False
    if _resolve(sys.modules.get(module_name), obj.__qualname__) is not obj:
        return False
    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module_name.split(".")
    return not any(".".join(parts[:n]) in registered for n in range(1, len(parts) + 1))


def _resolve(module: object, qualname: str) -> object:
    target = module
    for part in qualname.split("."):
        if target is None or part == "<locals>":
            return None
        target = getattr(target, part, None)
    return target


def module_version(module_name: str) -> str:
    """The version of the package a module belongs to ("" when it has none)."""
    top = sys.modules.get(module_name.partition(".")[0])
    module = sys.modules.get(module_name)
    for candidate in (module, top):
        version = getattr(candidate, "__version__", None)
        if isinstance(version, str):
            return version
    return ""


class _Keys:
    """Keys of the values reachable from one input. Functions, classes and other objects seen
    before (a cycle, or a value reached twice) become a back reference to the order in which they
    were first seen, so the walk ends and the key does not depend on memory addresses."""

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}
        self._alive: list[object] = []  # what ``_seen`` names stays alive (ids stay unique)

    def _back_reference(self, obj: object) -> str | None:
        index = self._seen.get(id(obj))
        if index is not None:
            return _digest("seen", index)
        self._seen[id(obj)] = len(self._seen)
        self._alive.append(obj)
        return None

    def key(self, value: object) -> str:
        if type(value) in _ATOMS:
            return _digest(type(value).__name__, repr(value))
        seen = self._back_reference(value)
        if seen is not None:
            return seen
        if isinstance(value, types.FunctionType):
            if by_reference(value):
                return self._global(value)
            return self._function(value)
        if isinstance(value, type):
            if by_reference(value) or not value.__flags__ & _HEAP_TYPE:  # built in C
                return self._global(value)
            return self._class(value)
        if isinstance(value, types.ModuleType):
            return self._module(value)
        if type(value) in (set, frozenset):  # iteration order varies from process to process
            items: Any = value
            return _digest(type(value).__name__, sorted(self.key(item) for item in items))
        array = self._array(value)
        if array is not None:
            return array
        return self._pickled(value)

    def _global(self, obj: Any) -> str:
        return _digest("global", obj.__module__, obj.__qualname__, module_version(obj.__module__))

    def _module(self, module: types.ModuleType) -> str:
        name = module.__name__
        if sys.modules.get(name) is not module or name in ("__main__", "__mp_main__"):
            # shipped by value, or the notebook itself (whose names would not be in the key)
            raise Unhashable(f"module {name} has no stable key")
        return _digest("module", name, module_version(name))

    def _function(self, function: types.FunctionType) -> str:
        """Everything cloudpickle ships with a function by value."""
        code = function.__code__
        defined = function.__globals__
        missing = "<not defined>"  # a global defined later changes the key
        globals_ = tuple(
            (name, self.key(defined[name]) if name in defined else missing)
            for name in global_names(code)
        )
        cells = tuple(self._cell(cell) for cell in (function.__closure__ or ()))
        return _digest(
            "function",
            function.__module__,
            function.__name__,
            function.__qualname__,
            code_key(code),
            globals_,
            cells,
            self.key(function.__defaults__),
            self.key(function.__kwdefaults__),
            self.key(function.__annotations__),
            self.key(function.__doc__),
            self.key(dict(function.__dict__)),
        )

    def _cell(self, cell: types.CellType) -> str:
        try:
            contents = cell.cell_contents
        except ValueError:  # not bound yet
            return _digest("empty cell")
        return self.key(contents)

    def _class(self, cls: type) -> str:
        """A notebook class: its name, metaclass, bases and own attributes (methods by their
        function's key), as cloudpickle ships it by value."""
        slots = getattr(cls, "__slots__", ())
        slot_names = {slots} if isinstance(slots, str) else set(slots)
        attributes = tuple(
            (name, self.key(cls.__dict__[name]))
            for name in sorted(cls.__dict__)
            if name not in _CLASS_SKIP and name not in slot_names
        )
        registered: tuple[str, ...] = ()
        if isinstance(cls, abc.ABCMeta):  # virtual subclasses change isinstance()
            registry = abc._get_dump(cls)[0]  # type: ignore[attr-defined]
            registered = tuple(sorted(self.key(ref()) for ref in registry if ref() is not None))
        return _digest(
            "class",
            cls.__module__,
            cls.__qualname__,
            self.key(type(cls)),
            tuple(self.key(base) for base in cls.__bases__),
            tuple(sorted(slot_names)),
            attributes,
            registered,
        )

    def _array(self, value: object) -> str | None:
        """DataFrames and arrays of plain data, by their data (faster than their pickles)."""
        type_name = f"{type(value).__module__}.{type(value).__qualname__}"
        if type_name == "numpy.ndarray" and not value.dtype.hasobject:  # type: ignore[attr-defined]
            contiguous = value.tobytes()  # type: ignore[attr-defined]
            return _digest(
                "ndarray",
                repr((value.dtype, value.shape)),  # type: ignore[attr-defined]
                hashlib.sha256(contiguous).hexdigest(),
            )
        if type_name == "pandas.DataFrame":
            import pandas as pd

            frame: Any = value
            dtypes = [frame.index.dtype, *frame.dtypes]
            if any(getattr(dtype, "kind", "O") == "O" for dtype in dtypes):
                return None  # pandas hashes objects by their str(): by pickle instead
            rows = pd.util.hash_pandas_object(frame, index=True).values.tobytes()
            return _digest(
                "DataFrame",
                hashlib.sha256(rows).hexdigest(),
                repr(list(frame.columns)),
                repr([str(dtype) for dtype in frame.dtypes]),
                repr(list(frame.index.names)),
                repr(type(frame.index).__name__),
            )
        return None

    def _pickled(self, value: object) -> str:
        """Any other value by its pickle, in which every function, class and module stands for
        its key (their pickles would record the cell file, which changes on every run)."""
        import cloudpickle

        keys = self

        class KeyPickler(cloudpickle.Pickler):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                if obj is str:  # the callable of the stand-ins below
                    return super().reducer_override(obj)
                if isinstance(obj, (types.FunctionType, type, types.ModuleType)):
                    return str, (keys.key(obj),)
                wrapped = getattr(obj, "__wrapped__", None)
                if wrapped is not None and getattr(obj, "__module__", None) == "__main__":
                    # functools.lru_cache & co pickle as a name in __main__: not their code
                    try:
                        reduced = obj.__reduce_ex__(5)
                    except Exception:  # staticmethod & co: cloudpickle reduces them itself
                        reduced = None
                    if isinstance(reduced, str):
                        return str, (_digest(type(obj).__qualname__, keys.key(wrapped)),)
                return super().reducer_override(obj)

        buffer = io.BytesIO()
        try:
            KeyPickler(buffer, protocol=5).dump(value)
        except RecursionError:
            raise
        except Exception as error:  # locks, generators, open files...
            raise Unhashable(f"{type(value).__qualname__} cannot be pickled") from error
        return _digest("pickle", hashlib.sha256(buffer.getvalue()).hexdigest())
