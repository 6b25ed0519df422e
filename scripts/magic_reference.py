"""The magic reference of README.md, generated from the magics' own argument parsers.

  python scripts/magic_reference.py           print the reference
  python scripts/magic_reference.py --write   rewrite it in README.md (between the markers)

tests/test_readme.py fails when README.md and the parsers differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- magic-reference:start -->", "<!-- magic-reference:end -->"


def _usage_name(kind: str, name: str) -> str:
    return f"{'%%' if kind == 'cell' else '%'}{name}"


def _option_rows(parser: Any) -> list[str]:
    rows = ["| option | meaning |", "| --- | --- |"]
    for action in parser._actions:
        if not action.option_strings or "-h" in action.option_strings:
            continue
        flag = ", ".join(action.option_strings)
        if action.nargs != 0:
            flag += f" {action.metavar or action.dest.upper()}"
        meaning = (action.help or "").replace("%%", "%").replace("|", "\\|")
        rows.append(f"| `{flag}` | {meaning} |")
    return rows


def reference() -> str:
    from dask_flyte_jupyter.magics import FlyteDaskMagics

    parts = []
    for kind in ("cell", "line"):
        for name in sorted(FlyteDaskMagics.magics[kind]):
            method = getattr(FlyteDaskMagics, FlyteDaskMagics.magics[kind][name])
            doc = (method.__doc__ or "").strip().split("\n\n")[0]
            parser = getattr(method, "parser", None)
            if parser is not None:
                doc = (parser.description or "").strip().split("\n\n")[0]
            parts.append(f"### `{_usage_name(kind, name)}`\n\n{' '.join(doc.split())}\n")
            if parser is not None:
                parts.append("\n".join(_option_rows(parser)) + "\n")
    return "\n".join(parts).rstrip() + "\n"


def readme_with(text: str, content: str) -> str:
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{text}{END}{tail}"


if __name__ == "__main__":
    generated = reference()
    if "--write" in sys.argv:
        README.write_text(readme_with(generated, README.read_text()))
    else:
        sys.stdout.write(generated)
