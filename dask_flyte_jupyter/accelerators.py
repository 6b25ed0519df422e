"""``--accelerator``: flytekit's GPU accelerators, by name or device label.

Imported where a task is built or exported (it imports flytekit).
"""

from __future__ import annotations

from typing import Any


def flytekit_accelerator(text: str | None) -> Any:
    """``--accelerator`` as a flytekit accelerator: a name of ``flytekit.extras.accelerators``
    (``T4``, ``A100``, ``A100_80GB``...) or a device label value (``nvidia-tesla-t4``), with
    ``:PARTITION`` (``A100:1g.5gb``) or ``:unpartitioned`` for multi-instance GPUs."""
    if text is None:
        return None
    from flytekit.extras import accelerators

    device, _, partition = text.partition(":")
    known = {
        name.lower(): value
        for name, value in vars(accelerators).items()
        if isinstance(value, accelerators.BaseAccelerator)
    }
    accelerator = known.get(device.lower().replace("-", "_"))
    if accelerator is None:
        if partition:
            partitioned = sorted(
                name.upper()
                for name, value in known.items()
                if isinstance(value, accelerators.MultiInstanceGPUAccelerator)
            )
            raise ValueError(
                f"--accelerator: partitions are known for {', '.join(partitioned)}, not {device!r}"
            )
        return accelerators.GPUAccelerator(device)
    if not partition:
        return accelerator
    if not isinstance(accelerator, accelerators.MultiInstanceGPUAccelerator):
        raise ValueError(f"--accelerator: {device} has no partitions")
    if partition == "unpartitioned":
        return accelerator.unpartitioned
    sizes = sorted(
        attribute.removeprefix("partition_").replace("_", ".")
        for attribute in dir(type(accelerator))
        if attribute.startswith("partition_")
    )
    if partition not in sizes:
        raise ValueError(
            f"--accelerator: {device} has no partition {partition!r} (known: "
            f"{', '.join(sizes)}, unpartitioned)"
        )
    return type(accelerator).partitioned(partition)


def accelerator_source(text: str) -> tuple[str, str]:
    """``--accelerator`` as Python source for an exported module: (import line, expression)."""
    accelerator = flytekit_accelerator(text)  # checks it, with the same errors as a run
    device, _, partition = text.partition(":")
    from flytekit.extras import accelerators

    name = next(
        (
            n
            for n, v in vars(accelerators).items()
            if n.lower() == device.lower().replace("-", "_")
            and isinstance(v, accelerators.BaseAccelerator)
        ),
        None,
    )
    if name is None:
        return "from flytekit.extras.accelerators import GPUAccelerator", (
            f"GPUAccelerator({accelerator.to_flyte_idl().device!r})"
        )
    expression = name
    if partition == "unpartitioned":
        expression += ".unpartitioned"
    elif partition:
        expression += f".partitioned({partition!r})"
    return f"from flytekit.extras.accelerators import {name}", expression
