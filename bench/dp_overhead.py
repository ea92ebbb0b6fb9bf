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
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import BenchTable, add_store_arg  # noqa: E402
from client.data.dataset import SiteData  # noqa: E402
from client.privacy.dp_round import dp_local_train, units_of_training_rows  # noqa: E402
from client.privacy.mechanism import Mechanism  # noqa: E402
from client.privacy.secure_random import SecureRandom  # noqa: E402
from client.privacy.settings import DPSettings  # noqa: E402
from client.privacy.site_ledger import SiteLedger  # noqa: E402
from client.rounds.federated import local_train  # noqa: E402
from moehealth.cli_options import add_data_args, federation_data  # noqa: E402
from server.settings import FederationSettings  # noqa: E402
from shared_model import ModelConfig, build_model  # noqa: E402
from shared_model.params import model_to_arrays  # noqa: E402
from simulation.prepare import prepare_sites  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", default="site-0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="mortality")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="batch of non-DP training = expected Poisson batch of DP-SGD")
    add_data_args(parser)
    add_store_arg(parser)
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
    units = len(set(units_of_training_rows(data, "patient")))
    steps = Mechanism("patient", units, args.batch_size, 1, 1.0, 1e-5).steps_per_round
    table = BenchTable(["local training", "s per epoch (best of rounds)", "**/ non-DP**",
                        "values noised per step", "ChaCha20 noise per step ms",
                        "torch generator ms", "noise share of the epoch"])
    for name, values in timings.items():
        noise = ["-", "-", "-", "-"]
        if name in sent:
            size = sent[name]
            chacha = _best_seconds(lambda n=size: SecureRandom().gaussian_noise(n, 1.0))
            torch_normal = _best_seconds(lambda n=size: torch.normal(0.0, 1.0, (n,)))
            noise = [f"{size:,}", f"{chacha * 1e3:.1f}", f"{torch_normal * 1e3:.1f}",
                     f"{chacha * steps / min(values):.1%}"]
        table.add(name, f"{min(values):.2f}", f"**{min(values) / base:.2f}x**", *noise)
    table.summary(f"Site {args.site}: {data.size('train'):,} training stays, 1 local epoch per "
                  f"round, (expected) batch {args.batch_size}, best of {args.rounds} rounds; "
                  f"{steps} DP steps per epoch (patient unit).")
    table.store(args.store)


def _best_seconds(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


if __name__ == "__main__":
    main()
