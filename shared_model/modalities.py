"""The three modalities in their canonical order and the seven modality combinations."""

from __future__ import annotations

from enum import StrEnum
from itertools import combinations


class Modality(StrEnum):
    """Input modalities, declared in the canonical order ehr, notes, cxr."""

    EHR = "ehr"
    NOTES = "notes"
    CXR = "cxr"

    @classmethod
    def parse(cls, name: str) -> Modality:
        try:
            return cls(name.strip().lower())
        except ValueError:
            raise ValueError(f"unknown modality '{name}' (expected one of: "
                             f"{', '.join(m.value for m in cls)})") from None


MODALITIES: tuple[Modality, ...] = tuple(Modality)


def combo_name(present: tuple[Modality, ...] | list[Modality]) -> str:
    """Canonical name of a modality combination, e.g. ``ehr+cxr``."""
    present_set = set(present)
    return "+".join(m.value for m in MODALITIES if m in present_set)


COMBINATIONS: tuple[str, ...] = tuple(
    combo_name(c) for k in range(1, len(MODALITIES) + 1) for c in combinations(MODALITIES, k)
)
