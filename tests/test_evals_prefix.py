"""Prefix KV reuse: rows that share a prompt prefix (a system prompt, TruthfulQA's primer) run it
through the model once; greedy text and log-likelihoods equal the no-reuse path."""

from __future__ import annotations

import pytest
from train_support import base_texts

from rlhf_trust.evals import prefix, toxicity, truthfulness
from rlhf_trust.evals.backends import HFBackend


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, raw_data):
    from rlhf_trust.models import build_tiny_base, load_causal_lm

    return load_causal_lm(build_tiny_base(tmp_path_factory.mktemp("tiny") / "base", base_texts()))


def real_rows(raw_data):
    """Real toxicity prompts under both system prompts, and TruthfulQA log-likelihood rows."""
    from rlhf_trust.data import records

    tox = records.load("toxicity", raw_data)[:5]
    prompts = [toxicity.build_prompt(c, r["prompt"]) for c in ("benign", "adversarial") for r in tox]
    qa = records.load("truthfulness", raw_data)[:3]
    pairs = [(truthfulness.loglik_context(r["question"]), " " + c) for r in qa for c in r["mc1_choices"]]
    return prompts + ["Hi"], pairs


def test_plan_groups_shared_prefixes():
    a, b = [1] * 20, [2] * 20
    seqs = [a + [3, 4], b + [5], a + [6], b + [7, 8, 9], [9, 9]]
    batches = prefix.plan(seqs, [len(s) - 1 for s in seqs], batch_size=4)
    assert sorted(tuple(sorted(b)) for b, _ in batches) == [(0, 2), (1, 3), (4,)]
    assert sorted(p for _, p in batches) == [0, 20, 20]
    capped = prefix.plan(seqs, [5] * len(seqs), batch_size=4)  # caps below MIN_PREFIX: no reuse
    assert all(p == 0 for _, p in capped)


def test_prefix_reuse_equals_no_reuse(tiny, raw_data):
    model, tok = tiny
    prompts, pairs = real_rows(raw_data)
    on = HFBackend(model, tok, batch_size=4, progress=False, prefix_reuse=True)
    off = HFBackend(model, tok, batch_size=4, progress=False, prefix_reuse=False)
    assert on.generate(prompts, max_new_tokens=8) == off.generate(prompts, max_new_tokens=8)
    ll_on, ll_off = on.loglikelihood(pairs), off.loglikelihood(pairs)
    assert max(abs(x - y) for x, y in zip(ll_on, ll_off)) < 1e-4
    assert len(set(ll_on)) > 1  # the rows really differ
    # the shared prefix really ran once per batch: plan finds it on these rows
    enc = [tok(c + x)["input_ids"] for c, x in pairs]
    assert all(p > 100 for _, p in prefix.plan(enc, [len(e) - 3 for e in enc], 4))


def test_options_differing_in_their_last_token_share_one_row(tiny, raw_data):
    """(ctx, " wrong") is read off the (ctx, " not wrong") row: same log-probs as scoring it alone."""
    from rlhf_trust.evals import ethics
    from rlhf_trust.evals.backends import share_rows

    model, tok = tiny
    be = HFBackend(model, tok, batch_size=4, progress=False)
    ctx = [ethics.FRAME.format(prefix=ethics.PREFIXES["benign"], input=t)
           for t in ("I took the last cookie.", "I helped my neighbour carry her groceries.")]
    pairs = [(c, o) for c in ctx for o in (" wrong", " not wrong", " I agree", " I disagree")]
    together = be.loglikelihood(pairs)
    alone = [be.loglikelihood([pr])[0] for pr in pairs]
    assert max(abs(x - y) for x, y in zip(together, alone)) < 1e-4
    # gemma-3 tokens: " wrong" = [w], " not wrong" = [n, w]; " I agree" = [I, a], " I disagree" = [I, d]
    c, w, n, i, a, d = [5, 6, 7], 10, 11, 12, 13, 14
    seqs = [c + [w], c + [n, w], c + [i, a], c + [i, d], [9] + [w]]
    conts = [1, 2, 2, 2, 1]
    assert share_rows(seqs, conts) == {1: [0], 2: [3]}  # different context: never shared


@pytest.mark.parametrize("window", [512, 16])
def test_prefix_reuse_on_gemma3_architecture(tiny, window):
    """gemma-3 (the default model) mixes sliding-window and global layers: a random small Gemma3
    with gemma-3-270m's window (512) reuses prefixes exactly; with a window shorter than the rows
    (16) reuse switches itself off, so the answers still equal the no-reuse path."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tok = tiny
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=window,
                           layer_types=["sliding_attention"] * 3 + ["full_attention"],
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = Gemma3ForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    prompts = [toxicity.build_prompt("adversarial", t) for t in ("The dog", "A long walk in the park with my",
                                                                 "Why is the sky", "Tell me")]
    on = HFBackend(model, tok, batch_size=4, progress=False, prefix_reuse=True)
    off = HFBackend(model, tok, batch_size=4, progress=False, prefix_reuse=False)
    assert on.generate(prompts, max_new_tokens=8) == off.generate(prompts, max_new_tokens=8)
    pairs = [(p, o) for p in prompts for o in (" wrong", " not wrong")]
    assert max(abs(x - y) for x, y in zip(on.loglikelihood(pairs), off.loglikelihood(pairs))) < 1e-4
