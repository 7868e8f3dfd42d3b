import math

import pytest
import torch
from train_support import (
    check_resume,
    copy_layout,
    hand_made_layout,
    native_bf16,
    train_cfg,
    trained_layout,
    write_jsonl,
)

from rlhf_trust.errors import DataError, UserError
from rlhf_trust.models import load_peft_model, load_reward_model, load_stage_info
from rlhf_trust.train import rm, scoring

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _native_bf16(monkeypatch):
    native_bf16(monkeypatch)


@pytest.fixture(scope="module")
def sft_layout(tmp_path_factory):
    return trained_layout(tmp_path_factory, ("sft",))


def test_pairwise_metric_on_hand_made_scores():
    m = scoring.pairwise(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 2.0, 4.0]))
    assert m["heldout_accuracy"] == pytest.approx(1 / 3)  # a tie is not a win
    assert m["heldout_margin"] == pytest.approx(0.0) and m["heldout_pairs"] == 3


def test_rm_trains_from_sft_and_reloads(sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    m = rm.run(train_cfg("rm"), layout)
    assert math.isfinite(m["train_loss_last"]) and 0 <= m["heldout_accuracy"] <= 1 and m["heldout_pairs"] == 8
    info = load_stage_info(layout.model("rm"))
    assert info["task"] == "seq_cls" and info["parent"] == "sft" and info["kind"] == "adapter"
    model, tok = load_reward_model(layout.model("rm"))
    assert model.config.num_labels == 1
    again = rm.heldout_metrics(model, tok, _clipped(layout, tok), 8)
    assert again["heldout_accuracy"] == m["heldout_accuracy"]
    assert again["heldout_margin"] == pytest.approx(m["heldout_margin"], abs=1e-5)
    peft_model, _ = load_peft_model(layout.model("rm"))
    trained = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in trained.items())  # LoRA B starts at zero
    assert any("score" in n for n in trained)


def test_rm_bf16_training_keeps_fp32_heldout(sft_layout, tmp_path):
    """precision: bfloat16 trains under autocast, but the held-out pass (heldout_precision float32)
    is exact fp32: the stage's metrics equal a fresh fp32 scoring of the saved model."""
    layout = copy_layout(sft_layout, tmp_path)
    m = rm.run(train_cfg("rm", precision="bfloat16"), layout)
    assert math.isfinite(m["train_loss_last"])
    model, tok = load_reward_model(layout.model("rm"))
    again = rm.heldout_metrics(model, tok, _clipped(layout, tok), 8)
    assert again["heldout_accuracy"] == m["heldout_accuracy"]
    assert again["heldout_margin"] == pytest.approx(m["heldout_margin"], abs=1e-6)


def _clipped(layout, tok):
    from rlhf_trust.data import records
    from rlhf_trust.train import inputs

    return inputs.clip(tok, records.load("hh_heldout", layout.data_dir), 48, 96)


def test_rm_heldout_accuracy_on_hand_made_case(sft_layout, tmp_path):
    """Refusals (chosen) vs compliance (rejected): separable, held-out accuracy must reach 1;
    the same pairs swapped give exactly the mirrored accuracy and margin."""
    layout = hand_made_layout(sft_layout, tmp_path, 24)
    m = rm.run(train_cfg("rm", epochs=3, learning_rate=2e-2), layout)
    assert m["heldout_accuracy"] == 1.0 and m["heldout_margin"] > 0
    model, tok = load_reward_model(layout.model("rm"))
    rows = _clipped(layout, tok)
    swapped = [dict(r, chosen=r["rejected"], rejected=r["chosen"]) for r in rows]
    s = rm.heldout_metrics(model, tok, swapped, 4)
    assert s["heldout_accuracy"] == 0.0 and s["heldout_margin"] == pytest.approx(-m["heldout_margin"], abs=1e-5)


def test_rm_resume_after_kill(sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    check_resume(rm, train_cfg("rm", save_steps=2), layout,
                 ("train_loss_last", "train_loss_mean", "heldout_accuracy", "heldout_margin"))


def test_rm_bad_inputs(sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    with pytest.raises(UserError, match="upstream model 'nosuch' not found"):
        rm.run(train_cfg("rm", init_from="nosuch"), layout)
    write_jsonl(layout.split("hh_heldout"), [])
    with pytest.raises(DataError, match="hh_heldout split is empty"):
        rm.run(train_cfg("rm"), layout)
    assert not layout.model("rm").exists()
