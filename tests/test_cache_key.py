"""``%%flyte_dask --cache``: the key covers everything a notebook function input's result depends
on (issue 12, item 1).

Functions travel by value, so their key is their code (not comments, whitespace or line
numbers), the globals they read, their closure cells and defaults, and recursively the notebook
functions and classes those reach. Each case runs the real magic in a real IPython shell: a
change that changes the result is a miss with the right value, an unchanged rerun is a hit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from dask_flyte_jupyter.cache_key import content_hash

LINE = "--workers 1 --cache --out run"


@pytest.fixture
def salted(shell):
    """A salt only this test uses, read by the functions it defines: its first run is a miss even
    though flytekit's local cache is on disk and shared with earlier sessions."""
    shell.user_ns["SALT"] = uuid.uuid4().hex
    return shell


def define(shell, code: str) -> None:
    """Runs ``code`` as a notebook cell, with its own cell file (the execution count is in its
    name) as each cell run in a notebook."""
    shell.execution_count += 1
    result = shell.run_cell(textwrap.dedent(code), store_history=False)
    result.raise_error()


def run(shell, cell: str):
    """The cell under ``--cache``; returns the run handle."""
    shell.run_cell_magic("flyte_dask", LINE, textwrap.dedent(cell))
    return shell.user_ns["run"]


def assert_miss(handle) -> None:
    assert handle.status == "succeeded" and not handle.cache_hit
    assert "starting cluster" in handle.phases


def assert_hit(handle) -> None:
    assert handle.status == "cached" and handle.cache_hit
    assert "starting cluster" not in handle.phases and handle.dashboard_link is None


def test_an_unchanged_rerun_is_a_hit_also_when_the_function_is_defined_anew(salted):
    shell = salted
    define(shell, "K = 1\ndef g(v):\n    return v + K + len(SALT) * 0\n")
    assert_miss(run(shell, "w2 = g(10)\n"))
    assert shell.user_ns["w2"] == 11
    shell.user_ns.pop("w2")
    assert_hit(run(shell, "w2 = g(10)\n"))
    assert shell.user_ns["w2"] == 11
    # the same definitions run again (a new cell file, as after a kernel restart): still a hit
    define(shell, "K = 1\ndef g(v):\n    return v + K + len(SALT) * 0\n")
    assert_hit(run(shell, "w2 = g(10)\n"))
    assert shell.user_ns["w2"] == 11


def test_a_changed_global_is_a_miss_with_the_right_value(salted):
    shell = salted
    define(shell, "K = 1\ndef g(v):\n    return v + K + len(SALT) * 0\n")
    assert_miss(run(shell, "w2 = g(10)\n"))
    assert shell.user_ns["w2"] == 11
    define(shell, "K = 2\n")
    assert_miss(run(shell, "w2 = g(10)\n"))
    assert shell.user_ns["w2"] == 12
    define(shell, "K = 1\n")  # back to the first value: its result is in the cache
    assert_hit(run(shell, "w2 = g(10)\n"))
    assert shell.user_ns["w2"] == 11


def test_a_changed_closure_cell_is_a_miss(salted):
    shell = salted
    define(
        shell,
        """\
        def make_adder(n):
            def add(x):
                return x + n + len(SALT) * 0
            return add
        adder = make_adder(1)
        """,
    )
    assert_miss(run(shell, "w = adder(10)\n"))
    assert shell.user_ns["w"] == 11
    define(shell, "adder = make_adder(5)\n")
    assert_miss(run(shell, "w = adder(10)\n"))
    assert shell.user_ns["w"] == 15


def test_a_changed_default_argument_is_a_miss(salted):
    shell = salted
    scale = (
        "def scale(x, factor={}, *, offset={}):\n    return x * factor + offset + len(SALT) * 0\n"
    )
    define(shell, scale.format(2, 0))
    assert_miss(run(shell, "s = scale(10)\n"))
    assert shell.user_ns["s"] == 20
    define(shell, scale.format(3, 0))  # a default
    assert_miss(run(shell, "s = scale(10)\n"))
    assert shell.user_ns["s"] == 30
    define(shell, scale.format(3, 1))  # a keyword-only default
    assert_miss(run(shell, "s = scale(10)\n"))
    assert shell.user_ns["s"] == 31


def test_a_changed_global_of_a_nested_helper_is_a_miss(salted):
    shell = salted
    define(
        shell,
        """\
        M = 2
        def h(x):
            return x * M + len(SALT) * 0
        def g(x):
            return h(x) + 1
        """,
    )
    assert_miss(run(shell, "r = g(10)\n"))  # the cell uses g only: h and M reach it through g
    assert shell.user_ns["r"] == 21
    define(shell, "M = 3\n")
    assert_miss(run(shell, "r = g(10)\n"))
    assert shell.user_ns["r"] == 31
    # a notebook class the helper uses counts too, method by method
    define(
        shell,
        """\
        class Scaler:
            def apply(self, x):
                return x * M
        def h(x):
            return Scaler().apply(x) + len(SALT) * 0
        """,
    )
    assert_miss(run(shell, "r = g(10)\n"))
    assert shell.user_ns["r"] == 31
    define(
        shell,
        """\
        class Scaler:
            def apply(self, x):
                return x * M * 10
        """,
    )
    assert_miss(run(shell, "r = g(10)\n"))
    assert shell.user_ns["r"] == 301


