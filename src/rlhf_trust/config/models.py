"""Params section of the base model (rlhf_trust/models/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlhf_trust.config.schema import require as _require


@dataclass
class ModelConfig:
    """The base model: a hub id, a local path, `gemma-3-270m` (offline wheel) or `tiny-gpt-neox`."""

    spec: str = "gemma-3-270m"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cache_dir: str = "~/.cache/rlhf-trust"   # materialised safetensors of GGUF models
    # tiny-gpt-neox only (tests, quick runs)
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_vocab_size: int = 512
    tiny_max_positions: int = 512
    seed: int = 0

    def check(self) -> None:
        _require(bool(self.spec.strip()), "model.spec", "must not be empty")
        for k in ("tiny_hidden_size", "tiny_layers", "tiny_heads", "tiny_max_positions"):
            _require(getattr(self, k) >= 1, f"model.{k}", "must be >= 1")
        _require(self.tiny_vocab_size >= 256, "model.tiny_vocab_size", "must be >= 256 (the byte-level alphabet)")
        _require(self.tiny_hidden_size % self.tiny_heads == 0, "model.tiny_hidden_size",
                 "must be divisible by model.tiny_heads")
