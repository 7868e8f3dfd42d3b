"""The cheaper training paths equal the plain ones on a fixed batch (loss and LoRA gradients within
1e-4), on tiny-gpt-neox and on a tiny Gemma 3 built from its config (no downloads):
- DPO: completion-only chunked LM head with each prompt run once (train/fast_dpo.py) vs TRL's
  full-logits `_compute_loss`, for the policy loss and for the reference log-probs;
- SFT: TRL's padding-free completion-only chunked NLL on the fused head (train/fast_sft.py, the
  stage's loss) and TRL's own chunked NLL vs the plain padded full-logits NLL, and TRL's metrics;
- RM: the sequence classifier has no LM head at all (one score per sequence);
- the prompt-once helper those paths share (train/prefix_once.py) vs each sequence run alone;
- per-sequence attention on padding-free batches (train/packed_attention.py) vs transformers' sdpa."""

import copy

import pytest
import torch
from train_support import hh_pairs

from rlhf_trust.train import inputs

torch.set_num_threads(1)


def _tiny(arch: str):
    from rlhf_trust.models.tiny import build

    model, tok = build([r["prompt"] + r["chosen"] for r in hh_pairs(60)], hidden_size=32, layers=2, heads=4,
                       vocab_size=384)
    if arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        torch.manual_seed(0)
        cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=16,
                               final_logit_softcapping=30.0, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        cfg._attn_implementation = "sdpa"
        model = Gemma3ForCausalLM(cfg)
    return model, tok


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)  # init_lora_weights=False: B != 0, so the policy differs from its reference
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM",
                                            init_lora_weights=False))


