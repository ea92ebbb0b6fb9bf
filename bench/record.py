"""A benchmark's table: printed row by row as it is measured and, with ``--store DIR``, kept
with its provenance so that bench/tables.py renders it into bench/README.md.

    table = BenchTable(["sites", "rounds/s"])
    table.add(5, f"{rate:.3f}")
    table.summary(f"ratio {ratio:.2f}x")   # a line under the table
    table.store(args.store)                # results.csv + summary.md + provenance.json

Cells are stored as the text the script printed (rounding is the benchmark's choice), so the
documentation shows exactly what the run printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simulation.results_store import (  # noqa: E402
    BENCH,
    BENCH_SUMMARY,
    current_commit,
    markdown_header,
    markdown_row,
    measure,
    write_provenance,
)

# the benchmark's whole run: it imports this module before it measures anything
STARTED, COMMIT = time.time(), current_commit()


def add_store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="also keep the table with its provenance in DIR (e.g. "
                             "bench/results/performance/<date>-<name>) for bench/tables.py")


class BenchTable:
    """One Markdown table, printed as it fills; ``store`` writes it with its provenance."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = [str(c) for c in columns]
        self.rows: list[list[str]] = []
        self.lines: list[str] = []
        print(markdown_header(self.columns), flush=True)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])
        print(markdown_row(self.rows[-1]), flush=True)

    def summary(self, line: str) -> None:
        """A sentence under the table (a ratio between rows, the machine state)."""
        self.lines.append(line)
        print(line, flush=True)

    def store(self, folder: Path | None, note: str = "") -> None:
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self.rows, columns=self.columns).to_csv(folder / "results.csv", index=False)
        (folder / BENCH_SUMMARY).write_text("".join(line + "\n" for line in self.lines))
        provenance = measure(BENCH, "", "", [], STARTED, COMMIT,
                             command="python " + " ".join(
                                 [Path(sys.argv[0]).as_posix().split(f"{REPO.name}/")[-1],
                                  *_public_args(sys.argv[1:])]))
        write_provenance(folder, dataclasses.replace(provenance, note=note))
        print(f"stored in {folder}")


def _public_args(args: list[str]) -> list[str]:
    """The command line without ``--store DIR`` (where it was kept is not how it ran)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--store":
            skip = True
        elif not arg.startswith("--store="):
            out.append(arg)
    return out
