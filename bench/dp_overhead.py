"""DP-SGD vs non-DP local training time at the same settings, measured in one run.

Usage: python bench/dp_overhead.py [--site site-0] [--rounds 3]
Prints seconds per local round (1 epoch) with and without DP and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from client.data.dataset import SiteData
from client.privacy.dp_round import dp_local_train
from client.privacy.settings import DPSettings, FilePrivacyStore
from client.rounds.federated import local_train
from server.settings import FederationSettings
from shared_model import ModelConfig, build_model
from shared_model.params import model_to_arrays
from simulation.prepare import FederationData, prepare_sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", default="site-0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="mortality")
    args = parser.parse_args()
    data = SiteData.load(prepare_sites(FederationData())[args.site], args.task, args.site)
    arrays = model_to_arrays(build_model())
    timings = {"non-DP (nn.LSTM)": [], "DP-SGD (DPLSTM, Opacus hooks)": []}
    store = FilePrivacyStore(Path(tempfile.mkdtemp()))
    settings = DPSettings(enabled=True, noise_multiplier=1.0, target_epsilon=1000.0,
                          planned_rounds=args.rounds)
    for rnd in range(1, args.rounds + 1):
        cfg = FederationSettings(pretrain_rounds=0).round_config(rnd)
        started = time.perf_counter()
        local_train(data, ModelConfig(), arrays, cfg, args.site)
        timings["non-DP (nn.LSTM)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        dp_local_train(data, ModelConfig(), arrays, cfg, settings, store, args.site)
        timings["DP-SGD (DPLSTM, Opacus hooks)"].append(time.perf_counter() - started)
    base = min(timings["non-DP (nn.LSTM)"])
    print(f"site {args.site}: {data.size('train')} training samples, 1 local epoch per round, "
          f"batch 32, best of {args.rounds}")
    for name, values in timings.items():
        print(f"{name:34s} {min(values):7.2f} s/round   ratio {min(values) / base:5.2f}x")


if __name__ == "__main__":
    main()
