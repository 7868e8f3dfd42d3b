"""bf16 mixed precision (`<stage>.precision: bfloat16`, train/precision.autocast): on a fixed batch the
loss and LoRA gradients of each stage's training step under the trainer's autocast are close to the
fp32 ones on tiny-gpt-neox, and the bf16 path really ran (the loss differs from fp32's).

Tolerance (loose, bf16 keeps 8 mantissa bits, ~3 significant digits per matmul): loss within 2 %
relative, each gradient tensor within 10 % of fp32's norm (relative L2 error) and the whole
gradient at cosine similarity > 0.995. The fp32 equality tests (test_train_fast_paths.py) are
unchanged: `precision: float32` is a no-op context."""

import copy
from types import SimpleNamespace

import pytest
import torch
from train_support import hh_pairs, native_bf16

from rlhf_trust.train import inputs, precision

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _native_bf16(monkeypatch):
    native_bf16(monkeypatch)


BF16 = SimpleNamespace(precision="bfloat16", heldout_precision="bfloat16", device="cpu")
FP32 = SimpleNamespace(precision="float32", heldout_precision="float32", device="cpu")


def _tiny():
    from rlhf_trust.models.tiny import build

    return build([r["prompt"] + r["chosen"] for r in hh_pairs(60)], hidden_size=64, layers=2, heads=4,
                 vocab_size=384)


def _lora(model, task="CAUSAL_LM"):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)  # init_lora_weights=False: B != 0, gradients reach A and B
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=task,
                                            init_lora_weights=False))


def _step(trainer, batch, cfg):
    """Loss and gradients of one training step as Trainer runs it (compute_loss in its context)."""
    m = trainer.model
    precision.mixed_precision(trainer, cfg)
    m.train()
    m.zero_grad()
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(m, dict(batch))
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in m.named_parameters()
             if p.requires_grad and p.grad is not None}
    assert all(p.dtype == torch.float32 for p in m.parameters())  # fp32 master weights
    return float(loss.detach()), grads


def _assert_close_bf16(fp32, bf16):
    (l32, g32), (l16, g16) = fp32, bf16
    assert l16 != l32, "bf16 autocast did not engage (identical loss)"
    assert abs(l16 - l32) <= 0.02 * abs(l32) + 1e-3
    assert g32.keys() == g16.keys() and g32
    for k, v in g32.items():
        assert float((g16[k] - v).norm()) <= 0.10 * float(v.norm()) + 1e-6, k
    a = torch.cat([v.flatten() for v in g32.values()])
    b = torch.cat([g16[k].flatten() for k in g32])
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.995


def _rows(tok):
    return inputs.clip(tok, hh_pairs(4, max_chars=200), 40, 80)


def test_sft_bf16_close_to_fp32(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig

    from rlhf_trust.train.fast_sft import trainer_class

    model, tok = _tiny()
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in _rows(tok)])
    peft = _lora(model)
    out = []
    for cfg in (FP32, BF16):
        args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=None,
                         padding_free=True, completion_only_loss=True, report_to=[], use_cpu=True, seed=0)
        trainer = trainer_class()(model=copy.deepcopy(peft), args=args, train_dataset=data, processing_class=tok)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        out.append(_step(trainer, batch, cfg))
    _assert_close_bf16(*out)


def test_rm_bf16_close_to_fp32(tmp_path):
    from datasets import Dataset
    from trl import RewardConfig

    from rlhf_trust.models import seq_cls_from_causal
    from rlhf_trust.train.fast_rm import trainer_class

    model, tok = _tiny()
    rm = seq_cls_from_causal(model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm = _lora(rm, "SEQ_CLS")
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in _rows(tok)])
    out = []
    for cfg in (FP32, BF16):
        args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=80,
                            report_to=[], use_cpu=True, seed=0)
        trainer = trainer_class()(model=copy.deepcopy(rm), args=args, processing_class=tok, train_dataset=data)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        out.append(_step(trainer, batch, cfg))
    _assert_close_bf16(*out)


def test_dpo_bf16_close_to_fp32(tmp_path):
    from datasets import Dataset
    from trl import DPOConfig

    from rlhf_trust.train.fast_dpo import trainer_class

    model, tok = _tiny()
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in _rows(tok)])
    policy = _lora(model)
    out = []
    for cfg in (FP32, BF16):
        args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=80, report_to=[],
                         use_cpu=True, beta=0.1, seed=0)
        trainer = trainer_class()(model=copy.deepcopy(policy), ref_model=None, args=args, processing_class=tok,
                                  train_dataset=data)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        torch.manual_seed(2)  # move the policy away from TRL's copy of the initial adapter (the reference)
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                if p.requires_grad and "lora_B" in n:
                    p.add_(0.05 * torch.randn_like(p))
        out.append(_step(trainer, batch, cfg))
    _assert_close_bf16(*out)


