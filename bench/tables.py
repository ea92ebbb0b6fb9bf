"""Rewrite the results tables in the documentation from the stored results (bench/results/).

    python bench/tables.py            # rewrite every marked region of README.md and bench/README.md
    python bench/tables.py --check    # exit 1, naming them, if any region differs from its files

A region is ``<!-- results: bench/results/<experiment>/<name> -->`` ... ``<!-- /results -->``;
simulation/results_store.py renders it from the folder's CSVs and provenance.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DOCUMENTS = (REPO / "README.md", REPO / "bench" / "README.md")


def main() -> int:
    from simulation.results_store import refreshed, stale_regions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale regions")
    args = parser.parse_args()
    stale = {doc: stale_regions(doc) for doc in DOCUMENTS}
    for doc, folders in stale.items():
        for folder in folders:
            print(f"{doc.relative_to(REPO)}: the table from {folder} differs from its results files")
        if folders and not args.check:
            doc.write_text(refreshed(doc.read_text()))
            print(f"{doc.relative_to(REPO)}: rewritten")
    return 1 if args.check and any(stale.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
