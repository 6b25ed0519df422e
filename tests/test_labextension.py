"""The JupyterLab sidebar as users get it: built into the wheel, and working in a real JupyterLab.

- The wheel, built by ``pip`` from a copy of the tree as a fresh clone has it (no node_modules,
  no build output), carries the built extension, and JupyterLab lists it enabled and OK.
- In headless Chromium (Debian's package; ``make browser`` installs it) against a real
  ``jupyter lab`` server: load the extension in the kernel from the sidebar, pick 3 workers and
  1Gi of worker memory, apply that to a cell, edit and undo, run the cell, and see the result,
  the cell's report of the run and the live run list. (The README's screenshots come from
  ``test_lab_ui.py``.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from lab_server import CHROMIUM, CHROMIUM_ARGS, Lab, _get

import dask_flyte_jupyter

ROOT = Path(__file__).resolve().parent.parent
LABEXT_NAME = "dask-flyte-jupyter"
BIN = Path(sys.executable).parent


# What a fresh clone does not have: dependencies, build output, caches.
_NEVER_CLONED = {".git", ".venv", "node_modules", ".yarn", "__pycache__", "build", "dist"}
_BUILD_OUTPUT = {"labextension": {"lib"}, "dask_flyte_jupyter": {"labextension"}}


def _not_in_a_clone(directory: str, names: list[str]) -> set[str]:
    ignored = _BUILD_OUTPUT.get(Path(directory).name, set()) | _NEVER_CLONED
    return {
        name
        for name in names
        if name in ignored or name.endswith(("_cache", ".egg-info", ".tsbuildinfo"))
    }


def _clean_tree(dest: Path) -> None:
    """Copy the files a fresh clone would have (tracked, or new and not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
    )
    if listed.returncode != 0:  # not a git work tree (an exported copy, say)
        shutil.copytree(ROOT, dest, ignore=_not_in_a_clone)
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.mark.timeout(900)
def test_wheel_from_a_clean_tree_carries_the_built_extension(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _clean_tree(tree)
    assert not (tree / "labextension" / "node_modules").exists()
    assert not (tree / "dask_flyte_jupyter" / "labextension").exists()

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(tree)],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = tmp_path.glob("dask_flyte_jupyter-*.whl")
    share = f"dask_flyte_jupyter-{dask_flyte_jupyter.__version__}.data/data/share/jupyter"
    prefix = f"{share}/labextensions/{LABEXT_NAME}/"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        built = json.loads(archive.read(prefix + "package.json"))
    assert prefix + "install.json" in names
    assert prefix + "static/style.js" in names
    assert any(re.fullmatch(re.escape(prefix) + r"static/remoteEntry\.\w+\.js", n) for n in names)
    assert prefix + f"schemas/{LABEXT_NAME}/plugin.json" in names
    assert built["version"] == dask_flyte_jupyter.__version__
    assert built["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    # The server part (test_server_routes.py): exactly its config, which enables it.
    server_config = [n for n in names if "/data/etc/jupyter/" in n]
    config = "jupyter_server_config.d/dask_flyte_jupyter.json"
    assert [n.split("/data/etc/jupyter/", 1)[1] for n in server_config] == [config]
    with zipfile.ZipFile(wheel) as archive:
        enabled = json.loads(archive.read(server_config[0]))
    assert enabled == {"ServerApp": {"jpserver_extensions": {"dask_flyte_jupyter": True}}}

    # Installed from that wheel, JupyterLab lists the extension enabled and OK. (The wheel's
    # data files are unpacked as an installer puts them under a prefix; `pip install --prefix`
    # would uninstall this venv's own editable install of the package first.)
    target = tmp_path / "prefix"
    data_root = f"dask_flyte_jupyter-{dask_flyte_jupyter.__version__}.data/data/"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(data_root) and not member.endswith("/"):
                path = target / member.removeprefix(data_root)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(member))
    data = target / "share" / "jupyter"
    assert (data / "labextensions" / LABEXT_NAME / "package.json").is_file()
    listing = subprocess.run(
        [str(BIN / "jupyter"), "labextension", "list"],
        env={**os.environ, "JUPYTER_PATH": str(data), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    section = text.split(str(data / "labextensions"), 1)[1]
    line = next(line for line in section.splitlines() if LABEXT_NAME in line)
    assert re.search(rf"{LABEXT_NAME} v{re.escape(built['version'])} enabled\s+OK", line), text


def test_package_json_version_is_the_python_version() -> None:
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert package["version"] == dask_flyte_jupyter.__version__


# ---- the sidebar in a real JupyterLab ----------------------------------------------------------

BODY = (
    "from distributed import Client\n"
    "client = Client()\n"
    "result = client.gather(client.map(lambda x: x + 1, range(10)))\n"
    "sum(result)"
)


def test_the_test_server_refuses_requests_without_the_token(lab: Lab) -> None:
    assert _get(f"{lab.url}/api/contents")[0] == 403
    assert _get(f"{lab.url}/api/contents", lab.token)[0] == 200


RECORDER = """
() => {
  window.__flyteDask = { statuses: [], outputs: [] };
  const sidebar = document.querySelector('#flyte-dask-sidebar');
  const notebook = document.querySelector('.jp-Notebook');
  const note = (list, value) => {
    if (value && list[list.length - 1] !== value) { list.push(value); }
  };
  new MutationObserver(() => {
    const run = sidebar.querySelector('.jp-FlyteDask-run');
    note(window.__flyteDask.statuses, run && run.getAttribute('data-status'));
    const output = notebook.querySelectorAll('.jp-Cell .jp-OutputArea')[1];
    note(window.__flyteDask.outputs, output && output.innerText.trim());
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                             characterData: true});
}
"""


QUIET_CHECK = """
() => new Promise(resolve => {
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  let busy = 0;
  const observer = new MutationObserver(() => {
    const now = document.querySelector('.jp-Notebook-ExecutionIndicator');
    if (now && now.getAttribute('data-status') === 'busy') { busy++; }
  });
  observer.observe(indicator.parentNode, {subtree: true, attributes: true, childList: true});
  setTimeout(() => { observer.disconnect(); resolve(busy); }, 3000);
})
"""


@pytest.mark.timeout(600)
def test_sidebar_picks_resources_applies_runs_and_lists_the_run(lab: Lab) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium package")
    from playwright.sync_api import expect, sync_playwright

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(BODY)]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, lab.root / "sidebar.ipynb")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            page.set_default_timeout(60_000)
            page.goto(f"{lab.url}/lab/tree/sidebar.ipynb?token={lab.token}")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")

            # The sidebar: the kernel has not loaded the extension; load it from there.
            page.click(".lm-TabBar-tab[data-id='flyte-dask-sidebar']")
            sidebar = page.locator("#flyte-dask-sidebar")
            load = sidebar.locator("button[data-action='load']")
            run_button = sidebar.locator("button[data-action='run']")
            expect(run_button).to_be_disabled()  # the kernel cannot run %%flyte_dask yet
            load.click()
            expect(sidebar.get_by_text("No %%flyte_dask runs in this kernel yet.")).to_be_visible()

            # The active cell has no line yet: pick resources; a bad value is refused at once.
            # Loading it also put the %load_ext line into the notebook, so Run All works after
            # a restart; the cell that was there is now the second.
            cells = page.locator(".jp-Cell .cm-content")
            expect(cells).to_have_count(2)
            expect(cells.first).to_have_text("%load_ext dask_flyte_jupyter")
            expect(run_button).to_be_enabled()
            cells.nth(1).click()
            expect(sidebar.locator("[data-role='pending-line']")).to_have_text("%%flyte_dask")
            sidebar.locator("input[data-flag='workers']").fill("3")
            sidebar.locator("input[data-flag='worker-mem']").fill("1GB")
            expect(sidebar.locator("[data-error-for='worker-mem']")).to_have_text(
                "--worker-mem: '1GB' is not a Kubernetes quantity (use a number with an "
                "optional suffix, e.g. 4Gi, 512Mi, 1G, 1e9)"
            )
            expect(sidebar.locator("button[data-action='apply']")).to_be_disabled()
            sidebar.locator("input[data-flag='worker-mem']").fill("1Gi")
            expect(sidebar.locator("[data-role='pending-line']")).to_have_text(
                "%%flyte_dask --workers 3 --worker-mem 1Gi"
            )
            sidebar.locator("button[data-action='apply']").click()
            editor = cells.nth(1)
            expect(editor).to_contain_text("%%flyte_dask --workers 3 --worker-mem 1Gi")
            expect(editor).to_contain_text("sum(result)")
            expect(sidebar.locator("[data-role='active-line']")).to_have_text(
                "%%flyte_dask --workers 3 --worker-mem 1Gi"
            )

            # Editing the panel rewrites the line; the edit undoes like typing.
            page.wait_for_timeout(1000)  # past the undo manager's capture time
            sidebar.locator("input[data-flag='workers']").fill("5")
            expect(editor).to_contain_text("%%flyte_dask --workers 5 --worker-mem 1Gi")
            editor.click()
            page.keyboard.press("Control+z")
            expect(editor).to_contain_text("%%flyte_dask --workers 3 --worker-mem 1Gi")
            expect(sidebar.locator("input[data-flag='workers']")).to_have_value("3")

            # Run from the sidebar; watch the run list and the cell's output as it goes.
            page.evaluate(RECORDER)
            sidebar.locator("button[data-action='run']").click()
            result = page.locator(".jp-OutputArea-executeResult").filter(has_text="55")
            expect(result).to_be_visible(timeout=180_000)
            run = sidebar.locator(".jp-FlyteDask-run").first
            expect(run).to_have_attribute("data-status", "succeeded")
            name = run.get_attribute("data-run-name")
            assert name
            expect(run).to_contain_text("3 workers")
            expect(run).to_contain_text("cache off")
            output = page.locator(".jp-Cell .jp-OutputArea").nth(1).inner_text()
            assert "55" in output
            assert name in output or "flyte_dask" in output, output
            seen = page.evaluate("window.__flyteDask")
            assert "running" in seen["statuses"], seen  # the list was live during the run
            assert seen["statuses"][-1] == "succeeded", seen
            assert any(text and "55" not in text for text in seen["outputs"]), seen

            # Once idle, the kernel stays idle: the sidebar does not keep asking for runs (a
            # request-reply loop shows here as dozens of busy states a second).
            page.wait_for_timeout(1500)
            busy = page.evaluate(QUIET_CHECK)
            assert busy <= 1, f"the kernel went busy {busy} times in 3 s with nothing to run"

        finally:
            browser.close()
            for session in lab.api("GET", "/api/sessions"):
                lab.api("DELETE", f"/api/sessions/{session['id']}")
