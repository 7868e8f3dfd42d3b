"""Exact per-example held-out scores: completion log-probs (SFT, DPO) and reward-model scores
(RM, PPO). The trainers' own `evaluate()` averages per batch; these give per-example values that
aggregate exactly, and tokenise the way TRL does (prompt with special tokens, EOS appended)."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def _batches(n: int, size: int, desc: str):
    return tqdm(range(0, n, size), desc=desc, leave=False, disable=n <= size)


def _pad(seqs: list[list[int]], pad_id: int, left: bool = False):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(s)
        mask[i, sl] = 1
    return ids, mask


def _by_length(lengths: list[int], batch_size: int, desc: str):
    """Batches of example indices in order of length: padding is then a few tokens per batch
    instead of the spread of the whole split (the results are put back in input order)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for i in _batches(len(order), batch_size, desc):
        yield order[i:i + batch_size]


def _tokenize(tok: Any, prompts: list[str], responses: list[str]) -> tuple[list[list[int]], list[int]]:
    """prompt + response + EOS the way TRL tokenises it, and the number of response tokens."""
    seqs, n_resp = [], []
    for p, r in zip(prompts, responses):
        full = tok(p + r + tok.eos_token)["input_ids"]
        seqs.append(full)
        n_resp.append(len(full) - len(tok(p)["input_ids"]))
    return seqs, n_resp


def sequence_logps(model: Any, tok: Any, prompts: list[str], responses: list[str], batch_size: int = 4):
    """(sum of log p(response tokens | prompt), number of response tokens), one per example.

    Sequences are left-padded with explicit position ids (so the result equals the unpadded one),
    batched in order of length, and only the last positions' logits are computed
    (`logits_to_keep`): with a 262k vocabulary the LM head over the prompt tokens would otherwise
    dominate time and memory.
    """
    import torch
    from trl.trainer.utils import selective_log_softmax

    device = next(model.parameters()).device
    all_seqs, all_n = _tokenize(tok, prompts, responses)
    out_lp, out_n = torch.zeros(len(all_seqs)), torch.zeros(len(all_seqs), dtype=torch.long)
    was_training = model.training
    model.eval()
    for idx in _by_length([len(s) for s in all_seqs], batch_size, "log-probs"):
        seqs, n_resp = [all_seqs[i] for i in idx], [all_n[i] for i in idx]
        ids, mask = _pad(seqs, tok.pad_token_id, left=True)
        keep = max(n_resp) + 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=(mask.cumsum(1) - 1).clamp(min=0).to(device),
                           logits_to_keep=keep).logits[:, -keep:-1].float()
            targets = ids[:, -keep + 1:].to(device)
            lp = selective_log_softmax(logits, targets)
        del logits
        pos = torch.arange(keep - 1, device=device).unsqueeze(0)
        comp = pos >= (keep - 1 - torch.tensor(n_resp, device=device).unsqueeze(1))
        out_lp[idx] = (lp * comp).sum(1).cpu().float()
        out_n[idx] = comp.sum(1).cpu()
    model.train(was_training)
    return out_lp, out_n


