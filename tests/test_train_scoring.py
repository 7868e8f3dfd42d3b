import pytest
import torch
from train_support import hh_pairs, native_bf16, tiny_texts

from rlhf_trust.models import build_tiny_base, load_merged_causal_lm, load_tokenizer
from rlhf_trust.train import inputs, precision, scoring


@pytest.fixture(autouse=True)
def _native_bf16(monkeypatch):
    native_bf16(monkeypatch)


def test_sequence_logps_equal_unpadded_reference(tmp_path):
    build_tiny_base(tmp_path / "b", tiny_texts())
    model, tok = load_merged_causal_lm(tmp_path / "b"), load_tokenizer(tmp_path / "b")
    rows = hh_pairs(5, max_chars=120)
    lp, n = scoring.sequence_logps(model, tok, [r["prompt"] for r in rows], [r["chosen"] for r in rows], 3)
    for i, r in enumerate(rows):
        full = tok(r["prompt"] + r["chosen"] + tok.eos_token)["input_ids"]
        k = len(tok(r["prompt"])["input_ids"])
        x = torch.tensor([full])
        with torch.no_grad():
            logp = model(input_ids=x).logits[0, :-1].log_softmax(-1)
        ref = logp[torch.arange(len(full) - 1), x[0, 1:]][k - 1:].sum()
        assert int(n[i]) == len(full) - k
        assert float(lp[i]) == pytest.approx(float(ref), rel=1e-5)


def test_clip_keeps_last_prompt_tokens_and_first_response_tokens(tmp_path):
    build_tiny_base(tmp_path / "b", tiny_texts())
    tok = load_tokenizer(tmp_path / "b")
    row = hh_pairs(1, max_chars=2000)[0]
    (c,) = inputs.clip(tok, [row], 20, 40)
    assert row["prompt"].endswith(c["prompt"]) and c["prompt"].endswith("\n\nAssistant:")
    assert len(tok(c["prompt"], add_special_tokens=False)["input_ids"]) <= 21
    for side in ("chosen", "rejected"):
        assert row[side].startswith(c[side])
        assert len(tok(c["prompt"] + c[side])["input_ids"]) + 1 <= 40


def test_pairwise_ci_fields_on_known_answer():
    """150 wins in 200 pairs: accuracy 0.75, a seeded 95% bootstrap CI close to the normal one
    (0.75 +- 1.96 * sqrt(0.75 * 0.25 / 200) = [0.690, 0.810]); all wins: a point CI at 1."""
    chosen = torch.tensor([1.0] * 150 + [-1.0] * 50)
    m = scoring.pairwise(chosen, torch.zeros(200))
    assert m["heldout_accuracy"] == 0.75 and m["heldout_n"] == 200
    ci = m["heldout_accuracy_ci95"]
    assert abs(ci["low"] - 0.690) < 0.012 and abs(ci["high"] - 0.810) < 0.012
    assert scoring.pairwise(chosen, torch.zeros(200))["heldout_accuracy_ci95"] == ci  # seeded
    assert scoring.pairwise(torch.ones(5), torch.zeros(5))["heldout_accuracy_ci95"] == {"low": 1.0, "high": 1.0}
    gain = scoring.mean_ci95([0.5, 1.5, 1.0, 2.0, 0.0, 1.0])  # a gain's CI brackets its mean
    assert gain["low"] < 1.0 < gain["high"]


def _casts(fn) -> int:
    """How many dtype conversions (aten::_to_copy) `fn` ran."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")


def test_heldout_bf16_casts_frozen_weights_once_with_the_same_scores(tmp_path):
    """heldout_precision bfloat16 runs bf16 even for a stage trained in float32 (DPO, PPO);
    `heldout_autocast(cfg, model)` holds the frozen Linear weights as bf16 copies for the pass
    (train/frozen_bf16.py, training's helper): bit-identical scores to autocast's per-call recasts with
    fewer casts, and afterwards the very same fp32 parameters with their requires_grad flags."""
    from types import SimpleNamespace

    torch.set_num_threads(1)
    build_tiny_base(tmp_path / "b", tiny_texts())
    model, tok = load_merged_causal_lm(tmp_path / "b").requires_grad_(False), load_tokenizer(tmp_path / "b")
    model.gpt_neox.final_layer_norm.weight.requires_grad_(True)  # a trainable one stays trainable
    before = {n: (p, p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()}
    rows = hh_pairs(6, max_chars=120)
    args = (model, tok, [r["prompt"] for r in rows], [r["chosen"] for r in rows], 2)  # 3 batches
    cfg = SimpleNamespace(precision="float32", heldout_precision="bfloat16", device="cpu")
    fp32 = scoring.sequence_logps(*args)[0]
    with precision.heldout_autocast(cfg):
        recast = scoring.sequence_logps(*args)[0]
        n_recast = _casts(lambda: scoring.sequence_logps(*args))
    with precision.heldout_autocast(cfg, model):
        assert model.get_output_embeddings().weight.dtype == torch.bfloat16  # swapped for the pass
        once = scoring.sequence_logps(*args)[0]
        n_once = _casts(lambda: scoring.sequence_logps(*args))  # weights already bf16: activations only
    assert not torch.equal(recast, fp32) and torch.allclose(recast, fp32, rtol=0.05, atol=0.5)  # bf16 ran
    assert torch.equal(once, recast)
    assert n_once < n_recast
    for n, p in model.named_parameters():
        assert p is before[n][0] and p.requires_grad == before[n][1] and torch.equal(p, before[n][2]), n
    with precision.heldout_autocast(SimpleNamespace(**{**vars(cfg), "heldout_precision": "float32"}), model):
        assert model.get_output_embeddings().weight.dtype == torch.float32  # fp32 passes: nothing swapped
        assert torch.equal(scoring.sequence_logps(*args)[0], fp32)
