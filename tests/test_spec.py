"""Unit tests of the cluster spec: plain values in, plain values out."""

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekitplugins.dask.task import DaskTask

from dask_flyte_jupyter.spec import (
    ClusterSpec,
    LocalShape,
    SchedulerSpec,
    SpecError,
    WorkerSpec,
    local_shape,
    parse_cpu,
    parse_memory,
    spec_from_options,
    to_dask_config,
)

GiB = 2**30
INCREMENT = ClusterSpec(
    workers=WorkerSpec(count=4, cpu="8", mem="32Gi"), scheduler=SchedulerSpec(cpu="2")
)


def f() -> int:
    return 1


# --- quantities ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("500m", 0.5),
        ("2", 2.0),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("1E2", 100.0),
        (" 2 ", 2.0),
        (".5", 0.5),
        ("1m", 0.001),
        ("1k", 1000.0),
        ("2500m", 2.5),
    ],
)
def test_parse_cpu_valid(text: str, cores: float) -> None:
    assert parse_cpu(text, "--worker-cpu") == cores


@pytest.mark.parametrize(
    "text", ["abc", "", "-1", "1.2.3", "Gi", "2 m", "2Gx", "1e", "1e1000", "+1", "1ee3"]
)
def test_parse_cpu_rejects_non_quantities(text: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_cpu(text, "--worker-cpu")
    assert str(err.value) == (
        f"--worker-cpu: {text!r} is not a Kubernetes CPU quantity (e.g. 2, 1.5, 500m)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "--scheduler-cpu: must be > 0, got '0'"),
        ("0m", "--scheduler-cpu: must be > 0, got '0m'"),
        ("1e-4", "--scheduler-cpu: '1e-4' is below 1m, the smallest CPU amount"),
        ("500u", "--scheduler-cpu: '500u' is below 1m, the smallest CPU amount"),
        ("1e30", "--scheduler-cpu: '1e30' is too large"),
    ],
)
def test_parse_cpu_rejects_out_of_range(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_cpu(text, "--scheduler-cpu")
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512Mi", 512 * 2**20),
        ("4Gi", 4 * GiB),
        ("1G", 10**9),
        ("1e3", 1000),
        ("128974848", 128974848),
        ("129e6", 129000000),
        ("1.5Gi", 1610612736),
        ("500M", 500 * 10**6),
        ("1k", 1000),
        ("1Ki", 1024),
        ("1E", 10**18),
        ("1Ei", 2**60),
        ("1.5", 2),  # rounded up to whole bytes
        ("1500m", 2),
        ("\t4Gi\n", 4 * GiB),
    ],
)
def test_parse_memory_valid(text: str, size: int) -> None:
    assert parse_memory(text, "--worker-mem") == size


