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
