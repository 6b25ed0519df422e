"""The acceptance corpus of issue 10: dask notebooks as people write them, executed by a real
kernel twice, plainly and with ``%%flyte_dask --workers 2`` on every cell tagged ``dask-work``.

Shared by ``tests/test_corpus.py`` and ``bench/bench_corpus.py``. Around the notebook's own cells
the harness adds cells of its own, whose outputs are never compared:

- first, a probe (:class:`KernelProbe`) in the kernel. It counts the tasks the kernel's own local
  schedulers start (a registered dask callback: distributed clients never call it) and the tasks
  the scheduler of any cluster the notebook holds sends to its workers (a scheduler plugin), and it
  notes each new ``%%flyte_dask`` run;
- ``before`` / ``after`` calls around every dask-work cell, which record those numbers per cell;
- last, a cell that prints everything recorded as one JSON line, which the harness parses.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
from dask.callbacks import Callback
from distributed.diagnostics.plugin import SchedulerPlugin

CORPUS = Path(__file__).resolve().parent / "corpus"
WORK_TAG = "dask-work"
MAGIC_LINE = "%%flyte_dask --workers 2\n"
LOAD_EXTENSION = "%load_ext dask_flyte_jupyter"
REPORT_MARKER = "CORPUS-PROBE "
#: Metadata key of the cells the harness adds.
HARNESS_KEY = "corpus_harness"
#: Metadata key where the harness keeps the error a cell failed with.
ERROR_KEY = "corpus_error"

# What the time magics print: it differs from run to run, so it is not a result.
TIMING_LINE = re.compile(
    r"^(CPU times: |Wall time: |Compiler : |Parser   : |.* per loop \(mean ± std\. dev\. of )"
)
# What %%flyte_dask prints about its own run: progress lines and the summary table.
MAGIC_LINE_PREFIX = "flyte_dask:"
MAGIC_SUMMARY_CLASS = "flyte-dask-summary"


def corpus_notebooks() -> list[Path]:
    return sorted(CORPUS.glob("*.ipynb"))


def is_work(cell: Any) -> bool:
    return cell.cell_type == "code" and WORK_TAG in cell.metadata.get("tags", [])


def first_line(cell: Any) -> str:
    return cell.source.strip().splitlines()[0] if cell.source.strip() else ""


# --- in the kernel ------------------------------------------------------------------------------


class LocalTaskCounter(Callback):  # type: ignore[misc]
    """Counts the tasks the kernel's local schedulers (threads, sync, processes) start: they call
    the callbacks registered in the kernel before each task; a distributed client never does."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        self.count += 1


class ProcessingCounter(SchedulerPlugin):  # type: ignore[misc]
    """Counts the tasks a scheduler sends to its workers (transitions to "processing"), and keeps
    the keys not finished yet, so the probe can wait for work that is still arriving."""

    name = "corpus-probe-processing"
    _UNFINISHED = ("waiting", "queued", "no-worker", "processing")

    def __init__(self) -> None:
        self.count = 0
        self.unfinished: set[Any] = set()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "processing":
            self.count += 1
        if finish in self._UNFINISHED:
            self.unfinished.add(key)
        else:
            self.unfinished.discard(key)


