"""What a benchmark arm allows, before any model runs on it: the ceilings of its independent test
population and how informative its modality availability is.

Generates (or reuses) the arm's test population and builds its cohort; encodes nothing and fits
no model. Per task: AUROC [95% bootstrap CI] of the true probability and of the reachable
ceilings (all written data; EHR only), from the generator's ``oracle.csv``; per care unit and by
outcome, the share of stays with an in-window report and film.

    python bench/arm_ceilings.py --preset benchmark-hospitals
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from client.mimic.cohort import read_cohort  # noqa: E402
from shared_model.run_config import TASKS, pyproject_defaults  # noqa: E402
from simulation.bootstrap import auroc_interval  # noqa: E402
from simulation.prepare import FederationData, test_population_cohort  # noqa: E402


def ceilings(cohort: pd.DataFrame, oracle: pd.DataFrame) -> list[str]:
    lines = ["| task | n | positives | true probability | reachable, all modalities | "
             "reachable, EHR |", "|---|---|---|---|---|---|"]
    for task in TASKS:
        known = cohort[cohort[task].notna()]
        labels = known[task].to_numpy()
        scores = oracle.loc[known.stay_id]
        cells = [str(auroc_interval(labels, scores[column].to_numpy()))
                 for column in (task, f"{task}_reachable", f"{task}_reachable_ehr")]
        lines.append(f"| {task} | {len(labels)} | {int(labels.sum())} | " + " | ".join(cells) + " |")
    return lines


def availability(cohort: pd.DataFrame) -> list[str]:
    lines = ["| care unit | stays | with report | with film | mortality |", "|---|---|---|---|---|"]
    for unit, group in cohort.groupby("first_careunit"):
        lines.append(f"| {unit} | {len(group)} | {group.has_notes.mean():.0%} | "
                     f"{group.has_cxr.mean():.0%} | {group.mortality.mean():.1%} |")
    lines.append(f"| all | {len(cohort)} | {cohort.has_notes.mean():.0%} | "
                 f"{cohort.has_cxr.mean():.0%} | {cohort.mortality.mean():.1%} |")
    by_outcome = cohort.groupby("mortality")[["has_notes", "has_cxr"]].mean()
    lines.append("")
    lines.append(f"Died in hospital: report {by_outcome.loc[1.0, 'has_notes']:.0%}, film "
                 f"{by_outcome.loc[1.0, 'has_cxr']:.0%}; survived: report "
                 f"{by_outcome.loc[0.0, 'has_notes']:.0%}, film {by_outcome.loc[0.0, 'has_cxr']:.0%}.")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="benchmark-hospitals", help="the arm's preset")
    args = parser.parse_args()
    started = time.perf_counter()
    data = FederationData.from_run_config({**pyproject_defaults(), "data.preset": args.preset})
    cohort = read_cohort(test_population_cohort(data, progress=False))
    oracle = pd.read_csv(data.test_oracle_csv()).set_index("stay_id")
    print(f"preset {args.preset} (arm {data.arm}): independent test population of "
          f"{data.test_patients} patients -> {len(cohort)} stays; {platform.node()}, "
          f"{time.perf_counter() - started:.0f} s\n")
    print("\n".join(ceilings(cohort, oracle)) + "\n")
    print("\n".join(availability(cohort)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
