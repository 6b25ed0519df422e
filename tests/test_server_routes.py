"""The server extension's one route, ``{base_url}flyte-dask/reports/{path}``, against a real
``jupyter server``: it serves saved reports as HTML to authenticated users, and nothing else.

The sidebar otherwise talks to the kernel over a comm (``dask_flyte_jupyter/comm.py``), through
the server's own authenticated kernel websocket.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_server import stop_server

import dask_flyte_jupyter
from dask_flyte_jupyter.server import ROUTE, report_file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE = "/base/"  # a base URL other than "/": the route must live under it
REPORT = "<!doctype html><title>Dask Performance Report</title><p>the report</p>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, token: str, root: Path) -> None:
        self.url, self.token, self.root = url, token, root

    def get(self, path: str, token: str | None = "") -> tuple[int, str, str]:
        """Status, content type and body of ``GET {base_url}{path}`` (the server's token unless
        ``token`` says otherwise; None: no token)."""
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"token {token or self.token}")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=30) as reply:
                body = reply.read().decode()
                return reply.status, reply.headers.get("Content-Type", ""), body
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), ""
        except (urllib.error.URLError, ConnectionError):
            return 0, "", ""  # not listening yet


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect to the login page is an answer of its own


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``jupyter server`` from this venv, with the extension as the venv enables it."""
    home = tmp_path_factory.mktemp("server")
    root = home / "root"
    (root / "notebooks" / ".flyte_dask").mkdir(parents=True)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    log = (home / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(BIN / "jupyter"),
            "server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={BASE}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={root}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = Server(f"http://127.0.0.1:{port}{BASE}", token, root)
    try:
        deadline = time.monotonic() + 60
        while started.get("api/status")[0] != 200:
            assert process.poll() is None, (home / "server.log").read_text()
            assert time.monotonic() < deadline, "jupyter server did not start"
            time.sleep(0.3)
        yield started
    finally:
        stop_server(process, log)


def test_the_package_declares_its_one_server_extension() -> None:
    assert dask_flyte_jupyter._jupyter_server_extension_points() == [
        {"module": "dask_flyte_jupyter.server"}
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shared = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    config = [(src, dest) for src, dest in shared.items() if dest.startswith("etc/jupyter")]
    assert config == [("jupyter-config/server-config", "etc/jupyter/jupyter_server_config.d")]
    (file,) = (ROOT / "jupyter-config" / "server-config").iterdir()
    assert file.name == "dask_flyte_jupyter.json"
    enabled = json.loads(file.read_text())
    assert enabled == {"ServerApp": {"jpserver_extensions": {"dask_flyte_jupyter": True}}}


def test_loading_the_kernel_extension_imports_no_server_code() -> None:
    code = (
        "import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'dask_flyte_jupyter')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('jupyter_server', 'tornado', "
        "'dask_flyte_jupyter.server'))))\n"
    )
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().splitlines()[-1] == "[]"


def test_the_venvs_jupyter_server_enables_it(tmp_path: Path) -> None:
    listing = subprocess.run(
        [str(BIN / "jupyter"), "server", "extension", "list"],
        env={**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    assert re.search(r"dask_flyte_jupyter\s+enabled", text), text
    assert re.search(r"dask_flyte_jupyter 0\.1\.0\s+OK", text), text


def test_a_report_is_served_as_html_to_an_authenticated_user(server: Server) -> None:
    (server.root / "notebooks" / ".flyte_dask" / "inc-20261201-153012-r3.html").write_text(REPORT)
    status, kind, body = server.get(f"{ROUTE}/notebooks/.flyte_dask/inc-20261201-153012-r3.html")
    assert (status, kind.split(";")[0], body) == (200, "text/html", REPORT)
    (server.root / ".flyte_dask").mkdir(exist_ok=True)  # a notebook in the root directory
    (server.root / ".flyte_dask" / "top.html").write_text(REPORT)
    assert server.get(f"{ROUTE}/.flyte_dask/top.html")[0] == 200
    # its scripts run in an origin of their own: they cannot act on the server
    request = urllib.request.Request(server.url + f"{ROUTE}/.flyte_dask/top.html")
    request.add_header("Authorization", f"token {server.token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert "sandbox allow-scripts" in reply.headers["Content-Security-Policy"]


def test_without_the_token_it_is_refused(server: Server) -> None:
    (server.root / "notebooks" / ".flyte_dask" / "secret.html").write_text(REPORT)
    path = f"{ROUTE}/notebooks/.flyte_dask/secret.html"
    assert server.get(path, token=None)[0] == 403
    assert server.get(path, token="wrong")[0] == 403
    assert server.get(path)[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "notebooks/.flyte_dask/missing.html",
        "notebooks/.flyte_dask/notes.txt",  # not a report
        "notebooks/.flyte_dask/.gitignore",
        "notebooks/.flyte_dask/.writing-x.html",  # a report being written
        "notebooks/page.html",  # not in .flyte_dask
        "notebooks/.flyte_dask/../page.html",
        "notebooks/.flyte_dask/%2e%2e/page.html",
        "notebooks/%2e%2e/%2e%2e/outside/.flyte_dask/x.html",
        "notebooks/.flyte_dask/escape.html",  # a symlink to a file outside the root
        "notebooks/.flyte_dask/inside.html",  # a symlink to a file that is not a report
        "linked/.flyte_dask/x.html",  # a symlinked directory outside the root
        "%2Fetc%2Fpasswd",
        "",
    ],
)
def test_anything_but_a_report_under_the_root_is_not_found(server: Server, path: str) -> None:
    reports = server.root / "notebooks" / ".flyte_dask"
    outside = server.root.parent / "outside" / ".flyte_dask"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "x.html").write_text(REPORT)
    (reports / "notes.txt").write_text("notes")
    (reports / ".gitignore").write_text("*\n")
    (reports / ".writing-x.html").write_text(REPORT)
    (server.root / "notebooks" / "page.html").write_text(REPORT)
    for name, target in [
        ("escape.html", outside / "x.html"),
        ("inside.html", server.root / "notebooks" / "page.html"),
    ]:
        if not (reports / name).is_symlink():
            (reports / name).symlink_to(target)
    if not (server.root / "linked").is_symlink():
        (server.root / "linked").symlink_to(outside.parent, target_is_directory=True)
    status = server.get(f"{ROUTE}/{path}")[0]
    assert status == 404, (path, status)


def test_the_path_check_alone(tmp_path: Path) -> None:
    reports = tmp_path / "a" / ".flyte_dask"
    reports.mkdir(parents=True)
    (reports / "r.html").write_text(REPORT)
    assert report_file(str(tmp_path), "a/.flyte_dask/r.html") == (reports / "r.html").resolve()
    for path in ("/a/.flyte_dask/r.html", "a\\.flyte_dask\\r.html", "a/.flyte_dask/r.htm"):
        assert report_file(str(tmp_path), path) is None
