"""Final-layer hidden representations for `repsim` (representation similarity, DATE-LM's strongest
baseline): h(text | prompt) = mean of the model's last (normed) hidden state over the response tokens.

An example's representation follows what its loss moves: a SFT train row -> h(chosen); a preference
pair (dpo, bt) and every test pair (new vs old continuation) -> h(chosen) - h(rejected).
Forward only, no LM head (the decoder body where the model has one), micro-batched.
"""

from __future__ import annotations


def _hidden(model, batch):
    from rlhf_trust.models import fused_head

    parts = fused_head.decoder_of(model)
    if parts is not None:
        return parts[1](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return out.hidden_states[-1]


def mean_response_states(model, tok, pairs: list[tuple[str, str]], max_length: int, batch_size: int = 8,
                         device: str = "cpu"):
    """(len(pairs), hidden) float32: mean last hidden state over each completion's tokens."""
    import torch

    from rlhf_trust.attribution import losses

    out = []
    with torch.no_grad():
        for b in range(0, len(pairs), batch_size):
            batch = losses.collate(tok, pairs[b:b + batch_size], max_length, device)
            h = _hidden(model, batch).float()
            m = batch["completion"].unsqueeze(-1).float()
            out.append(((h * m).sum(1) / m.sum(1).clamp_min(1)).cpu())
    return torch.cat(out)


def example_reps(kind: str, model, tok, rows: list[dict], max_length: int, batch_size: int = 8,
                 device: str = "cpu"):
    """(len(rows), hidden): h(chosen) for `sft` rows, h(chosen) - h(rejected) for pair losses."""
    chosen = mean_response_states(model, tok, [(r["prompt"], r["chosen"]) for r in rows], max_length,
                                  batch_size, device)
    if kind == "sft":
        return chosen
    return chosen - mean_response_states(model, tok, [(r["prompt"], r["rejected"]) for r in rows], max_length,
                                         batch_size, device)