def test_a_change_to_only_comments_and_whitespace_is_a_hit(salted):
    """Documented in the README: the key is the function's bytecode, names and constants, not its
    source text, so comments, blank lines and spacing (and so line numbers) are not in it."""
    shell = salted
    define(shell, "K = 1\ndef g(v):\n    return v + K + len(SALT) * 0\n")
    assert_miss(run(shell, "w2 = g(10)\n"))
    define(
        shell,
        """\
        K = 1


        def g(v):
            # add K to v
            return v  +  K + len(SALT) * 0   # the same code
        """,
    )
    assert_hit(run(shell, "w2 = g(10)\n"))
    assert shell.user_ns["w2"] == 11
    define(shell, "def g(v):\n    return v + K + len(SALT) * 0 + 0\n")  # other code: a miss
    assert_miss(run(shell, "w2 = g(10)\n"))


def test_recursive_functions_terminate_and_their_key_is_stable(salted):
    shell = salted
    define(
        shell,
        """\
        BASE = 1
        def fact(n):
            return BASE if n < 2 else n * fact(n - 1)
        def even(n):
            return n == 0 or odd(n - 1)
        def odd(n):
            return n != 0 and even(n - 1) and len(SALT) > 0
        class Tree:
            def __init__(self, *children):
                self.children = children
            def size(self):
                return 1 + sum(Tree.size(c) for c in self.children)
        """,
    )
    cell = "v = (fact(5), even(4), Tree(Tree(), Tree(Tree())).size())\n"
    assert_miss(run(shell, cell))
    assert shell.user_ns["v"] == (120, True, 4)
    assert_hit(run(shell, cell))
    define(shell, "BASE = 2\n")  # reached only through the recursion
    assert_miss(run(shell, cell))
    assert shell.user_ns["v"] == (240, True, 4)


def test_the_literal_hash_is_the_key_flytekit_caches_under():
    """The HashMethod on a function input gives the literal its hash: the local cache keys on it
    and Flyte's catalog does too, so one key serves both (test_remote_cache checks the remote
    side end to end)."""
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    from dask_flyte_jupyter.cell import analyse_cell
    from dask_flyte_jupyter.spec import ClusterSpec
    from dask_flyte_jupyter.task import build_task

    namespace: dict = {"__name__": "__main__"}
    exec(compile("K = 1\ndef g(v):\n    return v + K\n", "<cell>", "exec"), namespace)
    program = analyse_cell("w2 = g(10)\n", {"g": namespace["g"]})
    cell_task = build_task(program, ClusterSpec(cache=True), {"g": namespace["g"]})
    declared = cell_task.input_types["g"]

    def literal_hash():
        ctx = FlyteContextManager.current_context()
        expected = TypeEngine.to_literal_type(declared)
        return TypeEngine.to_literal(ctx, namespace["g"], declared, expected).hash

    first = literal_hash()
    assert first == content_hash(namespace["g"])
    namespace["K"] = 2
    assert literal_hash() == content_hash(namespace["g"]) != first


def test_values_without_a_stable_key_are_always_a_miss():
    namespace: dict = {"__name__": "__main__"}
    code = "import threading\nLOCK = threading.Lock()\ndef locked():\n    return LOCK\n"
    exec(compile(code, "<cell>", "exec"), namespace)
    assert content_hash(namespace["locked"]) != content_hash(namespace["locked"])
    generator = (i for i in range(3))
    assert content_hash(generator) != content_hash(generator)


def test_modules_count_by_name_and_version_not_their_contents():
    import math

    namespace: dict = {"__name__": "__main__", "math": math}
    exec(compile("def area(r):\n    return math.pi * r * r\n", "<cell>", "exec"), namespace)
    before = content_hash(namespace["area"])
    math.unrelated_attribute = 1
    try:
        assert content_hash(namespace["area"]) == before
    finally:
        del math.unrelated_attribute
    namespace["math"] = __import__("cmath")  # another module under the same name: a miss
    assert content_hash(namespace["area"]) != before


def test_the_key_is_the_same_in_another_process():
    """A kernel restart: new cell files, another hash seed (set order), same key."""
    script = textwrap.dedent(
        """\
        import sys
        from dask_flyte_jupyter.cache_key import content_hash
        ns = {"__name__": "__main__"}
        code = (
            "import math\\nK = set('abcdefghijklmnopqrstuvwxyz')\\n"
            "class A:\\n    tags = frozenset(K)\\n"
            "def g(v):\\n    return [v in K, A, math.pi, {'x': 1}]\\n"
        )
        exec(compile(code, sys.argv[1], "exec"), ns)
        print(content_hash(ns["g"]))
        """
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", script, f"<cell {seed}>"],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2, 3)
    }
    assert len(keys) == 1 and "" not in keys


def test_remotely_the_literal_carries_the_same_key_and_flytes_cache_honours_it(salted, admin):
    """``--remote``: the input's literal hash (what Flyte's catalog keys on) is the key the local
    cache uses; a changed global is a real run with the right value, the first value a hit."""
    from test_remote import IMAGE, execution_of

    shell = salted
    line = f"--remote --config {admin.config_path} --image {IMAGE} {LINE}"

    def remote_run(expected_status: str):
        shell.run_cell_magic("flyte_dask", line, "w2 = g(10)\n")
        handle = shell.user_ns["run"]
        seen = execution_of(admin, handle)
        assert seen.cache_status_name == expected_status
        assert seen.inputs.literals["g"].hash == content_hash(shell.user_ns["g"])
        return handle

    define(shell, "K = 1\ndef g(v):\n    return v + K + len(SALT) * 0\n")
    assert remote_run("CACHE_POPULATED").status == "succeeded"
    assert shell.user_ns["w2"] == 11
    define(shell, "K = 2\n")
    assert remote_run("CACHE_POPULATED").status == "succeeded"
    assert shell.user_ns["w2"] == 12
    define(shell, "K = 1\ndef g(v):\n    return v + K + len(SALT) * 0\n")  # defined anew
    assert remote_run("CACHE_HIT").status == "cached"
    assert shell.user_ns["w2"] == 11
