"""What a user meets in a real JupyterLab, in headless Chromium (Debian's package).

One notebook, one kernel, the checks in the order a user meets them:

- a shipped notebook opens unmodified;
- while a run is live: the kernel indicator says busy, the dashboard link answers and renders,
  and opens the dashboard's panels next to the notebook;
- after the run: no link points at the stopped cluster, every link in the cell's output and the
  sidebar opens, one of them the run's performance report, and the panels say the cluster
  stopped; two runs of the cell are told apart in the run list;
- a failing worker task shows the cell's line and no dask log; notes are no stderr and appear
  once; an interrupted cell says so in a few lines;
- invalid sidebar input never reaches the cell and disables Run; nothing in the sidebar is cut
  off at its default width;
- the same UI in the dark theme.

Screenshots go to a temp dir, or to ``docs/`` for the README when ``FLYTE_DASK_SCREENSHOTS=docs``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from lab_server import CHROMIUM, CHROMIUM_ARGS, Lab

ROOT = Path(__file__).resolve().parent.parent

LIVE = (
    "%%flyte_dask --workers 2\n"
    "import time\n"
    "from distributed import Client\n"
    "client = Client()\n"
    "futures = client.map(lambda x: (time.sleep(0.5), x + 1)[1], range(24))\n"
    "total = sum(client.gather(futures))\n"
    "time.sleep(4)\n"
    "total"
)
FAILING = (
    "%%flyte_dask --workers 1\n"
    "from distributed import Client\n"
    "client = Client()\n"
    "values = client.gather(client.map(lambda x: 1 / (x - 2), range(4)))"
)
SCALED_DOWN = "%%flyte_dask --workers 4 --worker-cpu 8\nx = 1"
FOREVER = "%%flyte_dask --workers 1\nimport time\nwhile True:\n    time.sleep(0.1)"
DRY_RUN = "%%flyte_dask --dry-run --interruptible --workers 3\nx = 1"
CELLS = ["%load_ext dask_flyte_jupyter", LIVE, FAILING, SCALED_DOWN, FOREVER, DRY_RUN]


#: The screenshots the README shows.
README_SHOTS = {"jupyterlab.png", "sidebar.png", "dashboard-panel.png", "jupyterlab-dark.png"}


class UI:
    """The page, with the helpers every check uses."""

    def __init__(self, page: Any, lab: Lab, shots: Path) -> None:
        self.page, self.lab, self.shots = page, lab, shots
        self.for_readme = os.environ.get("FLYTE_DASK_SCREENSHOTS") == "docs"
        self.sidebar = page.locator("#flyte-dask-sidebar")

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def output(self, index: int) -> Any:
        return self.cell(index).locator(".jp-OutputArea")

    def run_cell(self, index: int) -> None:
        """Runs the cell as a user does (Ctrl+Enter in it) and waits until the kernel has it."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        prompt = self.cell(index).locator(".jp-InputPrompt")
        before = prompt.inner_text()
        for _attempt in range(3):  # a page still settling can drop the first click or keys
            self.cell(index).locator(".cm-content").click()
            self.page.keyboard.press("Control+Enter")
            try:
                self.page.wait_for_function(
                    "([node, before]) => node.innerText !== before",
                    arg=[prompt.element_handle(), before],
                    timeout=5000,
                )
                return
            except PlaywrightTimeout:
                continue
        raise AssertionError(f"cell {index} did not start: its prompt stayed {before!r}")

    def wait_idle(self, timeout: float = 180_000) -> None:
        # attached, not visible: a narrow toolbar (the notebook split with the dashboard
        # panels) moves the indicator into its overflow menu
        self.page.wait_for_selector(
            ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout, state="attached"
        )

    def show_sidebar(self) -> None:
        """Opens the Flyte dask sidebar (a click on its tab when open would close it)."""
        if not self.sidebar.is_visible():
            self.page.click(".lm-TabBar-tab[data-id='flyte-dask-sidebar']")
        self.sidebar.wait_for(state="visible")

    def kernel_status(self) -> str:
        return str(
            self.page.evaluate(
                "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                ".map(e => e.textContent).find(t => t.includes(' | ')) || ''"
            )
        )

    def opens(self, href: str) -> tuple[int, str]:
        """Status and body of what a click on the link loads, with the page's own cookies."""
        response = self.page.request.get(href)
        return response.status, response.text()

    def shot(self, name: str, locator: Any = None) -> None:
        folder = ROOT / "docs" if self.for_readme and name in README_SHOTS else self.shots
        (locator or self.page).screenshot(path=str(folder / name))


