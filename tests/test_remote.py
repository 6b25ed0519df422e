"""``%%flyte_dask --remote`` end to end: the real FlyteRemote client, through a real
InteractiveShell, against the Flyte Admin stand-in (tests/flyte_admin, a test double), whose
runner starts a real dask scheduler and workers from the task's DaskJob and runs the registered
task's real container args.

One stand-in serves the whole module (its runner without nannies: about a second less per run);
every test starts from an empty call log and real package versions.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from flyte_admin import FlyteAdminStandIn, processes_gone
from IPython.core.error import UsageError
from shell_helpers import interrupt_when, magics

from dask_flyte_jupyter.backends.flyte import FlyteConnectionError, RemoteTimeoutError
from dask_flyte_jupyter.magics import FlyteDaskMagics

IMAGE = "registry.example/team/dask-cells:py3.11"  # the stand-in runs the args, not the image

CELL = """\
import pandas as pd
from distributed import Client
client = Client()
result = client.gather(client.map(inc, range(n)))
workers_seen = len(client.scheduler_info()["workers"])
scaled = frame.assign(value=frame.value * n)
totals: pd.DataFrame = scaled.groupby("key").sum()
sum(result)
"""


@pytest.fixture
def stand_in(admin: FlyteAdminStandIn) -> FlyteAdminStandIn:
    admin.clear_calls()
    admin.fake_versions = {}
    return admin


def remote_line(admin: FlyteAdminStandIn, extra: str = "") -> str:
    return f"--remote --config {admin.config_path} --image {IMAGE} {extra}".strip()


def define_inputs(shell) -> None:
    shell.run_cell("def inc(x):\n    return x + 1\n", store_history=False)
    shell.user_ns["n"] = 20
    shell.user_ns["frame"] = pd.DataFrame({"key": [i % 3 for i in range(9)], "value": range(9)})


def code_uploads(admin: FlyteAdminStandIn) -> list:
    """Uploads of the cell's pickled code (inputs are uploaded under a filename_root)."""
    return [
        c
        for c in admin.calls_to("CreateUploadLocation", "OK")
        if str(c.fields.get("filename", "")).endswith("pkl.gz")
    ]


def execution_of(admin: FlyteAdminStandIn, handle):
    return admin.executions[handle.details["execution"].rsplit("/", 1)[1]]


def test_increment_runs_remotely_like_locally_and_reruns_register_nothing(shell, stand_in):
    admin = stand_in
    define_inputs(shell)
    local_value = shell.run_cell_magic("flyte_dask", "--workers 3", CELL)
    local = {k: shell.user_ns[k] for k in ("result", "workers_seen", "scaled", "totals")}

    define_inputs(shell)
    value = shell.run_cell_magic("flyte_dask", remote_line(admin, "--workers 3 --out run"), CELL)
    run = shell.user_ns["run"]
    assert run.status == "succeeded" and run.backend == "flyte"
    assert value == local_value == sum(i + 1 for i in range(20))
    assert shell.user_ns["result"] == local["result"]
    assert shell.user_ns["workers_seen"] == local["workers_seen"] == 3
    pd.testing.assert_frame_equal(shell.user_ns["scaled"], local["scaled"])
    pd.testing.assert_frame_equal(shell.user_ns["totals"], local["totals"])
    assert "client" not in shell.user_ns

    seen = execution_of(admin, run)
    assert seen.phase_name == "SUCCEEDED"
    assert seen.dask_job["workers"]["numberOfWorkers"] == 3 and seen.workers_started == 3
    # The job runner ran the registered notebook-mode task with the cell's image.
    assert seen.task_args[:2] == ["pyflyte-fast-execute", "--additional-distribution"]
    assert seen.task.closure.compiled_task.template.container.image == IMAGE
    # no own images for scheduler and workers: Flyte's dask plugin gives them the task image
    assert not seen.dask_job["scheduler"].get("image")
    assert not seen.dask_job["workers"].get("image")
    # Inputs travel as Flyte types: the frame as a structured dataset, n as an integer, the
    # notebook function as a pickle.
    literals = seen.inputs.literals
    assert literals["frame"].scalar.HasField("structured_dataset")
    assert literals["n"].scalar.primitive.integer == 20
    assert literals["inc"].scalar.union.value.scalar.blob.metadata.type.format == "PythonPickle"
    # Registered once, the notebook way; the live view showed the remote phases and links.
    assert len(admin.calls_to("CreateTask", "OK")) == 1 and len(code_uploads(admin)) == 1
    assert {"connecting", "uploading code", "registering", "starting cluster", "running"} <= set(
        run.phases
    )
    assert run.links["Flyte console"].endswith(f"/executions/{seen.name}")
    assert "execution SUCCEEDED" in run.remote_status
    assert "same as the kernel" in run.details["environment"]
    assert set(run.environment) >= {"job-runner", "scheduler"} and len(run.environment) == 5
    assert processes_gone(seen.pids + seen.cluster["descendant_pids"])

    # A kernel restart: a new magics instance, a fresh namespace with the same values. The
    # unchanged cell is found registered: no new task version, nothing uploaded.
    admin.clear_calls()
    shell.reset(new_session=False)
    define_inputs(shell)
    restarted = FlyteDaskMagics(shell)
    pending = restarted.flyte_dask(remote_line(admin, "--workers 3 --no-wait"), CELL)
    assert pending.status == "running" and pending.current_phase == "submitted"
    assert "result" not in shell.user_ns  # nothing comes back before someone waits
    assert not admin.calls_to("CreateTask") and not code_uploads(admin)
    assert admin.calls_to("CreateExecution", "OK")
    table = restarted.flyte_dask_runs("").text()
    assert pending.name in table and "execution" in table

    # Another restart: attach by execution id, and the outputs come back.
    execution_id = pending.details["execution"].rsplit("/", 1)[1]
    shell.reset(new_session=False)
    attached = FlyteDaskMagics(shell).flyte_dask_attach(
        f"{execution_id} --config {admin.config_path} --out again"
    )
    assert attached == local_value
    assert shell.user_ns["result"] == local["result"]
    pd.testing.assert_frame_equal(shell.user_ns["totals"], local["totals"])
    assert shell.user_ns["again"].status == "succeeded"
    assert not admin.calls_to("CreateTask")

    # The first kernel's handle follows the same execution to the end.
    shell.reset(new_session=False)
    assert pending.wait() == local_value
    assert pending.status == "succeeded" and shell.user_ns["workers_seen"] == 3


