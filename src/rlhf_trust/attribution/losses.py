"""Per-example losses whose gradients DataInf compares, for training pairs and trust test pairs.

Every loss takes rows {"prompt", "chosen", "rejected"} (for test rows chosen = the new stage's
continuation, rejected = the previous stage's) and returns (losses (n,), owner (n_rows,)):
one loss per example and, per forward row, the example it belongs to. A pair's two responses share
one prompt (its tail that leaves room for the longer response) and, where the model allows it, one
row: prompt, chosen, rejected, the prompt computed once (`packing`); the numbers are those of the
two separate sequences.

- `sft`: mean token NLL of the chosen response given the prompt (prompt tokens masked; the study
  also scored prompt tokens, we score what SFT trains on).
- `lm_contrast`: -log sigmoid(log pi(chosen|x) - log pi(rejected|x)), summed sequence log-probs:
  "the model prefers its new continuation to the old one" for the SFT stage (no reference model).
- `bt`: reward-model Bradley-Terry loss -log sigmoid(r(x+chosen) - r(x+rejected)) (the study's PPO
  attribution goes through the reward model).
- `dpo`: -log sigmoid(beta [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]) with SUMMED
  sequence log-probs of the response tokens (the study's code used token log_softmax, a bug).
- `kto`: KTO's loss of the pair's two unpaired examples, chosen desirable and rejected undesirable,
  r = beta (log pi(y) - log ref(y)): (1 - sigmoid(r_w - z0)) + (1 - sigmoid(z0 - r_l)), with KTO's
  reference point z0 = 0 (TRL estimates it per micro-batch from mismatched completions and detaches it;
  a batch-dependent constant would make one pair's gradient depend on its neighbours).
- `orpo`: mean token NLL of chosen - beta log sigmoid(log odds(chosen) - log odds(rejected)), the
  odds of the mean token log-probs a: log odds = a - log(1 - exp(a)) (TRL's ORPO).
- `simpo`: -log sigmoid(beta (a_w - a_l) - gamma), a = mean token log-prob (TRL's CPO, loss_type simpo).
"""

from __future__ import annotations

from typing import Any

LOSSES = ("sft", "lm_contrast", "bt", "dpo", "kto", "orpo", "simpo")
WITH_REF = ("dpo", "kto")   # losses that compare with a reference model
_NO_MASK_TRIM: set[str] = set()
_FUSED_OK: dict[str, bool] = {}  # model class -> the fused head matched the model's own logits once
_PACK_OK: dict[tuple[str, str], bool] = {}  # (model class, lp|bt) -> packed pairs matched separate sequences once


def encode(tok, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt+completion and the prompt length. Tokenised separately so the boundary
    is exact; the completion keeps its head, the prompt its tail (the recent turns)."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"][: max(1, max_length - 1)]
    p = p[-max(1, max_length - len(c)):]
    return p + c, len(p)


def encode_pair(tok, prompt: str, chosen: str, rejected: str, max_length: int) -> tuple[list, list, list]:
    """Token ids (prompt, chosen, rejected): one prompt for both responses (the tail that leaves room
    for the longer one), as a pair is compared under the same context; each sequence <= max_length."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    c, r = (tok(x, add_special_tokens=False)["input_ids"][: max(1, max_length - 1)] for x in (chosen, rejected))
    return p[-max(1, max_length - max(len(c), len(r))):], c, r


def row_tokens(kind: str, tok, row: dict, max_length: int) -> int:
    """Tokens `kind` puts through the model for a row (a packed pair: prompt + chosen + rejected),
    the key that groups rows of similar length into micro-batches. Characters are a poor proxy once
    the prompt is cut to fit: sorting 256 HH pairs by characters left 17-19% padded tokens in
    micro-batches of 8, by these counts 2-3%."""
    if kind == "sft":
        return len(encode(tok, row["prompt"], row["chosen"], max_length)[0])
    return sum(map(len, encode_pair(tok, row["prompt"], row["chosen"], row["rejected"], max_length)))


def collate(tok, pairs: list[tuple[str, str]], max_length: int, device: str = "cpu") -> dict[str, Any]:
    """Right-padded batch of prompt+completion with a mask of the completion tokens."""
    return collate_ids(tok, [encode(tok, p, c, max_length) for p, c in pairs], device)


def collate_ids(tok, enc: list[tuple[list[int], int]], device: str = "cpu") -> dict[str, Any]:
    """Right-padded batch from (ids, prompt length) with a mask of the completion tokens that are predicted."""
    import torch

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


def pair_sequences(tok, enc: list[tuple[list, list, list]], device: str = "cpu") -> dict[str, Any]:
    """The 2n separate sequences of n encoded pairs: all prompt+chosen, then all prompt+rejected."""
    return collate_ids(tok, [(p + c, len(p)) for p, c, _ in enc] + [(p + r, len(p)) for p, _, r in enc], device)


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
    if trim:
        tok_lp = _fused_token_logps(model, batch, pred)
        if tok_lp is not None:
            lp = torch.zeros(ids.shape[0], dtype=tok_lp.dtype, device=tok_lp.device)
            return lp.index_add(0, pred.nonzero()[:, 0], tok_lp), pred.sum(dim=1)
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


def _fused_token_logps(model, batch: dict, pred):
    """log p of each predicted completion token via `fused_head` (decoder, then the head in chunks),
    or None where the model has no plain decoder + Linear head split or, checked once per model
    class on one sequence, the split does not reproduce the model's own logits."""
    import torch

    from rlhf_trust.models import fused_head

    name = type(model).__name__
    parts = fused_head.split_head(model) if _FUSED_OK.get(name, True) else None
    if parts is None:
        _FUSED_OK[name] = False
        return None
    if parts[1].weight.requires_grad and torch.is_grad_enabled():  # a trained head: its gradient is wanted
        return None
    decoder, head, cap = parts
    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion"]
    if not comp[:, 1:].any():
        return None

    def run(sel):
        hidden = decoder(input_ids=ids[sel], attention_mask=attn[sel]).last_hidden_state
        return fused_head.token_logps(hidden[pred[sel]], head.weight, head.bias, ids[sel][:, 1:][comp[sel][:, 1:]], cap)

    if name not in _FUSED_OK and bool(pred[0].any()):
        with torch.no_grad():
            got = run(slice(0, 1))
            logits = model(input_ids=ids[:1], attention_mask=attn[:1]).logits[0, :-1].float()
            want = torch.log_softmax(logits, -1)[pred[0, :-1]].gather(1, ids[0, 1:][comp[0, 1:]][:, None])[:, 0]
        # a structural mismatch (a logit scale or cap the split misses) is off by far more than 1e-2;
        # two float32 forwards of Gemma 3 on a CPU already differ by ~1e-3 per token
        _FUSED_OK[name] = bool(torch.allclose(got, want, rtol=0, atol=1e-2))
        if not _FUSED_OK[name]:
            return None
    return run(slice(None))