@pytest.fixture(scope="module")
def ui(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, lab.root / "ui.ipynb")
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", lab.root / "01_quickstart.ipynb")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 950})
            page = context.new_page()
            page.set_default_timeout(60_000)
            ui = UI(page, lab, tmp_path_factory.mktemp("screenshots"))
            # The notebook's kernel starts here, so each test's leak check sees it as there.
            page.goto(f"{lab.url}/lab/tree/ui.ipynb?token={lab.token}")
            ui.wait_idle(90_000)
            ui.show_sidebar()
            ui.run_cell(0)
            ui.wait_idle()
            yield ui
        finally:
            browser.close()
            for session in lab.api("GET", "/api/sessions"):
                lab.api("DELETE", f"/api/sessions/{session['id']}")


@pytest.fixture(autouse=True)
def settled(ui: UI) -> Iterator[None]:
    """Each check leaves the page as it found it: no extra tab, no dialog in front of the
    notebook (one a failed check left would block every click of the next)."""
    yield
    for tab in ui.page.context.pages:
        if tab is not ui.page:
            tab.close()
    dialogs = ui.page.locator(".jp-Dialog")
    for _attempt in range(5):
        if not dialogs.count():
            break
        ui.page.keyboard.press("Escape")
        ui.page.wait_for_timeout(300)


@pytest.mark.timeout(300)
def test_a_shipped_notebook_opens_unmodified(ui: UI) -> None:
    sessions = {s["id"] for s in ui.lab.api("GET", "/api/sessions")}
    # A workspace of its own, so that this page does not restore (and touch) ui.ipynb.
    page = ui.page.context.browser.new_page(viewport={"width": 1200, "height": 800})
    try:
        page.goto(
            f"{ui.lab.url}/lab/workspaces/quickstart/tree/01_quickstart.ipynb?token={ui.lab.token}"
        )
        page.wait_for_selector(
            ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000
        )
        page.wait_for_timeout(2500)  # JupyterLab writes the kernel's metadata once connected
        tab = page.locator(".lm-TabBar-tab.jp-mod-current").first
        assert "01_quickstart" in tab.inner_text()
        assert "jp-mod-dirty" not in (tab.get_attribute("class") or "")
    finally:
        page.close()
        for session in ui.lab.api("GET", "/api/sessions"):
            if session["id"] not in sessions:
                ui.lab.api("DELETE", f"/api/sessions/{session['id']}")


@pytest.mark.timeout(600)
def test_a_live_run_shows_busy_and_a_working_dashboard_then_a_report(ui: UI) -> None:
    from playwright.sync_api import expect

    page = ui.page
    ui.run_cell(1)
    started = time.monotonic()
    link = ui.output(1).locator("a[data-flyte-dask-dashboard]")
    expect(link).to_be_visible(timeout=120_000)
    assert time.monotonic() - started < 60
    assert ui.kernel_status().endswith("Busy"), ui.kernel_status()

    # The live link answers and is a real dashboard (bokeh installed), styled as a link.
    href = link.get_attribute("href")
    assert href and href.startswith("http://127.0.0.1:")
    status, body = ui.opens(href)
    assert status == 200 and "needs bokeh" not in body, body[:300]
    colour = link.evaluate("a => getComputedStyle(a).textDecorationLine")
    assert "underline" in colour

    # Clicking it opens the dashboard's panels next to the notebook; they render.
    link.click()
    panel = page.locator(".jp-FlyteDask-dashboardPanel")
    expect(panel).to_be_visible()
    frames = panel.locator("iframe")
    expect(frames).to_have_count(3)
    sources = [frames.nth(i).get_attribute("src") or "" for i in range(3)]
    assert {s.rsplit("/", 1)[-1] for s in sources} == {
        "individual-task-stream",
        "individual-progress",
        "individual-workers-memory",
    }, sources
    for source in sources:
        assert ui.opens(source)[0] == 200, source
    task_stream = next(i for i, s in enumerate(sources) if s.endswith("task-stream"))
    frame = page.frame_locator(".jp-FlyteDask-dashboardPanel iframe").nth(task_stream)
    expect(frame.locator("canvas").first).to_be_visible(timeout=60_000)
    ui.shot("dashboard-panel.png")
    assert ui.kernel_status().endswith("Busy"), ui.kernel_status()

    result = ui.output(1).locator(".jp-OutputArea-executeResult").filter(has_text="300")
    expect(result).to_be_visible(timeout=180_000)
    ui.wait_idle()

    # The cluster is gone: no link points at it; the panels say so and link the report.
    expect(panel).to_have_attribute("data-state", "stopped")
    expect(panel.locator("[data-role='cluster-stopped']")).to_be_visible()
    assert panel.locator("iframe").count() == 0
    dead = href.split("/status")[0]
    # a good run writes nothing to stderr (a warning there is also a link to the debugger)
    assert ui.output(1).locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    _every_link_opens(ui, panel, dead)
    _every_link_opens(ui, ui.output(1), dead)
    _every_link_opens(ui, ui.sidebar, dead)
    ui.shot("jupyterlab.png")

    # A second run of the same cell is told apart from the first in the run list.
    ui.run_cell(1)
    expect(ui.output(1).locator(".jp-OutputArea-executeResult")).to_contain_text(
        "300", timeout=180_000
    )
    ui.wait_idle()
    runs = ui.sidebar.locator(".jp-FlyteDask-run")
    expect(runs).to_have_count(2)
    first, second = (runs.nth(i).inner_text() for i in range(2))
    assert first != second
    labels = [runs.nth(i).locator("[data-role='run-label']").inner_text() for i in range(2)]
    assert labels[0] != labels[1], labels
    assert re.search(r"\d\d:\d\d:\d\d", first), first


