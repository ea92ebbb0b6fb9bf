"""Pre-train the chest X-ray backbone on a public-like synthetic PACS, as a hospital would bring a
CXR-pretrained DenseNet-121.

The archive is its own synthetic population (identifier block ``PACS_ID_BLOCK``, its own seed), so
no patient of any site or of the test population is in it. Every stay contributes one frontal
film rendered from its drawn findings; the network (torchvision DenseNet-121) learns to grade
them (cardiomegaly, effusion, opacity: 0..1; support device: 0/1), the graded labels behind the
archive's CheXpert table. Only the ``features.*`` weights are saved: the state dict loads through
``image_weights`` like any user's file.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from client.features.image import film_transform
from shared_model.paths import default_cache_dir
from shared_model.progress_bars import Progress
from simulation.synth.images import draw_film
from simulation.synth.population import build_population
from simulation.synth.signals import FILM_FINDINGS

log = logging.getLogger(__name__)
PACS_ID_BLOCK = 2
_PACS_SEED_OFFSET = 104_729
_HELD_OUT = 0.1


@dataclass(frozen=True)
class PacsPretraining:
    """Size of the synthetic archive and how long the backbone trains on it."""

    patients: int = 1200
    seed: int = 0
    image_size: int = 128
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3

    def weights_path(self, cache_dir: Path | None = None) -> Path:
        """Where these weights are cached (one file per configuration)."""
        name = (f"densenet121-synthetic-pacs-{self.patients}p-seed{self.seed}-{self.image_size}px"
                f"-{self.epochs}ep.pt")
        return (cache_dir or default_cache_dir()) / "image-encoder" / name


PacsArchive = tuple[pd.DataFrame, torch.Tensor, torch.Tensor]  # index, films, targets


def synthetic_pacs(config: PacsPretraining) -> PacsArchive:
    """Archive index (subject_id, stay_id, findings), films [n, 3, s, s] and targets [n, 4]."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed + _PACS_SEED_OFFSET)
    stays = build_population(rng, config.patients, id_block=PACS_ID_BLOCK).stays
    columns = [f"film_{name}" for name in FILM_FINDINGS]
    index = stays[["subject_id", "stay_id", *columns]].reset_index(drop=True)
    transform = film_transform(config.image_size)
    shown = Progress(len(index), "synthetic PACS: drawing", "films", log)
    films = []
    for row in index[columns].to_numpy():
        films.append(transform(draw_film(rng, dict(zip(FILM_FINDINGS, row, strict=True)))))
        shown.update(1)
    shown.close()
    log.info("synthetic PACS archive: %d films drawn in %.1f s", len(films),
             time.perf_counter() - started)
    return index, torch.stack(films), torch.tensor(index[columns].to_numpy(), dtype=torch.float32)


def _backbone() -> tuple[nn.Module, nn.Module]:
    from torchvision.models import densenet121

    torch.manual_seed(0)
    net = densenet121(weights=None)
    return net.features, nn.Linear(net.classifier.in_features, len(FILM_FINDINGS))


def _predict(features: nn.Module, head: nn.Module, films: torch.Tensor) -> torch.Tensor:
    maps = torch.relu(features(films))
    return head(nn.functional.adaptive_avg_pool2d(maps, 1).flatten(1))


def pretrain_image_encoder(config: PacsPretraining, out: Path | None = None,
                           device: torch.device | None = None, *,
                           archive: PacsArchive | None = None) -> Path:
    """Train on the archive, save ``features.*`` weights to ``out`` with a JSON card beside it
    (held-out R^2 per finding, archive size, time); reuse the file when it exists.

    ``archive``: ``synthetic_pacs(config)`` drawn beforehand (``moehealth prepare`` draws it in a
    worker beside the populations' generation; it is deterministic, so the weights are the same).
    """
    out = out or config.weights_path()
    if out.is_file():
        log.info("pre-trained image encoder %s exists, reusing it", out)
        return out
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    log.info("image encoder: %s synthetic PACS archive of %d patients, then pre-training "
             "DenseNet-121 on it (%d epochs at %d px on %s; about 3 min on 2 idle CPU cores at "
             "the benchmark's 1,200 patients and 128 px, once per cache) -> %s",
             "writing a" if archive is None else "taking the already drawn", config.patients,
             config.epochs, config.image_size, device, out)
    index, films, targets = archive if archive is not None else synthetic_pacs(config)
    n_held = max(1, int(len(films) * _HELD_OUT))
    order = torch.randperm(len(films), generator=torch.Generator().manual_seed(config.seed))
    held, train = order[:n_held], order[n_held:]
    features, head = (m.to(device) for m in _backbone())
    params = [*features.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    steps = config.epochs * max(1, len(train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
    features.train()
    step = 0
    shown = Progress(steps, "image pre-training", "steps", log)
    for epoch in range(config.epochs):
        perm = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))]
        for start in range(0, len(perm) - config.batch_size + 1, config.batch_size):
            batch = perm[start:start + config.batch_size]
            pred = _predict(features, head, films[batch].to(device))
            loss = nn.functional.mse_loss(pred, targets[batch].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step < steps - 1:
                schedule.step()
            step += 1
            shown.update(1)
        log.info("image pre-training epoch %d/%d: last batch MSE %.4f", epoch + 1, config.epochs,
                 float(loss.detach()))
    shown.close()
    features.eval()
    with torch.no_grad():
        pred = torch.cat([_predict(features, head, films[held[i:i + 64]].to(device)).cpu()
                          for i in range(0, len(held), 64)])
    truth = targets[held]
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0).clamp(min=1e-9)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {f"features.{k}": v.cpu() for k, v in features.state_dict().items()}
    tmp = out.with_suffix(".tmp")
    torch.save(state, tmp)
    card = {"config": asdict(config), "films": len(films), "held_out": n_held,
            "held_out_r2": dict(zip(FILM_FINDINGS, [round(float(x), 3) for x in r2], strict=True)),
            "seconds": round(time.perf_counter() - started, 1),
            "subjects": sorted(int(s) for s in index["subject_id"].unique())}
    out.with_suffix(".json").write_text(json.dumps(card, indent=1))
    tmp.rename(out)
    log.info("pre-trained image encoder -> %s (held-out R^2 %s, %.0f s)", out,
             card["held_out_r2"], card["seconds"])
    return out