@pytest.mark.parametrize(
    "text", ["32Gx", "abc", "", "4 Gi", "-1", "1.2.3", "Gi", "4gi", "4GB", "1e3Gi", "1e1000"]
)
def test_parse_memory_rejects_non_quantities(text: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_memory(text, "--worker-mem")
    assert str(err.value) == (
        f"--worker-mem: {text!r} is not a Kubernetes quantity "
        "(use a number with an optional suffix, e.g. 4Gi, 512Mi, 1G, 1e9)"
    )


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("0", "--worker-mem: must be > 0, got '0'"),
        ("0Gi", "--worker-mem: must be > 0, got '0Gi'"),
        ("500m", "--worker-mem: '500m' is less than 1 byte"),
        ("1e-3", "--worker-mem: '1e-3' is less than 1 byte"),
        ("8Ei", "--worker-mem: '8Ei' is too large"),
    ],
)
def test_parse_memory_rejects_out_of_range(text: str, start: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_memory(text, "--worker-mem")
    assert str(err.value).startswith(start)


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


# --- validate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ClusterSpec(workers=WorkerSpec(count=0)), "--workers: must be a whole number >= 1, got 0"),
        (
            ClusterSpec(workers=WorkerSpec(count=True)),
            "--workers: must be a whole number >= 1, got True",
        ),
        (
            ClusterSpec(workers=WorkerSpec(count=2.5)),  # type: ignore[arg-type]
            "--workers: must be a whole number >= 1, got 2.5",
        ),
        (
            ClusterSpec(workers=WorkerSpec(gpu=-1)),
            "--worker-gpu: must be a whole number >= 0, got -1",
        ),
        (
            ClusterSpec(workers=WorkerSpec(mem="32Gx")),
            (
                "--worker-mem: '32Gx' is not a Kubernetes quantity "
                "(use a number with an optional suffix, e.g. 4Gi, 512Mi, 1G, 1e9)"
            ),
        ),
        (
            ClusterSpec(workers=WorkerSpec(cpu="abc")),
            "--worker-cpu: 'abc' is not a Kubernetes CPU quantity (e.g. 2, 1.5, 500m)",
        ),
        (
            ClusterSpec(scheduler=SchedulerSpec(cpu="2x")),
            "--scheduler-cpu: '2x' is not a Kubernetes CPU quantity (e.g. 2, 1.5, 500m)",
        ),
        (
            ClusterSpec(scheduler=SchedulerSpec(mem="0")),
            "--scheduler-mem: must be > 0, got '0'",
        ),
        (ClusterSpec(cache_version="v1"), "--cache-version needs --cache"),
        (ClusterSpec(cache=True, cache_version=" "), "--cache-version: must not be empty"),
        (ClusterSpec(image=""), "--image: '' must be non-empty and contain no spaces"),
        (
            ClusterSpec(image="my image"),
            "--image: 'my image' must be non-empty and contain no spaces",
        ),
    ],
)
def test_validate_errors(spec: ClusterSpec, message: str) -> None:
    with pytest.raises(SpecError) as err:
        spec.validate()
    assert str(err.value) == message


@pytest.mark.parametrize("name", ["1task", "_task", "my task", "täsk", "a/b", "", "a" * 64])
def test_validate_rejects_bad_names(name: str) -> None:
    with pytest.raises(SpecError, match=r"^--name: .* is not a valid task name"):
        ClusterSpec(name=name).validate()


@pytest.mark.parametrize("name", ["t", "inc_cell", "my.module.task-2", "a" * 63])
def test_validate_accepts_good_names(name: str) -> None:
    spec = ClusterSpec(name=name)
    assert spec.validate() is spec


def test_validate_returns_self_for_a_full_spec() -> None:
    spec = ClusterSpec(
        workers=WorkerSpec(count=3, cpu="2", mem="4Gi", gpu=0),
        scheduler=SchedulerSpec(cpu="500m", mem="1Gi"),
        image="ghcr.io/org/image:1.0",
        interruptible=True,
        cache=True,
        cache_version="v1",
        name="train",
    )
    assert spec.validate() is spec


def test_quantities_are_stripped_on_construction() -> None:
    spec = ClusterSpec(
        workers=WorkerSpec(cpu=" 2 ", mem="4Gi\n"), scheduler=SchedulerSpec(mem=" 1Gi")
    )
    assert (spec.workers.cpu, spec.workers.mem, spec.scheduler.mem) == ("2", "4Gi", "1Gi")


# --- spec_from_options --------------------------------------------------------------------------


def test_options_override_base_and_none_is_ignored() -> None:
    base = ClusterSpec(workers=WorkerSpec(count=4, cpu="8"), image="img:1", interruptible=True)
    spec = spec_from_options(
        {
            "workers": 6,
            "worker-cpu": None,
            "worker-mem": "4Gi",
            "image": None,
            "scheduler-cpu": "1",
        },
        base=base,
    )
    assert spec == ClusterSpec(
        workers=WorkerSpec(count=6, cpu="8", mem="4Gi"),
        scheduler=SchedulerSpec(cpu="1"),
        image="img:1",
        interruptible=True,
    )
    assert base == ClusterSpec(
        workers=WorkerSpec(count=4, cpu="8"), image="img:1", interruptible=True
    )


