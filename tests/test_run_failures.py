"""A run that is wrong fails at once with one clear line and leaves nothing behind; a run in which
no site ever trained ends as failed. Real `flwr run` through a private SuperLink."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moehealth.cli import main
from shared_model.run_config import key_comments, pyproject_defaults
from simulation.local_superlink import local_simulation


def test_moehealth_config_lists_every_key_with_default_and_meaning(capsys) -> None:
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(pyproject_defaults())
    assert set(key_comments()) == set(pyproject_defaults()), "every key has a meaning in pyproject"
    assert any(line.startswith("data.num-sites") and "SuperNode" in line for line in lines)


WRONG_VALUES = [  # (overrides of `flwr run . -c`, the one line that names the mistake)
    ("num-server-round=3", "unknown key 'num-server-round'; did you mean 'num-server-rounds'?"),
    ('task="death"', "task must be one of mortality, los, readmission, got 'death'"),
    ('aggregation="trimmed"', "aggregation must be one of mean, trimmed-mean, median"),
    ('resume-from="/nonexistent"', "resume-from: /nonexistent/config.json not found"),
    ('init-from="pyproject.toml"', "init-from: pyproject.toml is not a safetensors model"),
    ('data.mimic-iv="/nonexistent"', "data.mimic-iv: '/nonexistent' is not a directory"),
    ("dp.enabled=true dp.target-epsilon=0", "DP setting 'dp.target-epsilon': must be positive, got 0.0"),
    ('dp.enabled=true dp.sites="site-0, site-9" data.num-sites=3',
     "dp.sites = 'site-0, site-9': 'site-9' is not a site"),
    ('num-server-rounds="3"', "num-server-rounds = '3' must be an integer"),
    ("data.min-cell-size=0", "data.min-cell-size must be at least 1"),
]


@pytest.mark.parametrize(("overrides", "message"), WRONG_VALUES)
def test_config_check_names_each_mistake_without_touching_data(
        overrides: str, message: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MOEHEALTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["config", "--check", overrides]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing generated, read or encoded


def test_config_check_passes_a_good_run_config(capsys) -> None:
    assert main(["config", "--check", 'num-server-rounds=3 task="los" data.num-sites=3']) == 0
    assert "run config OK: num-server-rounds=3" in capsys.readouterr().out


@pytest.mark.slow
def test_fewer_supernodes_than_sites_fails_before_round_1(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = {"data.num-sites": 3, "data.patients": 300, "data.dir": str(tmp_path / "data"),
              "run-dir": str(run_dir)}
    with local_simulation(tmp_path / "flwr", env={"MOEHEALTH_CACHE": str(tmp_path / "cache")}) as sim:
        outcome = sim.run(config, num_supernodes=2, timeout=300)
        assert outcome.status == "finished:failed", outcome.status
        assert ("the simulation has 2 SuperNodes but data.num-sites = 3: run with "
                "--federation-config 'num-supernodes=3'") in outcome.log
        assert not run_dir.exists() and not (tmp_path / "data").exists()  # nothing prepared
        typo = sim.run({**config, "dp.enabled": True, "dp.sites": "site-0, site-9"},
                       num_supernodes=3, timeout=300)  # DP meant for site-9, which is no site
        per_supernode = sim.run({**config, "data.num-sites": 0, "dp.enabled": True,
                                 "dp.sites": "site-2", "task": "death"}, num_supernodes=2,
                                timeout=300)  # with one site per SuperNode there is no site-2
    assert typo.status == "finished:failed", typo.status
    assert "dp.sites = 'site-0, site-9': 'site-9' is not a site" in typo.log
    assert per_supernode.status == "finished:failed", per_supernode.status
    assert "task must be one of mortality, los, readmission, got 'death'" in per_supernode.log
    assert "Traceback" not in per_supernode.log  # the one line, not Flower's traceback of it
    assert not run_dir.exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_run_in_which_no_site_trained_ends_failed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = {"num-server-rounds": 1, "pretrain-rounds": 0, "round-timeout": 1.0,
              "centralized-eval": False, "data.patients": 200,  # data.num-sites 0: 2 SuperNodes
              "data.min-cell-size": 1,  # tiny sites: the data-support check would stop the run
              "data.dir": str(tmp_path / "data"), "run-dir": str(run_dir)}
    with local_simulation(tmp_path / "flwr", env={"MOEHEALTH_CACHE": str(tmp_path / "cache")}) as sim:
        outcome = sim.run(config, num_supernodes=2, timeout=600)
    assert outcome.status == "finished:failed", outcome.status
    assert "no site contributed an update in any of rounds 1..1" in outcome.log
    assert '"accepted": []' in (run_dir / "rounds.jsonl").read_text()
    manifest = json.loads((run_dir / "sites.json").read_text())["sites"]
    assert [site["site-id"] for site in manifest] == ["site-0", "site-1"]  # one per SuperNode
    assert main(["report", str(run_dir)]) == 0  # the report says so in its banner
    page = (run_dir / "report" / "report.html").read_text()
    assert "class='banner FAILED'" in page and "none: global model unchanged" in page
    results = (tmp_path / "results.csv").read_text()  # the cross-run table lists it as failed
    assert "run,FAILED,mortality" in results


def test_moehealth_version(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("moehealth 0.")


def test_every_option_of_every_command_has_help() -> None:
    import argparse

    from moehealth.cli import _parser

    def walk(parser: argparse.ArgumentParser, name: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(sub, f"{name} {sub_name}")
            elif action.help is None:
                yield f"{name} {'/'.join(action.option_strings) or action.dest}"

    assert list(walk(_parser(), "moehealth")) == []


def test_audit_and_report_say_plainly_what_is_wrong(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "rounds.jsonl").write_text("")
    assert main(["audit", str(run)]) == 2
    assert "this run has no privacy ledger: no site trained under DP" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "nowhere.jsonl")]) == 2
    assert "no such ledger file" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    empty = tmp_path / "no-runs"
    empty.mkdir()
    assert main(["results", str(empty)]) == 2
    assert "no run directories in it" in capsys.readouterr().err
    assert not (empty / "results.csv").exists()


def test_report_and_results_tell_a_running_run_from_a_stopped_one(tmp_path: Path, capsys) -> None:
    import subprocess
    import sys

    from server.run_dir import RunDirectory

    run = RunDirectory.create(str(tmp_path / "runs" / "run-a"), {"num-server-rounds": 3})
    run.append("rounds.jsonl", {"round": 1, "kind": "train", "accepted": ["site-0"],
                                "time": 0.0})
    run.mark_running()  # this process stands in for the ServerApp
    assert main(["report", str(run.path)]) == 0
    assert "RUNNING: the run is in progress" in (run.path / "report" / "report.md").read_text()
    assert main(["results", str(tmp_path / "runs")]) == 0
    assert "| run-a | RUNNING |" in capsys.readouterr().out
    run.mark_stopped()
    assert main(["report", str(run.path)]) == 0
    assert "INCOMPLETE: the run stopped" in (run.path / "report" / "report.md").read_text()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (run.path / "running.json").write_text(
        json.dumps({"host": __import__("socket").gethostname(), "pid": int(dead)}))
    assert not RunDirectory.is_running(run.path)  # a marker of a killed ServerApp: stopped


@pytest.mark.slow
def test_the_real_mimic_demo_says_what_it_cannot_estimate(tmp_path: Path, demo_root: Path) -> None:
    """The real MIMIC-IV demo (100 patients) cut into 2 sites: no site's test split reaches the
    cell size and the pooled test split has no death, so the run stops before training with the
    numbers, instead of training 8 rounds that measure nothing. Real data is cached apart from
    synthetic data and keeps its modalities (no synthetic site profile)."""
    run_dir = tmp_path / "run"
    config = {"data.mimic-iv": str(demo_root), "run-dir": str(run_dir)}
    with local_simulation(tmp_path / "flwr", env={"MOEHEALTH_CACHE": str(tmp_path / "cache")}) as sim:
        outcome = sim.run(config, num_supernodes=2, timeout=600)
    assert outcome.status == "finished:failed", outcome.status
    assert "the data cannot support any estimate of mortality (real MIMIC-IV at" in outcome.log
    assert "fewer than 10 positives or negatives, so the site releases no test metric" in outcome.log
    assert "Traceback" not in outcome.log
    assert (tmp_path / "cache" / "mimic").is_dir() and not (tmp_path / "cache" / "synthetic").exists()
    assert not run_dir.exists()  # nothing of the run left behind
