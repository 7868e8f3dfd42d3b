"""Shared tiny problems for the attribution tests: real HH pairs, a tiny GPTNeoX with LoRA."""

from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent / "fixtures" / "data"
TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def hh_rows(n: int, chars: int = 120) -> list[dict]:
    """The first n HH pairs of the fixtures, prompt tail and responses cut to keep tests fast."""
    from rlhf_trust.data import records

    rows = records.load("hh_train", DATA)[:n]
    return [{"id": r["id"], "prompt": r["prompt"][-chars:], "chosen": r["chosen"][:chars],
             "rejected": r["rejected"][:chars]} for r in rows]


def tiny_base(out_dir: Path, hidden: int = 32, layers: int = 2) -> Path:
    from rlhf_trust.models import build_tiny_base

    texts = [r["prompt"] + r["chosen"] for r in hh_rows(200, 400)]
    return build_tiny_base(out_dir, texts=texts, hidden_size=hidden, layers=layers, heads=2, vocab_size=300)


def lora(base_dir: Path, r: int = 4, seed: int = 0, task: str = "causal_lm"):
    """(PeftModel, tokenizer) with random (non-zero) A and B so every LoRA gradient is informative."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    if task == "seq_cls":
        model = AutoModelForSequenceClassification.from_pretrained(str(base_dir), num_labels=1)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    model.config.pad_token_id = tok.pad_token_id
    cfg = LoraConfig(r=r, lora_alpha=r, target_modules=TARGETS, lora_dropout=0.0, init_lora_weights=False,
                     task_type="SEQ_CLS" if task == "seq_cls" else "CAUSAL_LM")
    return get_peft_model(model, cfg).eval(), tok