def test_changed_cell_is_a_new_version_and_parity_flags_a_mismatch(
    shell, stand_in, tmp_path, monkeypatch
):
    monkeypatch.setenv("FLYTE_DASK_PROGRESS", "widget")  # the live view of a notebook frontend
    admin = stand_in
    admin.fake_versions = {"distributed": "2000.1.0"}
    shell.user_ns["n"] = 4
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("5\n6\n7\n")
    shell.user_ns["numbers_file"] = numbers  # a local file: it travels as a FlyteFile
    cell = (
        "from distributed import Client\n"
        "client = Client()\n"
        "squares = client.gather(client.map(abs, range(n)))\n"
        "import pathlib\n"
        "numbers = [int(x) for x in pathlib.Path(numbers_file).read_text().split()]\n"
    )
    shell.run_cell_magic("flyte_dask", remote_line(admin, "--workers 2 --out run"), cell)
    run = shell.user_ns["run"]
    assert shell.user_ns["squares"] == [0, 1, 2, 3] and shell.user_ns["numbers"] == [5, 6, 7]
    assert (
        execution_of(admin, run).inputs.literals["numbers_file"].scalar.blob.uri.startswith("s3://")
    )
    assert len(admin.calls_to("CreateTask", "OK")) == 1 and len(code_uploads(admin)) == 1
    environment = run.details["environment"]
    assert environment.startswith("MISMATCH")
    assert "distributed 2000.1.0 on scheduler, 2 workers" in environment
    assert run.environment["scheduler"]["distributed"] == "2000.1.0"
    assert run.environment["job-runner"]["distributed"] != "2000.1.0"
    assert any("environment mismatch" in note for note in run.notes)
    assert "MISMATCH" in run.summary_text()
    # the live view showed the remote phases and linked the Flyte console
    history = run.view.history
    assert history[history.index("starting cluster") :] == [
        "starting cluster",
        "running",
        "fetching outputs",
        "gathering results",
        "succeeded",
    ]
    assert "Flyte console</a>" in run.view.header.value


