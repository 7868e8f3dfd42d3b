import math

import pytest
from train_support import check_resume, copy_layout, merged_differs, native_bf16, train_cfg, trained_layout

from rlhf_trust.errors import ConfigError, UserError
from rlhf_trust.models import load_causal_lm, load_stage_info
from rlhf_trust.train import dpo, ppo

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _native_bf16(monkeypatch):
    native_bf16(monkeypatch)


@pytest.fixture(scope="module")
def rm_layout(tmp_path_factory):
    return trained_layout(tmp_path_factory, ("sft", "rm"))


FAST = {"total_episodes": 16, "response_length": 8, "heldout_prompts": 4}


def test_ppo_trains_and_reloads(rm_layout, tmp_path, monkeypatch):
    from rlhf_trust.train import response_logits

    sliced = []
    real = response_logits.TailLogits.__getitem__
    monkeypatch.setattr(response_logits.TailLogits, "__getitem__", lambda self, k: sliced.append(k) or real(self, k))
    layout = copy_layout(rm_layout, tmp_path)
    cfg = train_cfg("ppo", **FAST)
    m = ppo.run(cfg, layout)
    assert m["updates"] == 4 and m["episodes"] == 16
    # the head ran on response positions only: per update, each reference pass and each training micro-batch
    assert len(sliced) == 4 * cfg.grad_accum * (1 + cfg.num_ppo_epochs)
    for k in ("reward_mean", "kl_mean", "kl_last", "heldout_reward_policy", "heldout_reward_sft", "policy_loss_last"):
        assert math.isfinite(m[k]), k
    assert m["heldout_reward_gain"] == pytest.approx(m["heldout_reward_policy"] - m["heldout_reward_sft"], abs=1e-5)
    info = load_stage_info(layout.model("ppo"))
    assert info["parent"] == "sft" and info["kind"] == "adapter" and info["reward_model_dir"]
    assert merged_differs(layout.model("ppo"), layout.model("sft"))
    load_causal_lm(layout.model("ppo"))
    assert not layout.checkpoints("ppo").exists()


def test_ppo_resume_after_kill_is_exact(rm_layout, tmp_path):
    layout = copy_layout(rm_layout, tmp_path)
    cfg = train_cfg("ppo", save_steps=2, **{**FAST, "total_episodes": 24})
    check_resume(ppo, cfg, layout, ("reward_mean", "kl_mean", "value_loss_last", "heldout_reward_policy"),
                 resumed_key="resumed_from_update", rel=1e-4)


def test_ppo_schedule_is_seeded_and_covers_prompts():
    a = ppo.schedule(5, 12, seed=0)
    assert a == ppo.schedule(5, 12, seed=0) != ppo.schedule(5, 12, seed=1)
    assert sorted(a[:5]) == list(range(5)) and len(a) == 12


def test_ppo_bad_inputs(rm_layout, tmp_path):
    layout = copy_layout(rm_layout, tmp_path)
    with pytest.raises(ConfigError, match="response_length"):
        train_cfg("ppo", response_length=90)  # 48 prompt + 90 > max_length 96
    with pytest.raises(ConfigError, match="total_episodes"):
        train_cfg("ppo", total_episodes=2)
    with pytest.raises(UserError, match="upstream model 'sft' not found"):
        ppo.run(train_cfg("ppo", **FAST), type(layout)(data_dir=layout.data_dir, models_dir=tmp_path / "x"))
    import shutil

    shutil.copytree(layout.model("sft"), tmp_path / "x" / "sft")
    shutil.copytree(layout.model("base"), tmp_path / "x" / "base")
    with pytest.raises(UserError, match="upstream model 'rm' not found"):
        ppo.run(train_cfg("ppo", **FAST), type(layout)(data_dir=layout.data_dir, models_dir=tmp_path / "x"))
    assert not (tmp_path / "x" / "ppo").exists()