def test_options_without_base_start_from_defaults() -> None:
    assert spec_from_options({}) == ClusterSpec()
    assert spec_from_options({"cache": True, "cache-version": "v2"}) == ClusterSpec(
        cache=True, cache_version="v2"
    )


def test_options_accept_whole_numbers_as_text() -> None:
    spec = spec_from_options({"workers": " 4 ", "worker-gpu": "1", "worker-cpu": 2})
    assert (spec.workers.count, spec.workers.gpu, spec.workers.cpu) == (4, 1, "2")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": "4.0"}, "--workers: must be a whole number >= 1, got '4.0'"),
        ({"workers": "four"}, "--workers: must be a whole number >= 1, got 'four'"),
        ({"workers": "0"}, "--workers: must be a whole number >= 1, got 0"),
        ({"worker-gpu": "-1"}, "--worker-gpu: must be a whole number >= 0, got -1"),
        ({"interruptible": "yes"}, "--interruptible: must be true or false, got 'yes'"),
        ({"image": 3}, "--image: expected text, got 3"),
        ({"cache-version": "v1"}, "--cache-version needs --cache"),
    ],
)
def test_options_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        spec_from_options(options)
    assert str(err.value) == message


def test_options_result_is_validated_against_the_base() -> None:
    with pytest.raises(SpecError, match="--cache-version needs --cache"):
        spec_from_options({"cache": False}, base=ClusterSpec(cache=True, cache_version="v1"))


def test_unknown_options_are_named() -> None:
    with pytest.raises(SpecError) as err:
        spec_from_options({"workers": 2, "wokers": 3, "gpu": 1})
    assert str(err.value).startswith("unknown option(s): --gpu --wokers (known: --workers ")


# --- fingerprint, options, magic line -----------------------------------------------------------


def test_fingerprint_is_canonical_json() -> None:
    assert ClusterSpec().fingerprint() == (
        '{"image":null,"interruptible":false,"scheduler":{"cpu":null,"mem":null},'
        '"workers":{"count":2,"cpu":null,"gpu":null,"mem":null}}'
    )