class KernelProbe:
    """Lives in the kernel under the name ``_corpus_probe``; the harness's cells call it."""

    #: Seconds to wait for a notebook cluster to finish the work a cell sent it.
    SETTLE_SECONDS = 10.0

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.local = LocalTaskCounter()
        self.local.register()
        # Counters of the notebook's clusters by scheduler; kept once found, so a cell that
        # rebinds the notebook's names cannot hide the cluster from the count.
        self.clusters: dict[int, ProcessingCounter] = {}
        self.records: list[dict[str, Any]] = []
        self._before: dict[str, Any] = {}

    def before(self, cell: int) -> None:
        self._watch_notebook_clusters()
        self._settle()
        self.local.count = 0
        self._before = {
            "runs": len(self._runs()),
            "cluster_tasks": self._cluster_tasks(),
            "alive": self._alive_clusters(),
        }

    def after(self, cell: int) -> None:
        self._settle()
        record: dict[str, Any] = {
            "cell": cell,
            "local_tasks": self.local.count,
            "notebook_clusters": len(self.clusters),
            "notebook_cluster_tasks": self._cluster_tasks() - self._before["cluster_tasks"],
            "clusters_left": len(self._alive_clusters() - self._before["alive"]),
        }
        runs = self._runs()[self._before["runs"] :]
        record["runs"] = len(runs)
        if runs:
            run = runs[-1]
            record["run"] = {
                "status": run.status,
                "tasks": run.tasks.total,
                "duration": run.duration,
                "error": run.current_error_text(),  # the history keeps the text, not the error
            }
        self.records.append(record)

    def report(self) -> None:
        print(REPORT_MARKER + json.dumps(self.records))

    def _runs(self) -> list[Any]:
        magics = self.shell.magics_manager.registry.get("FlyteDaskMagics")
        return list(magics.runs) if magics is not None else []

    def _watch_notebook_clusters(self) -> None:
        """Finds the clusters the notebook holds by name (a Client's own cluster, or a cluster
        object) whose scheduler runs in the kernel, and counts what their schedulers run. A
        %%flyte_dask cell's own cluster is gone when this runs, so it is never among them."""
        from distributed import Client, Scheduler
        from distributed.deploy import Cluster

        for value in list(self.shell.user_ns.values()):
            cluster = value.cluster if isinstance(value, Client) else value
            if not isinstance(cluster, Cluster) or cluster.status.name != "running":
                continue
            scheduler = getattr(cluster, "scheduler", None)
            if isinstance(scheduler, Scheduler) and id(scheduler) not in self.clusters:
                self.clusters[id(scheduler)] = self._count_on(cluster, scheduler)

    def _count_on(self, cluster: Any, scheduler: Any) -> ProcessingCounter:
        counter = ProcessingCounter()
        name = f"{ProcessingCounter.name}-{id(self)}"

        async def add() -> None:  # in the scheduler's thread: it may be iterating its plugins
            scheduler.add_plugin(counter, name=name)

        cluster.sync(add)
        return counter

    def _cluster_tasks(self) -> int:
        return sum(counter.count for counter in self.clusters.values())

    def _settle(self) -> None:
        """Waits until the notebook's clusters have no unfinished task: work a cell submitted
        (``client.compute`` returns at once) is then counted for that cell."""
        deadline = time.monotonic() + self.SETTLE_SECONDS
        while time.monotonic() < deadline:
            counts = self._cluster_tasks()
            time.sleep(0.05)
            busy = any(counter.unfinished for counter in self.clusters.values())
            if not busy and counts == self._cluster_tasks():
                return

    @staticmethod
    def _alive_clusters() -> set[int]:
        from distributed.deploy.spec import SpecCluster

        alive = SpecCluster._instances
        return {id(c) for c in list(alive) if c.status.name not in ("closed", "failed")}


# --- building and executing the notebooks ----------------------------------------------------


def _harness_cell(source: str) -> Any:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata[HARNESS_KEY] = True
    return cell


# The kernel imports this module from tests/ (appended to sys.path: it shadows nothing).
PROBE_SETUP = f"""\
import sys as _sys
if {str(CORPUS.parent)!r} not in _sys.path:
    _sys.path.append({str(CORPUS.parent)!r})
from corpus_harness import KernelProbe as _KernelProbe
_corpus_probe = _KernelProbe(get_ipython())
del _sys, _KernelProbe
"""