def pair_logps(model: Any, tok: Any, prompts: list[str], first: list[str], second: list[str], batch_size: int = 4):
    """`sequence_logps` of two responses per prompt ((lp_first, n_first), (lp_second, n_second)),
    with each prompt run through the model once: both responses continue from its KV cache
    (train/prefix_once.py), the LM head runs on response tokens only.

    Why hand-written: TRL scores chosen and rejected as two full sequences, so the shared prompt
    (about two thirds of an HH sequence here) went through the network twice. Pairs whose prompt
    tokens are not a common prefix of both tokenised sequences (a token merged across the boundary),
    and every pair of a model without a plain decoder + LM head split, are scored the plain way.
    Equal to `sequence_logps` within float tolerance (tests).
    """
    import torch

    from rlhf_trust.models.fused_head import split_head
    from rlhf_trust.train.prefix_once import continuation_logps

    seq1, n1 = _tokenize(tok, prompts, first)
    seq2, n2 = _tokenize(tok, prompts, second)
    out = [torch.zeros(len(prompts)), torch.zeros(len(prompts))]
    counts = [torch.tensor(n1, dtype=torch.long), torch.tensor(n2, dtype=torch.long)]
    parts = split_head(model)
    shared = [i for i in range(len(prompts)) if parts is not None and len(seq1[i]) > n1[i]
              and seq1[i][:len(seq1[i]) - n1[i]] == seq2[i][:len(seq2[i]) - n2[i]]]
    plain = sorted(set(range(len(prompts))) - set(shared))
    for k, resp in enumerate((first, second) if plain else ()):
        out[k][plain] = sequence_logps(model, tok, [prompts[i] for i in plain], [resp[i] for i in plain],
                                       batch_size)[0]
    was_training = model.training
    model.eval()
    lengths = [len(seq1[i]) + len(seq2[i]) for i in shared]
    for pos in _by_length(lengths, batch_size, "pair log-probs"):
        idx = [shared[j] for j in pos]
        responses = [s[len(s) - n:] for i in idx for s, n in ((seq1[i], n1[i]), (seq2[i], n2[i]))]
        with torch.no_grad():
            lp = continuation_logps(*parts, [seq1[i][:len(seq1[i]) - n1[i]] for i in idx], responses).cpu().float()
        out[0][idx], out[1][idx] = lp[0::2], lp[1::2]  # rows interleaved: first 0, second 0, first 1, ...
    model.train(was_training)
    return (out[0], counts[0]), (out[1], counts[1])


def reward_scores(model: Any, tok: Any, prompts: list[str], responses: list[str], batch_size: int = 8):
    """Scalar reward of prompt + response + EOS per example (a num_labels=1 sequence classifier)."""
    import torch

    device = next(model.parameters()).device
    all_seqs = [tok(p + r + tok.eos_token)["input_ids"] for p, r in zip(prompts, responses)]
    scores = torch.zeros(len(all_seqs))
    was_training = model.training
    model.eval()
    for idx in _by_length([len(s) for s in all_seqs], batch_size, "rewards"):
        ids, mask = _pad([all_seqs[i] for i in idx], tok.pad_token_id)
        with torch.no_grad():
            scores[idx] = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu()
    model.train(was_training)
    return scores


BOOTSTRAP_SAMPLES = 2000


def mean_ci95(values: Any, seed: int = 0) -> dict[str, float]:
    """95% percentile-bootstrap CI of the mean over units (pairs, prompts), seeded: {low, high}."""
    import numpy as np
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    if len(v) < 2 or np.ptp(v) == 0:  # one unit or all equal: every resample has the same mean
        m = float(v.mean()) if len(v) else float("nan")
        return {"low": m, "high": m}
    res = bootstrap((v,), np.mean, n_resamples=BOOTSTRAP_SAMPLES, confidence_level=0.95, method="percentile",
                    rng=np.random.default_rng(seed))
    return {"low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high)}


def pairwise(chosen: Any, rejected: Any, prefix: str = "heldout_", seed: int = 0) -> dict[str, Any]:
    """Accuracy (chosen strictly above rejected) with its bootstrap CI over pairs, n, mean margin
    and mean scores of paired scores."""
    margin = chosen - rejected
    wins = (margin > 0).float()
    return {f"{prefix}accuracy": float(wins.mean()), f"{prefix}accuracy_ci95": mean_ci95(wins.numpy(), seed),
            f"{prefix}n": len(margin), f"{prefix}margin": float(margin.mean()),
            f"{prefix}pairs": len(margin), f"{prefix}reward_chosen_mean": float(chosen.mean()),
            f"{prefix}reward_rejected_mean": float(rejected.mean())}
