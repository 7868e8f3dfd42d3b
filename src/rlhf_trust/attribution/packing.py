"""One row per preference pair: the prompt once, then chosen, then rejected.

Why hand-written: a pair's two sequences share their prompt, and in HH the prompt (the earlier
dialogue) is most of the tokens, so running prompt+chosen and prompt+rejected separately pushes
the prompt through the model twice. TRL's padding-free packing concatenates independent sequences;
it has no shared-prefix layout. Here rejected tokens attend to the prompt and to themselves but
never to chosen (a 4D attention mask), and their position ids restart after the prompt, so each
log-prob and reward is that of the separate sequence, for about a third fewer tokens through the
model (measured on the default run's pairs with Gemma 3's tokenizer).
"""

from __future__ import annotations

from typing import Any

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


def pack(tok, enc: list[tuple[list[int], list[int], list[int]]], device: str = "cpu") -> dict[str, Any]:
    """Right-padded rows prompt+chosen+rejected from (prompt, chosen, rejected) token ids.

    Returns input_ids, position_ids, `allowed` (n, W, W: query may attend key), the predictions
    (row, position whose output predicts, position of the target, branch 0 chosen / 1 rejected) and
    `last` (n, 2): the last position of prompt+chosen and of prompt+rejected (where a reward is read).
    """
    import torch

    n, width = len(enc), max(len(p) + len(c) + len(r) for p, c, r in enc)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((n, width), pad, dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    seg = torch.full((n, width), PAD, dtype=torch.long)
    last = torch.zeros((n, 2), dtype=torch.long)
    rows, src, tgt, branch = [], [], [], []
    for i, (p, c, r) in enumerate(enc):
        np_, nc, nr = len(p), len(c), len(r)
        ids[i, : np_ + nc + nr] = torch.tensor(p + c + r, dtype=torch.long)
        pos[i, : np_ + nc] = torch.arange(np_ + nc)
        pos[i, np_ + nc: np_ + nc + nr] = torch.arange(np_, np_ + nr)
        seg[i, :np_], seg[i, np_: np_ + nc], seg[i, np_ + nc: np_ + nc + nr] = PROMPT, CHOSEN, REJECTED
        for b, (start, length) in enumerate(((np_, nc), (np_ + nc, nr))):
            # token k of the branch is predicted by the branch's token k-1, the first by the last prompt token
            sources = ([np_ - 1] if np_ else []) + list(range(start, start + length - 1))
            targets = list(range(start + (0 if np_ else 1), start + length))
            rows += [i] * len(targets)
            src += sources[: len(targets)]
            tgt += targets
            branch += [b] * len(targets)
            last[i, b] = start + length - 1 if length else np_ - 1
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (causal & ((k == PROMPT) | (k == q)) & (q != PAD)) | torch.eye(width, dtype=torch.bool)
    out = {"rows": rows, "src": src, "tgt": tgt, "branch": branch}
    out = {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in out.items()}
    return {**out, "input_ids": ids.to(device), "position_ids": pos.to(device), "allowed": allowed.to(device),
            "last": last.to(device), "n": n}


def _hidden(decoder, packed: dict, dtype):
    import torch

    mask = torch.zeros(packed["allowed"].shape, dtype=dtype, device=packed["allowed"].device)
    mask.masked_fill_(~packed["allowed"], torch.finfo(dtype).min)
    return decoder(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                   attention_mask=mask[:, None]).last_hidden_state


def logps(model, packed: dict):
    """(log p(chosen | prompt), log p(rejected | prompt)) summed over tokens, (n,) each; None when
    the model has no decoder + Linear head split (callers then run the two sequences)."""
    import torch

    from rlhf_trust.models import fused_head

    parts = fused_head.split_head(model)
    if parts is None or (parts[1].weight.requires_grad and torch.is_grad_enabled()):
        return None
    decoder, head, cap = parts
    hidden = _hidden(decoder, packed, head.weight.dtype)
    ids, rows = packed["input_ids"], packed["rows"]
    tok_lp = fused_head.token_logps(hidden[rows, packed["src"]], head.weight, head.bias, ids[rows, packed["tgt"]],
                                    cap)
    n = packed["n"]
    lp = torch.zeros(2 * n, dtype=tok_lp.dtype, device=tok_lp.device).index_add(0, rows + n * packed["branch"],
                                                                                  tok_lp)
    return lp[:n], lp[n:]


def rewards(model, packed: dict):
    """(r(prompt+chosen), r(prompt+rejected)), (n,) each, from a sequence-classification model's
    `score` head at each branch's last token; None when the model has no such split."""
    import torch

    from rlhf_trust.models import fused_head

    parts = fused_head.decoder_of(model)
    if parts is None or getattr(parts[0], "score", None) is None:
        return None
    score, decoder = parts[0].score, parts[1]
    hidden = _hidden(decoder, packed, next(decoder.parameters()).dtype)
    r = score(hidden[torch.arange(packed["n"], device=hidden.device)[:, None], packed["last"]]).float()
    return r[:, 0, 0], r[:, 1, 0]