def test_ppo_bf16_trains_with_frozen_bf16_weights(rm_layout, tmp_path):
    """`ppo.precision: bfloat16`: the loop runs under autocast with the frozen weights (policy base, the
    reward model) as bf16 copies (train/frozen_bf16.py); it trains, and the held-out pass after it sees
    the fp32 weights again (it would fail on bf16 weights in fp32)."""
    layout = copy_layout(rm_layout, tmp_path)
    m = ppo.run(train_cfg("ppo", precision="bfloat16", heldout_precision="float32", **FAST), layout)
    assert m["updates"] == 4
    for k in ("reward_mean", "kl_mean", "heldout_reward_policy", "heldout_reward_sft"):
        assert math.isfinite(m[k]), k
    assert merged_differs(layout.model("ppo"), layout.model("sft"))


# The default run's held-out precision (heldout_precision: bfloat16, frozen weights as bf16 copies for
# the pass, train/frozen_bf16.py) through the stages themselves, for stages trained in float32: DPO (LoRA policy,
# reference = adapter disabled) and PPO (LoRA policy, SFT = adapter disabled, greedy generation, reward
# model). Finite statistics with their n, and only LoRA trainable again when the pass is over.
def _only_lora_trainable(monkeypatch, module):
    """Record, at save time, which parameters of the stage's model require a gradient."""
    seen = {}
    save = module.checkpoints.save_model_dir

    def spy(model, *a, **kw):
        seen.update({n: p.requires_grad for n, p in model.named_parameters()})
        return save(model, *a, **kw)

    monkeypatch.setattr(module.checkpoints, "save_model_dir", spy)
    return seen


def test_dpo_and_ppo_heldout_in_bf16(rm_layout, tmp_path, monkeypatch):
    layout = copy_layout(rm_layout, tmp_path)
    seen = _only_lora_trainable(monkeypatch, dpo)
    m = dpo.run(train_cfg("dpo", precision="float32", heldout_precision="bfloat16"), layout)
    assert m["heldout_n"] > 0 and 0 <= m["heldout_accuracy"] <= 1 and math.isfinite(m["heldout_margin"])
    assert seen and all(("lora_" in n) == g for n, g in seen.items())
    seen.clear()
    m = ppo.run(train_cfg("ppo", precision="float32", heldout_precision="bfloat16", total_episodes=8,
                          response_length=8, heldout_prompts=4), layout)
    assert m["heldout_n"] == 4
    for k in ("heldout_reward_policy", "heldout_reward_sft", "heldout_reward_gain"):
        assert math.isfinite(m[k]), k
    assert seen and all(("lora_" in n) == g for n, g in seen.items())


def test_ppo_heldout_scores_the_saved_merged_policy(rm_layout, tmp_path, monkeypatch):
    """The stage's held-out gain (bf16, LoRA) is the saved model's: scoring the saved ppo / sft / rm
    directories with the same code (`heldout_metrics` on loaded models) gives exactly the stage's
    numbers, and the logits of the policy the stage scored (a probe batch, in the scoring pass's own
    bf16 context) equal the saved merged model's bit for bit (an unmerged adapter's do not)."""
    import torch

    from rlhf_trust.models import load_merged_causal_lm, load_merged_seq_cls, load_tokenizer
    from rlhf_trust.train import inputs

    probe = torch.arange(3, 40).reshape(1, -1)
    seen = []
    score = ppo.generate_and_score

    def spy(policy, *a, **kw):
        with torch.no_grad():
            seen.append(policy(probe).logits.clone())
        return score(policy, *a, **kw)

    monkeypatch.setattr(ppo, "generate_and_score", spy)
    layout = copy_layout(rm_layout, tmp_path)
    cfg = train_cfg("ppo", precision="float32", heldout_precision="bfloat16", total_episodes=8,
                    response_length=12, heldout_prompts=8, learning_rate=5e-2)
    m = ppo.run(cfg, layout)
    stage_sft, stage_final = seen
    seen.clear()
    rows = inputs.stage_inputs("ppo", cfg, layout).heldout
    tok = load_tokenizer(layout.model("sft"), padding_side="left")
    saved = load_merged_causal_lm(layout.model("ppo")).eval()
    again = ppo.heldout_metrics(saved, load_merged_seq_cls(layout.model("rm")).requires_grad_(False).eval(),
                                tok, rows, cfg, layout.model("sft"))
    assert m["heldout_n"] == again["heldout_n"] == 8
    for k in ("heldout_reward_policy", "heldout_reward_sft", "heldout_reward_gain", "heldout_reward_gain_ci95"):
        assert m[k] == again[k], k
    saved_final, saved_sft = seen
    assert torch.equal(stage_final, saved_final) and torch.equal(stage_sft, saved_sft)
    assert not torch.equal(stage_final, stage_sft)  # the policy moved: two different models compared


