"""The example notebooks run top to bottom in a real kernel (nbclient) and show their results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))

#: Notebooks that display widgets on purpose.
WIDGET_NOTEBOOKS = {"05_resource_picker.ipynb"}

#: Text that must appear in the outputs of each notebook (key results, not just "no error").
EXPECTED = {
    "05_resource_picker.ipynb": [
        "%%flyte_dask --workers 3 --worker-cpu 2 --worker-mem 2Gi",
        "3 workers: 6 CPU, 6 GiB in total",
        "message: --worker-mem: '2Gx' is not a Kubernetes quantity",
        "value still: 2Gi",
        "workers: 3 - memory limit (MiB): [1024]",
        "workers: 1 - memory limit (MiB): [1024]",
        "form shows workers: 2",
        "workers: 2 - memory limit (MiB): [512]",
    ],
    "02_prepare_and_train.ipynb": [
        "12 files",
        "rows kept: 23520 of 24000",
        "training: DataFrame (23520 x 4",
        "temperature coefficient: 2.0",
        "humidity coefficient: -0.5",
        "R^2 above 0.99: True",
        "exported the cell to prepare_flow.py",
        "@task(",
        "def prepare_training_set(files: list[str]) -> CellOutputs:",
        "model saved: pipeline_model.pkl",
    ],
    "03_caching_and_reproducibility.ipynb": [
        "the local cache is empty",
        "first run: succeeded - cluster started: True",
        "second run: cached - cluster started: False",
        "same outputs: True",
        "third run: succeeded",
        "fourth run: succeeded - cache version data-2026-11",
        "DaskJob (validated against the dask-kubernetes CRD)",
        "replicas: 4",
    ],
    "04_remote_flyte.ipynb": [
        "cluster: 3 workers × --nthreads 2 --memory-limit 1Gi",
        "platform: defaults cpu 500m, memory 1Gi; limits cpu 2, memory 2Gi (Flyte Admin: "
        "TASK_RESOURCE of flytesnacks/development)",
        "warning: Flyte Admin: TASK_RESOURCE of flytesnacks/development's limits lower the "
        "dask-worker's cpu 8 → 2",
        "remote result: 210",
        "workers used: 3",
        "totals per key: [180, 240, 300]",
        "status: succeeded",
        "same as the kernel",
        "DaskJob workers started: 3",
        "code: this version is registered already: nothing uploaded",
        "waited result: 210 - status: succeeded",
    ],
    "01_quickstart.ipynb": [
        "5050",
        "first results: [1, 2, 3, 4, 5]",
        "workers used: 4",
        "total amount: 499500",
        "status: succeeded",
    ],
}


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                parts.append(output["text"])
            else:
                parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
    text = path.read_text()
    assert not re.search(r"/(home|root|work|tmp|Users)/", text), "machine-specific path"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_runs_and_shows_its_results(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    committed = json.loads(json.dumps(notebook.metadata))
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    # JupyterLab writes the kernel's language_info and kernelspec name into a notebook it
    # opens and then shows it as modified when they differ: the shipped ones already match.
    assert committed["language_info"] == notebook.metadata["language_info"]
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert committed["kernelspec"]["display_name"] == spec.display_name
    text = outputs_text(notebook)
    # A kernel runs the cell inside an event loop: every report is still drawn there.
    drawn = sorted((tmp_path / ".flyte_dask").glob("*.html"))
    assert drawn or path.name != "01_quickstart.ipynb", "the quickstart's runs left no report"
    for report in drawn:
        page = report.read_text()
        assert "number of tasks" in page and "No report of" not in page, (report.name, page[:300])
    for expected in EXPECTED.get(path.name, []):
        assert expected in text, f"{path.name}: {expected!r} not in outputs"
    # Runs leave static summaries, no widget a live kernel must render (the picker notebook
    # shows widgets on purpose).
    if path.name not in WIDGET_NOTEBOOKS:
        saved = json.dumps(nbformat.from_dict(notebook))
        assert "application/vnd.jupyter.widget-view+json" not in saved


def test_every_notebook_has_expectations():
    assert {p.name for p in ALL} <= set(EXPECTED)
