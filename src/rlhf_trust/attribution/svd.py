"""Fully fine-tuned models -> LoRA by truncated SVD of the weight delta (the study's convert_lora.py).

For every Linear except the output heads: delta = W_tuned - W_ref, SVD delta = U S V^T, keep rank r:
lora_A = V^T[:r], lora_B = U[:, :r] diag(S[:r]), with lora_alpha = r (scale 1). Gradients are then
taken w.r.t. these A/B, as the study did.

One difference from the study: the study's model is W_base + BA, an approximation of the tuned model.
Here the frozen weight is set to W_tuned - BA, so the forward pass is exactly the fine-tuned model
(and every non-Linear parameter, e.g. layer norms, is the tuned one) while the gradient directions are
still those of the rank-r LoRA parametrisation.
"""

from __future__ import annotations

HEADS = ("lm_head", "embed_out", "score", "classifier", "v_head")


def linear_names(model) -> list[str]:
    import torch

    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.split(".")[-1] not in HEADS]


def lora_from_delta(tuned, reference, rank: int, task_type: str = "CAUSAL_LM"):
    """A PeftModel on top of `tuned` whose rank-`rank` LoRA holds the SVD of (tuned - reference)."""
    import torch
    from peft import LoraConfig, get_peft_model

    ref = dict(reference.named_modules())
    targets = [n for n in linear_names(tuned)
               if n in ref and getattr(ref[n], "weight", None) is not None
               and ref[n].weight.shape == dict(tuned.named_modules())[n].weight.shape]
    if not targets:
        raise ValueError("no Linear layers shared by the fine-tuned and the reference model")
    factors = {}
    with torch.no_grad():
        for n in targets:
            w_t = dict(tuned.named_modules())[n].weight.float()
            delta = w_t - ref[n].weight.float().to(w_t.device)
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            k = min(rank, s.numel())
            factors[n] = (vh[:k].clone(), (u[:, :k] * s[:k]).clone())
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", target_modules=targets,
                     task_type=task_type)
    model = get_peft_model(tuned, cfg)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for n, (a, b) in factors.items():
            layer = modules[f"base_model.model.{n}"]
            la, lb = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            la.zero_()
            lb.zero_()
            la[: a.shape[0]].copy_(a)
            lb[:, : b.shape[1]].copy_(b)
            w = layer.get_base_layer().weight
            w.copy_((w.float() - (lb.float() @ la.float()) * layer.scaling["default"]).to(w.dtype))
    return model
