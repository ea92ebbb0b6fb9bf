"""Chest X-ray encoder: torchvision DenseNet-121, weights from a configured local file.

Nothing is downloaded. Without ``image_weights`` the network is randomly initialized (seeded, so
all sites agree) and a loud warning says so: random convolutional features still carry some
signal, but production sites should give a CXR-pretrained DenseNet-121 state dict.

Real MIMIC-CXR-JPG films are ~2,500 x 3,000 px. A JPEG is decoded in draft mode (the decoder's
DCT scaling by 1/2, 1/4 or 1/8) to no less than twice the network's input, then resized as
before, so the last, antialiased step is unchanged and a film under four times the input size
(every synthetic film) decodes bit-identically to a full decode. Films are read by DataLoader
workers while the network runs on the previous batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.models import densenet121
from torchvision.transforms import v2

from client.errors import MoeHealthInputError
from client.features.identity import file_digest

log = logging.getLogger(__name__)
RANDOM_INIT_SEED = 0


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise MoeHealthInputError(f"{path}: cannot load DenseNet-121 weights ({err})") from None
    state = state.get("state_dict", state)
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}


_warned_random_init = False


def _warn_random_init_once() -> None:
    """The loud random-init warning, once per process (not once per site)."""
    global _warned_random_init
    if not _warned_random_init:
        _warned_random_init = True
        log.warning("NO IMAGE WEIGHTS CONFIGURED: DenseNet-121 is randomly initialized (seed %d). "
                    "For real use give a local CXR-pretrained state dict: run config "
                    "data.image-encoder = \"PATH\" (simulation), encoders.image_weights in the "
                    "site YAML (deployment) or --image-weights (moehealth encode).",
                    RANDOM_INIT_SEED)


def film_transform(image_size: int) -> v2.Compose:
    """PIL film -> normalized 3-channel tensor, the same for encoding and for pre-training."""
    return v2.Compose([
        v2.Grayscale(num_output_channels=3), v2.Resize(image_size), v2.CenterCrop(image_size),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


DRAFT_FACTOR = 2  # a JPEG is decoded at no less than this multiple of the network's input


def read_film(path: str, transform: Callable, image_size: int, draft: bool = True
              ) -> torch.Tensor:
    """One film as the network's input tensor; ``draft``: let the JPEG decoder scale it down
    to no less than ``DRAFT_FACTOR`` x ``image_size`` (other formats ignore it)."""
    try:
        with Image.open(path) as img:
            if draft:
                img.draft("L", (DRAFT_FACTOR * image_size, DRAFT_FACTOR * image_size))
            return transform(img.convert("L"))
    except (OSError, UnidentifiedImageError) as err:
        raise MoeHealthInputError(f"{path}: cannot read image ({err})") from None


def image_encoder_identity(weights: Path | None, image_size: int, draft: bool = True) -> str:
    """What the cached image features depend on: the backbone's weights file (or the seeded
    random initialization), the input size and the decoding, computed without building the
    network."""
    if weights and not Path(weights).is_file():
        raise MoeHealthInputError(f"{weights}: cannot load DenseNet-121 weights (no such file)")
    source = file_digest(Path(weights))[:16] if weights else f"random-init-seed{RANDOM_INIT_SEED}"
    decoding = f":jpeg-draft{DRAFT_FACTOR}x" if draft else ""
    return f"image:densenet121:{source}:{image_size}px{decoding}"


def default_loader_workers(device: torch.device) -> int:
    """Decoding processes beside the network: up to 4 on a GPU; on a CPU one, when there are
    cores to spare beyond the two the network's threads use best (bench: ``films``)."""
    cores = os.cpu_count() or 1
    return min(4, cores - 1) if device.type == "cuda" else (1 if cores > 2 else 0)


class _Films(Dataset):
    """Films read in DataLoader workers; a bad file becomes its one-line message, raised by the
    encoding loop (an exception inside a worker would come back as a multi-line traceback)."""

    def __init__(self, paths: list[str], transform: Callable, image_size: int, draft: bool
                 ) -> None:
        self.paths, self.transform, self.image_size, self.draft = paths, transform, image_size, draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            return read_film(self.paths[i], self.transform, self.image_size, self.draft), ""
        except MoeHealthInputError as err:
            return torch.zeros(3, self.image_size, self.image_size), str(err)


def _stack(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([tensor for tensor, _ in items]), [error for _, error in items if error]


class ImageEncoder:
    """Global-average-pooled DenseNet-121 features (1024-d) of a frontal chest film."""

    def __init__(self, weights: Path | None = None, *, image_size: int = 224,
                 device: torch.device | None = None, draft: bool = True,
                 loader_workers: int | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.image_size, self.draft = image_size, draft
        self.loader_workers = (default_loader_workers(self.device) if loader_workers is None
                               else loader_workers)
        torch.manual_seed(RANDOM_INIT_SEED)
        net = densenet121(weights=None)
        if weights:
            missing, _ = net.load_state_dict(_load_state_dict(Path(weights)), strict=False)
            if any(k.startswith("features.") for k in missing):
                raise MoeHealthInputError(f"{weights}: not a DenseNet-121 state dict "
                                          f"(missing e.g. {missing[0]})")
        self.random_init = not weights
        self.identity = image_encoder_identity(weights, image_size, draft)
        # channels-last: oneDNN's convolutions run 1.48x faster on CPU (bench: encoders); the
        # same features up to float summation order (max difference ~1e-6)
        self.features = net.features.to(self.device).eval().to(memory_format=torch.channels_last)
        self.dim = int(net.classifier.in_features)
        self.transform = film_transform(image_size)

    def load(self, path: str) -> torch.Tensor:
        return read_film(path, self.transform, self.image_size, self.draft)

    @torch.no_grad()
    def encode(self, paths: list[str], batch_size: int = 16,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Return float32 [len(paths), 1024] features; ``on_batch(n)`` after each batch of n."""
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        if paths and self.random_init:  # no warning where there are no films to encode
            _warn_random_init_once()
        # workers only where their start (a fresh interpreter each: ~2 s) pays off; spawned, not
        # forked, since the calling process may hold threads (gRPC, Ray) that fork would break
        workers = self.loader_workers if len(paths) >= 8 * batch_size else 0
        batches = DataLoader(_Films(paths, self.transform, self.image_size, self.draft),
                             batch_size=batch_size, num_workers=workers, collate_fn=_stack,
                             pin_memory=self.device.type == "cuda",
                             prefetch_factor=4 if workers else None,
                             multiprocessing_context="spawn" if workers else None)
        start = 0
        for batch, errors in batches:
            if errors:
                raise MoeHealthInputError(errors[0])
            batch = batch.to(self.device, non_blocking=True).contiguous(
                memory_format=torch.channels_last)
            maps = torch.relu(self.features(batch))
            pooled = torch.nn.functional.adaptive_avg_pool2d(maps, 1).flatten(1)
            out[start:start + len(pooled)] = pooled.cpu().numpy()
            start += len(pooled)
            if on_batch is not None:
                on_batch(len(pooled))
        return out
