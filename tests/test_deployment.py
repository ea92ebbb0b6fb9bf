"""Real deployment processes on loopback: TLS SuperLink, authenticated SuperNodes, the app."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(REPO / "deploy"))  # deploy/ holds scripts, not a package
import rehearsal as reh  # noqa: E402


def _leftovers(workdir: Path) -> int:
    out = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True)
    return len(out.stdout.split())


def test_a_deployment_survives_a_hospital_crash_and_resumes(tmp_path: Path, hospital_data) -> None:
    """Two hospitals through the coordinator's proxy with mutual TLS (when nginx
    is installed, as in CI), the site registry naming them. Hospital-1's SuperNode crashes
    (SIGKILL) after round 1: round 2 goes on with hospital-0 and records the silence; `moehealth
    site run` restarts the SuperNode with backoff until the SuperLink admits it again (refused
    for ~50 s after a crash); then `resume-from` continues the run and hospital-1 contributes in
    round 3. At the end no process is left behind."""
    proxy = reh.proxy_available()
    with reh.rehearsal(tmp_path) as r:
        r.coordinator(proxy=proxy, mtls=proxy)
        for i in range(2):
            r.supernode(f"hospital-{i}", r.hospital(f"hospital-{i}", hospital_data[i]))
        r.wait_for_nodes(2)
        first_online = r.online_since()
        run_dir = tmp_path / "run"
        crashed_at: list[float] = []

        def crash_after_first_round() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if (run_dir / "rounds.jsonl").is_file() and \
                        '"kind": "train"' in (run_dir / "rounds.jsonl").read_text():
                    supervisor = psutil.Process(r.procs["hospital-1"].pid)
                    for child in supervisor.children(recursive=True):  # the SuperNode's tree
                        child.kill()
                    crashed_at.append(time.monotonic())
                    return
                time.sleep(0.5)

        # round-timeout 60 s: a cold ClientApp start on a loaded 2-core machine can pass 25 s; the
        # crashed site's silent round 2 then also covers most of the SuperLink's ~50 s refusal
        killer = threading.Thread(target=crash_after_first_round, daemon=True)
        killer.start()
        status, log = r.run_app({"num-server-rounds": 2, "pretrain-rounds": 1, "min-sites": 1,
                                 "round-timeout": 60.0, "evaluate-every": 2,
                                 "run-dir": str(run_dir)})
        killer.join(timeout=5)
        assert status == "finished:completed", log[-3000:]
        # the SuperLink marks the crashed session offline after ~50 s and admits the restarted
        # SuperNode after that: its node's online-at changes
        assert crashed_at, "hospital-1 was never crashed"
        r.wait_for_nodes(2, timeout=300, reactivated_since=first_online)
        status, log = r.run_app({"num-server-rounds": 3, "resume-from": str(run_dir)})
        assert status == "finished:completed", log[-3000:]
        supernode_log = (tmp_path / "logs" / "hospital-1.log").read_text()
    rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    trained = [r for r in rounds if r["kind"] == "train"]
    senders = [sorted(r["bytes_received"]) for r in trained]
    assert senders == [["hospital-0", "hospital-1"], ["hospital-0"],
                       ["hospital-0", "hospital-1"]], (senders, supernode_log[-2000:])
    # one entry for the crashed site, under its name (the SuperLink's "Node Unavailable" reply
    # comes from node 1, the SuperLink itself)
    assert [*trained[1]["no_reply"], *trained[1]["rejected"]] == ["hospital-1"], trained[1]
    assert "starting it again" in supernode_log  # the supervisor's restart with backoff
    assert [r["round"] for r in rounds if r["kind"] == "evaluate"] == [2, 3]  # evaluate-every
    if proxy:  # every hospital request went through the proxy, each with its client certificate
        access = (tmp_path / "proxy-state" / "nginx-access.log").read_text()
        assert "push-messages" in access and "CN=hospital-0" in access and "CN=hospital-1" in access
        lengths = [int(x) for x in re.findall(r"request_length=(\d+)", access)]
        assert max(lengths) < 8 << 20  # every real request fits the proxy's body limit
    # site-local logs go to the site's work_dir; its data folder (an input) is not written
    assert (tmp_path / "hospitals" / "hospital-0" / "work" / "message-timing.jsonl").is_file()
    assert not (hospital_data[0] / "message-timing.jsonl").exists()
    time.sleep(1)
    assert _leftovers(tmp_path) == 0
