"""Model specs, model directories and loaders (the API the eval and influence stages use).

Everything here imports torch/transformers lazily, so importing the package is instant.
  load_causal_lm(model_dir, device="cpu") -> (model, tokenizer)   inference: merged, eval, left pad
  load_reward_model(model_dir, device="cpu") -> (model, tokenizer) the RM stage (seq classification)
  load_peft_model(model_dir, device="cpu", trainable=True) -> (PeftModel, tokenizer)  LoRA stages
  load_merged_causal_lm(model_dir) -> model                         merged, train-ready, no device move
  load_stage_info(model_dir) -> dict                                stage.json
  build_tiny_base(out_dir, texts=None, **sizes) -> Path             tiny-gpt-neox base dir (tests)
  build_base(out_dir, model_cfg) -> Path                            the `base` stage's work
"""

from __future__ import annotations

from rlhf_trust.models.chat import hh_prompt
from rlhf_trust.models.spec import build_base, build_tiny_base, spec_kind
from rlhf_trust.models.store import (
    load_causal_lm,
    load_merged_causal_lm,
    load_merged_seq_cls,
    load_peft_model,
    load_reward_model,
    load_stage_info,
    load_tokenizer,
    parent_path,
    resolve_device,
    seq_cls_from_causal,
    write_stage_info,
)

__all__ = [
    "build_base", "build_tiny_base", "hh_prompt", "load_causal_lm", "load_merged_causal_lm",
    "load_merged_seq_cls", "load_peft_model", "load_reward_model", "load_stage_info", "load_tokenizer",
    "parent_path", "resolve_device", "seq_cls_from_causal", "spec_kind", "write_stage_info",
]
