"""`moehealth prepare --preset ...` from an empty cache, as a new user runs it: wall time per
stage, CPU time and peak memory, measured in one run.

    python bench/prepare_from_empty.py --preset benchmark-hospitals
    python bench/prepare_from_empty.py --preset benchmark --store bench/results/performance/DATE-prepare

It runs the real command in a fresh process with ``MOEHEALTH_CACHE`` pointing at an empty folder
(a temporary one unless ``--cache``), and reads each stage's time from the lines the command logs
(image pre-training, synthetic MIMIC, cohort, encoding per site), so the stages are what a user
sees. The floors of the stages are other tables: cohort build against gzip (cohort_build.py),
encoding against the encoders' forward pass (benchmarks.py population-encoding, encoders).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from bench.record import BenchTable, add_store_arg  # noqa: E402

TARGET_S = 600.0  # issue 28: at most 10 minutes on 2 idle cores
# (stage, pattern of the line that ends it: its seconds in group "s"); a pattern can match twice
# (training population, then test population)
STAGES = (
    ("image pre-training (synthetic PACS)", re.compile(r"pre-trained image encoder .*, (?P<s>[\d.]+) s\)")),
    ("synthetic MIMIC", re.compile(r"synthetic MIMIC written to \S+ in (?P<s>[\d.]+) s")),
    ("cohort", re.compile(r"cohort: \d+ stays in (?P<s>[\d.]+) s")),
    ("encoding", re.compile(r"site (?P<site>\S+): (?P<notes>\d+) notes and (?P<films>\d+) images, of "
                            r"which (?P<new_notes>\d+) and (?P<new_films>\d+) newly encoded.* in "
                            r"(?P<s>[\d.]+) s")),
)


def run_prepare(preset: str, cache: Path) -> tuple[float, float, float, list[str]]:
    """Wall seconds, CPU seconds, peak RSS (MiB) and the log lines of one prepare."""
    env = {**os.environ, "MOEHEALTH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.run([str(BIN / "moehealth"), "prepare", "--preset", preset], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"moehealth prepare --preset {preset} failed (exit {proc.returncode}):\n"
                 f"{proc.stderr[-3000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = (proc.stderr + proc.stdout).splitlines()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, lines


def stage_rows(lines: list[str]) -> list[tuple[str, float, str]]:
    """(stage, seconds, what it did) in the order the stages ran; the sites' encoding lines
    are one row."""
    rows: list[tuple[str, float, str]] = []
    populations = {"synthetic MIMIC": 0, "cohort": 0}
    sites = [0.0, 0, 0]  # seconds, notes and films newly encoded
    at = -1  # the sites' row
    for line in lines:
        for stage, pattern in STAGES:
            m = pattern.search(line)
            if not m:
                continue
            seconds = float(m["s"])
            if stage == "encoding" and m["site"] != "test-population":
                if at < 0:
                    at = len(rows)
                    rows.append(("", 0.0, ""))
                sites = [sites[0] + seconds, sites[1] + int(m["new_notes"]),
                         sites[2] + int(m["new_films"])]
                rows[at] = ("encoding, sites, training population", sites[0],
                            f"{sites[1]} notes, {sites[2]} films newly encoded")
            elif stage == "encoding":
                rows.append(("encoding, test population", seconds,
                             f"{m['new_notes']} notes, {m['new_films']} films newly encoded"))
            elif stage in populations:
                which = ("training population", "test population")[min(populations[stage], 1)]
                populations[stage] += 1
                rows.append((f"{stage}, {which}", seconds, ""))
            else:
                rows.append((stage, seconds, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["benchmark", "benchmark-hospitals"],
                        default="benchmark")
    parser.add_argument("--cache", type=Path, help="an empty folder to build into (default: a "
                        "temporary folder, removed afterwards)")
    add_store_arg(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        cache = args.cache or Path(tmp)
        if cache.exists() and any(cache.iterdir()):
            sys.exit(f"--cache {cache} is not empty: the benchmark measures a build from nothing")
        wall, cpu, rss, lines = run_prepare(args.preset, cache)
    table = BenchTable(["stage", "wall (s)", "share of the whole", "work"])
    rows = stage_rows(lines)
    for stage, seconds, what in rows:
        table.add(stage, f"{seconds:.1f}", f"{seconds / wall:.2f}", what)
    rest = wall - sum(s for _, s, _ in rows)
    table.add("everything else (start-up, archive writing, partition, cache keys)",
              f"{rest:.1f}", f"{rest / wall:.2f}", "")
    table.add("**whole command**", f"{wall:.1f}", "1.00",
              f"CPU {cpu:.0f} s, peak RSS {rss:,.0f} MiB")
    table.summary(f"`moehealth prepare --preset {args.preset}` from an empty cache: "
                  f"{wall / 60:.1f} min wall = {wall / TARGET_S:.2f}x the 10-minute target; "
                  f"peak RSS {rss / 1024:.1f} GiB.")
    table.store(args.store)


if __name__ == "__main__":
    main()