def test_merged_adapter_merges_in_fp32_under_autocast_and_unmerges(rm_layout):
    """`merged_adapter` inside a bf16 autocast merges as the loader does (fp32, bit-identical to
    merge_and_unload) and puts the adapter back afterwards."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf_trust.models import load_merged_causal_lm

    torch.manual_seed(0)
    peft = get_peft_model(load_merged_causal_lm(rm_layout.model("sft")),
                          LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    expect = copy.deepcopy(peft).merge_and_unload().state_dict()
    ids = torch.tensor([[5, 6, 7, 8]])
    before = peft(ids).logits
    with torch.autocast("cpu", dtype=torch.bfloat16), ppo.merged_adapter(peft):
        got = {k.replace("base_model.model.", "").replace(".base_layer", ""): v.clone()
               for k, v in peft.state_dict().items() if "lora_" not in k}
    assert got.keys() == expect.keys()
    assert all(torch.equal(got[k], expect[k]) for k in expect)
    torch.testing.assert_close(peft(ids).logits, before, rtol=1e-5, atol=1e-5)


def test_response_logits_equal_trls_full_logits_and_gradients(rm_layout):
    """Inside `response_logits_only`, TRL's PPO forward gives the same response logits, log-probs
    and LoRA gradients as the full-head pass; generation and other calls are untouched, and any
    other slice of the kept logits is refused."""
    import torch
    from peft import LoraConfig, get_peft_model
    from trl.experimental.ppo.ppo_trainer import forward
    from trl.trainer.utils import selective_log_softmax

    from rlhf_trust.models import load_merged_causal_lm, load_tokenizer
    from rlhf_trust.train.response_logits import TailLogits, response_logits_only

    torch.manual_seed(0)
    policy = get_peft_model(load_merged_causal_lm(rm_layout.model("sft")),
                            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    pad = load_tokenizer(rm_layout.model("sft")).pad_token_id
    ctx, resp = 6, 4
    qr = torch.randint(5, 40, (3, ctx + resp))
    qr[0, :2] = pad  # a left-padded query
    qr[1, -1] = pad  # a response cut at EOS, padded after it

    def logps_and_grads():
        policy.zero_grad()
        logits = forward(policy, qr, pad).logits[:, ctx - 1:-1]
        logits /= 0.7
        lp = selective_log_softmax(logits, qr[:, ctx:])
        lp.sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}

    full_lp, full_g = logps_and_grads()
    with response_logits_only(policy, resp):
        out = forward(policy, qr, pad)
        assert isinstance(out.logits, TailLogits) and out.logits.tail.shape[1] == resp + 1
        with pytest.raises(TypeError, match="only positions"):
            out.logits[:, 0:-1]
        tail_lp, tail_g = logps_and_grads()
        plain = policy(input_ids=qr).logits  # not TRL's call: the whole tensor
        assert plain.shape[1] == ctx + resp
        gen = policy.generate(input_ids=qr[2:, :ctx], max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(tail_lp, full_lp, rtol=1e-5, atol=1e-5)
    for n, g in full_g.items():
        torch.testing.assert_close(tail_g[n], g, rtol=1e-4, atol=1e-6)
    assert not isinstance(forward(policy, qr, pad).logits, TailLogits)  # hooks removed on exit
    assert torch.equal(gen, policy.generate(input_ids=qr[2:, :ctx], max_new_tokens=3, do_sample=False))
