"""A run's results into the notebook: outputs, re-imported modules, notes and figures, all at
once and only when the whole run succeeded (a failed cell changes nothing)."""

from __future__ import annotations

import base64
import sys
from typing import Any

from .cell import ImportBinding
from .dask_state import size_text
from .run import RunHandle
from .task import VALUE_OUTPUT, Unpacked, unpack_outputs


class Results:
    """Puts a run's results into the notebook, all at once, only when nothing failed."""

    def __init__(
        self,
        shell: Any,
        magics: Any,
        handle: RunHandle,
        out_var: str | None,
        *,
        remote: bool,
        imports: tuple[ImportBinding, ...] = (),
    ) -> None:
        self.shell, self.magics, self.handle = shell, magics, handle
        self.out_var, self.remote = out_var, remote
        self.imports = {binding.name: binding for binding in imports}
        self.figures: list[str] = []
        self._figures_before = _figure_numbers()

    def bring_back(self, outputs: dict[str, Any]) -> None:
        handle = self.handle
        handle.begin("gathering results")
        unpacked = unpack_outputs(outputs)
        updates = dict(unpacked.outputs)
        handle.value = updates.pop(VALUE_OUTPUT, None)
        updates.update(self._imports(unpacked))
        handle.dropped = sorted(
            n for n, why in unpacked.dropped.items() if why != "unbound" and n != VALUE_OUTPUT
        )
        handle.outputs = updates
        for text in unpacked.notes:
            handle.note(text)
        if unpacked.materialized:
            handle.details["brought back"] = (
                f"{', '.join(unpacked.materialized)}: "
                f"{size_text(unpacked.materialized_bytes)} of dask data"
            )
        if self.remote and unpacked.stdout:
            sys.stdout.write(unpacked.stdout)
        self.shell.user_ns.update(updates)
        if not handle.outputs_by_reference:  # else they are the figures the cell drew
            self._forget_unpickled_figures({**updates, VALUE_OUTPUT: handle.value})
        ended = self.magics.ended_handles
        for name in updates:
            ended.pop(name, None)
        for name, why in unpacked.dropped.items():
            if why in ("client", "cluster"):
                ended[name] = (why, handle.name)
        if self.out_var is not None:
            self.shell.user_ns[self.out_var] = handle
        self.figures = unpacked.figures

    def _imports(self, unpacked: Unpacked) -> dict[str, Any]:
        """The cell's imports and module outputs, re-imported in the kernel (never pickled)."""
        values: dict[str, Any] = {}
        for name, module in unpacked.modules.items():
            values[name] = self._import(name, module, None)
        for name in unpacked.imports:
            binding = self.imports.get(name)
            if binding is not None:
                values[name] = self._import(name, binding.module, binding.attribute)
        return {k: v for k, v in values.items() if v is not _MISSING}

    def _import(self, name: str, module: str, attribute: str | None) -> Any:
        import importlib

        try:
            imported = importlib.import_module(module)
            if attribute is None:
                return imported
            try:
                return getattr(imported, attribute)
            except AttributeError:
                return importlib.import_module(f"{module}.{attribute}")
        except ImportError as error:
            self.handle.note(f"{name} is not bound here: {error} in this kernel")
            return _MISSING

    def _forget_unpickled_figures(self, values: dict[str, Any]) -> None:
        """Figures among the outputs are copies, registered with pyplot when unpickled: the
        inline backend would show them next to the figures the cell drew."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        new = _figure_numbers() - self._figures_before
        for figure in _figures_in(values.values()):
            manager = getattr(figure.canvas, "manager", None)
            if manager is not None and manager.num in new:
                pyplot.close(figure)

    def show_figures(self) -> None:
        from IPython.display import Image, display

        for png in self.figures:
            display(Image(data=base64.b64decode(png), format="png"))


_MISSING = object()


def _figures_in(values: Any) -> list[Any]:
    """Matplotlib figures that values are or belong to (a figure, axes, a list of lines)."""
    from matplotlib.figure import Figure

    found = []
    for value in values:
        items = value if type(value) in (list, tuple) else [value]
        for item in items:
            figure = item if isinstance(item, Figure) else getattr(item, "figure", None)
            if isinstance(figure, Figure):
                found.append(figure)
    return found


def _figure_numbers() -> set[int]:
    pyplot = sys.modules.get("matplotlib.pyplot")
    return set(pyplot.get_fignums()) if pyplot is not None else set()