def instrument(notebook: Any, magic: bool) -> tuple[Any, dict[int, int]]:
    """The notebook with the harness's cells added (and, with ``magic``, the extension loaded
    and the magic line put on every dask-work cell); also where each original cell went."""
    cells: list[Any] = []
    if magic:
        cells.append(_harness_cell(LOAD_EXTENSION))
    cells.append(_harness_cell(PROBE_SETUP))
    where: dict[int, int] = {}
    for index, original in enumerate(notebook.cells):
        cell = nbformat.from_dict(original)
        if is_work(cell):
            cells.append(_harness_cell(f"_corpus_probe.before({index})"))
            if magic:
                cell.source = MAGIC_LINE + cell.source
        where[index] = len(cells)
        cells.append(cell)
        if is_work(cell):
            cells.append(_harness_cell(f"_corpus_probe.after({index})"))
    cells.append(_harness_cell("_corpus_probe.report()"))
    instrumented = nbformat.from_dict(notebook)
    instrumented.cells = cells
    return instrumented, where


@dataclass
class Execution:
    """One executed notebook: its own cells by their index in the file, and the probe's records
    of its dask-work cells by the same index."""

    path: Path
    magic: bool
    cells: dict[int, Any]
    probes: dict[int, dict[str, Any]]

    def work_cells(self) -> list[int]:
        return [index for index, cell in self.cells.items() if is_work(cell)]


def execute(path: Path, magic: bool, cwd: Path, timeout: int = 180) -> Execution:
    """Runs the notebook in a fresh ``python3`` kernel whose working directory is ``cwd``; cells
    that fail do not stop the run (the comparison reports them)."""
    from nbclient import NotebookClient

    notebook, where = instrument(nbformat.read(path, as_version=4), magic)
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        record_timing=True,
        resources={"metadata": {"path": str(cwd)}},
        on_cell_error=_note_error,
    ).execute()
    run = "magic" if magic else "plain"
    for cell in notebook.cells:
        if cell.metadata.get(HARNESS_KEY) and ERROR_KEY in cell.metadata:
            error = cell.metadata[ERROR_KEY]
            raise AssertionError(f"{path.name} ({run} run): a harness cell failed: {error}")
    records = _report(notebook.cells[-1], path, run)
    return Execution(
        path=path,
        magic=magic,
        cells={index: notebook.cells[position] for index, position in where.items()},
        probes={record["cell"]: record for record in records},
    )


def _note_error(cell: Any, cell_index: int, execute_reply: Any) -> None:
    """Keeps the error of a failed cell, also of one that leaves no error output (IPython
    shows a UsageError on stderr only)."""
    content = execute_reply["content"]
    cell.metadata[ERROR_KEY] = f"{content.get('ename')}: {content.get('evalue')}"


def _report(cell: Any, path: Path, run: str) -> list[dict[str, Any]]:
    for line in stream_text(cell, "stdout").splitlines():
        if line.startswith(REPORT_MARKER):
            return json.loads(line[len(REPORT_MARKER) :])  # type: ignore[no-any-return]
    raise AssertionError(f"{path.name} ({run} run): the probe printed no report: {cell.outputs}")


# --- what a cell shows ---------------------------------------------------------------------


def stream_text(cell: Any, name: str) -> str:
    return "".join(
        o.text for o in cell.get("outputs", []) if o.output_type == "stream" and o.name == name
    )


@dataclass(frozen=True)
class Visible:
    """What a reader sees of a cell, less what differs from run to run (timings) and what the
    magic says about its own run (progress lines, summary)."""

    result: str | None  # the execute_result's text/plain
    stdout: str
    displays: tuple[str, ...]  # text/plain of each display_data
    images: int
    error: str | None


def visible(cell: Any, magic: bool) -> Visible:
    result, displays, images = None, [], 0
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if output.output_type not in ("execute_result", "display_data"):
            continue
        if magic and MAGIC_SUMMARY_CLASS in str(data.get("text/html", "")):
            continue
        images += any(mime.startswith("image/") for mime in data)
        if output.output_type == "execute_result":
            result = data.get("text/plain")
        else:
            displays.append(data.get("text/plain", ""))
    lines = stream_text(cell, "stdout").splitlines(keepends=True)
    kept = [line for line in lines if not TIMING_LINE.match(line)]
    if magic:
        kept = [line for line in kept if not line.startswith(MAGIC_LINE_PREFIX)]
    return Visible(result, "".join(kept), tuple(displays), images, cell.metadata.get(ERROR_KEY))


