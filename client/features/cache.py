"""Per-site feature cache: frozen backbones run once per sample, results reused while valid.

The cache key hashes the encoders' identities and the site's input data (samples table, image
files' size and mtime), so a new encoder, new weights or changed data rebuild it; anything else
reuses it. A rebuild takes each note's and film's vector from the encoder's embedding store
(client/features/store.py) and encodes only inputs never encoded before. Files live under
``cache_dir/<site>/<key>/`` (outside the source tree) and are written
atomically, so an interrupted build never leaves a half cache that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from client.errors import SiteDataError
from client.features import FEATURES_FILE
from client.features.store import EmbeddingStore, embed, film_key, note_key
from client.mimic.cohort import TASKS, ehr_array
from shared_model.paths import default_cache_dir
from shared_model.progress_bars import Progress

__all__ = ["EncoderConfig", "default_cache_dir", "site_cache_key", "build_site_features",
           "FEATURES_FILE"]

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class EncoderConfig:
    """Which frozen backbones encode notes and images (local paths only; None = offline default)."""

    text_model_path: str | None = None
    image_weights: str | None = None
    text_max_tokens: int = 256
    image_size: int = 224
    batch_size: int = 16
    device: str = "auto"

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def _data_fingerprint(samples: pd.DataFrame) -> str:
    h = hashlib.sha256()
    cols = ["stay_id", "split", *TASKS, "age", "gender", "has_ehr", "has_notes", "has_cxr"]
    h.update(pd.util.hash_pandas_object(samples[cols], index=False).to_numpy().tobytes())
    h.update(ehr_array(samples).tobytes())
    for text in samples["note_text"].fillna(""):
        h.update(hashlib.sha256(str(text).encode()).digest())
    for path in samples["cxr_path"].dropna():
        st = Path(path).stat()
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def site_cache_key(samples: pd.DataFrame, text_identity: str, image_identity: str) -> str:
    """Key of a site's cache: encoders plus data."""
    blob = json.dumps([text_identity, image_identity, _data_fingerprint(samples)])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _encode_column(encode, items: list[str], batch: int, desc: str, progress: bool
                   ) -> np.ndarray:
    shown = Progress(len(items), desc, "inputs", log) if progress else None
    out = encode(items, batch, on_batch=shown.update if shown is not None else None)
    if shown is not None:
        shown.close()
    return out


class _Encoders:
    """The frozen backbones, loaded on first use (only when something must be encoded)."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self._text = self._image = None

    @property
    def text(self):
        from client.features.text import TextEncoder

        if self._text is None:
            self._text = TextEncoder(self.config.text_model_path,
                                     max_tokens=self.config.text_max_tokens,
                                     device=self.config.torch_device())
        return self._text

    @property
    def image(self):
        from client.features.image import ImageEncoder

        if self._image is None:
            self._image = ImageEncoder(self.config.image_weights, image_size=self.config.image_size,
                                       device=self.config.torch_device())
        return self._image


def _modality_features(store: EmbeddingStore, present: np.ndarray, items: list[str],
                       keys: list[str], encoder: Callable[[], Any], batch: int, desc: str,
                       progress: bool) -> tuple[np.ndarray, int]:
    """One modality's features for every sample (zeros where absent), from the store, encoding
    only the inputs it lacks; returns them and how many inputs were encoded."""
    def encode(todo: list[str]) -> np.ndarray:
        model = encoder()
        return _encode_column(model.encode, todo, batch, desc, progress)
    vectors, encoded = embed(store, keys, items, encode)
    dim = store.dim() or encoder().dim
    out = np.zeros((len(present), dim), dtype=np.float32)
    out[present] = vectors.reshape(len(items), dim) if items else 0.0
    return out, encoded


def build_site_features(samples: pd.DataFrame, site: str, config: EncoderConfig,
                        cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the directory of a valid feature cache for ``samples``, building it if needed from
    the content-addressed embedding stores (client/features/store.py): only notes and films
    never encoded before by the same encoders are encoded."""
    from client.features.image import image_encoder_identity
    from client.features.text import text_encoder_identity

    if samples.empty:
        raise SiteDataError(f"site '{site}' has zero samples: nothing to encode")
    text_id = text_encoder_identity(config.text_model_path, config.text_max_tokens)
    image_id = image_encoder_identity(config.image_weights, config.image_size)
    key = site_cache_key(samples, text_id, image_id)
    root = cache_dir or default_cache_dir()
    target = root / "features" / site / key
    if (target / MANIFEST_FILE).is_file():
        log.info("site %s: feature cache %s is valid, reusing it", site, target)
        return target
    encoders = _Encoders(config)
    started = time.perf_counter()
    notes_mask = samples["has_notes"].to_numpy(bool)
    cxr_mask = samples["has_cxr"].to_numpy(bool)
    texts = [str(t) for t in samples.loc[notes_mask, "note_text"]]
    notes, notes_encoded = _modality_features(
        EmbeddingStore(root, text_id), notes_mask, texts, [note_key(t) for t in texts],
        lambda: encoders.text, config.batch_size, f"{site} notes", progress)
    note_s = time.perf_counter() - started
    films = [str(p) for p in samples.loc[cxr_mask, "cxr_path"]]
    cxr, images_encoded = _modality_features(
        EmbeddingStore(root, image_id), cxr_mask, films, [film_key(p) for p in films],
        lambda: encoders.image, config.batch_size, f"{site} images", progress)
    arrays = {
        "stay_id": samples["stay_id"].to_numpy(np.int64),
        "subject_id": samples["subject_id"].to_numpy(np.int64),
        "split": samples["split"].to_numpy(str),
        "labels": samples[list(TASKS)].to_numpy(np.float32),
        "ehr": ehr_array(samples),
        "demographics": samples[["age", "gender"]].to_numpy(np.float32),
        "notes": notes, "cxr": cxr,
        "available": samples[["has_ehr", "has_notes", "has_cxr"]].to_numpy(bool),
    }
    manifest = {"site": site, "key": key, "samples": len(samples), "tasks": list(TASKS),
                "text_encoder": text_id, "image_encoder": image_id,
                "encoder_config": asdict(config),
                "notes": int(notes_mask.sum()), "images": int(cxr_mask.sum()),
                "notes_encoded": notes_encoded, "images_encoded": images_encoded,
                "seconds_notes": round(note_s, 2),
                "seconds_images": round(time.perf_counter() - started - note_s, 2)}
    _write_atomically(target, arrays, manifest)
    log.info("site %s: %d notes and %d images, of which %d and %d newly encoded (the rest from "
             "the embedding stores), in %.1f s -> %s", site, manifest["notes"],
             manifest["images"], notes_encoded, images_encoded, time.perf_counter() - started,
             target)
    return target


def _write_atomically(target: Path, arrays: dict[str, np.ndarray], manifest: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        np.savez(tmp / FEATURES_FILE, **arrays)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
