"""What server and sites must agree on: modalities, the MoE-Health model, parameter-group names.

Imports no flwr and nothing from client/ or server/.
"""

from shared_model.config import ModelConfig
from shared_model.modalities import COMBINATIONS, Modality
from shared_model.moe import MoEHealth, MoEOutput, build_model

__all__ = ["COMBINATIONS", "Modality", "ModelConfig", "MoEHealth", "MoEOutput", "build_model"]
