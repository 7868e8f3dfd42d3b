"""benchmarks/ppo_seeds.py: the ppo stage per seed, the spread over seeds, and the weight soup."""

import json
from pathlib import Path

import bench_support
import pytest
from train_support import copy_layout, train_cfg, trained_layout

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return bench_support.load("ppo_seeds")


def test_summary_over_seeds_known_answer():
    s = _module().summary([1.0, 2.0, 3.0])
    # mean 2, SD 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    assert s["n_seeds"] == 3 and s["mean"] == 2.0 and s["sd"] == pytest.approx(1.0)
    assert s["ci95"]["low"] == pytest.approx(2 - 2.484138, abs=1e-5)
    assert s["ci95"]["high"] == pytest.approx(2 + 2.484138, abs=1e-5)
    assert "sd" not in _module().summary([0.5])  # one seed: no spread to report


def test_variant_overrides_are_validated():
    from rlhf_trust.errors import ConfigError

    mod = _module()
    cfg = mod.variant(ROOT / "params.yaml", ["missing_eos_penalty=1", "learning_rate=2e-4"])
    assert cfg.missing_eos_penalty == 1 and cfg.learning_rate == 2e-4
    assert cfg.total_episodes == mod.variant(ROOT / "params.yaml", []).total_episodes
    with pytest.raises(ConfigError):
        mod.variant(ROOT / "params.yaml", ["temperature=0"])
    with pytest.raises(SystemExit):
        mod.variant(ROOT / "params.yaml", ["temperature"])


@pytest.fixture(scope="module")
def rm_layout(tmp_path_factory):
    return trained_layout(tmp_path_factory, ("sft", "rm"))


@pytest.mark.slow
def test_each_seed_is_the_stage_and_the_soup_is_the_mean(rm_layout, tmp_path):
    """Seed 0's row is what the ppo stage itself gives with seed 0 (the SFT side reused for seed 1
    changes nothing), per-prompt gains average to the stage's gain, and the soup's weights are the
    mean of the seeds' merged weights (the SFT's where no adapter acts)."""
    import torch

    from rlhf_trust.models import load_merged_causal_lm
    from rlhf_trust.train import ppo

    mod = _module()
    layout = copy_layout(rm_layout, tmp_path / "stage")
    cfg = train_cfg("ppo", total_episodes=8, response_length=8, heldout_prompts=6, learning_rate=5e-2)
    saved = []
    out = mod.run_seeds(cfg, layout.models_dir, [0, 1], lambda r: saved.append(json.dumps(r)),
                        data_dir=layout.data_dir)
    assert json.loads(saved[-1]) == json.loads(json.dumps(out)) and len(saved) >= 3  # per seed, over seeds, soup
    s0, s1 = out["seeds"]
    stage = ppo.run(cfg, layout)  # seed 0, the stage as `dvc repro` runs it
    for k in ("heldout_reward_gain", "heldout_reward_gain_ci95", "heldout_reward_sft", "heldout_reward_policy",
              "kl_mean"):
        assert s0[k] == stage[k], k
    assert s1["heldout_reward_sft"] == s0["heldout_reward_sft"]  # the reused SFT side
    assert s1["heldout_reward_gain"] != s0["heldout_reward_gain"]  # another draw, another policy
    for row in (s0, s1):
        assert len(row["gain_per_prompt"]) == row["heldout_n"] == 6
        assert sum(row["gain_per_prompt"]) / 6 == pytest.approx(row["heldout_reward_gain"], abs=1e-5)
        assert 0 <= row["rollout_eos_rate"] <= 1
    assert out["over_seeds"]["n_seeds"] == 2
    assert out["over_seeds"]["mean"] == pytest.approx((s0["heldout_reward_gain"] + s1["heldout_reward_gain"]) / 2)
    assert out["soup"]["heldout_n"] == 6 and len(out["soup"]["gain_per_prompt"]) == 6

    a = load_merged_causal_lm(layout.model("ppo")).state_dict()
    soup = mod.weight_average([layout.model("ppo"), layout.model("sft")]).state_dict()
    sft = load_merged_causal_lm(layout.model("sft")).state_dict()
    moved = [k for k in a if not torch.equal(a[k], sft[k])]
    assert moved and len(moved) < len(a)  # LoRA moved some weights, not all
    for k in a:
        assert torch.allclose(soup[k], (a[k] + sft[k]) / 2, atol=1e-7), k