def test_fingerprint_is_stable_across_processes() -> None:
    code = (
        "from dask_flyte_jupyter.spec import *; print(ClusterSpec(workers=WorkerSpec(count=4, "
        "cpu='8', mem='32Gi'), scheduler=SchedulerSpec(cpu='2')).fingerprint())"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == INCREMENT.fingerprint()


@pytest.mark.parametrize(
    "other",
    [
        ClusterSpec(
            workers=WorkerSpec(count=5, cpu="8", mem="32Gi"), scheduler=SchedulerSpec(cpu="2")
        ),
        ClusterSpec(
            workers=WorkerSpec(count=4, cpu="4", mem="32Gi"), scheduler=SchedulerSpec(cpu="2")
        ),
        ClusterSpec(
            workers=WorkerSpec(count=4, cpu="8", mem="16Gi"), scheduler=SchedulerSpec(cpu="2")
        ),
        ClusterSpec(
            workers=WorkerSpec(count=4, cpu="8", mem="32Gi", gpu=1),
            scheduler=SchedulerSpec(cpu="2"),
        ),
        ClusterSpec(
            workers=WorkerSpec(count=4, cpu="8", mem="32Gi"), scheduler=SchedulerSpec(cpu="1")
        ),
        ClusterSpec(workers=INCREMENT.workers, scheduler=SchedulerSpec(cpu="2", mem="1Gi")),
        ClusterSpec(workers=INCREMENT.workers, scheduler=INCREMENT.scheduler, image="img:2"),
        ClusterSpec(workers=INCREMENT.workers, scheduler=INCREMENT.scheduler, interruptible=True),
    ],
)
def test_fingerprint_changes_with_shape(other: ClusterSpec) -> None:
    assert other.fingerprint() != INCREMENT.fingerprint()


def test_fingerprint_ignores_name_and_cache() -> None:
    named = ClusterSpec(
        workers=INCREMENT.workers,
        scheduler=INCREMENT.scheduler,
        name="inc",
        cache=True,
        cache_version="v7",
    )
    assert named.fingerprint() == INCREMENT.fingerprint()


def test_to_options_lists_only_non_defaults() -> None:
    assert ClusterSpec().to_options() == {}
    assert INCREMENT.to_options() == {
        "workers": 4,
        "worker-cpu": "8",
        "worker-mem": "32Gi",
        "scheduler-cpu": "2",
    }
    assert ClusterSpec(interruptible=True, workers=WorkerSpec(gpu=0)).to_options() == {
        "worker-gpu": 0,
        "interruptible": True,
    }


def test_magic_line_of_defaults_and_increment_example() -> None:
    assert ClusterSpec().magic_line() == "%%flyte_dask"
    assert INCREMENT.magic_line() == (
        "%%flyte_dask --workers 4 --worker-cpu 8 --worker-mem 32Gi --scheduler-cpu 2"
    )


FULL = ClusterSpec(
    workers=WorkerSpec(count=3, cpu="500m", mem="4Gi", gpu=1),
    scheduler=SchedulerSpec(cpu="1", mem="2Gi"),
    image="ghcr.io/org/img:1.0",
    interruptible=True,
    cache=True,
    cache_version="v 1; rm",
    name="my.task",
)


def test_magic_line_uses_table_order_and_quotes() -> None:
    assert FULL.magic_line() == (
        "%%flyte_dask --workers 3 --worker-cpu 500m --worker-mem 4Gi --worker-gpu 1 "
        "--scheduler-cpu 1 --scheduler-mem 2Gi --image ghcr.io/org/img:1.0 --interruptible "
        "--cache --cache-version 'v 1; rm' --name my.task"
    )


@pytest.mark.parametrize("spec", [ClusterSpec(), INCREMENT, FULL])
def test_magic_line_round_trip(spec: ClusterSpec) -> None:
    tokens = shlex.split(spec.magic_line())
    assert tokens[0] == "%%flyte_dask"
    options: dict[str, object] = {}
    rest = tokens[1:]
    while rest:
        flag = rest.pop(0).removeprefix("--")
        options[flag] = True if flag in ("interruptible", "cache") else rest.pop(0)
    assert spec_from_options(options) == spec
    assert spec_from_options(spec.to_options()) == spec


# --- local shape --------------------------------------------------------------------------------


def test_local_shape_increment_on_a_small_machine() -> None:
    assert local_shape(INCREMENT, cpu_count=2, total_memory=24 * GiB) == LocalShape(
        workers=4,
        threads_per_worker=2,
        memory_limit=5153960755,  # floor(0.8 * 24 GiB / 4), about 4.8 GiB
        notes=(
            "worker cpu 8 → 2 threads per worker (this machine has 2 cores)",
            "worker mem 32Gi → 4.8 GiB per worker (4 workers share 80% of this machine's 24 GiB)",
        ),
    )


def test_local_shape_increment_on_a_big_machine() -> None:
    assert local_shape(INCREMENT, cpu_count=16, total_memory=64 * GiB) == LocalShape(
        workers=4,
        threads_per_worker=8,
        memory_limit=13743895347,  # floor(0.8 * 64 GiB / 4)
        notes=(
            "worker mem 32Gi → 12.8 GiB per worker (4 workers share 80% of this machine's 64 GiB)",
        ),
    )


def test_local_shape_keeps_a_spec_that_fits() -> None:
    spec = ClusterSpec(workers=WorkerSpec(count=3, cpu="1500m", mem="4Gi"))
    assert local_shape(spec, cpu_count=16, total_memory=64 * GiB) == LocalShape(3, 2, 4 * GiB, ())
    assert local_shape(ClusterSpec(), cpu_count=2, total_memory=24 * GiB) == LocalShape(
        2, 1, None, ()
    )


@pytest.mark.parametrize(
    ("cores", "workers", "notes"),
    [
        (1, 4, ("workers 40 → 4 (this machine has 1 core)",)),
        (2, 4, ("workers 40 → 4 (this machine has 2 cores)",)),
        (16, 32, ("workers 40 → 32 (this machine has 16 cores)",)),
        (32, 40, ()),
    ],
)
def test_local_shape_caps_workers(cores: int, workers: int, notes: tuple[str, ...]) -> None:
    shape = local_shape(ClusterSpec(workers=WorkerSpec(count=40)), cores, 64 * GiB)
    assert (shape.workers, shape.threads_per_worker, shape.notes) == (workers, 1, notes)


def test_local_shape_notes_missing_gpus() -> None:
    spec = ClusterSpec(workers=WorkerSpec(count=2, cpu="250m", gpu=2))
    assert local_shape(spec, cpu_count=4, total_memory=8 * GiB) == LocalShape(
        2, 1, None, ("worker gpu 2 → none (local workers have no GPU)",)
    )


# --- the translation to flytekitplugins.dask (golden dicts) -------------------------------------


def custom_of(spec: ClusterSpec) -> Any:
    task = DaskTask(task_config=to_dask_config(spec), task_function=f)
    settings = SerializationSettings(image_config=ImageConfig.auto_default_image())
    return task.get_custom(settings)


def test_golden_default_spec() -> None:
    assert custom_of(ClusterSpec()) == {
        "scheduler": {"resources": {}},
        "workers": {"numberOfWorkers": 2, "resources": {}},
    }


def test_golden_full_spec() -> None:
    spec = ClusterSpec(
        workers=WorkerSpec(count=3, cpu="2", mem="4Gi", gpu=1),
        scheduler=SchedulerSpec(cpu="1", mem="2Gi"),
    )
    assert custom_of(spec) == {
        "scheduler": {
            "resources": {
                "requests": [{"name": "CPU", "value": "1"}, {"name": "MEMORY", "value": "2Gi"}]
            }
        },
        "workers": {
            "numberOfWorkers": 3,
            "resources": {
                "limits": [
                    {"name": "CPU", "value": "2"},
                    {"name": "MEMORY", "value": "4Gi"},
                    {"name": "GPU", "value": "1"},
                ]
            },
        },
    }


def test_golden_increment_example() -> None:
    assert custom_of(INCREMENT) == {
        "scheduler": {"resources": {"requests": [{"name": "CPU", "value": "2"}]}},
        "workers": {
            "numberOfWorkers": 4,
            "resources": {
                "limits": [{"name": "CPU", "value": "8"}, {"name": "MEMORY", "value": "32Gi"}]
            },
        },
    }


def test_translation_leaves_images_to_the_task() -> None:
    spec = ClusterSpec(image="ghcr.io/org/img:1.0", interruptible=True, name="t")
    config = to_dask_config(spec)
    assert (config.scheduler.image, config.workers.image) == (None, None)
    assert custom_of(spec) == custom_of(ClusterSpec())


def test_translation_validates_first() -> None:
    with pytest.raises(SpecError, match="--workers: must be a whole number >= 1, got 0"):
        to_dask_config(ClusterSpec(workers=WorkerSpec(count=0)))


def test_importing_spec_does_not_import_flytekit() -> None:
    code = "import sys, dask_flyte_jupyter.spec; print('flytekit' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "False", out.stderr


def test_pod_template_and_accelerator_are_part_of_the_shape() -> None:
    gpu = ClusterSpec(workers=WorkerSpec(gpu=1))
    with_both = spec_from_options({"pod-template": "gpu-pool", "accelerator": "T4"}, base=gpu)
    assert with_both.fingerprint() != gpu.fingerprint()
    assert '"accelerator":"T4"' in with_both.fingerprint()
    assert with_both.magic_line() == (
        "%%flyte_dask --worker-gpu 1 --pod-template gpu-pool --accelerator T4"
    )
