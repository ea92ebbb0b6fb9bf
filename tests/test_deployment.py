"""Real deployment processes on loopback: TLS SuperLink, authenticated SuperNodes, the app."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _load_rehearsal():
    spec = importlib.util.spec_from_file_location("rehearsal", REPO / "deploy" / "rehearsal.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rehearsal"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


reh = _load_rehearsal()


def _leftovers(workdir: Path) -> int:
    out = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True)
    return len(out.stdout.split())


def test_tls_federation_of_authenticated_hospitals(tmp_path: Path, hospital_data) -> None:
    """Through the coordinator's proxy with mutual TLS when nginx is installed (as in CI)."""
    proxy = shutil.which("nginx") is not None
    with reh.rehearsal(tmp_path) as r:
        r.coordinator(proxy=proxy, mtls=proxy)
        for i in range(2):
            r.supernode(f"hospital-{i}", r.hospital(f"hospital-{i}", hospital_data[i],
                                                    privacy={"enabled": i == 0,
                                                             "target_epsilon": 10.0,
                                                             "planned_rounds": 2}))
        r.wait_for_nodes(2)
        status, log = r.run_app({"num-server-rounds": 2, "pretrain-rounds": 1, "min-sites": 2,
                                 "evaluate-every": 2, "run-dir": str(tmp_path / "run")})
        assert status == "finished:completed", log[-3000:]
    rounds = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds if r["kind"] == "evaluate"] == [2]  # evaluate-every
    trained = [r for r in rounds if r["kind"] == "train"]
    assert [set(r["bytes_received"]) for r in trained] == [{"hospital-0", "hospital-1"}] * 2
    ledger = tmp_path / "hospitals" / "hospital-0" / "work" / "privacy" / "ledger.jsonl"
    assert len(ledger.read_text().splitlines()) == 2  # the hospital's own ledger
    assert len((tmp_path / "run" / "privacy_ledger.jsonl").read_text().splitlines()) == 2
    if proxy:  # every hospital request went through the proxy, each with its client certificate
        access = (tmp_path / "proxy-state" / "nginx-access.log").read_text()
        assert "push-messages" in access and "CN=hospital-0" in access and "CN=hospital-1" in access
    time.sleep(1)
    assert _leftovers(tmp_path) == 0


def test_a_killed_hospital_is_recorded_and_rejoins(tmp_path: Path, hospital_data) -> None:
    """A hospital's SuperNode crashes (SIGKILL) after round 1: the other goes on, the silence is
    recorded, `moehealth site run` restarts it and retries until the SuperLink admits it again
    (refused for ~50 s after a crash), and it contributes in a later round."""
    with reh.rehearsal(tmp_path) as r:
        r.coordinator()
        configs = [r.hospital(f"hospital-{i}", hospital_data[i]) for i in range(2)]
        for i, config in enumerate(configs):
            r.supernode(f"hospital-{i}", config)
        r.wait_for_nodes(2)
        rounds_file = tmp_path / "run" / "rounds.jsonl"

        def crash_after_first_round() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if rounds_file.is_file() and '"kind": "train"' in rounds_file.read_text():
                    supervisor = psutil.Process(r.procs["hospital-1"].pid)
                    for child in supervisor.children(recursive=True):  # the SuperNode's tree
                        child.kill()
                    return
                time.sleep(0.5)

        killer = threading.Thread(target=crash_after_first_round, daemon=True)
        killer.start()
        status, log = r.run_app({"num-server-rounds": 6, "pretrain-rounds": 1, "min-sites": 1,
                                 "round-timeout": 30.0, "evaluate-every": 6,
                                 "run-dir": str(tmp_path / "run")})
        killer.join(timeout=5)
        assert status == "finished:completed", log[-3000:]
        supernode_log = (tmp_path / "logs" / "hospital-1.log").read_text()
    trained = [json.loads(x) for x in rounds_file.read_text().splitlines()
               if json.loads(x)["kind"] == "train"]
    senders = [sorted(r["bytes_received"]) for r in trained]
    assert senders[0] == ["hospital-0", "hospital-1"], senders
    silent = [r for r in trained[1:] if "hospital-1" in r["no_reply"]]
    assert silent and "no reply within round-timeout" in silent[0]["no_reply"]["hospital-1"], senders
    assert all("hospital-0" in s for s in senders)  # the other went on every round
    rejoined = [r["round"] for r in trained if r["round"] > silent[0]["round"]
                and "hospital-1" in r["bytes_received"]]
    assert rejoined, (supernode_log[-3000:], senders)
    assert "starting it again" in supernode_log
