"""The shared %%flyte_dask line vectors hold for the Python side; the sidebar's rules are current.

``tests/magic_line_vectors.json`` is replayed by the sidebar's jest tests too
(``labextension/src/__tests__/magicLine.spec.ts``), so the browser's parser and writer cannot
drift from :func:`dask_flyte_jupyter.magics.parse_magic_line` and ``ClusterSpec.magic_line``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from dask_flyte_jupyter.magics import parse_magic_line
from dask_flyte_jupyter.schema import RULES_PATH, build_rules, rules_json
from dask_flyte_jupyter.spec import SpecError, spec_from_options

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "magic_line_vectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("vector", VECTORS["parse"], ids=lambda v: v["line"])
def test_reference_parser_matches_vector(vector: dict[str, Any]) -> None:
    if "error" in vector:
        with pytest.raises((UsageError, ValueError)) as caught:
            parse_magic_line(vector["line"])
        assert str(caught.value) == vector["error"]
    else:
        assert parse_magic_line(vector["line"]) == vector["options"]


@pytest.mark.parametrize("vector", VECTORS["write"], ids=lambda v: v["line"])
def test_magic_line_writer_matches_vector(vector: dict[str, Any]) -> None:
    spec = spec_from_options(vector["options"])
    assert spec.magic_line() == vector["line"]
    assert parse_magic_line(vector["line"]) == vector["options"]


def test_vectors_cover_the_sidebars_options_and_both_outcomes() -> None:
    seen = {flag for v in VECTORS["parse"] for flag in v.get("options", {})}
    sidebar = {o["flag"] for o in build_rules()["options"] if o["spec_field"]}
    assert sidebar | {"remote", "project", "domain"} <= seen
    assert any("error" in v for v in VECTORS["parse"])


def test_committed_rules_are_current() -> None:
    committed = (ROOT / RULES_PATH).read_text(encoding="utf-8")
    assert committed == rules_json(), (
        f"{RULES_PATH} is out of date: run `python -m dask_flyte_jupyter.schema > {RULES_PATH}`"
    )


def test_rule_vectors_are_pythons_outcomes() -> None:
    rules = build_rules()
    accepted = [v for v in rules["value_vectors"] if v["error"] is None]
    rejected = [v for v in rules["value_vectors"] if v["error"] is not None]
    assert accepted and rejected
    for vector in rejected:
        given: dict[str, object] = {vector["flag"]: vector["value"]}
        if vector["flag"] == "cache-version":
            given["cache"] = True
        with pytest.raises(SpecError, match=f"^--{vector['flag']}"):
            spec_from_options(given)
