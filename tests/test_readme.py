"""README.md stays true: its magic reference is the one the parsers generate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "magic_reference", ROOT / "scripts/magic_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_magic_reference_in_readme_matches_the_parsers():
    generator = load_generator()
    readme = (ROOT / "README.md").read_text()
    assert generator.readme_with(generator.reference(), readme) == readme, (
        "README.md's magic reference is out of date: run python scripts/magic_reference.py --write"
    )


def test_every_flag_of_the_magic_is_documented():
    from dask_flyte_jupyter.magics import FlyteDaskMagics

    readme = (ROOT / "README.md").read_text()
    for action in FlyteDaskMagics.flyte_dask.parser._actions:
        for flag in action.option_strings:
            if flag != "-h":
                assert f"`{flag}" in readme, flag


def test_quickstart_is_the_two_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "\ndemo:" in makefile and "\ntest:" in makefile