def _every_link_opens(ui: UI, area: Any, dead: str) -> None:
    """Each link in ``area`` opens a page that answers 200, one of them the run's report; none
    points at ``dead``, the stopped cluster's dashboard."""
    anchors = area.locator("a")
    hrefs = [anchors.nth(i).get_attribute("href") or "" for i in range(anchors.count())]
    assert hrefs, "no links"
    assert not [h for h in hrefs if h.startswith(dead)], f"a link to the stopped cluster: {hrefs}"
    reports = 0
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for i in range(len(hrefs)):
        try:
            with ui.page.context.expect_page(timeout=30_000) as opened:
                anchors.nth(i).click()
        except PlaywrightTimeout:
            raise AssertionError(
                f"a click on {hrefs[i]!r} opened no page (links: {hrefs})"
            ) from None
        tab = opened.value
        tab.wait_for_load_state()
        status, body = ui.opens(tab.url)
        assert status == 200, (hrefs[i], tab.url, status)
        if "Dask Performance Report" in body:
            # drawn, not the page that says why there is none
            assert "number of tasks" in body and "No report of" not in body, body[:500]
            reports += 1
            if reports == 1:
                tab.wait_for_timeout(1500)
                tab.screenshot(path=str(ui.shots / "report.png"))
        tab.close()
    assert reports >= 1, hrefs


@pytest.mark.timeout(600)
def test_errors_notes_and_interrupts_read_well(ui: UI) -> None:
    from playwright.sync_api import expect

    page = ui.page
    # A failing worker task: the cell's own line, no dask log block.
    ui.run_cell(2)
    failed = ui.output(2)
    expect(failed).to_contain_text("ZeroDivisionError", timeout=180_000)
    ui.wait_idle()
    text = failed.inner_text()
    assert "1 / (x - 2)" in text, text
    assert "Compute Failed" not in text and "distributed.worker" not in text, text
    assert "<dynamic-code>" not in text, text

    # Scale-down notes: not stderr, and shown once.
    ui.run_cell(3)
    expect(ui.output(3)).to_contain_text("succeeded", timeout=180_000)
    ui.wait_idle()
    notes = ui.output(3)
    assert notes.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert notes.inner_text().count("worker cpu 8 →") == 1, notes.inner_text()

    # An interrupt: a few lines that say so.
    ui.run_cell(4)
    expect(ui.output(4)).to_contain_text("running", timeout=120_000)
    page.wait_for_timeout(1500)
    page.locator("[data-command='notebook:interrupt-kernel']").first.click()
    ui.wait_idle(120_000)
    interrupted = ui.output(4).inner_text()
    assert "interrupt" in interrupted.lower(), interrupted
    lines = [line for line in interrupted.splitlines() if line.strip()]
    assert len(lines) <= 12, interrupted
    assert not re.search(r"KeyboardInterrupt:\s*$", interrupted, re.M), interrupted


@pytest.mark.timeout(300)
def test_invalid_sidebar_input_never_reaches_the_cell(ui: UI) -> None:
    from playwright.sync_api import expect

    page, sidebar = ui.page, ui.sidebar
    editor = ui.cell(3).locator(".cm-content")
    editor.click()
    before = editor.inner_text()
    run = sidebar.locator("button[data-action='run']")
    expect(run).to_be_enabled()
    for flag, bad in (("worker-mem", "32Gx"), ("workers", "0")):
        field = sidebar.locator(f"input[data-flag='{flag}']")
        typed = field.input_value()
        field.fill(bad)
        expect(sidebar.locator(f"[data-error-for='{flag}']")).not_to_be_empty()
        expect(run).to_be_disabled()
        page.wait_for_timeout(500)
        assert editor.inner_text() == before, (flag, bad, editor.inner_text())
        border = field.evaluate("e => getComputedStyle(e).borderColor")
        ui.shot(f"sidebar-invalid-{flag}.png", sidebar)
        field.fill(typed)
        expect(run).to_be_enabled()
        assert border != field.evaluate("e => getComputedStyle(e).borderColor"), border
    assert editor.inner_text() == before

    # Nothing cut off or spilling at the default width.
    cut = page.evaluate(CUT_OFF, "#flyte-dask-sidebar")
    assert not cut, cut
    ui.shot("sidebar.png", sidebar)


