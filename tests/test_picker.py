"""The resource picker and the kernel defaults, with real ipywidgets objects (no frontend)."""

from __future__ import annotations

import html

import pytest

from dask_flyte_jupyter.magics import parse_magic_line
from dask_flyte_jupyter.picker import (
    KernelDefaults,
    ResourcePicker,
    bind_picker,
    request_summary,
)
from dask_flyte_jupyter.spec import (
    ClusterSpec,
    SchedulerSpec,
    SpecError,
    WorkerSpec,
    spec_from_options,
)


def spec_error(options: dict[str, object]) -> str:
    """The message spec.py gives for these options: the picker must show exactly this."""
    with pytest.raises(SpecError) as caught:
        spec_from_options(options)
    return str(caught.value)


def shown_next_to(picker: ResourcePicker, flag: str) -> str:
    """The message widget in the same row as the field of ``flag``."""
    for row in picker.children:
        children = getattr(row, "children", ())
        if children and children[0] is picker.fields[flag]:
            return str(children[1].value)
    raise AssertionError(f"no row for {flag}")


def test_setting_fields_updates_value_line_and_summary():
    picker = ResourcePicker()
    seen = []
    picker.observe(lambda change: seen.append(change["new"]), names="value")
    picker.fields["workers"].value = 4
    picker.fields["worker-cpu"].value = "8"
    picker.fields["worker-mem"].value = "32Gi"
    picker.fields["scheduler-cpu"].value = "2"
    picker.fields["interruptible"].value = True
    expected = ClusterSpec(
        workers=WorkerSpec(count=4, cpu="8", mem="32Gi"),
        scheduler=SchedulerSpec(cpu="2"),
        interruptible=True,
    )
    assert picker.value == expected
    assert seen[-1] == expected and len(seen) == 5  # one notification per edit
    line = "%%flyte_dask --workers 4 --worker-cpu 8 --worker-mem 32Gi --scheduler-cpu 2"
    assert picker.magic_line == line + " --interruptible"
    assert picker.magic_line in picker._line.value  # shown, ready to copy
    assert picker.summary == "4 workers: 32 CPU, 128 GiB in total"
    assert picker.errors == {}


def test_the_shown_line_parses_back_to_the_same_spec():
    picker = ResourcePicker()
    picker.fields["worker-mem"].value = "512Mi"
    picker.fields["worker-gpu"].value = 1
    picker.fields["image"].value = "ghcr.io/org/image:py3.11"
    picker.fields["cache"].value = True
    picker.fields["cache-version"].value = "v2"
    options = parse_magic_line(picker.magic_line)
    assert spec_from_options(options) == picker.value
    assert picker.value.cache_version == "v2"


@pytest.mark.parametrize(
    ("flag", "bad", "options"),
    [
        ("worker-mem", "4Gx", {"worker-mem": "4Gx"}),
        ("workers", 0, {"workers": 0}),
        ("worker-cpu", "abc", {"worker-cpu": "abc"}),
        ("scheduler-mem", "0", {"scheduler-mem": "0"}),
        ("worker-gpu", -1, {"worker-gpu": -1}),
        ("image", "my image", {"image": "my image"}),
        ("cache-version", "v1", {"cache-version": "v1"}),  # without --cache
    ],
)
def test_invalid_input_is_marked_and_gives_no_line(flag, bad, options):
    picker = ResourcePicker(spec_from_options({"workers": 3, "worker-mem": "1Gi"}))
    before = picker.value
    assert picker.valid and picker.magic_line
    picker.fields[flag].value = bad  # never raises
    message = spec_error(options)
    assert picker.errors == {flag: message}
    assert html.escape(message) in shown_next_to(picker, flag)
    # not silently the old value: marked invalid, no line to copy, the field framed in red
    assert not picker.valid and picker.magic_line == ""
    assert f"not valid: fix --{flag}" in picker._line.value
    assert "flyte-dask-invalid" in picker.fields[flag]._dom_classes
    # the last valid spec stays the value: bound kernel defaults never take an invalid one
    assert picker.value == before
    # every other field still shows nothing
    assert all(not shown_next_to(picker, f) for f in picker.fields if f != flag)
    assert all(
        "flyte-dask-invalid" not in picker.fields[f]._dom_classes
        for f in picker.fields
        if f != flag
    )


def test_fixing_the_field_clears_the_message_and_updates_the_value():
    picker = ResourcePicker()
    picker.fields["worker-mem"].value = "4Gx"
    picker.fields["workers"].value = 0
    assert set(picker.errors) == {"worker-mem", "workers"}  # every bad field, not the first
    picker.fields["worker-mem"].value = "4Gi"
    assert set(picker.errors) == {"workers"} and picker.value.workers.mem is None
    picker.fields["workers"].value = 5
    assert picker.errors == {} and shown_next_to(picker, "workers") == ""
    assert picker.value.workers == WorkerSpec(count=5, mem="4Gi")


def test_setting_value_updates_the_fields_and_clears_messages():
    picker = ResourcePicker()
    picker.fields["worker-cpu"].value = "lots"
    spec = ClusterSpec(
        workers=WorkerSpec(count=6, cpu="500m", gpu=2),
        scheduler=SchedulerSpec(mem="2Gi"),
        image="img:1",
        cache=True,
        cache_version="v3",
        name="my_task",
    )
    picker.value = spec
    fields = {flag: field.value for flag, field in picker.fields.items()}
    assert fields == {
        "workers": 6,
        "worker-cpu": "500m",
        "worker-mem": "",
        "worker-gpu": 2,
        "scheduler-cpu": "",
        "scheduler-mem": "2Gi",
        "image": "img:1",
        "interruptible": False,
        "cache": True,
        "cache-version": "v3",
    }
    assert picker.errors == {}
    assert picker.magic_line == spec.magic_line()
    assert picker.summary == "6 workers: 3 CPU, 12 GPU in total"
    # an edit keeps what the form does not show (the task name)
    picker.fields["workers"].value = 7
    assert picker.value == ClusterSpec(**{**vars(spec), "workers": WorkerSpec(7, "500m", None, 2)})


