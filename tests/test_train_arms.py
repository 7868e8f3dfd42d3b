"""The alignment arms beyond PPO and DPO on the tiny model: each trains, saves, resumes exactly after
a kill, and its held-out check runs (and means what it says on a hand-made case)."""

import json
import math
import time

import pytest
from train_support import (
    check_resume,
    copy_layout,
    hand_made_layout,
    merged_differs,
    train_cfg,
    trained_layout,
)

from rlhf_trust.models import load_stage_info
from rlhf_trust.train import arms, kto, orpo, simpo

pytestmark = pytest.mark.slow

OFFLINE = {"kto": kto, "orpo": orpo, "simpo": simpo}
SIZES = {"max_steps": 4, "save_steps": 2, "batch_size": 2, "max_train_pairs": 8}


@pytest.fixture(scope="module")
def sft_layout(tmp_path_factory):
    return trained_layout(tmp_path_factory, ("sft",))


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_arm_trains_saves_and_resumes_exactly(name, sft_layout, tmp_path):
    layout = copy_layout(sft_layout, tmp_path)
    module, cfg = OFFLINE[name], train_cfg(name, **SIZES)
    start = time.perf_counter()
    full = module.run(cfg, layout)
    print(f"{name}: {time.perf_counter() - start:.1f} s for {SIZES['max_steps']} steps")
    assert math.isfinite(full["train_loss_last"]) and full["heldout_n"] == 8
    assert 0.0 <= full["heldout_accuracy"] <= 1.0 and math.isfinite(full["heldout_margin"])
    info = load_stage_info(layout.model(name))
    assert info["parent"] == arms.parent(name) and info["kind"] == "adapter"
    assert merged_differs(layout.model(name), layout.model(arms.parent(name)))
    check_resume(module, cfg, layout, ("train_loss_last", "train_loss_mean", "heldout_accuracy", "heldout_margin"),
                 kill_at=3, full=full)


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_arm_heldout_check_separates_hand_made_pairs(name, sft_layout, tmp_path):
    """Trained on refusal-vs-compliance pairs, each arm's implicit reward ranks the refusal first on
    held-out prompts."""
    layout = hand_made_layout(sft_layout, tmp_path, 16)
    m = OFFLINE[name].run(train_cfg(name, epochs=3, learning_rate=2e-2, batch_size=4), layout)
    assert m["heldout_accuracy"] == 1.0 and m["heldout_margin"] > 0


@pytest.fixture(scope="module")
def rm_layout(tmp_path_factory):
    return trained_layout(tmp_path_factory, ("sft", "rm"))


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_group_rl_arm_trains_saves_and_resumes_exactly(name, rm_layout, tmp_path):
    import importlib

    module = importlib.import_module(f"rlhf_trust.train.{name}")
    layout = copy_layout(rm_layout, tmp_path)
    cfg = train_cfg(name, max_steps=4, save_steps=2, batch_size=4, num_generations=2, response_length=8,
                    max_train_pairs=8, heldout_prompts=4, eval_batch_size=4)
    start = time.perf_counter()
    full = module.run(cfg, layout)
    print(f"{name}: {time.perf_counter() - start:.1f} s for 4 steps")
    assert math.isfinite(full["train_loss_last"]) and math.isfinite(full["reward_mean"])
    assert full["heldout_n"] == 4 and math.isfinite(full["heldout_reward_gain"])
    ci = full["heldout_reward_gain_ci95"]
    assert ci["low"] <= full["heldout_reward_gain"] <= ci["high"]
    info = load_stage_info(layout.model(name))
    assert info["parent"] == "sft" and info["kind"] == "adapter" and info["reward_model_dir"]
    assert merged_differs(layout.model(name), layout.model("sft"))
    check_resume(module, cfg, layout, ("train_loss_last", "train_loss_mean", "reward_mean", "heldout_reward_gain"),
                 kill_at=3, full=full)


def test_arm_command_writes_model_and_metrics_as_a_stage(sft_layout, tmp_path, monkeypatch):
    """`rlhf-trust simpo` is a stage like the others: tracked run, model dir, metrics with its check."""
    import shutil

    from rlhf_trust import cli, runinfo

    monkeypatch.chdir(tmp_path)
    shutil.copytree(sft_layout.data_dir, tmp_path / "outputs" / "curated")
    shutil.copytree(sft_layout.model("base"), tmp_path / "outputs" / "models" / "base")
    sft = tmp_path / "outputs" / "models" / "sft" / "s3"   # training seed 3's SFT model, one level deeper
    shutil.copytree(sft_layout.model("sft"), sft)
    info = json.loads((sft / "stage.json").read_text())
    (sft / "stage.json").write_text(json.dumps({**info, "parent_dir": "../../base"}))
    (tmp_path / "params.yaml").write_text(
        "train:\n  arms: [dpo, simpo]\n  seeds: [3]\nsimpo:\n  max_length: 96\n  max_prompt_length: 48\n  batch_size: 2\n"
        "  max_steps: 2\n  max_train_pairs: 4\n  logging_steps: 1\n  threads: 1\n  device: cpu\n")
    assert cli.main(["simpo", "--params", "params.yaml"]) == 0
    metrics = runinfo.read(tmp_path / "metrics/simpo/s3.json")
    assert arms.spec("simpo").heldout_check in metrics and metrics["heldout_n"] == 8
    info = load_stage_info(tmp_path / "outputs/models/simpo/s3")
    assert info["parent"] == "sft" and info["seed"] == 3


def test_kto_full_finetune_checks_against_the_reloaded_reference(sft_layout, tmp_path):
    """Without LoRA there is no adapter to disable: the held-out check reloads the SFT reference."""
    layout = copy_layout(sft_layout, tmp_path)
    m = kto.run(train_cfg("kto", max_steps=2, batch_size=2, max_train_pairs=4, lora={"enabled": False}), layout)
    assert m["params_trainable"] == m["params_total"] and load_stage_info(layout.model("kto"))["kind"] == "full"
    assert 0.0 <= m["heldout_accuracy"] <= 1.0 and m["heldout_margin"] != 0.0
