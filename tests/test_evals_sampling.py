"""The inverse-CDF temperature sampler (evals/sampling.py): an exact draw from softmax(logits / T),
deterministic per seed, wired into HFBackend's generate, and part of a sampled unit's cache key."""

from __future__ import annotations

import pytest
import torch
from train_support import base_texts

from rlhf_trust.evals.backends import CallableBackend, HFBackend
from rlhf_trust.evals.cache import Cache, CachedBackend
from rlhf_trust.evals.sampling import BLOCK, InverseCDFSampler, inverse_cdf_draw

torch.set_num_threads(1)


@pytest.mark.parametrize("vocab", [1500, 2 * BLOCK])  # padded to whole blocks / exactly two blocks
def test_frequencies_match_softmax_chi_square(vocab):
    from scipy.stats import chisquare

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(vocab, generator=g) * 3
    logits[::7] = float("-inf")  # zero-mass tokens, never drawn
    logits[vocab - 1] = 9.0  # a heavy token in the last (padded) block
    temperature = 0.7
    p = torch.softmax(logits.double() / temperature, -1)
    torch.manual_seed(0)
    n = 40_000
    idx = inverse_cdf_draw(logits.repeat(n, 1), temperature)[:, 0]
    counts = torch.bincount(idx, minlength=vocab).double()
    assert counts[::7].sum() == 0
    big = p * n >= 5  # chi-square needs expected counts >= 5: the rest pooled into one cell
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([p[big] * n, (p[~big] * n).sum()[None]])
    assert big.sum() > 20
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3
    assert abs(counts[vocab - 1] / n - p[vocab - 1]) < 4 * (p[vocab - 1] * (1 - p[vocab - 1]) / n) ** 0.5


def test_same_seed_same_draw_and_processor_leaves_only_the_draw():
    scores = torch.randn(4, 3000)
    torch.manual_seed(5)
    a = inverse_cdf_draw(scores, 0.5)
    torch.manual_seed(5)
    out = InverseCDFSampler(0.5)(None, scores.clone())
    assert torch.equal(out.argmax(-1, keepdim=True), a)
    assert torch.isfinite(out).sum() == 4
    with pytest.raises(ValueError):
        InverseCDFSampler(0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, raw_data):
    from rlhf_trust.models import build_tiny_base, load_causal_lm

    return load_causal_lm(build_tiny_base(tmp_path_factory.mktemp("tiny") / "base", base_texts()))


def test_hf_backend_inverse_cdf_sampling(tiny):
    model, tok = tiny
    prompts = ["The weather today is", "My favourite food is", "Once upon a time"]
    units = [(p, i) for p in prompts for i in range(2)]
    be = HFBackend(model, tok, batch_size=4, progress=False)
    assert be.sampler == "inverse_cdf"
    first = be.generate_units(units, max_new_tokens=6, temperature=1.0, seed=3)
    assert be.generate_units(units, max_new_tokens=6, temperature=1.0, seed=3) == first  # same seed, same text
    assert be.generate_units(units, max_new_tokens=6, temperature=1.0, seed=4) != first
    # a near-zero temperature puts all the mass on the argmax: the draw is greedy's text
    greedy = be.generate_units(units, max_new_tokens=6, temperature=0.0, seed=0)
    assert be.generate_units(units, max_new_tokens=6, temperature=1e-6, seed=3) == greedy
    with pytest.raises(ValueError):
        HFBackend(model, tok, sampler="top_k")


def test_sampler_enters_the_cache_key_of_sampled_units_only():
    def backend(sampler):
        b = CallableBackend(lambda p, i: f"{sampler}-{i}", fingerprint="m")
        b.sampler = sampler
        return CachedBackend(b, Cache(None), progress=False)

    units = [("a prompt", 0)]
    shared = Cache(None)
    for sampler in ("multinomial", "inverse_cdf"):
        cb = backend(sampler)
        cb.cache = shared
        assert cb.generate_units(units, max_new_tokens=4, temperature=0.5, seed=0) == [f"{sampler}-0"]
        assert cb.misses == 1  # the other sampler's cached sample was not reused
    greedy = backend("inverse_cdf")
    greedy.cache = shared
    greedy.generate_units(units, max_new_tokens=4, temperature=0.0, seed=0)
    other = backend("multinomial")
    other.cache = shared
    assert other.generate_units(units, max_new_tokens=4, temperature=0.0, seed=0) == ["inverse_cdf-0"]
    assert other.hits == 1  # greedy text does not depend on the sampler: one key


def test_bf16_scores_draw_as_their_float32_copy():
    """evals/decode.py hands the sampler bf16 logits: the draw equals the one from transformers'
    float32 copy of them (same probabilities bit for bit, same uniforms)."""
    torch.manual_seed(1)
    scores = (torch.randn(6, 5000) * 4).to(torch.bfloat16)
    scores[2, :7] = float("-inf")
    work = torch.full((6, 5000), 123.0)  # a reused buffer's stale contents must not matter
    for t in (0.5, 1.0, 1.3):
        torch.manual_seed(9)
        a = inverse_cdf_draw(scores, t)
        torch.manual_seed(9)
        b = inverse_cdf_draw(scores.float(), t, inplace=True)
        torch.manual_seed(9)
        c = inverse_cdf_draw(scores, t, out=work)
        assert torch.equal(a, b) and torch.equal(a, c)
    # the unnormalised probabilities themselves are bitwise those of the float32 path
    f = scores.float()
    ref = (f - f.amax(-1, keepdim=True)).mul_(1 / 1.3).exp_()
    assert torch.equal(work, ref)
