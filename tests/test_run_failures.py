"""A run that is wrong fails at once with one clear line and leaves nothing behind; a run in which
no site ever trained ends as failed. Real `flwr run` through a private SuperLink."""

from __future__ import annotations

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
    assert any(line.startswith("data.num-sites") and "SuperNodes" in line for line in lines)


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
    assert typo.status == "finished:failed", typo.status
    assert "dp.sites = 'site-0, site-9': 'site-9' is not a site" in typo.log
    assert not run_dir.exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_run_in_which_no_site_trained_ends_failed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = {"num-server-rounds": 1, "pretrain-rounds": 0, "round-timeout": 1.0,
              "centralized-eval": False, "data.num-sites": 2, "data.patients": 200,
              "data.dir": str(tmp_path / "data"), "run-dir": str(run_dir)}
    with local_simulation(tmp_path / "flwr", env={"MOEHEALTH_CACHE": str(tmp_path / "cache")}) as sim:
        outcome = sim.run(config, num_supernodes=2, timeout=600)
    assert outcome.status == "finished:failed", outcome.status
    assert "no site contributed an update in any of rounds 1..1" in outcome.log
    assert '"accepted": []' in (run_dir / "rounds.jsonl").read_text()
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
