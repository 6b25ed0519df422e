"""Run-time helpers for `%time`, `%timeit` and `%%time` inside a `%%flyte_dask` cell.

The translated cell (see notebook_syntax.py) calls the names in :data:`TIMING_GLOBALS`. They run
wherever the task runs: in the kernel, or in a Flyte pod that has neither this package nor
IPython. So this module is shipped by value and imports only the standard library. What they
print is IPython's own output (IPython/core/magics/execution.py: `time`, `timeit`,
`TimeitResult`, `_format_time`), written to `sys.stdout` as looked up at call time.
"""

from __future__ import annotations

import ast
import gc
import itertools
import math
import sys
import time
import timeit
from collections.abc import Callable, Iterator, Mapping
from typing import Final, TypeVar

_T = TypeVar("_T")
_Inner = Callable[[Iterator[None], Callable[[], float]], float]

TIME_NAME: Final = "flyte_dask_time"
TIMEIT_NAME: Final = "flyte_dask_timeit"

# IPython reports compiling (%timeit) above this many seconds.
_COMPILE_REPORT: Final = 0.1
# IPython's default for -r: max(timeit.default_repeat, 7), and timeit's is 5.
DEFAULT_REPEAT: Final = 7
# timeit's loop, filled with the statement as an AST (IPython's template): no call per loop.
_TEMPLATE: Final = """\
def inner(_it, _timer):
    setup
    _t0 = _timer()
    for _i in _it:
        stmt
    _t1 = _timer()
    return _t1 - _t0
"""

if sys.platform == "win32":

    def _cpu_times() -> tuple[float, float]:
        """(user, system) CPU seconds; Windows cannot tell system time apart."""
        return time.process_time(), 0.0

else:
    import resource

    def _cpu_times() -> tuple[float, float]:
        """(user, system) CPU seconds of this process, as IPython's `clock2`."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime, usage.ru_stime


def _cpu_total() -> float:
    """IPython's `clock`: user + system CPU seconds."""
    user, system = _cpu_times()
    return user + system


def _printable(text: str) -> bool:
    """Whether stdout can show `text` (IPython's test).

    A stream that names no encoding (a capture buffer in a remote task) is taken to be able to:
    its text ends up in the notebook, which is UTF-8.
    """
    encoding = getattr(sys.stdout, "encoding", None)
    if not encoding:
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _format_long(timespan: float) -> str:
    """A minute or more: `1d 2h 3min 4s`, as IPython writes it."""
    parts = [("d", 60 * 60 * 24), ("h", 60 * 60), ("min", 60), ("s", 1)]
    words = []
    leftover = timespan
    for suffix, length in parts:
        value = int(leftover / length)
        if value > 0:
            leftover = leftover % length
            words.append(f"{value}{suffix}")
        if leftover < 1:
            break
    return " ".join(words)


