"""Synthetic MIMIC-IV / MIMIC-IV-Note / MIMIC-CXR-JPG releases written in the real file layouts."""

from simulation.synth.writer import SynthSummary, generate_synthetic_mimic

__all__ = ["SynthSummary", "generate_synthetic_mimic"]