def test_constructor_value_and_invalid_programmatic_value():
    spec = spec_from_options({"workers": 4, "worker-cpu": "2"})
    picker = ResourcePicker(spec)
    assert picker.value == spec and picker.fields["workers"].value == 4
    with pytest.raises(SpecError):  # code setting a bad spec is a bug, unlike user input
        picker.value = ClusterSpec(workers=WorkerSpec(count=0))
    assert picker.value == spec


def test_cache_version_is_enabled_only_with_cache():
    picker = ResourcePicker()
    version = picker.fields["cache-version"]
    assert version.disabled
    picker.fields["cache"].value = True
    assert not version.disabled
    version.value = "v1"
    picker.fields["cache"].value = False
    # still editable while it holds text, so the user can clear what is now an error
    assert not version.disabled
    assert picker.errors == {"cache-version": "--cache-version needs --cache"}
    assert picker.value.cache and picker.value.cache_version == "v1"  # last valid
    version.value = ""
    assert version.disabled and picker.errors == {} and not picker.value.cache


def test_remote_target_adds_project_and_domain_to_the_line():
    picker = ResourcePicker(spec_from_options({"workers": 3, "worker-mem": "1Gi"}))
    assert picker._project.disabled and picker._domain.disabled
    picker._project.value = "ignored while local"
    assert "--remote" not in picker.magic_line and "--project" not in picker.magic_line
    picker._target.value = True
    assert picker.remote and not picker._project.disabled
    picker.project = "flytesnacks"
    picker._domain.value = "development"
    assert picker.magic_line == (
        "%%flyte_dask --workers 3 --worker-mem 1Gi --remote --project flytesnacks "
        "--domain development"
    )
    assert picker._project.value == "flytesnacks" and picker.domain == "development"
    picker.remote = False
    assert picker._target.value is False and picker.magic_line.endswith("--worker-mem 1Gi")


def test_kernel_defaults_and_picker_stay_in_sync_both_ways():
    defaults = KernelDefaults()
    defaults.spec = spec_from_options({"workers": 3})
    picker = ResourcePicker()
    unbind = bind_picker(picker, defaults)
    assert picker.value == defaults.spec and picker.fields["workers"].value == 3  # defaults win
    # widget -> defaults
    picker.fields["worker-mem"].value = "2Gi"
    assert defaults.spec == spec_from_options({"workers": 3, "worker-mem": "2Gi"})
    picker._target.value = True
    picker._project.value = "p"
    assert defaults.remote and defaults.project == "p"
    # defaults -> widget, as `%flyte_dask_config --workers 5` does
    defaults.spec = spec_from_options({"workers": 5}, base=defaults.spec)
    assert picker.fields["workers"].value == 5 and picker.fields["worker-mem"].value == "2Gi"
    assert "--workers 5" in picker.magic_line
    # invalid input in the widget never reaches the defaults
    picker.fields["worker-cpu"].value = "-1"
    assert defaults.spec.workers.cpu is None and "worker-cpu" in picker.errors
    unbind()
    defaults.spec = ClusterSpec()
    assert picker.value.workers.count == 5


def test_closing_a_bound_picker_unbinds_it():
    defaults = KernelDefaults()
    picker = ResourcePicker()
    bind_picker(picker, defaults)
    picker.close()
    defaults.spec = spec_from_options({"workers": 9})
    assert picker.value.workers.count == 2
    with pytest.raises(SpecError):
        defaults.spec = ClusterSpec(workers=WorkerSpec(count=0))


@pytest.mark.parametrize(
    ("options", "summary"),
    [
        (
            {"workers": 4, "worker-cpu": "8", "worker-mem": "32Gi"},
            "4 workers: 32 CPU, 128 GiB in total",
        ),
        (
            {"workers": 1, "worker-cpu": "500m", "worker-mem": "512Mi"},
            "1 worker: 0.5 CPU, 512 MiB in total",
        ),
        ({"workers": 3, "worker-mem": "1G"}, "3 workers: 2.8 GiB in total"),
        ({"workers": 2}, "2 workers (no cpu or memory limit per worker)"),
    ],
)
def test_request_summary(options, summary):
    assert request_summary(spec_from_options(options)) == summary


def test_fixing_an_invalid_field_gives_the_line_back():
    picker = ResourcePicker()
    picker.fields["worker-mem"].value = "32Gx"
    assert not picker.valid
    picker.fields["worker-mem"].value = "32Gi"
    assert picker.valid and "--worker-mem 32Gi" in picker.magic_line
    assert "flyte-dask-invalid" not in picker.fields["worker-mem"]._dom_classes
    assert picker.value.workers.mem == "32Gi"


def test_fields_are_wide_enough_for_their_placeholders_and_aligned():
    picker = ResourcePicker()
    label = 130  # px, the description column every field shares
    for flag, field in picker.fields.items():
        assert field.style.description_width == f"{label}px", flag
        assert field.layout.width == "340px", flag
        placeholder = getattr(field, "placeholder", "") or ""
        # about 7px a character in JupyterLab's UI font, plus the input's padding
        assert len(placeholder) * 7 + 16 <= 340 - label, (flag, placeholder)
    for flag in ("interruptible", "cache"):
        assert picker.fields[flag].indent  # the box lines up with the inputs
    assert [label for label, _ in picker._target.options] == ["local", "remote"]
