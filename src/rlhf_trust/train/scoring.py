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


def sequence_logps(model: Any, tok: Any, prompts: list[str], responses: list[str], batch_size: int = 4):
    """(sum of log p(response tokens | prompt), number of response tokens), one per example.

    Sequences are left-padded with explicit position ids (so the result equals the unpadded one)
    and only the last positions' logits are computed (`logits_to_keep`): with a 262k vocabulary
    the LM head over the prompt tokens would otherwise dominate time and memory.
    """
    import torch
    from trl.trainer.utils import selective_log_softmax

    device = next(model.parameters()).device
    out_lp, out_n = [], []
    was_training = model.training
    model.eval()
    for i in _batches(len(prompts), batch_size, "log-probs"):
        seqs, n_resp = [], []
        for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size]):
            full = tok(p + r + tok.eos_token)["input_ids"]
            seqs.append(full)
            n_resp.append(len(full) - len(tok(p)["input_ids"]))
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
        out_lp.append((lp * comp).sum(1).cpu())
        out_n.append(comp.sum(1).cpu())
    model.train(was_training)
    return torch.cat(out_lp), torch.cat(out_n)


def reward_scores(model: Any, tok: Any, prompts: list[str], responses: list[str], batch_size: int = 8):
    """Scalar reward of prompt + response + EOS per example (a num_labels=1 sequence classifier)."""
    import torch

    device = next(model.parameters()).device
    scores = []
    was_training = model.training
    model.eval()
    for i in _batches(len(prompts), batch_size, "rewards"):
        seqs = [tok(p + r + tok.eos_token)["input_ids"]
                for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size])]
        ids, mask = _pad(seqs, tok.pad_token_id)
        with torch.no_grad():
            scores.append(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu())
    model.train(was_training)
    return torch.cat(scores)


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
