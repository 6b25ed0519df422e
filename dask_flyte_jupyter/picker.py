"""The resource picker: an ipywidgets form whose value is a validated :class:`ClusterSpec`.

The picker has no rules of its own: every field goes through ``spec.py``, so a bad field shows
exactly the message the ``%%flyte_dask`` line would give, next to the field, and ``.value`` keeps
the last valid spec. :class:`KernelDefaults` is the observable home of a kernel's defaults, so
``%flyte_dask_config`` and any displayed picker stay in sync both ways through traitlets links.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import traitlets

from .defaults import KernelDefaults, target_line
from .spec import ClusterSpec, SpecError, parse_cpu, parse_memory, spec_from_options

_ERROR_STYLE = "color: var(--jp-error-color1, #c62828)"


def request_summary(spec: ClusterSpec) -> str:
    """A rough size of the request, e.g. ``'4 workers: 32 CPU, 128 GiB in total'``."""
    w = spec.workers
    workers = f"{w.count} worker{'' if w.count == 1 else 's'}"
    parts = []
    if w.cpu is not None:
        parts.append(f"{_number(parse_cpu(w.cpu, '--worker-cpu') * w.count)} CPU")
    if w.mem is not None:
        parts.append(_bytes(parse_memory(w.mem, "--worker-mem") * w.count))
    if w.gpu:
        parts.append(f"{w.gpu * w.count} GPU")
    if not parts:
        return f"{workers} (no cpu or memory limit per worker)"
    return f"{workers}: {', '.join(parts)} in total"


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _bytes(size: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


_LABEL = {"description_width": "130px"}
#: Wide enough for every placeholder after its 130px label; checkboxes are indented as far.
_FIELD = {"width": "340px"}
#: Marks an invalid field (``.flyte-dask-invalid``) with a red border.
_INVALID_CLASS = "flyte-dask-invalid"
_CSS = (
    "<style>.flyte-dask-invalid input { border: 1px solid var(--jp-error-color1, #c62828) "
    "!important; }</style>"
)


def _text(placeholder: str, description: str) -> Any:
    # Checked when the user presses enter or leaves the field, not at every keystroke.
    return widgets.Text(
        description=description,
        placeholder=placeholder,
        style=_LABEL,
        layout=_FIELD,
        continuous_update=False,
    )


def _int_field(value: int, description: str) -> Any:
    return widgets.IntText(value=value, description=description, style=_LABEL, layout=_FIELD)


def _checkbox(description: str) -> Any:
    # indent: the box lines up with the other fields' inputs, its label after it
    return widgets.Checkbox(description=description, indent=True, style=_LABEL, layout=_FIELD)


class ResourcePicker(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """A form for a ``%%flyte_dask`` cluster spec and its execution target.

    ``.value`` is the current valid :class:`ClusterSpec` (observe it with
    ``picker.observe(fn, names="value")``; setting it updates the fields). ``.remote``,
    ``.project`` and ``.domain`` say where to run: "local" (this machine) or "remote" (on
    your Flyte cluster). ``.magic_line`` is the equivalent ``%%flyte_dask`` line.
    ``.fields`` holds the field widgets by flag (``picker.fields["worker-mem"]``).

    While a field is invalid (``32Gx``), ``.valid`` is False, ``.errors`` maps each invalid
    field's flag to its message (shown next to it, the field framed in red), ``.magic_line``
    is empty (there is no line for it) and the shown line says what to fix; ``.value`` stays
    the last valid spec, so kernel defaults bound to the picker never take an invalid one.
    """

    value = traitlets.Instance(ClusterSpec, args=())
    remote = traitlets.Bool(False)
    project = traitlets.Unicode("")
    domain = traitlets.Unicode("")
    magic_line = traitlets.Unicode(read_only=True)
    valid = traitlets.Bool(True, read_only=True)

    def __init__(self, value: ClusterSpec | None = None, **kwargs: Any) -> None:
        # Field per flag of the spec, in the order of the magic's options table.
        self.fields: dict[str, Any] = {
            "workers": _int_field(2, "workers"),
            "worker-cpu": _text("e.g. 2 or 500m", "worker cpu"),
            "worker-mem": _text("e.g. 4Gi", "worker memory"),
            "worker-gpu": _int_field(0, "worker gpu"),
            "scheduler-cpu": _text("e.g. 1 or 500m", "scheduler cpu"),
            "scheduler-mem": _text("e.g. 2Gi", "scheduler memory"),
            "image": _text("default image", "image"),
            "interruptible": _checkbox("interruptible (spot) workers"),
            "cache": _checkbox("cache the task"),
            "cache-version": _text("hash of cell + spec", "cache version"),
        }
        self._messages = {flag: widgets.HTML() for flag in [*self.fields, "spec"]}
        self._errors: dict[str, str] = {}
        self._target = widgets.ToggleButtons(
            options=[("local", False), ("remote", True)],
            tooltips=["on this machine", "on your Flyte cluster"],
        )
        self._project = _text("default from the Flyte config", "project")
        self._domain = _text("default from the Flyte config", "domain")
        self._summary = widgets.Label()
        self._line = widgets.HTML()
        self._writing = False  # fields are being set from .value: do not read them back

        def row(flag: str) -> Any:
            return widgets.HBox([self.fields[flag], self._messages[flag]])

        def heading(text: str) -> Any:
            return widgets.HTML(f"<b>{text}</b>")

        children = [
            widgets.HTML(_CSS),
            heading("Workers"),
            *(row(f) for f in ("workers", "worker-cpu", "worker-mem", "worker-gpu")),
            heading("Scheduler"),
            *(row(f) for f in ("scheduler-cpu", "scheduler-mem")),
            heading("Task"),
            *(row(f) for f in ("image", "interruptible", "cache", "cache-version")),
            heading("Where to run"),
            self._target,
            self._project,
            self._domain,
            self._messages["spec"],
            self._summary,
            self._line,
        ]
        super().__init__(children=children, **kwargs)

        for field in self.fields.values():
            field.observe(self._on_field, names="value")
        targets = (("remote", self._target), ("project", self._project), ("domain", self._domain))
        for trait, widget in targets:
            traitlets.link((self, trait), (widget, "value"))
        self.observe(self._on_value, names="value")
        self.observe(self._on_target, names=["remote", "project", "domain"])
        if value is not None:
            self.value = value
        self._write_fields(self.value)
        self._on_target()

    @property
    def errors(self) -> dict[str, str]:
        """Flag (``'worker-mem'``, or ``'spec'`` for a rule across fields) -> message shown."""
        return dict(self._errors)

    @property
    def summary(self) -> str:
        """The rough size of the request shown under the form."""
        text: str = self._summary.value
        return text

    @traitlets.validate("value")
    def _valid_value(self, proposal: dict[str, Any]) -> ClusterSpec:
        spec: ClusterSpec = proposal["value"]
        return spec.validate()  # code setting a bad spec is a bug: raise, unlike user input

    def _options(self) -> dict[str, object]:
        """The fields as spec options: empty text and 0 GPUs mean 'not set'."""
        options: dict[str, object] = {}
        for flag, field in self.fields.items():
            value = field.value
            if isinstance(value, str):
                value = value.strip() or None
            if flag == "worker-gpu" and value == 0:
                value = None
            options[flag] = value
        return options

    def _on_field(self, change: Any = None) -> None:
        if self._writing:
            return
        options = self._options()
        errors: dict[str, str] = {}
        for flag, option in options.items():
            alone = {flag: option}
            if flag == "cache-version":  # the one rule that needs a second field
                alone["cache"] = options["cache"]
            try:
                spec_from_options(alone)
            except SpecError as error:
                errors[flag] = str(error)
        spec = None
        if not errors:
            try:
                spec = spec_from_options(options, base=ClusterSpec(name=self.value.name))
            except SpecError as error:
                errors["spec"] = str(error)
        self._show_errors(errors)
        self._update_disabled()
        if spec is not None:
            self.value = spec  # _on_value sees the fields already agree

    def _on_value(self, change: Any) -> None:
        if self._options_spec() != change["new"]:
            self._write_fields(change["new"])
        self._show_errors({})
        self._refresh_text()

    def _options_spec(self) -> ClusterSpec | None:
        try:
            return spec_from_options(self._options(), base=ClusterSpec(name=self.value.name))
        except SpecError:
            return None

    def _write_fields(self, spec: ClusterSpec) -> None:
        values = {
            "workers": spec.workers.count,
            "worker-cpu": spec.workers.cpu or "",
            "worker-mem": spec.workers.mem or "",
            "worker-gpu": spec.workers.gpu or 0,
            "scheduler-cpu": spec.scheduler.cpu or "",
            "scheduler-mem": spec.scheduler.mem or "",
            "image": spec.image or "",
            "interruptible": spec.interruptible,
            "cache": spec.cache,
            "cache-version": spec.cache_version or "",
        }
        self._writing = True
        try:
            for flag, value in values.items():
                self.fields[flag].value = value
        finally:
            self._writing = False
        self._update_disabled()
        self._refresh_text()

    def _show_errors(self, errors: dict[str, str]) -> None:
        self._errors = errors
        for flag, message in self._messages.items():
            text = errors.get(flag)
            message.value = (
                "" if text is None else f'<span style="{_ERROR_STYLE}">{html.escape(text)}</span>'
            )
        for flag, field in self.fields.items():
            if flag in errors:
                field.add_class(_INVALID_CLASS)
            else:
                field.remove_class(_INVALID_CLASS)
        self.set_trait("valid", not errors)
        self._refresh_text()

    def _update_disabled(self) -> None:
        # Cache version only matters with cache; it stays editable while it holds text, so a
        # version left over after unticking cache can be cleared.
        version = self.fields["cache-version"]
        version.disabled = not self.fields["cache"].value and not version.value.strip()

    def _on_target(self, change: Any = None) -> None:
        self._project.disabled = self._domain.disabled = not self.remote
        self._refresh_text()

    def _refresh_text(self) -> None:
        if self._errors:  # no line for what the fields say: what to fix instead
            self.set_trait("magic_line", "")
            flags = ", ".join(f"--{flag}" for flag in self._errors if flag != "spec")
            fix = f"fix {flags}" if flags else self._errors.get("spec", "")
            self._line.value = f'<pre style="{_ERROR_STYLE}">not valid: {html.escape(fix)}</pre>'
            self._summary.value = ""
            return
        line = target_line(self.value, self.remote, self.project, self.domain)
        self.set_trait("magic_line", line)
        self._line.value = f"<pre>{html.escape(line)}</pre>"
        self._summary.value = request_summary(self.value)


def bind_picker(picker: ResourcePicker, defaults: KernelDefaults) -> Callable[[], None]:
    """Keep ``picker`` and ``defaults`` equal both ways; returns a function that unbinds them.

    The picker takes the defaults' current values first. Closing the picker unbinds it, so the
    kernel does not keep closed widgets alive.
    """
    links = [
        traitlets.link((defaults, "spec"), (picker, "value")),
        *(traitlets.link((defaults, t), (picker, t)) for t in ("remote", "project", "domain")),
    ]

    def unbind() -> None:
        for link in links:
            link.unlink()
        links.clear()

    def on_close(change: Any) -> None:
        if change["new"] is None:
            unbind()

    picker.observe(on_close, names="comm")
    return unbind
