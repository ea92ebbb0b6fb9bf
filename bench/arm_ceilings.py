"""What a benchmark arm allows, before any model runs on it: the ceilings of its independent test
population and how informative its modality availability is.

Generates (or reuses) the arm's test population and builds its cohort; encodes nothing and fits
no model. Per task: AUROC [95% bootstrap CI] of the true probability and of the reachable
ceilings (all written data; EHR only), from the generator's ``oracle.csv``; per care unit and by
outcome, the share of stays with an in-window report and film.

    python bench/arm_ceilings.py --presets benchmark benchmark-hospitals [--store DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from bench.record import BenchTable  # noqa: E402
from client.mimic.cohort import read_cohort  # noqa: E402
from shared_model.run_config import TASKS, pyproject_defaults  # noqa: E402
from simulation.bootstrap import auroc_interval  # noqa: E402
from simulation.prepare import FederationData, test_population_cohort  # noqa: E402


def ceilings(table: BenchTable, arm: str, cohort: pd.DataFrame, oracle: pd.DataFrame) -> None:
    for task in TASKS:
        known = cohort[cohort[task].notna()]
        labels = known[task].to_numpy()
        scores = oracle.loc[known.stay_id]
        cells = [str(auroc_interval(labels, scores[column].to_numpy()))
                 for column in (task, f"{task}_reachable", f"{task}_reachable_ehr")]
        table.add(arm, task, len(labels), int(labels.sum()), *cells)


def availability(cohort: pd.DataFrame) -> BenchTable:
    table = BenchTable(["care unit", "stays", "with report", "with film", "mortality"])
    for unit, group in cohort.groupby("first_careunit"):
        table.add(unit, len(group), f"{group.has_notes.mean():.0%}", f"{group.has_cxr.mean():.0%}",
                  f"{group.mortality.mean():.1%}")
    table.add("all", len(cohort), f"{cohort.has_notes.mean():.0%}", f"{cohort.has_cxr.mean():.0%}",
              f"{cohort.mortality.mean():.1%}")
    by_outcome = cohort.groupby("mortality")[["has_notes", "has_cxr"]].mean()
    table.summary(f"Died in hospital: report {by_outcome.loc[1.0, 'has_notes']:.0%}, film "
                  f"{by_outcome.loc[1.0, 'has_cxr']:.0%}; survived: report "
                  f"{by_outcome.loc[0.0, 'has_notes']:.0%}, film "
                  f"{by_outcome.loc[0.0, 'has_cxr']:.0%}.")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["benchmark-hospitals"],
                        help="the arms' presets (one ceilings table, one row per arm and task)")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="keep the ceilings in DIR/ceilings and each arm's availability in "
                             "DIR/availability-PRESET, with their provenance, for "
                             "bench/tables.py")
    args = parser.parse_args()
    table, cohorts = None, {}
    for preset in args.presets:
        data = FederationData.from_run_config({**pyproject_defaults(), "data.preset": preset})
        cohorts[preset] = read_cohort(test_population_cohort(data, progress=False))
        oracle = pd.read_csv(data.test_oracle_csv()).set_index("stay_id")
        print(f"preset {preset} (arm {data.arm}): independent test population of "
              f"{data.test_patients} patients -> {len(cohorts[preset])} stays")
        table = table or BenchTable(["arm", "task", "n", "positives", "true probability",
                                     "reachable, all modalities", "reachable, EHR"])
        ceilings(table, f"`{data.arm}`", cohorts[preset], oracle)
    assert table is not None  # --presets has at least one
    table.store(args.store / "ceilings" if args.store else None)
    for preset, cohort in cohorts.items():
        print(f"availability in the test population of {preset} (in-window report / film):")
        availability(cohort).store(args.store / f"availability-{preset}" if args.store else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
