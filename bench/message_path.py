"""Per-message cost of a hospital round in a real deployment on loopback, measured in one run.

Flower 1.42 starts a fresh ClientApp process for every message. This benchmark measures, in one
run on this machine:
- ``import torch`` and ``import client.app`` in fresh processes (median of 3 each);
- a real deployment (deploy/rehearsal.py: SuperLink with TLS and node authentication, one
  ``moehealth site run`` SuperNode per hospital) training ``--rounds`` rounds; every training
  message's site-local timing line (client/message_timing.py): process start -> app loaded ->
  handler entered -> data loaded -> training -> reply built.

    python bench/message_path.py --sites 2 --rounds 3 --patients 2000

Non-training time per message = process start to handler + data loading + reply building. Flower's
own time to fetch the message and to send the reply lies outside the process and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "deploy"))  # deploy/ holds scripts, not a package

import rehearsal as reh  # noqa: E402

from bench.record import BenchTable, add_store_arg  # noqa: E402
from client.message_timing import TIMING_FILE  # noqa: E402


def import_seconds(module: str, repeats: int = 3) -> float:
    """Median wall time of ``python -c 'import MODULE'`` in a fresh process."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, check=True,
                       env={**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/moehealth-message-path"))
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patients", type=int, default=2000)
    add_store_arg(parser)
    args = parser.parse_args()
    torch_s, app_s = import_seconds("torch"), import_seconds("client.app")
    for stale in ("ca", "certs", "hospitals", "logs", "superlink-state", "flwr-home", "run"):
        shutil.rmtree(args.workdir / stale, ignore_errors=True)  # a fresh coordinator each run
    samples = reh.synthetic_sites(args.workdir, args.sites, args.patients)
    work_dirs = []  # where each hospital's ClientApp writes its timing lines (site YAML work_dir)
    with reh.rehearsal(args.workdir) as r:
        r.coordinator()
        for i, folder in enumerate(samples):
            site_yaml = r.hospital(f"hospital-{i}", folder)
            work_dirs.append(Path(json.loads(site_yaml.read_text())["work_dir"]))
            (work_dirs[-1] / TIMING_FILE).unlink(missing_ok=True)
            r.supernode(f"hospital-{i}", site_yaml)
        r.wait_for_nodes(args.sites, timeout=1800)  # each hospital encodes its features first
        status, log = r.run_app({"num-server-rounds": args.rounds, "pretrain-rounds": 1,
                                 "min-sites": args.sites, "data.num-sites": args.sites,
                                 "evaluate-every": args.rounds, "round-timeout": 600.0,
                                 "run-dir": str(args.workdir / "run")})
    if status != "finished:completed":
        print(log[-3000:])
        return 1
    lines = [json.loads(x) for folder in work_dirs
             for x in (folder / TIMING_FILE).read_text().splitlines()]
    train = [x for x in lines if x["kind"] == "train"]
    from client.data.sites import read_site_samples

    stays = [int((read_site_samples(f)["split"] == "train").sum()) for f in samples]

    def mean(key: str) -> float:
        return statistics.mean(x[key] for x in train)

    start_to_app, start_to_handler = mean("start_to_app_loaded_s"), mean("start_to_handler_s")
    data, training, reply = mean("data_s"), mean("train_s"), mean("reply_s")
    non_training = start_to_handler + data + reply
    table = BenchTable(["import torch s", "import client.app s", "**app / torch**",
                        "training messages", "start -> app loaded s", "app loaded -> handler s",
                        "data s", "training s", "reply s", "**non-training / training**"])
    table.add(f"{torch_s:.2f}", f"{app_s:.2f}", f"**{app_s / torch_s:.2f}x**", len(train),
              f"{start_to_app:.2f}", f"{start_to_handler - start_to_app:.2f}", f"{data:.3f}",
              f"{training:.2f}", f"{reply:.3f}", f"**{non_training / training:.2f}x**")
    table.summary(f"Training stays per site: {', '.join(map(str, stays))}.")
    table.store(args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
