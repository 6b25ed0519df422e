"""Benchmark of ``%%flyte_dask --remote`` (issue 5) against the Flyte Admin stand-in (tests/,
a test double that runs each execution's real container command with a local dask cluster).

Where the time of a remote run goes, phase by phase (packaging the cell, pickling and uploading
its code, registration, uploading inputs, queueing, cluster start, the run itself, fetching the
outputs), for a first run (a new task version: registered and uploaded) and an unchanged re-run
(found registered: nothing uploaded), against the baseline of the same cell run locally in the
same process. Then what a cell referencing a 50 MB array uploads, directly (a numpy input) and
through a notebook function (pickled by value with the array), and the note the run gets.

Run: python bench/bench_remote.py
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from notebook_shell import notebook_shell

ROOT = Path(__file__).resolve().parent.parent
CELL = """\
from distributed import Client
client = Client()
result = client.gather(client.map(inc, range(n)))
scaled = frame.assign(value=frame.value * n)
sum(result)
"""
BIG_DIRECT = "m = float(big.mean())\n"
BIG_VIA_FUNCTION = "m = centre(3.0)\n"
IMAGE = "registry.example/team/dask-cells:py3.11"
PHASES = (
    "packaging",
    "connecting",
    "packaging code",
    "uploading code",
    "registering",
    "uploading inputs",
    "queued",
    "starting cluster",
    "running",
    "fetching outputs",
    "gathering results",
)


def main() -> None:
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(ROOT / "tests"))
    from flyte_admin import FlyteAdminStandIn

    from dask_flyte_jupyter.backends.flyte import LARGE_UPLOAD_BYTES

    shell = notebook_shell()
    magics = shell.magics_manager.registry["FlyteDaskMagics"]
    backends: list[Any] = []
    make_backend = magics._remote_backend

    def capture(args: Any) -> Any:  # keep each run's backend to read its upload sizes
        backend = make_backend(args)
        backends.append(backend)
        return backend

    magics._remote_backend = capture
    shell.user_ns["n"] = 50
    shell.user_ns["frame"] = pd.DataFrame({"key": range(1000), "value": range(1000)})

    def run(line: str, cell: str) -> tuple[float, Any]:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            shell.run_cell_magic("flyte_dask", f"{line} --no-progress --out bench_run", cell)
        return time.perf_counter() - start, shell.user_ns["bench_run"]

    with FlyteAdminStandIn() as admin:
        admin.runner.nanny = False
        remote = f"--remote --config {admin.config_path} --image {IMAGE} --workers 2"
        run("--workers 2", CELL)  # warm up imports and the local cluster machinery
        local = statistics.median(run("--workers 2", CELL)[0] for _ in range(3))
        first_time, first = run(remote, CELL)
        code_size = backends[-1].upload_sizes.get("code", 0)
        again = [run(remote, CELL) for _ in range(2)]
        again_time = statistics.median(t for t, _ in again)

        print(f"local run of the cell (baseline, median of 3): {local:.2f}s")
        print(
            f"remote, first run (registers a new version): {first_time:.2f}s = "
            f"{first_time / local:.1f}x local"
        )
        print(
            f"remote, unchanged re-run (found registered, nothing uploaded; median of 2): "
            f"{again_time:.2f}s = {again_time / local:.1f}x local"
        )
        print(f"pickled cell code (pkl.gz): {code_size / 1024:.1f} KiB")
        print(f"{'phase':<18}{'first run':>12}{'re-run':>12}{'share (first)':>15}")
        rerun = again[-1][1]
        for phase in PHASES:
            seconds = first.phases.get(phase, 0.0)
            share = 100 * seconds / first.duration
            print(
                f"{phase:<18}{seconds:>11.2f}s{rerun.phases.get(phase, 0.0):>11.2f}s{share:>14.0f}%"
            )
        print(f"{'total':<18}{first.duration:>11.2f}s{rerun.duration:>11.2f}s")
        seen = admin.executions[first.details["execution"].rsplit("/", 1)[1]]
        at = {
            key: next(e.at for e in seen.events if e.note.startswith(key))
            for key in ("starting", "dask cluster ready", "job runner started")
        }
        print(
            "as the stand-in saw the first run: "
            f"queued {at['starting'] - seen.created_at:.2f}s, "
            f"dask cluster up {at['dask cluster ready'] - at['starting']:.2f}s, "
            f"job runner (flytekit start, code download, the cell, outputs upload) "
            f"{seen.ended_at - at['job runner started']:.2f}s"
        )

        big = np.random.default_rng(0).random(50 * 2**20 // 8)  # 50 MiB of float64
        shell.user_ns["big"] = big
        shell.run_cell("def centre(x):\n    return x - big.mean()\n", store_history=False)
        print(f"\na cell referencing a 50 MiB array (a note above {LARGE_UPLOAD_BYTES >> 20} MiB):")
        for label, cell in (
            ("directly (numpy input)", BIG_DIRECT),
            ("via a function", BIG_VIA_FUNCTION),
        ):
            start = time.perf_counter()
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                handle = shell.run_cell_magic(
                    "flyte_dask", f"{remote} --no-wait --no-progress", cell
                )
            submitted = time.perf_counter() - start
            handle.cancel()  # the upload is what is measured; the run itself is not needed
            sizes = backends[-1].upload_sizes
            inputs = {k: v for k, v in sizes.items() if k != "code"}
            note = next((note for note in handle.notes if "uploads" in note), "no note")
            listed = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in inputs.items())
            print(
                f"  {label}: inputs {listed}, code {sizes.get('code', 0) / 1024:.1f} KiB, "
                f"submitted in {submitted:.2f}s"
            )
            print(f"    note: {note}")


if __name__ == "__main__":
    main()
