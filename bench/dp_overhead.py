"""DP-SGD vs non-DP local training time at the same settings, measured in one run.

Usage: python bench/dp_overhead.py [--preset benchmark] [--site site-0] [--rounds 3]
       [--batch-size 256]
Prints seconds per local round (1 epoch over the site's training split) without DP, with DP-SGD
training every group (``dp.train = all``) and with DP-SGD training the fusion layers only
(``dp.train = fusion``), all at the same expected batch, best of ``--rounds``, and their ratios;
then what the site's private noise costs per DP step: ChaCha20 Gaussians (four draws per value,
as Opacus' secure mode) for the parameters each DP recipe trains, against torch's Gaussian
generator for the same number of values, and as a share of the DP round's time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from client.data.dataset import SiteData
from client.privacy.dp_round import dp_local_train, units_of_training_rows
from client.privacy.mechanism import Mechanism
from client.privacy.secure_random import SecureRandom
from client.privacy.settings import DPSettings
from client.privacy.site_ledger import SiteLedger
from client.rounds.federated import local_train
from moehealth.cli_options import add_data_args, federation_data
from server.settings import FederationSettings
from shared_model import ModelConfig, build_model
from shared_model.params import model_to_arrays
from simulation.prepare import prepare_sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", default="site-0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="mortality")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="batch of non-DP training = expected Poisson batch of DP-SGD")
    add_data_args(parser)
    args = parser.parse_args()
    data = SiteData.load(prepare_sites(federation_data(args))[args.site], args.task, args.site)
    arrays = model_to_arrays(build_model())
    runs = {"non-DP (nn.LSTM)": None,
            "DP-SGD, every group": "all",
            "DP-SGD, fusion layers only": "fusion"}
    timings: dict[str, list[float]] = {name: [] for name in runs}
    stores = {name: SiteLedger(Path(tempfile.mkdtemp())) for name in runs}
    sent: dict[str, int] = {}
    for rnd in range(1, args.rounds + 1):
        cfg = FederationSettings(pretrain_rounds=0, batch_size=args.batch_size).round_config(rnd)
        for name, train in runs.items():
            started = time.perf_counter()
            if train is None:
                local_train(data, ModelConfig(), arrays, cfg, args.site)
            else:
                settings = DPSettings(enabled=True, noise_multiplier=1.0, target_epsilon=1e6,
                                      planned_rounds=args.rounds, train=train)
                reply = dp_local_train(data, ModelConfig(), arrays, cfg, settings, stores[name],
                                       args.site).reply
                sent[name] = sum(a.size for a in reply.arrays.values())
            timings[name].append(time.perf_counter() - started)
    base = min(timings["non-DP (nn.LSTM)"])
    print(f"site {args.site}: {data.size('train')} training stays, 1 local epoch per round, "
          f"(expected) batch {args.batch_size}, best of {args.rounds}")
    for name, values in timings.items():
        print(f"{name:30s} {min(values):7.2f} s/round   ratio {min(values) / base:5.2f}x")
    units = len(set(units_of_training_rows(data, "patient")))
    steps = Mechanism("patient", units, args.batch_size, 1, 1.0, 1e-5).steps_per_round
    for name, size in sent.items():
        chacha = _best_seconds(lambda n=size: SecureRandom().gaussian_noise(n, 1.0))
        torch_normal = _best_seconds(lambda n=size: torch.normal(0.0, 1.0, (n,)))
        share = chacha * steps / min(timings[name])
        print(f"noise per step, {name}: {size} values, ChaCha20 {chacha * 1e3:.1f} ms vs torch "
              f"{torch_normal * 1e3:.1f} ms ({chacha / torch_normal:.1f}x); {steps} steps = "
              f"{share:.1%} of the round")


def _best_seconds(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


if __name__ == "__main__":
    main()