def _pair_scores(kind: str, model, tok, enc: list, device: str, trim: bool, pack: bool):
    """(chosen, rejected, packed): sequence log-probs ("lp") or rewards ("bt"), (n,) each, packed (prompt once,
    `packing`) when the model allows it - checked once per model class against the two separate
    sequences of the first pair - else as 2n separate sequences."""
    import torch

    from rlhf_trust.attribution import packing

    what = "bt" if kind == "bt" else "lp"

    def separate(items):
        batch = pair_sequences(tok, items, device)
        if what == "bt":
            r = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()
        else:
            r, _ = sequence_logps(model, batch, trim)
        return r[: len(items)], r[len(items):]

    def packed(items):
        fn = packing.rewards if what == "bt" else packing.logps
        return fn(model, packing.pack(tok, items, device))

    key = (type(model).__name__, what)
    # the packed 4D mask replaces the model's own, sliding-window included: pack only where no
    # separate sequence is longer than the window (Gemma 3: 512 tokens, the pipeline's max_length 192)
    window = getattr(model.config, "sliding_window", None)
    fits = not window or max(len(p) + max(len(c), len(r)) for p, c, r in enc) <= window
    if not (pack and trim and fits and _PACK_OK.get(key, True)):
        return (*separate(enc), False)
    if key not in _PACK_OK:
        with torch.no_grad():
            got, want = packed(enc[:1]), separate(enc[:1])
        # a wrong layout (rejected seeing chosen, shifted positions) is off by far more than the
        # ~1e-3 per token two float32 forwards of Gemma 3 already differ by on a CPU
        _PACK_OK[key] = got is not None and all(torch.allclose(g, w, rtol=1e-3, atol=5e-2) for g, w in zip(got, want))
    return (*packed(enc), True) if _PACK_OK[key] else (*separate(enc), False)


def per_example_losses(kind: str, model, tok, rows: list[dict], max_length: int, *, ref_model=None,
                       beta: float = 0.1, gamma: float = 0.5, device: str = "cpu", trim: bool = True,
                       pack: bool = True):
    """(losses (n,), owner (n_rows,)) for `kind` in LOSSES; differentiable w.r.t. `model`.
    `pack`: a pair is one forward row, its prompt computed once (`packing`), else two sequences.
    `trim=False` computes logits at every position of separate sequences (the study's way; benchmarks).
    `beta`: DPO's, KTO's, ORPO's or SimPO's; `gamma`: SimPO's target margin."""
    import torch
    import torch.nn.functional as F

    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; known: {LOSSES}")
    if kind in WITH_REF and ref_model is None:
        raise ValueError(f"{kind} loss needs the reference (SFT) model")
    n = len(rows)
    if kind == "sft":
        batch = collate(tok, [(r["prompt"], r["chosen"]) for r in rows], max_length, device)
        lp, count = sequence_logps(model, batch, trim)
        return -lp / count.clamp(min=1), torch.arange(n)
    enc = [encode_pair(tok, r["prompt"], r["chosen"], r["rejected"], max_length) for r in rows]
    chosen, rejected, packed = _pair_scores(kind, model, tok, enc, device, trim, pack)
    owner = torch.arange(n) if packed else torch.cat([torch.arange(n)] * 2)  # forward rows -> examples
    if kind in ("bt", "lm_contrast"):
        return -F.logsigmoid(chosen - rejected), owner
    if kind in ("orpo", "simpo"):  # reference-free: mean token log-probs
        a_w = chosen / torch.tensor([len(c) for _, c, _ in enc], dtype=chosen.dtype, device=chosen.device)
        a_l = rejected / torch.tensor([len(r) for _, _, r in enc], dtype=rejected.dtype, device=rejected.device)
        if kind == "simpo":
            return -F.logsigmoid(beta * (a_w - a_l) - gamma), owner
        log_odds = (a_w - a_l) - (_log1mexp(a_w) - _log1mexp(a_l))
        return -a_w - beta * F.logsigmoid(log_odds), owner
    with torch.no_grad():  # dpo, kto
        ref_chosen, ref_rejected, _ = _pair_scores(kind, ref_model, tok, enc, device, trim, pack)
    if kind == "kto":
        r_w, r_l = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
        return (1 - torch.sigmoid(r_w)) + (1 - torch.sigmoid(-r_l)), owner
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -F.logsigmoid(beta * margin), owner


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends (x near 0 and very negative)."""
    import torch

    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
