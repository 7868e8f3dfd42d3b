"""The generation engine: batched HF backend (left padding, own EOS), log-likelihoods, the cache
(zero model calls on a re-run, sampled generations too), kill-and-resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from train_support import base_texts

from rlhf_trust.evals import evaluate
from rlhf_trust.evals.backends import CallableBackend, HFBackend
from rlhf_trust.evals.cache import Cache, CachedBackend

PROMPTS = ["Human: hello there\n\nAssistant:", "Human: what is the capital of france and why is it",
           "Hi", "Human: tell me a story about a dog that learns to fly over the sea\n\nAssistant: Once"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, raw_data):
    from rlhf_trust.models import build_tiny_base, load_causal_lm

    d = build_tiny_base(tmp_path_factory.mktemp("tiny") / "base", base_texts())
    model, tok = load_causal_lm(d)
    return model, tok


def backend(tiny, **kw):
    model, tok = tiny
    return HFBackend(model, tok, fingerprint="tiny", progress=False, **kw)


def test_batched_greedy_matches_one_at_a_time(tiny):
    batched = backend(tiny, batch_size=4).generate(PROMPTS, max_new_tokens=8)
    single = backend(tiny, batch_size=1).generate(PROMPTS, max_new_tokens=8)
    assert batched == single
    assert all(len(g) == 1 and isinstance(g[0], str) for g in batched)


def test_continuation_only_and_own_eos(tiny):
    model, tok = tiny
    b = backend(tiny, batch_size=2)
    assert b.eos_ids == [tok.eos_token_id] and b.pad_id == tok.pad_token_id != 50256
    out = b.generate(PROMPTS[:2], max_new_tokens=6)
    for p, (g,) in zip(PROMPTS[:2], out):
        assert not g.startswith(p)
    # make the token greedy decoding picks first an EOS id: generation must stop right there
    ids = tok(PROMPTS[0], return_tensors="pt")
    import torch

    with torch.no_grad():
        first = int(model(**ids).logits[0, -1].argmax())
    b.eos_ids = [first]
    b.generated_tokens = 0
    assert b.generate(PROMPTS[:1], max_new_tokens=6) == [[""]]
    assert b.generated_tokens == 1


def test_sampling_is_seeded(tiny):
    b = backend(tiny, batch_size=4)
    a1 = b.generate(PROMPTS, max_new_tokens=6, temperature=1.0, num_return_sequences=3, seed=0)
    a2 = b.generate(PROMPTS, max_new_tokens=6, temperature=1.0, num_return_sequences=3, seed=0)
    a3 = b.generate(PROMPTS, max_new_tokens=6, temperature=1.0, num_return_sequences=3, seed=1)
    assert a1 == a2 and a1 != a3
    assert len({s for g in a1 for s in g}) > len(PROMPTS)  # independent samples differ


def test_loglikelihood_matches_an_unpadded_forward(tiny):
    import torch

    model, tok = tiny
    pairs = [("Human: hello", " there friend"), ("A much longer context about dogs and cats", " yes"),
             ("Q", " a b c d e")]
    got = backend(tiny, batch_size=3).loglikelihood(pairs)
    for (ctx, cont), ll in zip(pairs, got):
        ids = tok(ctx + cont)["input_ids"]
        n_ctx = len(tok(ctx)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        ref = sum(float(logp[t - 1, ids[t]]) for t in range(n_ctx, len(ids)))
        assert ll == pytest.approx(ref, abs=1e-3)


def test_cached_rerun_makes_zero_model_calls(raw_data, tmp_path):
    fn = lambda p, i: f" I agree. {i}"
    first = CallableBackend(fn, fingerprint="m1")
    cache = Cache(tmp_path / "c.sqlite")
    m1 = evaluate("bias", CachedBackend(first, cache, progress=False), data_dir=raw_data, limit=5)
    assert first.calls == 5 * 4  # 5 statements x 4 samples (the study's frame, no system prompt)
    again = CallableBackend(fn, fingerprint="m1")
    cb = CachedBackend(again, Cache(tmp_path / "c.sqlite"), progress=False)
    m2 = evaluate("bias", cb, data_dir=raw_data, limit=5)
    assert again.calls == 0 and cb.misses == 0 and cb.hits == 20 and m1 == m2
    # another seed (sampled vertical) or another model is a different key
    evaluate("bias", cb, data_dir=raw_data, limit=5, seed=1)
    assert again.calls == 20
    other = CallableBackend(fn, fingerprint="m2")
    evaluate("bias", CachedBackend(other, cache, progress=False), data_dir=raw_data, limit=5)
    assert other.calls == 20


def test_greedy_cache_ignores_seed_and_covers_loglik(tmp_path):
    b = CallableBackend(lambda p, i: p[::-1], fingerprint="g")
    cb = CachedBackend(b, Cache(tmp_path / "c.sqlite"), progress=False)
    g0 = cb.generate(PROMPTS, max_new_tokens=4, temperature=0.0, seed=0)
    g5 = cb.generate(PROMPTS, max_new_tokens=4, temperature=0.0, seed=5)  # greedy: seed-free key
    assert g0 == g5 and b.calls == len(PROMPTS)
    cb.generate(PROMPTS, max_new_tokens=5, temperature=0.0, seed=0)  # other settings: new key
    assert b.calls == 2 * len(PROMPTS)
    pairs = [(p, " x") for p in PROMPTS]
    assert cb.loglikelihood(pairs) == cb.loglikelihood(pairs)
    assert b.calls == 3 * len(PROMPTS)


def test_sampled_hf_generations_are_cached(tiny, tmp_path):
    cache = Cache(tmp_path / "c.sqlite")
    cb = CachedBackend(backend(tiny, batch_size=2), cache, progress=False)
    a = cb.generate(PROMPTS, max_new_tokens=5, temperature=0.7, num_return_sequences=2, seed=3)
    assert cb.misses == 8
    b = cb.generate(PROMPTS, max_new_tokens=5, temperature=0.7, num_return_sequences=2, seed=3)
    assert a == b and cb.misses == 8 and cb.hits == 8


KILL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from rlhf_trust.evals import evaluate
    from rlhf_trust.evals.backends import CallableBackend
    from rlhf_trust.evals.cache import Cache, CachedBackend

    def fn(prompt, i):
        time.sleep(0.02)
        return " not wrong." if len(prompt) % 3 else " wrong."

    cb = CachedBackend(CallableBackend(fn, fingerprint="killme"), Cache(sys.argv[1]), chunk_size=4,
                       progress=False)
    print(json.dumps(evaluate("ethics", cb, data_dir=sys.argv[2], limit=30)))
""")


def _count(path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_metrics(raw_data, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    cache = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, str(script), str(cache), str(raw_data)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 60
    while _count(cache) < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up, no atexit: like the OOM killer
    proc.wait()
    done = _count(cache)
    assert 12 <= done < 60, "the kill should land mid-run"

    def fn(prompt, i):
        return " not wrong." if len(prompt) % 3 else " wrong."

    resumed = CallableBackend(fn, fingerprint="killme")
    m_resumed = evaluate("ethics", CachedBackend(resumed, Cache(cache), progress=False),
                         data_dir=raw_data, limit=30)
    assert resumed.calls == 60 - done  # only the missing generations ran
    fresh = CallableBackend(fn, fingerprint="killme")
    m_fresh = evaluate("ethics", CachedBackend(fresh, Cache(tmp_path / "fresh.sqlite"), progress=False),
                       data_dir=raw_data, limit=30)
    assert fresh.calls == 60 and m_resumed == m_fresh
