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
import threading
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
    # only where drawn in a worker (its line says [synthetic PACS]); otherwise inside the
    # pre-training's time
    ("synthetic PACS archive, drawn beside the generation",
     re.compile(r"\[synthetic PACS\] .*synthetic PACS archive: \d+ films drawn in (?P<s>[\d.]+) s")),
    ("cohort", re.compile(r"cohort: \d+ stays in (?P<s>[\d.]+) s")),
    ("encoding", re.compile(r"site (?P<site>\S+): (?P<notes>\d+) notes and (?P<films>\d+) images, of "
                            r"which (?P<new_notes>\d+) and (?P<new_films>\d+) newly encoded.* in "
                            r"(?P<s>[\d.]+) s")),
)


def run_prepare(preset: str, cache: Path) -> tuple[float, float, float, list[tuple[float, str]]]:
    """Wall seconds, CPU seconds, peak RSS (MiB: the sum over the command's processes, sampled
    every 0.2 s, since the populations are generated in two at once) and the log lines of one
    prepare, each with the second it arrived."""
    import psutil

    env = {**os.environ, "MOEHEALTH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "moehealth"), "prepare", "--preset", preset], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0.0]

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in proc.stdout]
    proc.wait()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        sys.exit(f"moehealth prepare --preset {preset} failed (exit {proc.returncode}):\n{tail}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, usage.ru_utime + usage.ru_stime, peak[0], lines


def stage_rows(lines: list[tuple[float, str]]) -> list[tuple[str, float, str, float]]:
    """(stage, seconds, what it did, second it ended) in the order the stages ended; the sites'
    encoding lines are one row. The training and the test population's lines say which they
    are when the two are generated side by side (``[test population]``)."""
    rows: list[tuple[str, float, str, float]] = []
    populations = {"synthetic MIMIC": 0, "cohort": 0}
    sites = [0.0, 0, 0]  # seconds, notes and films newly encoded
    at = -1  # the sites' row
    for arrived, line in lines:
        for stage, pattern in STAGES:
            m = pattern.search(line)
            if not m:
                continue
            seconds = float(m["s"])
            if stage == "encoding" and m["site"] != "test-population":
                if at < 0:
                    at = len(rows)
                    rows.append(("", 0.0, "", 0.0))
                sites = [sites[0] + seconds, sites[1] + int(m["new_notes"]),
                         sites[2] + int(m["new_films"])]
                rows[at] = ("encoding, sites, training population", sites[0],
                            f"{sites[1]} notes, {sites[2]} films newly encoded", arrived)
            elif stage == "encoding":
                rows.append(("encoding, test population", seconds,
                             f"{m['new_notes']} notes, {m['new_films']} films newly encoded",
                             arrived))
            elif stage in populations:
                labelled = re.search(r"\[(training|test) population\]", line)
                which = (f"{labelled[1]} population" if labelled else
                         ("training population", "test population")[min(populations[stage], 1)])
                populations[stage] += 1
                rows.append((f"{stage}, {which}", seconds, "", arrived))
            else:
                rows.append((stage, seconds, "", arrived))
    return rows


def covered(rows: list[tuple[str, float, str, float]]) -> float:
    """Seconds of wall time in which at least one stage ran (stages side by side count once;
    a stage runs for its seconds up to the line that ends it; the sites' encoding row, whose
    seconds add up several sites, is taken as one stretch)."""
    spans = sorted((end - seconds, end) for _, seconds, _, end in rows)
    total, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


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
    table = BenchTable(["stage", "wall (s)", "share of the whole", "ended at (s)", "work"])
    rows = stage_rows(lines)
    for stage, seconds, what, end in rows:
        table.add(stage, f"{seconds:.1f}", f"{seconds / wall:.2f}", f"{end:.0f}", what)
    busy = covered(rows)
    side_by_side = sum(s for _, s, _, _ in rows) - busy
    rest = wall - busy
    table.add("everything else (start-up, archive writing, partition, cache keys)",
              f"{rest:.1f}", f"{rest / wall:.2f}", "", "")
    table.add("**whole command**", f"{wall:.1f}", "1.00", f"{wall:.0f}",
              f"CPU {cpu:.0f} s, peak RSS {rss:,.0f} MiB (all its processes)")
    if side_by_side > 0.5:
        table.summary(f"Stages that ran side by side: {side_by_side:.1f} s of their time "
                      "overlapped another stage's (the shares add up to more than 1 by that).")
    table.summary(f"`moehealth prepare --preset {args.preset}` from an empty cache: "
                  f"{wall / 60:.1f} min wall = {wall / TARGET_S:.2f}x the 10-minute target; "
                  f"peak RSS {rss / 1024:.1f} GiB.")
    table.store(args.store)


if __name__ == "__main__":
    main()
