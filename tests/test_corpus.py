"""Issue 10's acceptance: realistic dask notebooks give the same results under ``%%flyte_dask``,
and every dask computation of a magic cell runs on that cell's own cluster.

Each notebook in ``tests/corpus`` runs in a real kernel twice (see ``corpus_harness``): plainly,
and with ``%%flyte_dask --workers 2`` on every cell tagged ``dask-work``. The plain run checks the
corpus and the probe (the work is seen where it runs); the magic run is compared with it cell by
cell. The median per-cell overhead (magic minus plain) is printed at the end of the module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from corpus_harness import (
    MAGIC_LINE,
    Execution,
    corpus_notebooks,
    differences,
    execute,
    is_work,
    magic_problems,
    median,
    overheads,
    plain_problems,
)

NOTEBOOKS = corpus_notebooks()


@pytest.fixture(scope="module")
def executions(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, bool], Execution]:
    """Runs a notebook on first use (one kernel at a time); the module's tests share the runs."""
    done: dict[tuple[str, bool], Execution] = {}

    def run(path: Path, magic: bool) -> Execution:
        key = (path.name, magic)
        if key not in done:
            cwd = tmp_path_factory.mktemp(f"{path.stem}-{'magic' if magic else 'plain'}")
            done[key] = execute(path, magic, cwd)
        return done[key]

    return run


class OverheadSummary:
    """A pytest plugin: prints the median per-cell overhead in the terminal summary (output of
    tests and fixtures is captured; the summary is not)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        value = median(self.seconds)
        if value is not None:
            terminalreporter.write_line(
                f"corpus: median per-cell overhead of %%flyte_dask {value:.2f}s over "
                f"{len(self.seconds)} succeeded dask-work cells"
            )


@pytest.fixture(scope="module")
def overhead_seconds(request: pytest.FixtureRequest) -> list[float]:
    """Collects the per-cell overheads of the module's magic runs for the terminal summary."""
    summary = OverheadSummary()
    request.config.pluginmanager.register(summary, "corpus-overhead-summary")
    return summary.seconds


def test_corpus_is_committed_clean():
    assert len(NOTEBOOKS) >= 6
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert not is_work(code[0]), f"{path.name}: the first code cell must be plain setup"
        assert any(is_work(cell) for cell in code), f"{path.name}: no dask-work cell"
        for cell in code:
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs"
            assert MAGIC_LINE.split()[0] not in cell.source, f"{path.name}: the harness adds it"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_plain_run_is_seen_by_the_probe(path, executions):
    problems = plain_problems(executions(path, False))
    assert not problems, f"{path.name}, plain run:\n" + "\n".join(problems)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_magic_run_shows_the_same_and_runs_on_its_own_clusters(path, executions, overhead_seconds):
    plain, magic = executions(path, False), executions(path, True)
    overhead_seconds.extend(overheads(plain, magic))
    problems = differences(plain, magic) + magic_problems(plain, magic)
    assert not problems, f"{path.name}, under %%flyte_dask:\n" + "\n".join(problems)
