"""Every results table in the documentation is what its stored results files render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simulation.results_store import REPO, refreshed, render, stale_regions

DOCUMENTS = [REPO / "README.md", REPO / "bench" / "README.md"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_tables_equal_their_results_files(document: Path) -> None:
    assert stale_regions(document) == [], "run `python bench/tables.py` (or fix the results)"


def test_a_changed_result_makes_its_table_stale(tmp_path: Path, monkeypatch) -> None:
    stored = sorted((REPO / "bench" / "results" / "models").glob("*/provenance.json"))
    assert stored, "no stored results under bench/results"
    folder = tmp_path / "bench" / "results" / "copy"
    shutil.copytree(stored[0].parent, folder)
    monkeypatch.setattr("simulation.results_store.REPO", tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text("text\n<!-- results: bench/results/copy -->\nold\n<!-- /results -->\n")
    doc.write_text(refreshed(doc.read_text()))
    assert stale_regions(doc) == [] and render(folder) in doc.read_text()
    results = (folder / "results.csv").read_text().splitlines()
    first = results[1].split(",")
    auroc = results[0].split(",").index("auroc")
    first[auroc] = str(float(first[auroc]) + 0.01)
    (folder / "results.csv").write_text("\n".join([results[0], ",".join(first), *results[2:]]) + "\n")
    assert stale_regions(doc) == ["bench/results/copy"]
    provenance = json.loads((folder / "provenance.json").read_text())
    assert {"commit", "command", "machine", "wall_s", "cpu_s", "peak_rss_mib"} <= set(provenance)


def test_robustness_tables_show_moe_health_against_strong_baselines_and_its_seed() -> None:
    import pandas as pd

    from simulation.robustness import robustness_markdown

    models = ["moe-health (seed 0)", "mlp-fusion (seed 0)", "mlp-fusion (seed 1)",
              "logistic regression, all modalities", "logistic regression, EHR"]
    frame = pd.DataFrame([{"task": "mortality", "model": m, "seed": None, "modality": "notes",
                           "fraction_removed": f, "test_set": "independent test population",
                           "n": 100, "positives": 10, "auroc": 0.8 - f / 10, "auroc_low": 0.7,
                           "auroc_high": 0.9, "change": -f / 10, "change_low": -0.2,
                           "change_high": 0.0} for m in models for f in (0.0, 0.5)])
    diffs = pd.DataFrame([{"task": "mortality", "comparison": f"moe-health (seed 0) - {m}",
                           "modality": "notes", "fraction_removed": f, "difference": 0.01,
                           "low": -0.01, "high": 0.03} for m in models[1:] for f in (0.0, 0.5)])
    text = robustness_markdown(frame, diffs)
    assert "| logistic regression, EHR | 0.800 [0.700, 0.900] |" in text  # complete test set
    assert "| mlp-fusion (seed 0) | -0.050 [-0.200, +0.000] |" in text  # change at 50%
    shown = [line for line in text.splitlines() if line.startswith("| moe-health (seed 0) - ")]
    assert [line.split(" | ")[0] for line in shown] == [
        "| moe-health (seed 0) - mlp-fusion (seed 0)",
        "| moe-health (seed 0) - logistic regression, all modalities"]


def test_federated_runs_render_one_row_per_run_and_bold_only_excluding_intervals() -> None:
    import pandas as pd

    from simulation.experiments import runs_markdown

    test_set = "independent test population (n 100, positives 10)"
    frame = pd.DataFrame([{"setting": s, "seed": seed, "test_set": test_set, "test_auroc": 0.8,
                           "low": 0.7, "high": 0.9, "max_site_epsilon_spent": eps}
                          for s, eps in (("epsilon 8", 7.998), ("no-noise", float("inf")))
                          for seed in (0, 1) if (s, seed) != ("no-noise", 1)])
    diffs = pd.DataFrame([{"seed": 0, "comparison": "epsilon 8 - no-noise", "difference": -0.02,
                           "low": -0.03, "high": -0.01},
                          {"seed": 1, "comparison": "epsilon 8 - no-noise", "difference": -0.01,
                           "low": -0.02, "high": 0.001}])
    text = runs_markdown(frame, diffs, "setting")
    assert "| setting | seed 0 | seed 1 | epsilon spent (largest site, any seed) |" in text
    assert "| epsilon 8 | 0.800 [0.700, 0.900] | 0.800 [0.700, 0.900] | 7.998 |" in text
    assert "| no-noise | 0.800 [0.700, 0.900] | not run | inf |" in text
    assert ("| epsilon 8 - no-noise | **-0.020 [-0.030, -0.010]** | -0.010 [-0.020, +0.001] |"
            in text)
    assert test_set in text


def test_a_benchmark_table_is_stored_as_printed_and_rendered_with_its_command(
        tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    sys.path.insert(0, str(REPO))
    from bench.record import BenchTable

    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / "dp_overhead.py"), "--rounds", "3",
                                      "--store", str(tmp_path / "kept")])
    table = BenchTable(["training", "s", "**/ non-DP**"])
    table.add("non-DP", "0.60", "**1.00x**")
    table.add("DP-SGD, every group", "2.40", "**4.00x**")
    table.summary("Site site-0: 1,960 training stays.")
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        table.add("short", "row")
    table.store(tmp_path / "kept")
    printed = capsys.readouterr().out
    rendered = render(tmp_path / "kept")
    rows = "| non-DP | 0.60 | **1.00x** |\n| DP-SGD, every group | 2.40 | **4.00x** |\n"
    assert rows in printed and rows in rendered  # "0.60" stays text, not 0.6
    assert "\nSite site-0: 1,960 training stays.\n" in rendered
    assert "`python bench/dp_overhead.py --rounds 3`" in rendered  # where it was kept is not shown
