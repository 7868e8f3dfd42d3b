"""Load a stage's model with trainable LoRA tensors for gradient work (SVD-converted if full)."""

from __future__ import annotations

from pathlib import Path


def load_lora_model(model_dir: str | Path, svd_rank: int, device: str = "cpu"):
    """(model, tokenizer): an adapter stage as its PeftModel; a full fine-tune as the tuned model with
    a rank-`svd_rank` LoRA of its delta from its parent stage (svd.lora_from_delta)."""
    from rlhf_trust import models
    from rlhf_trust.attribution import svd
    from rlhf_trust.errors import UserError

    model_dir = Path(model_dir)
    info = models.load_stage_info(model_dir)
    seq_cls = info["task"] == "seq_cls"
    if info["kind"] == "adapter":
        model, tok = models.load_peft_model(model_dir, device="cpu", trainable=True)
    elif info["kind"] == "full":
        parent_dir = models.parent_path(model_dir, info)
        if seq_cls:
            tuned = models.load_merged_seq_cls(model_dir)
            ref = models.seq_cls_from_causal(models.load_merged_causal_lm(parent_dir))
        else:
            tuned = models.load_merged_causal_lm(model_dir)
            ref = models.load_merged_causal_lm(parent_dir)
        model = svd.lora_from_delta(tuned, ref, svd_rank, task_type="SEQ_CLS" if seq_cls else "CAUSAL_LM")
        del ref
        tok = models.load_tokenizer(model_dir)
    else:
        raise UserError(f"{model_dir} is the base model; influence needs a fine-tuned stage")
    tok.padding_side = "right"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(models.resolve_device(device)).eval(), tok


def load_reference(model_dir: str | Path, device: str = "cpu"):
    """The DPO reference policy (the SFT stage), merged, frozen."""
    from rlhf_trust import models

    model = models.load_merged_causal_lm(model_dir).to(models.resolve_device(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
