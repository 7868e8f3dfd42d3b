"""Per-example losses whose gradients DataInf compares, for training pairs and trust test pairs.

Every loss takes rows {"prompt", "chosen", "rejected"} (for test rows chosen = the new stage's
continuation, rejected = the previous stage's) and returns (losses (n,), owner (n_seq,)):
one loss per example and, per forward sequence, the example it belongs to.

- `sft`: mean token NLL of the chosen response given the prompt (prompt tokens masked; the study
  also scored prompt tokens, we score what SFT trains on).
- `lm_contrast`: -log sigmoid(log pi(chosen|x) - log pi(rejected|x)), summed sequence log-probs:
  "the model prefers its new continuation to the old one" for the SFT stage (no reference model).
- `bt`: reward-model Bradley-Terry loss -log sigmoid(r(x+chosen) - r(x+rejected)) (the study's PPO
  attribution goes through the reward model).
- `dpo`: -log sigmoid(beta [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]) with SUMMED
  sequence log-probs of the response tokens (the study's code used token log_softmax, a bug).
"""

from __future__ import annotations

from typing import Any

LOSSES = ("sft", "lm_contrast", "bt", "dpo")
_NO_MASK_TRIM: set[str] = set()


def encode(tok, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt+completion and the prompt length. Tokenised separately so the boundary
    is exact; the completion keeps its head, the prompt its tail (the recent turns)."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"][: max(1, max_length - 1)]
    p = p[-max(1, max_length - len(c)):]
    return p + c, len(p)


def collate(tok, pairs: list[tuple[str, str]], max_length: int, device: str = "cpu") -> dict[str, Any]:
    """Right-padded batch with a mask of the completion tokens that are predicted."""
    import torch

    enc = [encode(tok, p, c, max_length) for p, c in pairs]
    width = max(len(ids) for ids, _ in enc)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(enc), width), pad, dtype=torch.long)
    attn = torch.zeros((len(enc), width), dtype=torch.long)
    comp = torch.zeros((len(enc), width), dtype=torch.bool)
    for i, (row, n_prompt) in enumerate(enc):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        comp[i, n_prompt: len(row)] = True
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "completion": comp.to(device)}


def sequence_logps(model, batch: dict, trim: bool = True) -> tuple[Any, Any]:
    """(sum, count) over completion tokens of log p(token | prefix), per sequence.

    `trim`: project onto the vocabulary only at the positions that predict a completion token
    (transformers' boolean `logits_to_keep`), not at prompt or padding positions: the same numbers,
    and the lm_head is most of the cost for large vocabularies (Gemma 3: 262k tokens).
    """
    import torch
    import torch.nn.functional as F

    ids, comp = batch["input_ids"], batch["completion"]
    pred = torch.zeros_like(comp)
    pred[:, :-1] = comp[:, 1:]                      # position t predicts token t + 1
    logits = None
    if trim and type(model).__name__ not in _NO_MASK_TRIM:
        try:
            logits = model(input_ids=ids, attention_mask=batch["attention_mask"], logits_to_keep=pred).logits
        except (TypeError, ValueError, RuntimeError, IndexError):
            logits = None
        if logits is None or logits.dim() != 2 or logits.shape[0] != int(pred.sum()):
            _NO_MASK_TRIM.add(type(model).__name__)  # older transformers: no boolean logits_to_keep
            logits = None
    if logits is not None:
        nll = F.cross_entropy(logits.float(), ids[:, 1:][comp[:, 1:]], reduction="none")
        lp = -torch.zeros(ids.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, pred.nonzero()[:, 0], nll)
    else:
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
        nll = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
        lp = -(nll * comp[:, 1:]).sum(dim=1)
    return lp, pred.sum(dim=1)


def _pairs(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["prompt"], r["chosen"]) for r in rows] + [(r["prompt"], r["rejected"]) for r in rows]


def per_example_losses(kind: str, model, tok, rows: list[dict], max_length: int, *, ref_model=None,
                       beta: float = 0.1, device: str = "cpu", trim: bool = True):
    """(losses (n,), owner (n_seq,)) for `kind` in LOSSES; differentiable w.r.t. `model`.
    `trim=False` computes logits at every position (the study's way; benchmarks only)."""
    import torch
    import torch.nn.functional as F

    n = len(rows)
    if kind == "sft":
        batch = collate(tok, [(r["prompt"], r["chosen"]) for r in rows], max_length, device)
        lp, count = sequence_logps(model, batch, trim)
        return -lp / count.clamp(min=1), torch.arange(n)
    owner = torch.cat([torch.arange(n), torch.arange(n)])
    batch = collate(tok, _pairs(rows), max_length, device)
    if kind == "bt":
        r = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()
        return -F.logsigmoid(r[:n] - r[n:]), owner
    lp, _ = sequence_logps(model, batch, trim)
    if kind == "lm_contrast":
        return -F.logsigmoid(lp[:n] - lp[n:]), owner
    if kind == "dpo":
        if ref_model is None:
            raise ValueError("dpo loss needs the reference (SFT) model")
        with torch.no_grad():
            ref, _ = sequence_logps(ref_model, batch, trim)
        margin = (lp[:n] - ref[:n]) - (lp[n:] - ref[n:])
        return -F.logsigmoid(beta * margin), owner
    raise ValueError(f"unknown loss {kind!r}; known: {LOSSES}")