def test_failing_remote_cell_shows_the_cells_own_error(shell, stand_in):
    admin = stand_in
    shell.run_cell("def check(x):\n    raise ValueError(f'bad value {x}')\n", store_history=False)
    shell.user_ns["before"] = "unchanged"
    cell = (
        "from distributed import Client\n"
        "client = Client()\n"
        "first = 1\n"
        "client.submit(check, 7).result()\n"
    )
    with pytest.raises(ValueError, match="bad value 7") as caught:
        shell.run_cell_magic("flyte_dask", remote_line(admin, "--workers 1"), cell)
    shown = "\n".join(caught.value._render_traceback_())
    assert "Traceback (remote" in shown
    assert "Cell line 5" in shown and "client.submit(check, 7).result()" in shown
    # the notebook function that failed on a worker, with its own cell's line and text
    assert "line 2, in check" in shown and "raise ValueError(f'bad value {x}')" in shown
    assert "site-packages" not in shown and "<dynamic-code>" not in shown
    assert "Flyte console: http" in shown
    assert shell.user_ns["before"] == "unchanged" and "first" not in shell.user_ns
    run = magics(shell).runs[-1]
    assert run.status == "failed"
    assert execution_of(admin, run).phase_name == "FAILED"


@pytest.mark.parametrize("name", ["remote-cell", "team.prepare-v2"])
def test_a_task_name_that_is_no_python_identifier_runs_remotely_and_locally(shell, stand_in, name):
    # --name accepts '-' and '.'; the job runner finds the pickled task by the name in its args
    cell = (
        "from distributed import Client\n"
        "client = Client()\n"
        "doubled = client.gather(client.map(lambda x: 2 * x, range(n)))\n"
        "sum(doubled)\n"
    )
    shell.user_ns["n"] = 4
    line = remote_line(stand_in, f"--workers 1 --name {name} --out run")
    assert shell.run_cell_magic("flyte_dask", line, cell) == 12
    run = shell.user_ns["run"]
    assert run.status == "succeeded" and run.name == name
    assert shell.user_ns["doubled"] == [0, 2, 4, 6]
    seen = execution_of(stand_in, run)
    assert seen.phase_name == "SUCCEEDED" and seen.task.id.name == name

    del shell.user_ns["doubled"]
    assert shell.run_cell_magic("flyte_dask", f"--workers 1 --name {name} --out again", cell) == 12
    assert shell.user_ns["again"].name == name and shell.user_ns["doubled"] == [0, 2, 4, 6]


def test_deep_recursion_remotely_is_folded_as_python_folds_it(shell, stand_in):
    cell = "def r(n):\n    return r(n + 1)\nr(0)\n"
    with pytest.raises(RecursionError) as caught:
        shell.run_cell_magic("flyte_dask", remote_line(stand_in, "--workers 1"), cell)
    lines = caught.value._render_traceback_()
    shown = "\n".join(lines)
    assert len(lines) < 40, shown
    assert "RecursionError: maximum recursion depth exceeded" in shown
    assert shown.count("  Cell line 3\n    return r(n + 1)") == 3
    folded = re.search(r"^  \[Previous line repeated (\d+) more times\]$", shown, re.MULTILINE)
    assert folded is not None and int(folded.group(1)) > 500


def test_keyboard_interrupt_aborts_the_execution(shell, stand_in, capsys):
    admin = stand_in
    runs = magics(shell).runs
    before = len(runs)
    interrupt_when(lambda: len(runs) > before and runs[-1].current_phase == "running")
    cell = "import time\ntime.sleep(120)\ndone = True\n"
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("flyte_dask", remote_line(admin, "--workers 1"), cell)
    run = runs[-1]
    seen = execution_of(admin, run)
    assert run.status == "interrupted" and seen.phase_name == "ABORTED"
    assert seen.abort_cause == "interrupted from the notebook"
    assert processes_gone(seen.pids + seen.cluster["descendant_pids"])
    out, err = capsys.readouterr()
    assert f"execution {seen.name} was terminated (ABORTED)" in out  # a note: not stderr
    assert "was terminated" not in err
    assert "done" not in shell.user_ns


def test_timeout_terminates_a_long_cell(shell, stand_in):
    admin = stand_in
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError) as caught:
        shell.run_cell_magic(
            "flyte_dask",
            remote_line(admin, "--workers 1 --timeout 5"),
            "import time\ntime.sleep(120)\n",
        )
    assert time.monotonic() - start < 45
    run = magics(shell).runs[-1]
    seen = execution_of(admin, run)
    assert seen.phase_name == "ABORTED" and "--timeout 5s" in seen.abort_cause
    assert processes_gone(seen.pids + seen.cluster["descendant_pids"])
    shown = "\n".join(caught.value._render_traceback_())
    assert "ran longer than --timeout 5s" in shown and "(ABORTED)" in shown


def write_config(tmp_path: Path, endpoint: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "admin:\n"
        f"  endpoint: dns:///{endpoint}\n"
        "  insecure: true\n"
        "  clientSecretLocation: /dev/null\n"
        "storage:\n"
        "  connection:\n"
        "    access-key: not-this-key\n"
        "    secret-key: never-print-this-secret\n"
    )
    return path


