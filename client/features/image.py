"""Chest X-ray encoder: torchvision DenseNet-121, weights from a configured local file.

Nothing is downloaded. Without ``image_weights`` the network is randomly initialized (seeded, so
all sites agree) and a loud warning says so: random convolutional features still carry some
signal, but production sites should give a CXR-pretrained DenseNet-121 state dict.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
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


def image_encoder_identity(weights: Path | None, image_size: int) -> str:
    """What the cached image features depend on: the backbone's weights file (or the seeded
    random initialization) and the input size, computed without building the network."""
    if weights and not Path(weights).is_file():
        raise MoeHealthInputError(f"{weights}: cannot load DenseNet-121 weights (no such file)")
    source = file_digest(Path(weights))[:16] if weights else f"random-init-seed{RANDOM_INIT_SEED}"
    return f"image:densenet121:{source}:{image_size}px"


class ImageEncoder:
    """Global-average-pooled DenseNet-121 features (1024-d) of a frontal chest film."""

    def __init__(self, weights: Path | None = None, *, image_size: int = 224,
                 device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        torch.manual_seed(RANDOM_INIT_SEED)
        net = densenet121(weights=None)
        if weights:
            missing, _ = net.load_state_dict(_load_state_dict(Path(weights)), strict=False)
            if any(k.startswith("features.") for k in missing):
                raise MoeHealthInputError(f"{weights}: not a DenseNet-121 state dict "
                                          f"(missing e.g. {missing[0]})")
        self.random_init = not weights
        self.identity = image_encoder_identity(weights, image_size)
        self.features = net.features.to(self.device).eval()
        self.dim = int(net.classifier.in_features)
        self.transform = film_transform(image_size)

    def load(self, path: str) -> torch.Tensor:
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("L"))
        except (OSError, UnidentifiedImageError) as err:
            raise MoeHealthInputError(f"{path}: cannot read image ({err})") from None

    @torch.no_grad()
    def encode(self, paths: list[str], batch_size: int = 16) -> np.ndarray:
        """Return float32 [len(paths), 1024] features."""
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        if paths and self.random_init:  # no warning where there are no films to encode
            _warn_random_init_once()
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([self.load(p) for p in paths[start:start + batch_size]])
            maps = torch.relu(self.features(batch.to(self.device)))
            pooled = torch.nn.functional.adaptive_avg_pool2d(maps, 1).flatten(1)
            out[start:start + len(pooled)] = pooled.cpu().numpy()
        return out
