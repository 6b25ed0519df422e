"""How the %%flyte_dask line is read: quotes as a shell user expects, empty and oversized values,
options that cannot go together, and what --export may overwrite. Through a real shell."""

from __future__ import annotations

import shlex
import time

import pytest
from IPython.core.error import UsageError
from shell_helpers import magics

from dask_flyte_jupyter.magics import MAX_LINE_CHARS, parse_magic_line, split_magic_line

CELL = "y = 2\ny * 3\n"


def test_quotes_group_words_and_are_removed(shell, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shell.run_cell_magic("flyte_dask", "--workers 2 --export 'quoted.py'", CELL)
    assert (tmp_path / "quoted.py").is_file() and not (tmp_path / "'quoted.py'").exists()
    quoted = shlex.quote(str((tmp_path / "quoted.py").resolve()))
    assert f"; run it: python {quoted}\n" in capsys.readouterr().out

    shell.run_cell_magic("flyte_dask", '--export "my cell.py"', CELL)
    assert (tmp_path / "my cell.py").is_file()
    spaced = shlex.quote(str((tmp_path / "my cell.py").resolve()))
    assert spaced.startswith("'") and spaced.endswith("my cell.py'")  # pastable into a shell
    assert f"; run it: python {spaced}\n" in capsys.readouterr().out

    quoted = "--image 'python:3.11' --cache --cache-version \"v 2\""
    shell.run_line_magic("flyte_dask_config", quoted)
    assert magics(shell).defaults.image == "python:3.11"
    assert magics(shell).defaults.cache_version == "v 2"
    shell.run_line_magic("flyte_dask_config", "--reset")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--image ''", "--image: '' must be non-empty"),
        ('--image ""', "--image: '' must be non-empty"),
        ("--cache --cache-version ''", "--cache-version: must not be empty"),
        ("--name ''", "--name: '' is not a valid task name"),
        ("--out ''", "--out: must not be empty"),
        ("--inputs ''", "--inputs: must not be empty"),
        ("--export ''", "--export: must not be empty"),
        ("--remote --project ''", "--project: must not be empty"),
        ("--remote --config ' '", "--config: must not be empty"),
        ("--image 'unclosed", "No closing quotation"),
        ("--image a\\", "No escaped character"),
    ],
)
def test_empty_values_and_bad_quoting_are_one_clear_error(shell, line, message):
    runs = len(magics(shell).runs)  # the history is the kernel's: earlier tests' runs stay
    with pytest.raises(UsageError, match=f"^{message}"):
        shell.run_cell_magic("flyte_dask", line, CELL)
    assert "y" not in shell.user_ns and len(magics(shell).runs) == runs


def test_the_splitter_is_shlex_posix():
    assert split_magic_line("""--name "a b" --image 'x'y a\\ b ''""") == [
        "--name",
        "a b",
        "--image",
        "xy",
        "a b",
        "",
    ]
    assert parse_magic_line("%%flyte_dask --export 'quoted.py'") == {"export": "quoted.py"}
    longest = "a" * (MAX_LINE_CHARS - len("--name "))
    assert parse_magic_line(f"%%flyte_dask --name {longest} ") == {"name": longest}
    with pytest.raises(UsageError, match=f"is {MAX_LINE_CHARS + 1} characters long"):
        parse_magic_line(f"%%flyte_dask --name {longest}a")


def test_dry_run_and_export_together_are_refused(shell, tmp_path):
    target = tmp_path / "x.py"
    with pytest.raises(UsageError, match="--dry-run and --export"):
        shell.run_cell_magic("flyte_dask", f"--dry-run --export {target}", CELL)
    assert not target.exists()
    with pytest.raises(UsageError, match="--force needs --export"):
        shell.run_cell_magic("flyte_dask", "--force", CELL)


def test_export_overwrites_only_its_own_files_unless_forced(shell, tmp_path):
    notes = tmp_path / "existing.py"
    notes.write_text("# someone's own module\nimportant = True\n")
    with pytest.raises(UsageError, match=r"exists and was not written by --export.*--force"):
        shell.run_cell_magic("flyte_dask", f"--export {notes}", CELL)
    assert notes.read_text() == "# someone's own module\nimportant = True\n"

    shell.run_cell_magic("flyte_dask", f"--export {notes} --force", CELL)
    first = notes.read_text()
    assert first.startswith('"""A notebook cell exported by dask_flyte_jupyter')
    shell.run_cell_magic("flyte_dask", f"--workers 3 --export {notes}", CELL)  # its own file
    assert notes.read_text() != first and "number_of_workers=3" in notes.read_text()

    with pytest.raises(UsageError, match="is a directory"):
        shell.run_cell_magic("flyte_dask", f"--export {tmp_path}", CELL)


@pytest.mark.parametrize("length", [10_000, 100_000, 1_000_000])
def test_a_huge_value_is_refused_fast_and_shown_cut(shell, length):
    start = time.monotonic()
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("flyte_dask", "--name " + "a" * length, CELL)
    assert time.monotonic() - start < 2
    message = str(caught.value)
    if length < MAX_LINE_CHARS:
        assert message.startswith(f"--name: '{'a' * 80}'… ({length} characters) is not a valid")
    else:
        assert message.startswith(f"the magic line is {length + 7} characters long (at most")
    assert len(message) < 300


def test_notebook_variables_are_still_expanded_in_the_line(shell):
    shell.user_ns["n"] = 3
    shell.run_line_magic("flyte_dask_config", "--workers $n --worker-mem {n + 1}Gi")
    assert magics(shell).defaults.workers.count == 3
    assert magics(shell).defaults.workers.mem == "4Gi"
    shell.run_line_magic("flyte_dask_config", "--reset")