@pytest.mark.parametrize("listening", [False, True], ids=["closed port", "silent endpoint"])
def test_unreachable_endpoint_gives_one_clear_error_within_seconds(shell, tmp_path, listening):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if listening:
            sock.listen()  # accepts TCP, never speaks gRPC (a firewall, a proxy)
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
        config = write_config(tmp_path, endpoint)
        shell.user_ns["n"] = 3
        start = time.monotonic()
        with pytest.raises(FlyteConnectionError) as caught:
            shell.run_cell_magic(
                "flyte_dask", f"--remote --config {config} --image {IMAGE}", "m = n + 1\n"
            )
        elapsed = time.monotonic() - start
    assert elapsed < 10
    shown = "\n".join(caught.value._render_traceback_())
    assert endpoint in shown and len(shown.splitlines()) == 2
    assert "secret" not in shown and "not-this-key" not in shown
    assert magics(shell).runs[-1].status == "failed" and "m" not in shell.user_ns


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--project p", "--project needs --remote"),
        ("--no-wait", "--no-wait needs --remote"),
        ("--remote --timeout 0", "--timeout: must be a number of seconds > 0"),
        ("--remote --config /no/such/config.yaml", "--config: no such file"),
    ],
)
def test_bad_remote_flags_give_one_clear_message(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_cell_magic("flyte_dask", line, "x = 1\n")


def test_refused_credentials_and_projects_name_the_endpoint_only():
    from flytekit.exceptions.user import FlyteAuthenticationException, FlyteInvalidInputException

    from dask_flyte_jupyter.backends.flyte import Connection, FlyteBackend

    backend = FlyteBackend(Connection(project="nope"))
    backend._endpoint, backend._project, backend._domain = "flyte.example.com:443", "nope", "dev"
    refused = backend._connection_error(FlyteAuthenticationException("token: s3cr3t"))
    assert str(refused) == "Flyte Admin at flyte.example.com:443 refused the credentials"
    assert "s3cr3t" not in "\n".join(refused.flyte_dask_explanation)
    project = backend._connection_error(FlyteInvalidInputException("request"))
    assert "refused project 'nope' / domain 'dev'" in str(project)


def test_a_quoted_config_path_is_the_file(shell, stand_in):
    result = shell.run_cell_magic(
        "flyte_dask",
        f"--remote --config '{stand_in.config_path}' --image \"{IMAGE}\" --dry-run",
        "x = 1\n",
    )
    assert result.task["image"] == IMAGE  # quotes removed: the image, and the config file
    assert stand_in.calls_to("GetProjectDomainAttributes")  # read from Admin through it
    assert not any("Flyte Admin" in warning for warning in result.warnings)


def _shown(caught: pytest.ExceptionInfo) -> str:
    return "\n".join(caught.value._render_traceback_())


def test_an_unknown_project_is_named_as_not_existing(shell, stand_in):
    with pytest.raises(FlyteConnectionError) as caught:
        shell.run_cell_magic("flyte_dask", remote_line(stand_in, "--project nope"), "m = 1\n")
    shown = _shown(caught)
    assert shown.splitlines() == [
        f"FlyteConnectionError: project 'nope' does not exist on Flyte Admin at "
        f"{stand_in.endpoint}",
        "Pass an existing --project (it has: flytesnacks), or create the project first.",
    ]
    assert stand_in.calls_to("GetProjectDomainAttributes", "INVALID_ARGUMENT")  # Admin said so
    assert magics(shell).runs[-1].status == "failed" and "m" not in shell.user_ns

    with pytest.raises(FlyteConnectionError, match="domain 'nowhere' does not exist"):
        shell.run_cell_magic("flyte_dask", remote_line(stand_in, "--domain nowhere"), "m = 1\n")


def test_a_client_secret_without_client_id_names_the_auth_config(shell, stand_in, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("never-print-this-secret\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        stand_in.config_path.read_text().replace(
            "  insecure: true\n", f"  insecure: true\n  clientSecretLocation: {secret}\n"
        )
    )
    with pytest.raises(FlyteConnectionError) as caught:
        shell.run_cell_magic("flyte_dask", f"--remote --config {config} --image {IMAGE}", "m = 1\n")
    shown = _shown(caught)
    assert "auth settings of the Flyte config" in shown and "clientId" in shown
    assert "cannot reach" not in shown and "never-print-this-secret" not in shown
    assert len(shown.splitlines()) == 2
