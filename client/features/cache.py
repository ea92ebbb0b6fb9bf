"""Per-site feature cache: frozen backbones run once per sample, results reused while valid.

The cache key hashes the encoders' identities and the site's input data (samples table, image
files' size and mtime), so a new encoder, new weights or changed data rebuild it; anything else
reuses it. Files live under ``cache_dir/<site>/<key>/`` (outside the source tree) and are written
atomically, so an interrupted build never leaves a half cache that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from client.errors import SiteDataError
from client.features import FEATURES_FILE
from client.mimic.cohort import TASKS, ehr_array
from shared_model.paths import default_cache_dir

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


def _encode_column(encode, items: list[str], dim: int, batch: int, desc: str, progress: bool
                   ) -> np.ndarray:
    out = np.zeros((len(items), dim), dtype=np.float32)
    bar = tqdm(range(0, len(items), batch), desc=desc, leave=False,
               disable=None if progress else True)  # None: no bar when not a terminal
    for start in bar:
        out[start:start + batch] = encode(items[start:start + batch], batch)
    return out


def build_site_features(samples: pd.DataFrame, site: str, config: EncoderConfig,
                        cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the directory of a valid feature cache for ``samples``, building it if needed."""
    from client.features.image import ImageEncoder, image_encoder_identity
    from client.features.text import TextEncoder, text_encoder_identity

    if samples.empty:
        raise SiteDataError(f"site '{site}' has zero samples: nothing to encode")
    key = site_cache_key(samples, text_encoder_identity(config.text_model_path, config.text_max_tokens),
                         image_encoder_identity(config.image_weights, config.image_size))
    target = (cache_dir or default_cache_dir()) / "features" / site / key
    if (target / MANIFEST_FILE).is_file():
        log.info("site %s: feature cache %s is valid, reusing it", site, target)
        return target
    device = config.torch_device()  # the encoders are loaded only when something is encoded
    text = TextEncoder(config.text_model_path, max_tokens=config.text_max_tokens, device=device)
    image = ImageEncoder(config.image_weights, image_size=config.image_size, device=device)
    started = time.perf_counter()
    notes_mask = samples["has_notes"].to_numpy(bool)
    cxr_mask = samples["has_cxr"].to_numpy(bool)
    notes = np.zeros((len(samples), text.dim), dtype=np.float32)
    notes[notes_mask] = _encode_column(text.encode, samples.loc[notes_mask, "note_text"].tolist(),
                                       text.dim, config.batch_size, f"{site} notes", progress)
    note_s = time.perf_counter() - started
    cxr = np.zeros((len(samples), image.dim), dtype=np.float32)
    cxr[cxr_mask] = _encode_column(image.encode, samples.loc[cxr_mask, "cxr_path"].tolist(),
                                   image.dim, config.batch_size, f"{site} images", progress)
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
                "text_encoder": text.identity, "image_encoder": image.identity,
                "encoder_config": asdict(config),
                "notes_encoded": int(notes_mask.sum()), "images_encoded": int(cxr_mask.sum()),
                "seconds_notes": round(note_s, 2),
                "seconds_images": round(time.perf_counter() - started - note_s, 2)}
    _write_atomically(target, arrays, manifest)
    log.info("site %s: encoded %d notes and %d images in %.1f s -> %s", site,
             manifest["notes_encoded"], manifest["images_encoded"],
             time.perf_counter() - started, target)
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