@pytest.mark.parametrize(("cfg", "dtype"), [(BF16, torch.bfloat16), (FP32, torch.float32)])
def test_autocast_follows_precision(cfg, dtype):
    a = torch.randn(4, 8)
    with precision.autocast(cfg):
        assert (a @ a.T).dtype == dtype
    with precision.heldout_autocast(SimpleNamespace(**{**vars(cfg), "heldout_precision": "float32"})):
        assert (a @ a.T).dtype == torch.float32


def _gemma3_lora():
    """A tiny Gemma 3 (tied head, softcap) with LoRA on every linear layer: the frozen weights are
    the LoRA base layers and the tied LM head, as in the stages (whose loader gives the head the
    rows-first product, models/cpu_head.py)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from rlhf_trust.models.cpu_head import rows_first_head

    _, tok = _tiny()
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=16,
                           final_logit_softcapping=30.0, pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    return _lora(rows_first_head(Gemma3ForCausalLM(cfg))), tok


def test_frozen_bf16_is_bit_identical_under_autocast_and_restores_weights():
    """Frozen Linear weights held as bf16 copies (train/frozen_bf16.py) give exactly autocast's loss and
    gradients (autocast casts them to bf16 anyway), and exit puts back the very fp32 tensors (tie too)."""
    from rlhf_trust.models.fused_head import split_head, token_logps
    from rlhf_trust.train.frozen_bf16 import frozen_bf16

    model, tok = _gemma3_lora()
    base = model.get_base_model()
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    ids = torch.tensor([tok("Human: hi there\n\nAssistant: hello, how are you")["input_ids"]])

    def step():
        model.zero_grad(set_to_none=True)
        decoder, head, cap = split_head(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids)  # the model's own head + loss
            h = decoder(input_ids=ids).last_hidden_state
            lp = token_logps(h[0, :-1], head.weight, head.bias, ids[0, 1:], cap)  # the fused head
            loss = out.loss - lp.mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = step()
    with frozen_bf16(model) as n:
        assert n == 2 * 7 + 1  # LoRA base layers (7 per layer) and the LM head
        assert base.lm_head.weight.dtype == torch.bfloat16
        assert base.model.embed_tokens.weight.dtype == torch.float32  # untied only for the duration
        swapped = step()
    assert torch.equal(plain[0], swapped[0])
    assert plain[1].keys() == swapped[1].keys() and plain[1]
    for k, v in plain[1].items():
        assert torch.equal(v, swapped[1][k]), k
    for n, p in model.named_parameters():
        assert p is before[n][0] and torch.equal(p, before[n][1]), n
    assert base.lm_head.weight is base.model.embed_tokens.weight


def test_bf16_stage_training_restores_fp32_weights(tmp_path):
    """`mixed_precision` trains with the bf16 copies and hands back the fp32 frozen weights unchanged
    (one real SFT optimizer step through the stage's trainer, train/fast_sft.py)."""
    from datasets import Dataset
    from trl import SFTConfig

    from rlhf_trust.train.fast_sft import trainer_class

    model, tok = _gemma3_lora()
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in _rows(tok)])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=None, padding_free=True,
                     completion_only_loss=True, report_to=[], use_cpu=True, seed=0, max_steps=1, save_strategy="no")
    trainer = precision.mixed_precision(trainer_class()(model=model, args=args, train_dataset=data,
                                                     processing_class=tok), BF16)
    trainer.train()
    for n, p in trainer.model.named_parameters():
        if n in frozen:
            assert p.dtype == torch.float32 and torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)
    base = trainer.model.get_base_model()
    assert base.lm_head.weight is base.model.embed_tokens.weight


def test_bf16_falls_back_to_float32_without_native_cpu_bf16(monkeypatch, capsys):
    """On a CPU without native bf16 (this AMD EPYC: AVX2 only; bf16 emulated, ~5x slower matmuls than
    fp32) `precision: bfloat16` runs float32, training and held-out passes, with one warning line."""
    from rlhf_trust.models import store

    monkeypatch.setattr(store, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(store, "_BF16_WARNED", set())
    a = torch.randn(4, 8)
    lin = torch.nn.Linear(8, 8).requires_grad_(False)
    with precision.autocast(BF16), precision.frozen_weights(BF16, lin), precision.heldout_autocast(BF16, lin):
        assert (a @ a.T).dtype == torch.float32 and lin.weight.dtype == torch.float32
    with precision.autocast(BF16):
        pass
    err = capsys.readouterr().err
    assert err.count("no native bf16") == 2  # once per field (precision, heldout_precision), not per call
