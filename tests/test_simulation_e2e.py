"""A small real Flower simulation (3 sites, 2 rounds) through a private SuperLink, then a resume."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from moehealth.cli import main
from simulation.experiments import site_local_models
from simulation.local_superlink import local_simulation

pytestmark = pytest.mark.slow


def _ray_processes() -> int:
    out = subprocess.run(["pgrep", "-fc", "ray::"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def test_flwr_run_end_to_end_and_resume(tmp_path: Path, browser_render) -> None:
    run_dir = tmp_path / "run"
    config = {"num-server-rounds": 2, "pretrain-rounds": 1,  # data.num-sites 0: one per SuperNode
              "data.patients": 300, "data.scheme": "careunit", "data.dir": str(tmp_path / "data"),
              "run-dir": str(run_dir), "dp.enabled": True, "dp.sites": "site-0",
              "dp.target-epsilon": 20.0, "dp.planned-rounds": 3, "tracking": "tensorboard",
              "data.min-cell-size": 1}  # tiny sites: let every routing average through
    with local_simulation(tmp_path / "flwr", env={"MOEHEALTH_CACHE": str(tmp_path / "cache")}) as sim:
        first = sim.run(config, num_supernodes=3)
        assert first.ok, first.log[-3000:]
        assert "Final results" not in first.log  # Flower's dump: the cross-site table ends it
        assert f"report: moehealth report {run_dir}" in first.log
        rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
        train = [r for r in rounds if r["kind"] == "train"]
        assert [r["phase"] for r in train] == ["pretrain", "joint"]
        assert all(len(r["bytes_received"]) == 3 for r in train)
        no_cxr = [s for s, groups in _site_groups(train[1]).items() if "encoders.cxr" not in groups]
        assert no_cxr, "the default profile leaves one site without chest X-rays"
        table = (run_dir / "cross_site.md").read_text()
        assert all(f"site-{i}" in table for i in (1, 2)) and "pooled" in table
        assert "site-0" not in table  # a DP site shares no evaluation metrics by default
        pooled = [r for r in rounds if r["kind"] == "centralized-eval"][-1]
        assert pooled["pooled.positives"] > 0 and 0 <= pooled["pooled.threshold"] <= 1
        assert (run_dir / "checkpoints" / "round-002.safetensors").is_file()

        ledger_before = (run_dir / "privacy_ledger.jsonl").read_text()
        attack = sim.run({**config, "num-server-rounds": 3, "run-dir": "", "batch-size": 100_000,
                          "resume-from": str(run_dir)}, num_supernodes=3)  # q = 1 for site-0
        assert attack.status == "finished:failed", attack.status
        assert "site site-0: this round's values would change the DP mechanism" in attack.log
        assert (run_dir / "privacy_ledger.jsonl").read_text() == ledger_before  # nothing lost
        events = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        resumed = sim.run({**config, "num-server-rounds": 3, "run-dir": "",
                           "resume-from": str(run_dir), "tracking": "none",
                           "site-local-groups": "gate"}, num_supernodes=3)
        assert resumed.ok, resumed.log[-3000:]
        # from round 3 each site keeps its own gate: trained, kept at the site, never sent
        last_train = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()
                      if '"kind": "train"' in x][-1]
        assert "gate" not in last_train["contributors"] and "experts.ehr" in last_train["contributors"]
        own = site_local_models(run_dir, resumed.run_id, ("gate",))
        assert sorted(own) == ["site-0", "site-1", "site-2"]
        # "tracking" given at its pyproject default still overrides the stored "tensorboard"
        assert sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")) == events
        rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rounds if r["kind"] == "train"] == [1, 2, 3]
        assert (run_dir / "checkpoints" / "round-003.safetensors").is_file()
    ledger = [json.loads(x) for x in (run_dir / "privacy_ledger.jsonl").read_text().splitlines()]
    assert [(r["site"], r["round"]) for r in ledger] == [("site-0", 1), ("site-0", 2), ("site-0", 3)]
    eps = [r["epsilon"] for r in ledger]
    assert eps[0] < eps[1] < eps[2] <= 20.0  # the resumed run continued the budget
    assert ledger[2]["steps_total"] == 3 * ledger[0]["steps_round"]
    # the resumed round spends at the mechanism's rate, not the budget left (one sigma throughout)
    assert len({r["noise_multiplier"] for r in ledger}) == 1
    assert main(["audit", str(run_dir / "privacy_ledger.jsonl"), "--verify"]) == 0
    with (run_dir / "privacy_ledger.jsonl").open("a") as ledger_file:
        ledger_file.write('{"round": 4, "site": "si')  # a line cut short by a crash
    assert main(["report", str(run_dir)]) == 0  # the report skips it, as for every run file
    report = (run_dir / "report" / "report.md").read_text()
    assert "Privacy budget per site" in report and "Cross-site evaluation" in report
    assert "Gate: routing weight per expert" in report
    assert "Test AUROC per modality combination" in report
    assert "Reachable ceiling on the pooled test set: AUROC 0." in report  # synthetic data
    assert "Data: synthetic MIMIC-format, 300 patients" in report
    gate = [r for r in rounds if r["kind"] == "evaluate"][-1]["gate"]
    assert sum(gate["expert_share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert gate["misrouted"] == {}  # the default gate routes no stay to a modality it lacks
    for png in ("auroc.png", "loss.png", "train-objective.png", "epsilon.png",
                "routing-site-1.png", "gate.png", "reliability.png", "decision_curve.png"):
        assert (run_dir / "report" / png).stat().st_size > 1000, png
    page = (run_dir / "report" / "report.html").read_text()
    assert "class='banner finished'" in page and page.count("data:image/png;base64,") >= 6
    assert "<th>positives (all splits)</th>" in page and "<td>num-server-rounds</td>" in page
    assert "Calibration (pooled test split)" in page and "<th>no reply</th>" in page
    assert "Calibration slope" in page and "Clinical usefulness: decision curve" in page
    assert "Platt recalibration fitted on the validation split" in page
    assert "Subgroups (pooled test split)" in page and "age: " in page
    assert "care unit: " in page and "site: " in page  # the sites are care units here
    card = json.loads((run_dir / "report" / "model_card.json").read_text())
    assert card["8 outcome"].startswith("in-hospital death") and "ethics approval" in card
    last_pooled = [r for r in rounds if r["kind"] == "centralized-eval"][-1]
    assert card["20 performance"]["auroc"][0] == pytest.approx(last_pooled["pooled.auroc"])
    assert "Model card (TRIPOD+AI)" in page
    if browser_render:  # a real browser renders the page (CI installs one; see below)
        shown = browser_render(run_dir / "report" / "report.html", tmp_path)
        assert shown["console"] == [] and shown["broken"] == 0 and shown["images"] >= 7, shown
        for section in ("Model card (TRIPOD+AI)", "Calibration (pooled test split)",
                        "Clinical usefulness: decision curve (pooled test split)",
                        "Subgroups (pooled test split)", "Privacy budget per site"):
            assert section in shown["headings"], shown["headings"]
        assert shown["screenshot"].stat().st_size > 50_000  # a drawn page, not a blank one
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # tracking = tensorboard
    assert main(["results", str(tmp_path)]) == 0
    assert "run,finished,mortality,3," in (tmp_path / "results.csv").read_text()
    assert _ray_processes() == 0


def _site_groups(train_round: dict) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    for group, sites in train_round["contributors"].items():
        for site in sites:
            groups.setdefault(site, set()).add(group)
    return groups


def test_a_real_browser_renders_reports_in_ci(browser_render) -> None:
    """The browser check above runs wherever Chromium is installed; CI must have it."""
    if browser_render is None:
        if os.environ.get("CI"):
            pytest.fail("CI has no Chromium: .ci/run installs chromium-headless-shell (Debian)")
        pytest.skip("no Chromium here (apt-get install chromium-headless-shell): the report's "
                    "browser check in test_flwr_run_end_to_end_and_resume is skipped")