def _grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], atol=1e-4, rtol=1e-4, msg=k)


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_dpo_fast_path_equals_trl(arch, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from rlhf_trust.train.fast_dpo import trainer_class

    model, tok = _tiny(arch)
    rows = inputs.clip(tok, hh_pairs(4, max_chars=200), 40, 80)
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=80, report_to=[],
                     use_cpu=True, beta=0.1, seed=0)
    trainer = trainer_class()(model=_lora(model), ref_model=None, args=args, processing_class=tok,
                              train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                               for r in rows]))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert batch["completion_mask"].sum() < batch["attention_mask"].sum()  # prompt tokens are skipped
    m = trainer.model
    m.train()
    torch.manual_seed(2)  # TRL keeps the given adapter's initial copy as "ref": move the policy away from it
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
    from rlhf_trust.models.fused_head import split_head
    from rlhf_trust.train.fast_dpo import _shared_prompt_logps

    with torch.no_grad():  # the fast path runs each prompt once (both completions on its KV cache)
        assert _shared_prompt_logps(*split_head(m), batch) is not None
    fast = trainer.compute_loss(m, batch)
    fast.backward()
    g_fast = _grads(m)
    m.zero_grad()
    plain = DPOTrainer._compute_loss(trainer, m, batch, False)
    plain.backward()
    assert abs(float(fast) - float(plain)) < 1e-4 and float(plain) != pytest.approx(0.6931, abs=1e-3)
    _close(g_fast, _grads(m))
    ref_fast = torch.cat(trainer.compute_ref_log_probs(m, batch))
    ref_plain = torch.cat(DPOTrainer.compute_ref_log_probs(trainer, m, batch))
    torch.testing.assert_close(ref_fast, ref_plain, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_sft_padding_free_chunked_loss_equals_plain_nll(arch, tmp_path, monkeypatch):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rlhf_trust.train import fast_sft, packed_attention

    model, tok = _tiny(arch)
    rows = inputs.clip(tok, hh_pairs(4, max_chars=200), 40, 80)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
    calls = []
    fused = fast_sft.fused_chunked_ce
    monkeypatch.setattr(fast_sft, "fused_chunked_ce", lambda *a, **k: calls.append(1) or fused(*a, **k))
    packed, segments = [], packed_attention._segments
    monkeypatch.setattr(packed_attention, "_segments", lambda p: packed.append(segments(p)) or packed[-1])
    peft = _lora(model)
    out, metrics = {}, {}
    # the stage's path (TRL's chunked NLL on the fused head) vs TRL's own chunked NLL vs the plain full-logits NLL
    for name, cls, loss_type, free in (("fused", fast_sft.trainer_class(), "chunked_nll", True),
                                       ("chunked_nll", SFTTrainer, "chunked_nll", True),
                                       ("nll", SFTTrainer, "nll", False)):
        args = SFTConfig(output_dir=str(tmp_path / name), per_device_train_batch_size=4,
                         max_length=None if free else 80, padding_free=free, report_to=[], use_cpu=True,
                         completion_only_loss=True, loss_type=loss_type, seed=0)
        trainer = cls(model=copy.deepcopy(peft), args=args, train_dataset=data, processing_class=tok)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        assert ("attention_mask" not in batch) == free  # padding-free: one flat sequence + position ids
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        out[name] = (float(loss), _grads(trainer.model))
        metrics[name] = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        assert len(calls) == 1  # the fused head ran for the stage's trainer (the first) only
        # ... and so did per-sequence attention (4 sequences in every layer), restored afterwards
        assert packed and all(len(p) == 4 for p in packed) and len(packed) == model.config.num_hidden_layers
        assert trainer.model.config._attn_implementation == "sdpa"
    for name in ("fused", "chunked_nll"):
        assert abs(out[name][0] - out["nll"][0]) < 1e-4
        _close(out[name][1], out["nll"][1])
    # TRL's metrics come from the fused pass too (entropy within 1e-4 relative; accuracy is a token count)
    assert metrics["fused"]["mean_token_accuracy"] == metrics["chunked_nll"]["mean_token_accuracy"]
    assert metrics["fused"]["entropy"] == pytest.approx(metrics["chunked_nll"]["entropy"], rel=1e-4)
    assert metrics["fused"]["num_tokens"] == metrics["chunked_nll"]["num_tokens"]


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_packed_attention_equals_each_sequence_alone(arch):
    """A padding-free row of 4 sequences: per-sequence attention gives each sequence's own logits and
    transformers' sdpa gradients; the cases it does not cover (several rows, a sequence longer than
    gemma's sliding window of 16) fall back to sdpa; the model is back on sdpa afterwards."""
    from rlhf_trust.train.packed_attention import _segments, packed_attention

    model, tok = _tiny(arch)
    assert model.config._attn_implementation == "sdpa"
    lens = [5, 12, 3, 9]
    ids = torch.tensor([tok(r["prompt"] + r["chosen"])["input_ids"][:20] for r in hh_pairs(4)])
    flat = torch.cat([ids[i, :n] for i, n in enumerate(lens)])[None]
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    assert _segments(pos) == [(0, 5), (5, 17), (17, 20), (20, 29)]
    assert _segments(pos + 1) is None and _segments(torch.stack([pos[0], pos[0]])) is None

    def run(input_ids, position_ids):
        model.zero_grad()
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        logits.square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, plain_grads = run(flat, pos)
    with packed_attention(model):
        assert model.config._attn_implementation == "packed_sdpa"
        fast, fast_grads = run(flat, pos)
        rows, _ = run(ids, None)  # a batch of rows: sdpa's path
        long_seq, _ = run(ids[:1], None)  # one 20-token sequence: longer than gemma's window
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    _close(fast_grads, plain_grads)
    with torch.no_grad():
        starts = [0, 5, 17, 20]
        for i, n in enumerate(lens):
            alone = model(input_ids=ids[i:i + 1, :n]).logits[0]
            torch.testing.assert_close(fast[0, starts[i]:starts[i] + n], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rows, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(long_seq, model(input_ids=ids[:1]).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_rm_shared_prompt_equals_trl(arch, tmp_path):
    """Reward model: each pair's common prefix run once (train/fast_rm.py) = TRL's two full sequences."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import RewardConfig, RewardTrainer

    from rlhf_trust.models import seq_cls_from_causal
    from rlhf_trust.train.fast_rm import shared_prefix_rewards, trainer_class

    model, tok = _tiny(arch)
    rm = seq_cls_from_causal(model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    torch.manual_seed(1)
    rm = get_peft_model(rm, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS",
                                       init_lora_weights=False))
    rows = inputs.clip(tok, hh_pairs(4, max_chars=200), 40, 80)
    args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=80, report_to=[],
                        use_cpu=True, seed=0)
    trainer = trainer_class()(model=rm, args=args, processing_class=tok,
                              train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                               for r in rows]))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    m = trainer.model
    m.train()
    with torch.no_grad():
        assert shared_prefix_rewards(m, batch) is not None  # the shared path runs
    fast = trainer.compute_loss(m, dict(batch))
    fast.backward()
    g_fast = _grads(m)
    m.zero_grad()
    plain = RewardTrainer.compute_loss(trainer, m, dict(batch))
    plain.backward()
    assert abs(float(fast) - float(plain)) < 1e-4
    _close(g_fast, _grads(m))


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_heldout_pair_logps_with_shared_prompt_equal_plain(arch):
    """Held-out DPO scoring runs each prompt once (both responses on its KV cache, length-sorted
    batches): equal to scoring every sequence alone, unpadded."""
    from rlhf_trust.train import scoring

    model, tok = _tiny(arch)
    model = _lora(model).eval()
    rows = inputs.clip(tok, hh_pairs(5, max_chars=200), 40, 80)
    prompts, chosen, rejected = ([r[k] for r in rows] for k in ("prompt", "chosen", "rejected"))
    (s1, n1), (s2, n2) = scoring._tokenize(tok, prompts, chosen), scoring._tokenize(tok, prompts, rejected)
    assert all(a[:len(a) - i] == b[:len(b) - j] for a, i, b, j in zip(s1, n1, s2, n2))  # the shared path runs
    (lp_c, n_c), (lp_r, n_r) = scoring.pair_logps(model, tok, prompts, chosen, rejected, batch_size=3)
    for side, lp, n in (("chosen", lp_c, n_c), ("rejected", lp_r, n_r)):
        alone = [scoring.sequence_logps(model, tok, [r["prompt"]], [r[side]], 1) for r in rows]
        torch.testing.assert_close(lp, torch.cat([a[0] for a in alone]), atol=1e-4, rtol=1e-5)
        assert n.tolist() == [int(a[1]) for a in alone] and min(n.tolist()) > 0


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_prefix_once_equals_each_full_sequence_alone(arch):
    """The shared helper (train/prefix_once.py): prefixes of unequal lengths, three continuations
    each, unequal lengths: hidden states and summed continuation log-probs equal each prefix +
    continuation run alone and unpadded; bf16 weights stay bf16 (log-probs come back float32)."""
    from rlhf_trust.models.fused_head import split_head
    from rlhf_trust.train.prefix_once import continuation_logps, prefix_once

    model, tok = _tiny(arch)
    model.eval()
    decoder, head, softcap = split_head(model)
    texts = [r["prompt"] + r["chosen"] for r in hh_pairs(6, max_chars=200)]
    seqs = [tok(t)["input_ids"][:30] for t in texts]
    prefixes = [seqs[0][:5], seqs[1][:12]]
    conts = [seqs[2][:7], seqs[3][:1], seqs[4][:11], seqs[5][:3], seqs[2][:9], seqs[3][:4]]
    with torch.no_grad():
        c = prefix_once(decoder, prefixes, conts, repeat=3)
        lp = continuation_logps(decoder, head, softcap, prefixes, conts, repeat=3)
        for j, cont in enumerate(conts):
            full = torch.tensor([prefixes[j // 3] + cont])
            n = len(prefixes[j // 3])
            torch.testing.assert_close(c.hidden[j, :len(cont)], decoder(input_ids=full).last_hidden_state[0, n:],
                                       atol=1e-4, rtol=1e-4)
            logits = model(input_ids=full).logits[0, n - 1:-1].float()
            alone = logits.log_softmax(-1).gather(1, torch.tensor(cont)[:, None]).sum()
            torch.testing.assert_close(lp[j], alone, atol=1e-4, rtol=1e-5)
        assert c.mask.sum(1).tolist() == [len(t) for t in conts] and lp.dtype == torch.float32
        with pytest.raises(ValueError):
            prefix_once(decoder, prefixes, conts[:5], repeat=3)
        model.to(torch.bfloat16)
        c16 = prefix_once(decoder, prefixes, conts, repeat=3)
        lp16 = continuation_logps(decoder, head, softcap, prefixes, conts, repeat=3)
    assert c16.hidden.dtype == torch.bfloat16 and lp16.dtype == torch.float32 and torch.isfinite(lp16).all()


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_reward_scores_length_sorted_batches_equal_one_by_one(arch):
    from rlhf_trust.models import seq_cls_from_causal
    from rlhf_trust.train import scoring

    model, tok = _tiny(arch)
    rm = seq_cls_from_causal(model, num_labels=1).eval()
    rm.config.pad_token_id = tok.pad_token_id
    rows = inputs.clip(tok, hh_pairs(5, max_chars=200), 40, 80)
    prompts, chosen = [r["prompt"] for r in rows], [r["chosen"] for r in rows]
    batched = scoring.reward_scores(rm, tok, prompts, chosen, batch_size=3)
    alone = torch.cat([scoring.reward_scores(rm, tok, [p], [c], 1) for p, c in zip(prompts, chosen)])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma3"])
def test_reward_model_has_no_lm_head(arch):
    from rlhf_trust.models import seq_cls_from_causal

    model, tok = _tiny(arch)
    rm = seq_cls_from_causal(model, num_labels=1)
    assert rm.get_output_embeddings() is None
    assert not [n for n, _ in rm.named_modules() if n.endswith(("lm_head", "embed_out"))]
    ids = torch.tensor([tok("\n\nHuman: hi\n\nAssistant: hello")["input_ids"]])
    assert rm(input_ids=ids).logits.shape == (1, 1)


@pytest.mark.parametrize(("running", "threads"), [([1, 1, 1], 2), ([3, 2, 4], 1), ([2, 1, 2], 2), ([9, 9, 9], 1)])
def test_auto_threads_leaves_busy_cores_alone(monkeypatch, running, threads):
    """`threads: auto` on 2 cores: 2 when only this process runs (the least of the readings), else 1."""
    from rlhf_trust.train import runtime

    readings = iter(running)

    class FakePath:
        def __init__(self, _p):
            pass

        def read_text(self):
            return f"0.5 0.5 0.5 {next(readings)}/150 999\n"

    monkeypatch.setattr(runtime, "Path", FakePath)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert runtime.auto_threads(samples=len(running)) == threads