def differences(plain: Execution, magic: Execution) -> list[str]:
    """Cell by cell, what the magic run shows differently from the plain run."""
    found = []
    for index, cell in plain.cells.items():
        if cell.cell_type != "code":
            continue
        want, got = visible(cell, magic=False), visible(magic.cells[index], magic=True)
        for field in ("error", "result", "stdout", "displays", "images"):
            if getattr(want, field) != getattr(got, field):
                found.append(
                    f"cell {index} `{first_line(cell)}`: {field}: "
                    f"plain {getattr(want, field)!r} != magic {getattr(got, field)!r}"
                )
    return found


# --- what the probe saw ----------------------------------------------------------------------


def plain_problems(plain: Execution) -> list[str]:
    """A plain run must run cleanly and its dask-work cells must do dask work where the probe
    can see it: on the kernel's local schedulers, or on the notebook's cluster when there is one
    (a notebook Client is then the default scheduler, and the local counter must stay at 0)."""
    found = [
        f"cell {index} `{first_line(cell)}`: {visible(cell, magic=False).error}"
        for index, cell in plain.cells.items()
        if visible(cell, magic=False).error
    ]
    for index in plain.work_cells():
        probe, line = plain.probes[index], first_line(plain.cells[index])
        if probe["notebook_clusters"]:
            if probe["notebook_cluster_tasks"] == 0 or probe["local_tasks"]:
                found.append(f"cell {index} `{line}`: expected work on the notebook's cluster only")
        elif probe["local_tasks"] == 0:
            found.append(f"cell {index} `{line}`: no task on the kernel's local scheduler")
    return found


def magic_problems(plain: Execution, magic: Execution) -> list[str]:
    """Each dask-work cell of the magic run: its run succeeded, its own cluster ran tasks, and
    neither the kernel's local schedulers nor the notebook's cluster ran any of its work."""
    found = []
    for index in magic.work_cells():
        probe, line = magic.probes[index], first_line(plain.cells[index])
        run = probe.get("run")
        if run is None:
            found.append(f"cell {index} `{line}`: no %%flyte_dask run was recorded")
            continue
        if run["status"] != "succeeded":
            found.append(f"cell {index} `{line}`: run {run['status']}: {run['error']}")
        if run["tasks"] == 0:
            found.append(f"cell {index} `{line}`: its own cluster ran no task")
        if probe["local_tasks"]:
            found.append(
                f"cell {index} `{line}`: {probe['local_tasks']} tasks ran on the kernel's "
                "local scheduler"
            )
        if probe["notebook_cluster_tasks"]:
            found.append(
                f"cell {index} `{line}`: {probe['notebook_cluster_tasks']} tasks ran on the "
                "notebook's cluster"
            )
        if probe["clusters_left"] > plain.probes[index]["clusters_left"]:
            found.append(f"cell {index} `{line}`: a cluster outlived the cell")
    return found


# --- timing ----------------------------------------------------------------------------------


def duration(cell: Any) -> float:
    """Seconds from the kernel receiving the cell to its reply (nbclient's record_timing)."""
    timing = cell.metadata["execution"]
    start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def overheads(plain: Execution, magic: Execution) -> list[float]:
    """Magic minus plain seconds of each dask-work cell whose magic run succeeded."""
    return [
        duration(magic.cells[index]) - duration(plain.cells[index])
        for index in magic.work_cells()
        if magic.probes[index].get("run", {}).get("status") == "succeeded"
    ]


def total_seconds(execution: Execution) -> float:
    """Seconds the notebook's own code cells took (kernel start and harness cells left out)."""
    return sum(duration(c) for c in execution.cells.values() if c.cell_type == "code")


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None
