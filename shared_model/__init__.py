"""What server and sites must agree on: modalities, the MoE-Health model, parameter-group names.

Imports no flwr and nothing from client/ or server/.
"""

from shared_model.modalities import COMBINATIONS, Modality

__all__ = ["COMBINATIONS", "Modality"]
