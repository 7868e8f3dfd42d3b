import math

import pytest
from train_support import (
    check_resume,
    copy_layout,
    hand_made_layout,
    hand_made_pairs,
    merged_differs,
    native_bf16,
    train_cfg,
    trained_layout,
)

from rlhf_trust.errors import ConfigError, UserError
from rlhf_trust.models import load_causal_lm, load_merged_causal_lm, load_stage_info, load_tokenizer
from rlhf_trust.train import dpo, inputs

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _native_bf16(monkeypatch):
    native_bf16(monkeypatch)


@pytest.fixture(scope="module")
def sft_layout(tmp_path_factory):
    return trained_layout(tmp_path_factory, ("sft",))


def test_dpo_trains_from_sft_and_reloads(sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    m = dpo.run(train_cfg("dpo"), layout)
    assert math.isfinite(m["train_loss_last"]) and m["beta"] == 0.1 and m["heldout_pairs"] == 8
    info = load_stage_info(layout.model("dpo"))
    assert info["parent"] == "sft" and info["kind"] == "adapter"
    assert merged_differs(layout.model("dpo"), layout.model("sft"))
    _model, tok = load_causal_lm(layout.model("dpo"))
    assert tok.padding_side == "left"


def test_dpo_heldout_accuracy_on_hand_made_case(sft_layout, tmp_path):
    """Before any update the policy equals its reference: every implicit reward is 0, so accuracy
    is 0 (ties) and the margin 0. Trained on refusal-vs-compliance pairs it separates them."""
    layout = hand_made_layout(sft_layout, tmp_path, 16)
    m = dpo.run(train_cfg("dpo", epochs=3, learning_rate=2e-2), layout)
    assert m["heldout_accuracy"] == 1.0 and m["heldout_margin"] > 0
    ref, tok = load_merged_causal_lm(layout.model("sft")), load_tokenizer(layout.model("sft"))
    rows = inputs.clip(tok, hand_made_pairs(8, offset=150), 48, 96)
    untrained = dpo.heldout_metrics(ref, ref, tok, rows, 0.1, 4)  # the reference as the policy
    assert untrained["heldout_accuracy"] == 0.0 and untrained["heldout_margin"] == 0.0


def test_dpo_full_finetune_uses_explicit_reference(sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    m = dpo.run(train_cfg("dpo", lora={"enabled": False}), layout)
    assert m["params_trainable"] == m["params_total"]
    assert load_stage_info(layout.model("dpo"))["kind"] == "full"


def test_dpo_resume_and_determinism(sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    cfg = train_cfg("dpo", save_steps=2)
    full = dpo.run(cfg, layout)
    assert dpo.run(cfg, layout) == full  # fixed seeds -> same metrics
    check_resume(dpo, cfg, layout, ("train_loss_last", "train_loss_mean", "heldout_accuracy", "heldout_margin"),
                 full=full)


def test_dpo_bad_inputs(sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    with pytest.raises(ConfigError, match="dpo.beta"):
        train_cfg("dpo", beta=0)
    import shutil

    shutil.rmtree(layout.model("sft"))
    with pytest.raises(UserError, match="upstream model 'sft' not found"):
        dpo.run(train_cfg("dpo"), layout)
    assert not layout.model("dpo").exists()


def test_dpo_bf16_trains_and_hands_back_fp32_weights(sft_layout, tmp_path):
    """`dpo.precision: bfloat16` (the default): TRL's train() runs with the frozen weights as bf16
    copies (train/frozen_bf16.py) and the fp32 held-out pass after it works (it would fail on bf16)."""
    layout = copy_layout(sft_layout, tmp_path)
    m = dpo.run(train_cfg("dpo", precision="bfloat16", heldout_precision="float32"), layout)
    assert math.isfinite(m["train_loss_last"]) and 0.0 <= m["heldout_accuracy"] <= 1.0
    assert merged_differs(layout.model("dpo"), layout.model("sft"))
