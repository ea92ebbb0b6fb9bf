"""Cohort build at MIMIC-IV scale against the gzip floor, measured in one run.

The input is the real MIMIC-IV demo (100 patients, 140 ICU stays, 586k chart events: MIMIC's own
rows per stay-hour and every itemid, not only the 17 variables we keep) tiled ``--copies`` times
with shifted subject/admission/stay identifiers, written gzip-compressed in MIMIC's layout. Then:

- floor: ``gzip -dc`` of chartevents.csv.gz (and of labevents.csv.gz) to /dev/null;
- ``moehealth cohort`` on the tiled set in a fresh process: wall time and peak RSS.

    python bench/cohort_build.py --copies 20          # ~11.7M chart events
    python bench/cohort_build.py --copies 20 --keep /tmp/tiled   # reuse the tiled set next time

Real MIMIC-IV chartevents has ~313M rows; the ratio, not the absolute time, is what carries over.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(os.environ.get("MOEHEALTH_SHARED", REPO.parent / "shared")) / "data" / "mimic-iv-demo-2.2"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from bench.record import BenchTable, add_store_arg  # noqa: E402

# the tables `moehealth cohort --mimic-iv` reads, and the identifier columns each copy shifts
TILED = {"hosp/patients": ("subject_id",), "hosp/admissions": ("subject_id", "hadm_id"),
         "icu/icustays": ("subject_id", "hadm_id", "stay_id"),
         "icu/chartevents": ("subject_id", "hadm_id", "stay_id"),
         "hosp/labevents": ("labevent_id", "subject_id", "hadm_id")}
ID_SHIFT = 100_000_000  # demo identifiers are 8 digits: copy k adds k * ID_SHIFT


def _tile_table(stem: str, id_columns: tuple[str, ...], copies: int, out: Path) -> int:
    """Write ``copies`` copies of one demo table with shifted identifiers; return data rows."""
    with gzip.open(DEMO / f"{stem}.csv.gz", "rt", newline="") as f:
        header, *lines = f.read().splitlines()
    names = header.split(",")
    positions = [names.index(c) for c in id_columns]
    last = max(positions) + 1  # identifiers come before any free-text field: split only up to them
    rows = [line.split(",", last) for line in lines]
    target = out / f"{stem}.csv.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as raw:
        gz = subprocess.Popen(["gzip", "-6"], stdin=subprocess.PIPE, stdout=raw)
        assert gz.stdin is not None
        gz.stdin.write((header + "\n").encode())
        for k in range(copies):
            shifted = []
            for fields in rows:
                fields = list(fields)
                for p in positions:
                    if fields[p]:
                        fields[p] = str(int(fields[p]) + k * ID_SHIFT)
                shifted.append(",".join(fields))
            gz.stdin.write(("\n".join(shifted) + "\n").encode())
        gz.stdin.close()
        if gz.wait() != 0:
            raise RuntimeError(f"gzip failed writing {target}")
    return len(rows) * copies


def tile_demo(copies: int, out: Path) -> dict[str, int]:
    """The tiled MIMIC-IV set under ``out``; rows per table."""
    return {stem: _tile_table(stem, ids, copies, out) for stem, ids in TILED.items()}


def _gunzip_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["gzip", "-dc", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def _cohort_run(mimic_iv: Path, out: Path) -> tuple[float, dict]:
    """`moehealth cohort` in a fresh process: wall seconds (process start included) and its JSON."""
    started = time.perf_counter()
    proc = subprocess.run([BIN / "moehealth", "cohort", "--quiet", "--mimic-iv", str(mimic_iv),
                           "--out", str(out)], check=True, capture_output=True, text=True)
    return time.perf_counter() - started, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="demo copies (586k chart rows each)")
    parser.add_argument("--keep", type=Path, help="write the tiled set here and reuse it if present")
    add_store_arg(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "mimic-iv"
        marker = root / f".tiled-{args.copies}"
        if not marker.is_file():
            started = time.perf_counter()
            rows = tile_demo(args.copies, root)
            marker.write_text(json.dumps(rows))
            print(f"tiled {args.copies} copies of the demo in {time.perf_counter() - started:.0f} s")
        rows = json.loads(marker.read_text())
        chart, lab = root / "icu/chartevents.csv.gz", root / "hosp/labevents.csv.gz"
        floor_chart, floor_lab = _gunzip_seconds(chart), _gunzip_seconds(lab)
        wall, result = _cohort_run(root, Path(tmp) / "cohort.parquet")
    floor = floor_chart + floor_lab
    table = BenchTable(["copies", "chart events", "lab events", "ICU stays",
                        "gzip -dc chartevents s", "gzip -dc both s", "cohort build s (in-process)",
                        "cohort process s", "peak RSS MB", "**build / chartevents floor**",
                        "process / both floors"])
    table.add(args.copies, f"{rows['icu/chartevents']:,}", f"{rows['hosp/labevents']:,}",
              f"{result['stays']:,}", f"{floor_chart:.1f}", f"{floor:.1f}",
              f"{result['seconds']:.1f}", f"{wall:.1f}", f"{result['peak_rss_mb']:.0f}",
              f"**{result['seconds'] / floor_chart:.2f}x**", f"{wall / floor:.2f}x")
    table.summary(f"Chart events per second: {rows['icu/chartevents'] / result['seconds']:,.0f}; "
                  f"extrapolated to MIMIC-IV's 313M chart events: "
                  f"{313e6 / rows['icu/chartevents'] * result['seconds'] / 60:.0f} min.")
    table.store(args.store)


if __name__ == "__main__":
    main()
