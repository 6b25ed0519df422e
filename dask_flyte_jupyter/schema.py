"""The magic's options and the cluster spec's validation rules, as data for the JupyterLab sidebar.

The sidebar (``labextension/``) parses, writes and validates ``%%flyte_dask`` lines in the browser.
It does not restate the rules: it reads the JSON that :func:`build_rules` makes from the magic's
argument parser (:mod:`.magics`) and from :mod:`.spec`'s own constants (quantity grammar, suffix
multipliers, bounds, name pattern), plus vectors of values with the exact outcome Python gives
them, which the sidebar's jest tests replay. A pytest test fails when the committed file differs
from what this module makes now, so a change of a rule in Python cannot go unnoticed in the
browser::

    python -m dask_flyte_jupyter.schema > labextension/src/rules.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import spec
from .spec import ClusterSpec, SpecError, spec_from_options

#: Where the sidebar reads the rules from, relative to the repository root.
RULES_PATH = "labextension/src/rules.json"

# Values whose outcome (accepted, or the exact error) the sidebar must reproduce, by kind of flag.
_SAMPLES: dict[str, list[str]] = {
    "int": [
        "1",
        "2",
        "3",
        "0",
        "-1",
        "-0",
        "+3",
        " 4 ",
        "007",
        "1_000",
        "1__0",
        "_1",
        "1_",
        "3.0",
        "1e3",
        "abc",
        "",
        " ",
        "99999999999999999999",
        "0x10",
        "x" * 100,  # long values are cut in messages (spec.shown)
    ],
    "cpu": [
        "2",
        "0.5",
        "500m",
        "1m",
        "1",
        "0.001",
        "0.0005",
        "0",
        "0m",
        "0.0",
        "1.5",
        ".5",
        "5.",
        "2e3",
        "1e-3",
        "1e-4",
        "1E3",
        "1e+2",
        "1k",
        "1K",
        "1Ki",
        "1Mi",
        "1n",
        "1000000n",
        "999999n",
        "abc",
        "",
        " ",
        "-1",
        "+1",
        " 2 ",
        "2 m",
        "1e999",
        "1e-999",
        "1e1000",
        "9223372036854775807m",
        "9223372036854775808m",
        "9223372036854775",
        "9223372036854776",
        "1.2.3",
        "m",
        "e3",
        "1ee3",
        "1e3m",
        "9" * 100,
        "x" * 81,
    ],
    "memory": [
        "4Gi",
        "512Mi",
        "1G",
        "1e9",
        "1",
        "0",
        "0.5",
        "1.5",
        "1m",
        "1000m",
        "1001m",
        "abc",
        "",
        "-1Gi",
        "1Ei",
        "7Ei",
        "8Ei",
        "9223372036854775807",
        "9223372036854775808",
        "1.5Gi",
        "1e3",
        "4gi",
        "4GB",
        " 1Gi ",
        "1Ki",
        "0.1Ki",
        "1.0001",
        "1e18",
        "1e19",
        "1E",
        "1P",
        "m" * 100,
    ],
    "image": [
        "python:3.11",
        "ghcr.io/org/img:tag",
        "",
        " ",
        "a b",
        "img\t",
        "x\u00a0y",
        "x\x1cy",
        "é",
        "a b" * 40,
    ],
    "name": [
        "abc",
        "a",
        "A9",
        "a.b-c_d",
        "1abc",
        "a b",
        "a" * 63,
        "a" * 64,
        "",
        "-a",
        "é",
        "a!",
        "it's",
        "a" * 80,
        "a" * 81,
        "é" * 100,
        "\U0001f600" * 90,
    ],
    "cache-version": ["v1", "", " ", "a b", "2024-01-01"],
}

# Whole option sets, for the rules that involve more than one flag and for the order of errors.
_OPTION_SETS: list[dict[str, object]] = [
    {"cache-version": "v1"},
    {"cache": True, "cache-version": "v1"},
    {"workers": "0", "worker-cpu": "abc"},
    {"worker-cpu": "abc", "workers": "x"},
    {"worker-mem": "0", "scheduler-cpu": "0"},
    {"image": "a b", "name": "1x", "worker-gpu": "-1"},
    {"worker-cpu": "0", "worker-gpu": "-1"},
    {"scheduler-mem": "1x", "worker-mem": "1x", "scheduler-cpu": "1x"},
    {"name": "1x", "cache-version": "v"},
    {"workers": "3", "worker-mem": "1Gi", "interruptible": True, "cache": True},
]


def _kind(flag: str) -> str:
    if flag in spec._INT_FLAGS:
        return "int"
    if flag in spec._QUANTITY_FLAGS:
        return "cpu" if flag.endswith("-cpu") else "memory"
    if flag in spec._BOOL_FLAGS:
        return "bool"
    return flag if flag in ("image", "name", "cache-version") else "text"


def _js_pattern(pattern: str) -> str:
    """A Python regex in the syntax JavaScript's RegExp accepts (named groups differ)."""
    return pattern.replace("(?P<", "(?<")