#: Elements of the sidebar whose content is wider than their box (text cut or spilling), and
#: inputs whose placeholder does not fit.
CUT_OFF = """
(selector) => {
  const root = document.querySelector(selector);
  const canvas = document.createElement('canvas').getContext('2d');
  const out = [];
  if (!root || root.clientWidth === 0) { return ['the sidebar is not shown']; }
  for (const e of root.querySelectorAll('*')) {
    if (e.clientWidth === 0 || e.closest('svg')) { continue; }
    const name = e.tagName + (e.className && typeof e.className === 'string'
      ? '.' + e.className.split(' ').join('.') : '') + ' ' + (e.textContent || '').slice(0, 40);
    if (e.scrollWidth > e.clientWidth + 1) { out.push('overflows: ' + name); }
    if (e.tagName === 'INPUT' && e.placeholder) {
      const style = getComputedStyle(e);
      canvas.font = style.font;
      const room = e.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      if (canvas.measureText(e.placeholder).width > room + 1) {
        out.push('placeholder cut: ' + e.placeholder);
      }
    }
  }
  return out;
}
"""


#: The background an element shows: its own colour laid over its ancestors' (a translucent
#: colour is only as dark as what it sits on), as "rgb(r, g, b)".
SHOWN_BACKGROUND = """
(element) => {
  const layers = [];
  for (let e = element; e; e = e.parentElement) {
    const [r, g, b, a = 1] = getComputedStyle(e).backgroundColor.match(/[\\d.]+/g).map(Number);
    if (a > 0) { layers.push([r, g, b, a]); }
    if (a >= 1) { break; }
  }
  let shown = [255, 255, 255];
  for (const [r, g, b, a] of layers.reverse()) {
    shown = [r * a + shown[0] * (1 - a), g * a + shown[1] * (1 - a), b * a + shown[2] * (1 - a)];
  }
  return `rgb(${shown.map(Math.round).join(', ')})`;
}
"""


def _luminance(colour: str) -> float:
    red, green, blue = (float(v) for v in re.findall(r"[\d.]+", colour)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def _background(locator: Any) -> float:
    return _luminance(locator.evaluate(SHOWN_BACKGROUND))


@pytest.mark.timeout(300)
def test_the_dark_theme(ui: UI) -> None:
    from playwright.sync_api import expect

    page = ui.page
    ui.run_cell(5)
    warning = ui.output(5).locator(".flyte-dask-warning").first
    expect(warning).to_be_visible(timeout=120_000)
    ui.wait_idle()
    light = _background(warning)
    _set_theme(ui.lab, "JupyterLab Dark")
    try:
        page.reload()
        ui.wait_idle(90_000)
        ui.show_sidebar()
        ui.run_cell(5)  # the same kernel; the reloaded page shows the outputs it gets anew
        warning = ui.output(5).locator(".flyte-dask-warning").first
        expect(warning).to_be_visible(timeout=120_000)
        ui.wait_idle()
        dark = _background(warning)
        text = _luminance(warning.evaluate("e => getComputedStyle(e).color"))
        assert dark < 0.35 < light, (dark, light)
        assert text > dark + 0.4, (text, dark)
        panel = _background(ui.sidebar)
        assert panel < 0.35, panel
        ui.cell(1).locator(".cm-content").click()
        expect(ui.sidebar.locator("input[data-flag='workers']")).to_have_value("2")
        assert not page.evaluate(CUT_OFF, "#flyte-dask-sidebar")
        warning.scroll_into_view_if_needed()
        ui.shot("jupyterlab-dark.png")
    finally:
        _set_theme(ui.lab, "JupyterLab Light")


def _set_theme(lab: Lab, theme: str) -> None:
    body = json.dumps({"raw": json.dumps({"theme": theme})}).encode()
    request = urllib.request.Request(
        f"{lab.url}/lab/api/settings/@jupyterlab/apputils-extension:themes",
        data=body,
        method="PUT",
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 204)
