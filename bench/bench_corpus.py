"""Overhead of %%flyte_dask on the acceptance corpus of issue 10 (tests/corpus).

Each notebook is executed by a real kernel twice, as tests/test_corpus.py does: plainly (the
baseline) and with ``%%flyte_dask --workers 2`` on every cell tagged ``dask-work``. Prints, per
notebook and for the whole corpus, the median per-cell overhead (magic minus plain seconds of each
dask-work cell whose run succeeded) and the ratio of the notebook's total cell time.

Run: python bench/bench_corpus.py [NAME ...]   (NAME: part of a notebook's file name)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from corpus_harness import corpus_notebooks, execute, median, overheads, total_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only notebooks whose file name contains one")
    names = parser.parse_args().names
    paths = [p for p in corpus_notebooks() if not names or any(n in p.name for n in names)]

    all_overheads: list[float] = []
    plain_total = magic_total = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as scratch:
        for path in paths:  # one kernel at a time: the work cells start clusters of their own
            plain = execute(path, magic=False, cwd=Path(scratch))
            magic = execute(path, magic=True, cwd=Path(scratch))
            cells = overheads(plain, magic)
            plain_seconds, magic_seconds = total_seconds(plain), total_seconds(magic)
            all_overheads += cells
            plain_total += plain_seconds
            magic_total += magic_seconds
            print(
                f"{path.stem}: {len(cells)} of {len(magic.work_cells())} work cells succeeded, "
                f"median overhead {_seconds(median(cells))}, "
                f"total {plain_seconds:.2f}s plain, {magic_seconds:.2f}s magic "
                f"(ratio {magic_seconds / plain_seconds:.1f})",
                flush=True,
            )
    print(
        f"corpus: median per-cell overhead {_seconds(median(all_overheads))} over "
        f"{len(all_overheads)} succeeded dask-work cells; total {plain_total:.2f}s plain, "
        f"{magic_total:.2f}s magic (ratio {magic_total / plain_total:.1f})"
    )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}s"


if __name__ == "__main__":
    main()