def _outcome(options: dict[str, object]) -> str | None:
    try:
        spec_from_options(options)
    except SpecError as error:
        return str(error)
    return None


def _validate_order() -> list[str]:
    """The order in which ``ClusterSpec.validate`` checks the flags, found by asking it."""
    bad: dict[str, object] = {
        "workers": "0", "worker-cpu": "x", "worker-mem": "x", "worker-gpu": "-1",
        "scheduler-cpu": "x", "scheduler-mem": "x", "image": "a b", "cache-version": "v",
        "name": "1",
    }  # fmt: skip
    order: list[str] = []
    while bad:
        error = _outcome(bad)
        assert error is not None, f"no error for {bad}"
        flag = next(f for f in sorted(bad, key=len, reverse=True) if error.startswith(f"--{f}"))
        order.append(flag)
        del bad[flag]
    return order


def build_rules() -> dict[str, Any]:
    """Everything the sidebar needs to parse, write and validate a ``%%flyte_dask`` line."""
    from .magics import MAX_LINE_CHARS, FlyteDaskMagics

    parser = FlyteDaskMagics.flyte_dask.parser
    default = ClusterSpec()
    options = []
    for option, action in parser._option_string_actions.items():
        flag = option.removeprefix("--")
        options.append(
            {
                "option": option,
                "flag": flag,
                "dest": action.dest,
                "takes_value": action.nargs != 0,
                "metavar": action.metavar,
                "help": action.help,
                "kind": _kind(flag) if flag in spec._FLAGS else "text",
                "spec_field": flag in spec._FLAGS,
                "default": default._get(flag) if flag in spec._FLAGS else None,
            }
        )
    vectors = []
    for flag in spec._FLAGS:
        for value in _SAMPLES.get(_kind(flag), []):
            given: dict[str, object] = {flag: value}
            if flag == "cache-version":
                given["cache"] = True
            vectors.append({"flag": flag, "value": value, "error": _outcome(given)})
    return {
        "generated_by": "python -m dask_flyte_jupyter.schema",
        "magic": "%%flyte_dask",
        "max_line_chars": MAX_LINE_CHARS,
        "options": options,
        "spec_flags": list(spec._FLAGS),
        "validate_order": _validate_order(),
        "int_minimum": dict(spec._INT_FLAGS),
        "quantity": {
            "pattern": _js_pattern(spec._QUANTITY.pattern),
            "suffixes": {
                suffix: [str(value.numerator), str(value.denominator)]
                for suffix, value in spec._SUFFIXES.items()
            },
            "max": str(spec._INT64_MAX),
            "cpu_forms": spec._CPU_FORMS,
            "memory_forms": spec._MEM_FORMS,
        },
        "name_pattern": _js_pattern(spec._NAME.pattern),
        # Python's str.isspace() / str.strip() set, which JavaScript's \s does not quite match.
        "whitespace": "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()),
        "shown_chars": spec.SHOWN_CHARS,
        "negative_number": parser._negative_number_matcher.pattern,
        "value_vectors": vectors,
        "option_vectors": [{"options": given, "error": _outcome(given)} for given in _OPTION_SETS],
    }


def rules_json() -> str:
    """The rules as the committed file holds them."""
    return json.dumps(build_rules(), indent=2, ensure_ascii=True) + "\n"


def main() -> None:
    sys.stdout.write(rules_json())


if __name__ == "__main__":
    main()
