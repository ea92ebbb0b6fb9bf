"""Site dataset: cached features -> model-ready tensors for one task and split.

EHR values are standardized with fixed clinical reference values (not fitted on any site's data),
forward-filled within the stay and then set to the reference (0) where never observed; the mask
tells the model what was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from client.errors import SiteDataError
from client.features import FEATURES_FILE
from client.mimic.variables import VARIABLES
from shared_model.modalities import COMBINATIONS
from shared_model.moe import combination_index
from shared_model.run_config import TASKS

_NORMAL = np.array([v.normal for v in VARIABLES], dtype=np.float32)
_SCALE = np.array([v.scale for v in VARIABLES], dtype=np.float32)
AGE_CENTER, AGE_SCALE = 65.0, 15.0  # the model sees (age - 65) / 15


def age_in_years(demographics: np.ndarray) -> np.ndarray:
    """The age column of a ``demographics`` input, back in years."""
    return demographics[:, 0] * AGE_SCALE + AGE_CENTER


INPUT_NAMES = ("ehr", "ehr_mask", "demographics", "notes", "cxr", "available")


def prepare_ehr(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardize, forward-fill and zero-impute [n, hours, vars]; return (values, mask)."""
    mask = ~np.isnan(series)
    z = (series - _NORMAL) / _SCALE
    n, hours, _ = z.shape
    last = np.where(mask, np.arange(hours)[None, :, None], 0)
    np.maximum.accumulate(last, axis=1, out=last)
    filled = np.take_along_axis(np.nan_to_num(z, nan=0.0), last, axis=1)
    seen = np.maximum.accumulate(mask, axis=1)
    values = np.where(seen, filled, 0.0).astype(np.float32)
    return np.clip(values, -10, 10), mask.astype(np.float32)


@dataclass(frozen=True)
class SiteData:
    """All samples of one site for one task (samples without a label for it are left out)."""

    site: str
    task: str
    split: np.ndarray
    stay_id: np.ndarray
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    subject_id: np.ndarray  # the patient of each sample (DP's privacy unit); stays on the site

    @classmethod
    def load(cls, feature_dir: Path, task: str, site: str | None = None) -> SiteData:
        if task not in TASKS:
            raise SiteDataError(f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
        path = Path(feature_dir) / FEATURES_FILE
        if not path.is_file():
            raise SiteDataError(f"{path}: feature cache missing (run 'moehealth encode')")
        data = np.load(path)
        label = data["labels"][:, TASKS.index(task)]
        keep = ~np.isnan(label)
        ehr, mask = prepare_ehr(data["ehr"][keep])
        age, gender = data["demographics"][keep].T
        inputs = {
            "ehr": ehr, "ehr_mask": mask,
            "demographics": np.stack([(age - AGE_CENTER) / AGE_SCALE, gender], axis=1),
            "notes": data["notes"][keep], "cxr": data["cxr"][keep],
            "available": data["available"][keep].astype(np.float32),
        }
        tensors = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32)
                   for k, v in inputs.items()}
        return cls(site or Path(feature_dir).parent.name, task, data["split"][keep],
                   data["stay_id"][keep], tensors,
                   torch.as_tensor(label[keep], dtype=torch.float32), data["subject_id"][keep])

    def subset(self, split: str) -> TensorDataset:
        """TensorDataset of (inputs..., label) for one split."""
        idx = torch.as_tensor(np.flatnonzero(self.split == split))
        return TensorDataset(*(self.inputs[k][idx] for k in INPUT_NAMES), self.labels[idx])

    def size(self, split: str) -> int:
        return int((self.split == split).sum())

    def combination_counts(self, split: str = "train") -> dict[str, int]:
        """Number of samples of each modality combination in a split (aggregate, not per patient)."""
        idx = torch.as_tensor(np.flatnonzero(self.split == split))
        combos = combination_index(self.inputs["available"][idx])
        counts = torch.bincount(combos, minlength=len(COMBINATIONS))
        return {c: int(n) for c, n in zip(COMBINATIONS, counts.tolist(), strict=True) if n}


def concat_sites(sites: list[SiteData]) -> SiteData:
    """Pool several sites (centralized baseline)."""
    if not sites:
        raise SiteDataError("no sites to pool")
    inputs = {k: torch.cat([s.inputs[k] for s in sites]) for k in INPUT_NAMES}
    return SiteData("pooled", sites[0].task, np.concatenate([s.split for s in sites]),
                    np.concatenate([s.stay_id for s in sites]), inputs,
                    torch.cat([s.labels for s in sites]),
                    np.concatenate([s.subject_id for s in sites]))
