"""The Jupyter server extension: serves the runs' saved dask performance reports.

``GET {base_url}flyte-dask/reports/{api_path}`` answers the report at ``api_path`` (relative to
the server's root directory, as the contents API names files) as ``text/html``. JupyterLab's own
``/files`` route refuses hidden directories such as ``.flyte_dask/``, so the sidebar and the
links in cell outputs open reports through this route instead.

Only reports are served: a file ending in ``.html`` whose parent directory is ``.flyte_dask``,
inside the root directory once symlinks are resolved; anything else is 404. Like every Jupyter
route it needs the server's authentication (403 without it) and the ``contents`` read permission.
The report's scripts run sandboxed, in an origin of their own, as for ``/files``.

Enabled by ``etc/jupyter/jupyter_server_config.d/dask_flyte_jupyter.json``, which the wheel
installs. Imported by the server only: ``%load_ext`` in a kernel never imports it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from .reports import REPORTS_DIR

#: The route, under the server's base URL.
ROUTE = "flyte-dask/reports"


def report_file(root_dir: str, api_path: str) -> Path | None:
    """The report at ``api_path`` under ``root_dir``, or None when it is not one: not
    ``.../.flyte_dask/<name>.html``, outside ``root_dir`` (``..``, an absolute path, a symlink
    that leads out), hidden, or missing."""
    if not api_path or "\\" in api_path or "\0" in api_path or api_path.startswith("/"):
        return None
    parts = PurePosixPath(api_path).parts
    if ".." in parts or len(parts) < 2 or parts[-2] != REPORTS_DIR:
        return None
    name = parts[-1]
    if not name.endswith(".html") or name.startswith("."):
        return None
    root = Path(root_dir).resolve()
    file = root.joinpath(*parts).resolve()  # follows symlinks: where it really is
    if not file.is_relative_to(root) or file.parent.name != REPORTS_DIR:
        return None
    if file.name.startswith(".") or file.suffix != ".html" or not file.is_file():
        return None
    return file


def _handler_class() -> type:
    """The handler, built when the server loads the extension (tornado and jupyter_server are
    the server's, imported then)."""
    import tornado.web
    from jupyter_server.auth.decorator import authorized
    from jupyter_server.base.handlers import JupyterHandler

    class ReportHandler(JupyterHandler):  # type: ignore[misc]
        """Serves one saved report."""

        auth_resource = "contents"

        @property
        def content_security_policy(self) -> str:
            # The report's own scripts run, confined to an origin of their own, so they cannot
            # act on the Jupyter server (as /files does for HTML).
            return str(super().content_security_policy) + "; sandbox allow-scripts"

        def get_login_url(self) -> str:
            # A link opened without being logged in is refused, not redirected.
            raise tornado.web.HTTPError(403)

        @tornado.web.authenticated
        @authorized
        def get(self, api_path: str) -> None:
            file = report_file(self.contents_manager.root_dir, api_path)
            if file is None:
                raise tornado.web.HTTPError(404)
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.set_header("Cache-Control", "no-cache")  # a report being written reloads
            self.finish(file.read_bytes())

    return ReportHandler


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Adds the reports route to the server."""
    from jupyter_server.utils import url_path_join

    web_app = server_app.web_app
    pattern = url_path_join(web_app.settings["base_url"], ROUTE, "(.*)")
    web_app.add_handlers(".*$", [(pattern, _handler_class())])