def format_time(timespan: float, precision: int = 3) -> str:
    """IPython's `_format_time`: `1.23 s`, `45.6 ms`, `7.89 µs`, `12 ns`, `1min 3s`."""
    if timespan >= 60.0:
        return _format_long(timespan)
    micro = "\u03bcs" if _printable("\u03bc") else "us"
    units = ["s", "ms", micro, "ns"]
    scaling = [1, 1e3, 1e6, 1e9]
    # The unit whose value is at least 1 (IPython rounds the exponent down to a multiple of 3).
    order = min(-(math.floor(math.log10(timespan)) // 3), 3) if timespan > 0.0 else 3
    return f"{timespan * scaling[order]:.{precision}g} {units[order]}"


def format_cpu_and_wall(user: float, system: float, wall: float) -> str:
    """What IPython's `%time` prints after running the statement."""
    if sys.platform == "win32":
        cpu = f"CPU times: total: {format_time(user + system)}"
    else:
        total = format_time(user + system)
        cpu = f"CPU times: user {format_time(user)}, sys: {format_time(system)}, total: {total}"
    return f"{cpu}\nWall time: {format_time(wall)}"


class Timer:
    """`%time`: `with flyte_dask_time(): STATEMENT` or `flyte_dask_time().result((EXPR))`.

    The clocks start when the timer is made, so the expression form times the argument that
    Python evaluates right after it; the `with` form also prints when the statement raises, as
    IPython does before re-raising.
    """

    def __init__(self) -> None:
        # IPython's order: the wall clock outside the CPU clock.
        self._wall = time.time()
        self._user, self._system = _cpu_times()

    def __enter__(self) -> Timer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()  # returns None: an error keeps propagating

    def result(self, value: _T) -> _T:
        """Stops the clocks, prints, and gives back the timed expression's value."""
        self.stop()
        return value

    def stop(self) -> None:
        user, system = _cpu_times()
        wall = time.time() - self._wall
        print(format_cpu_and_wall(user - self._user, system - self._system, wall))


def format_timeit(all_runs: list[float], loops: int, precision: int = 3) -> str:
    """IPython's `TimeitResult.__str__`: mean ± std. dev. of the per-loop times."""
    timings = [run / loops for run in all_runs]
    mean = math.fsum(timings) / len(timings)
    std = (math.fsum([(t - mean) ** 2 for t in timings]) / len(timings)) ** 0.5
    pm = "\xb1" if _printable("\xb1") else "+-"
    runs = len(all_runs)
    return (
        f"{format_time(mean, precision)} {pm} {format_time(std, precision)} per loop"
        f" (mean {pm} std. dev. of {runs} run{'' if runs == 1 else 's'},"
        f" {loops:,} loop{'' if loops == 1 else 's'} each)"
    )


def _compile_inner(statement: str, names: Mapping[str, object]) -> tuple[_Inner, float]:
    """The timing loop around `statement`, and how long compiling it took (IPython's way)."""
    template = ast.parse(_TEMPLATE)
    function = template.body[0]
    if not isinstance(function, ast.FunctionDef):  # pragma: no cover - the template is fixed
        raise TypeError("bad timeit template")
    loop = function.body[2]
    if not isinstance(loop, ast.For):  # pragma: no cover - the template is fixed
        raise TypeError("bad timeit template")
    function.body[0] = ast.Pass()  # line mode: no setup
    loop.body = ast.parse(statement).body or [ast.Pass()]
    ast.fix_missing_locations(template)
    start = _cpu_total()
    code = compile(template, "<magic-timeit>", "exec")
    compile_time = _cpu_total() - start
    scope: dict[str, object] = {}
    # A copy: like IPython's, the statement reads the cell's names but binds none of them.
    exec(code, dict(names), scope)
    inner = scope["inner"]
    if not callable(inner):  # pragma: no cover - defined just above
        raise TypeError("bad timeit template")
    return inner, compile_time


def _time_loops(inner: _Inner, number: int, timer: Callable[[], float]) -> float:
    """One measurement of `number` loops, the garbage collector off (timeit.Timer.timeit)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return inner(itertools.repeat(None, number), timer)
    finally:
        if gc_was_enabled:
            gc.enable()


def _autorange(inner: _Inner, timer: Callable[[], float]) -> int:
    """IPython's loop count: the first power of ten whose run takes at least 0.2 s."""
    number = 1
    for index in range(10):
        number = 10**index
        if _time_loops(inner, number, timer) >= 0.2:
            break
    return number


_TIMERS: Final[Mapping[str, Callable[[], float]]] = {
    "default": timeit.default_timer,  # IPython's default
    "time": time.time,  # -t
    "clock": _cpu_total,  # -c
}


def timeit_statement(
    statement: str,
    names: Mapping[str, object],
    *,
    number: int = 0,
    repeat: int = DEFAULT_REPEAT,
    precision: int = 3,
    quiet: bool = False,
    timer: str = "default",
) -> None:
    """`%timeit [-n N] [-r R] [-p P] [-q] [-t|-c] STATEMENT`, printing what IPython prints.

    `names` holds the values of the names the statement reads (the translation passes them
    explicitly, so the cell's analysis sees them as reads); `number=0` picks the loop count.
    """
    clock = _TIMERS[timer]
    inner, compile_time = _compile_inner(statement, names)
    if number == 0:
        number = _autorange(inner, clock)
    all_runs = [_time_loops(inner, number, clock) for _ in range(repeat)]
    if quiet:
        return
    best, worst = min(all_runs) / number, max(all_runs) / number
    if worst > 4 * best and best > 0 and worst > 1e-6:
        print(
            f"The slowest run took {worst / best:0.2f} times longer than the fastest. This could"
            " mean that an intermediate result is being cached."
        )
    print(format_timeit(all_runs, number, precision))
    if compile_time > _COMPILE_REPORT:
        print(f"Compiler time: {compile_time:.2f} s")


#: The names the translated cell refers to; they go into the task function's globals.
TIMING_GLOBALS: Final[dict[str, object]] = {TIME_NAME: Timer, TIMEIT_NAME: timeit_statement}
