"""The alignment-arm registry (train/arms.py): what each arm declares, which arms `train.arms`
selects, and one clear line (exit 2) for an unknown arm or an unmet data need."""

from __future__ import annotations

import importlib

import pytest
import yaml

from rlhf_trust import cli, config
from rlhf_trust.attribution import losses
from rlhf_trust.errors import ConfigError
from rlhf_trust.train import arms, stage_cli


def sections(**over) -> dict:
    raw = {name: {} for name in config.SECTIONS}
    for name, value in over.items():
        raw[name] = value
    return {name: config.section(name, raw) for name in raw}


def test_default_is_the_study_two_arms_and_the_rest_are_opt_in():
    cfg = config.load_all()
    assert [a.name for a in arms.selected(cfg)] == ["ppo", "dpo"] == list(arms.DEFAULT)
    assert set(arms.ARMS) == {"ppo", "dpo", "kto", "orpo", "simpo", "grpo", "rloo"}


def test_each_arm_declares_what_the_pipeline_needs():
    for name, spec in arms.ARMS.items():
        assert spec.name == name and cli.COMMANDS[name][0] == spec.command
        module = spec.load()
        assert module.STAGE == name and callable(module.run) and callable(module.cli)
        mod, cls = spec.params.split(":")
        assert getattr(importlib.import_module(mod), cls) is config.SECTIONS[name]
        assert spec.data in (arms.PAIRS, arms.UNPAIRED, arms.PROMPTS)
        assert spec.heldout_check in stage_cli.SUMMARY_KEYS[name]
        assert spec.influence_loss in losses.LOSSES
        assert spec.parent in ("base", "sft") and set(spec.uses) <= {"rm"}


def test_trainer_and_config_names_resolve_in_the_pinned_trl():
    for spec in arms.ARMS.values():
        for target in (spec.trainer, spec.trl_config):
            mod, cls = target.split(":")
            assert isinstance(getattr(importlib.import_module(mod), cls), type), target


def test_parent_uses_and_data_of_each_arm():
    assert arms.parent("orpo") == "base" and arms.parent("kto") == arms.parent("simpo") == "sft"
    assert arms.uses("grpo") == arms.uses("ppo") == ("rm",) and arms.uses("dpo") == ()
    assert arms.spec("kto").data == arms.UNPAIRED and arms.spec("grpo").data == arms.PROMPTS
    assert arms.models_read("dpo") == ("sft",) and arms.models_read("grpo") == ("sft", "rm")


def test_reward_model_trains_only_when_a_selected_arm_uses_it():
    assert arms.trained_stages(sections(train={"arms": ["dpo", "kto"]})["train"]) == ["sft", "dpo", "kto"]
    assert arms.trained_stages(sections(train={"arms": ["orpo", "grpo"]})) == ["sft", "rm", "orpo", "grpo"]
    assert arms.names(sections(train={"arms": ["simpo", "ppo"]})) == ["simpo", "ppo"]  # params order


def test_unknown_arm_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as e:
        arms.selected(sections(train={"arms": ["ppo", "rlhf9"]}))
    msg = str(e.value)
    assert "'rlhf9'" in msg and "ppo, dpo, kto, orpo, simpo, grpo, rloo" in msg and "\n" not in msg
    assert e.value.exit_code == 2


def test_unmet_data_need_is_one_line():
    with pytest.raises(ConfigError, match=r"grpo.reward_model: 'dpo' is not a reward-model stage"):
        arms.selected(sections(train={"arms": ["grpo"]}, grpo={"reward_model": "dpo"}))
    # an arm not selected does not need its reward model
    assert arms.names(sections(train={"arms": ["dpo"]}, grpo={"reward_model": "dpo"})) == ["dpo"]


@pytest.mark.parametrize("bad", [{"arms": []}, {"arms": ["dpo", "dpo"]}])
def test_train_arms_shape_is_checked_by_config(bad):
    with pytest.raises(ConfigError, match="train.arms"):
        sections(train=bad)


def test_a_stage_command_refuses_an_unknown_arm_with_exit_2(tmp_path, capsys):
    params = yaml.safe_load(config.DEFAULT_PARAMS.read_text(encoding="utf-8"))
    params["train"] = {"arms": ["ppo", "nope"]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    assert cli.main(["kto", "--params", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown arm 'nope'" in err and "known arms: ppo, dpo" in err


def test_influence_loss_settings_come_from_the_arm_params():
    cfg = sections(simpo={"beta": 2.5, "gamma": 0.3}, kto={"beta": 0.2})
    assert arms.loss_settings("simpo", cfg) == {"beta": 2.5, "gamma": 0.3}
    assert arms.loss_settings("kto", cfg) == {"beta": 0.2}
    assert arms.loss_settings("dpo", cfg) == {"beta": cfg["dpo"].beta}
    assert arms.loss_settings("grpo", cfg) == {} == arms.loss_settings("ppo", cfg) == arms.loss_settings("rloo", cfg)


@pytest.mark.parametrize(("section", "bad", "key"), [
    ("kto", {"batch_size": 1}, "kto.batch_size"),
    ("kto", {"beta": 0}, "kto.beta"),
    ("orpo", {"beta": -1}, "orpo.beta"),
    ("simpo", {"gamma": -0.1}, "simpo.gamma"),
    ("grpo", {"num_generations": 1}, "grpo.num_generations"),
    ("grpo", {"batch_size": 3, "num_generations": 2}, "grpo.num_generations"),
    ("grpo", {"max_prompt_length": 100, "max_length": 110, "response_length": 32}, "grpo.response_length"),
    ("rloo", {"batch_size": 4, "num_generations": 3}, "rloo.num_generations"),
])
def test_arm_params_out_of_range_name_the_key(section, bad, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        sections(**{section: bad})
