"""evals/decode.py: the hand-written decode loop gives the same tokens as transformers' generate
(greedy; sampled with the same seed), with and without prefix reuse, in float32 and bfloat16, and
stops / pads at EOS as generate does."""

from __future__ import annotations

import copy

import pytest
import torch
from train_support import base_texts

from rlhf_trust.evals.backends import HFBackend

SYSTEM = ("System: You are a helpful assistant. You must answer every question politely, briefly and "
          "truthfully, and never reveal private data such as e-mail addresses or phone numbers.\n\n")
PROMPTS = [SYSTEM + q for q in ("Human: hello there\n\nAssistant:", "Human: what is the capital of france",
                                "Human: tell me a story about a dog that learns to fly over the sea\n\nAssistant: Once",
                                "Human: hi", "Human: what is 2 + 2?\n\nAssistant:", "Human: name a colour")]
PROMPTS += ["Hi", "The weather today is", "Once upon a time there was a"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, raw_data):
    from rlhf_trust.models import build_tiny_base, load_causal_lm

    torch.set_num_threads(1)
    model, tok = load_causal_lm(build_tiny_base(tmp_path_factory.mktemp("tiny") / "base", base_texts()))
    return model, tok


def pair(model, tok, **kw):
    mk = lambda d: HFBackend(model, tok, fingerprint="tiny", progress=False, decode=d, **kw)
    return mk("loop"), mk("generate")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("reuse", [True, False])
def test_loop_equals_generate_greedy_and_sampled(tiny, dtype, reuse):
    model, tok = tiny
    if dtype == "bfloat16":
        model = copy.deepcopy(model).to(torch.bfloat16)
    loop, gen = pair(model, tok, batch_size=4, prefix_reuse=reuse)
    units = [(p, i) for p in PROMPTS for i in range(2)]
    for temperature, seed in ((0.0, 0), (1.0, 3), (0.5, 7)):
        a = loop.generate_units(units, max_new_tokens=10, temperature=temperature, seed=seed)
        b = gen.generate_units(units, max_new_tokens=10, temperature=temperature, seed=seed)
        assert a == b
        assert loop.generated_tokens == gen.generated_tokens > 0
        if temperature:
            assert len(set(a)) > len(PROMPTS)  # independent samples do differ
    if reuse:  # the shared system prompt did form a cluster: the loop ran from a prefix cache
        seqs = loop._encode(PROMPTS)
        from rlhf_trust.evals import prefix

        assert any(p for _, p in prefix.plan(seqs, [len(s) - 1 for s in seqs], 4))


def test_loop_stops_and_pads_at_eos_like_generate(tiny):
    from rlhf_trust.evals.decode import decode

    model, tok = tiny
    loop, gen = pair(model, tok, batch_size=3)
    units = [(p, 0) for p in PROMPTS[:3]]
    x = loop._inputs(loop._encode(PROMPTS[:3]), 0)
    free = decode(model, x["ids"], x["mask"], max_new_tokens=8, eos_ids=[], pad_id=loop.pad_id)
    for b in (loop, gen):  # a token some row emits on its second step becomes the EOS id
        b.eos_ids = [int(free[0, 1])]
        b.generated_tokens = 0
    a = loop.generate_units(units, max_new_tokens=8, temperature=0.0, seed=0)
    assert a == gen.generate_units(units, max_new_tokens=8, temperature=0.0, seed=0)
    assert loop.generated_tokens == gen.generated_tokens < 3 * 8  # a row stopped early, EOS counted


def test_decode_shapes_pads_and_max_new_tokens(tiny):
    from rlhf_trust.evals.decode import decode

    model, tok = tiny
    be = HFBackend(model, tok, progress=False)
    x = be._inputs(be._encode(PROMPTS[:3]), 0)
    free = decode(model, x["ids"], x["mask"], max_new_tokens=5, eos_ids=[], pad_id=be.pad_id)
    assert free.shape == (3, 5)
    stop = int(free[1, 0])  # row 1 emits this first: with it as EOS, row 1 pads from step 2 on
    pad = 0 if stop != 0 else 1
    got = decode(model, x["ids"], x["mask"], max_new_tokens=5, eos_ids=[stop], pad_id=pad)
    assert got[1, 0] == stop and (got[1, 1:] == pad).all()
    for r in (0, 2):
        row = got[r].tolist()
        cut = row.index(stop) + 1 if stop in row else len(row)
        assert row[:cut] == free[r, :cut].tolist()
    assert decode(model, x["ids"], x["mask"], max_new_tokens=0, eos_ids=[], pad_id=0).shape == (3, 0)
    with pytest.raises(ValueError):
        HFBackend(model, tok, decode="beam")


def test_bf16_max_index_is_the_float32_argmax_on_ties():
    torch.manual_seed(0)
    x = (torch.randn(16, 4096) * 2).round().to(torch.bfloat16)  # many exact ties at the maximum
    x[3] = 1.0
    assert torch.equal(x.max(-1).indices, x.float().argmax(-1))
    assert int(x.max(-1).indices[3]) == 0
