"""Training seeds as a pipeline dimension: `train.seeds` is checked before anything trains, each seed
has its own model / metrics / eval folders, and the seed alone decides a tiny model's adapter."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from train_support import adapter_weights, copy_layout, make_layout, train_cfg

from rlhf_trust import cli, config, paths
from rlhf_trust.errors import ConfigError
from rlhf_trust.evals import stage as eval_stage
from rlhf_trust.train.inputs import Layout


@pytest.mark.parametrize("seeds, expected", [
    ("[]", "train.seeds: must list at least one seed"),
    ("[0, 1, 1]", "train.seeds: must not repeat a seed, got [1] twice"),
    ("[0, 1.5]", "train.seeds[1]: must be an integer, got 1.5"),
    ("[0, two]", "train.seeds[1]: must be an integer, got 'two'"),
    ("[-1]", "train.seeds: must be >= 0"),
    ("3", "train.seeds: must be a list"),
])
def test_bad_seed_lists_are_one_line_exit_2_before_any_stage_runs(tmp_path, capsys, seeds, expected):
    p = tmp_path / "params.yaml"
    p.write_text(f"train:\n  seeds: {seeds}\n")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config.load_all(p)
    for argv in (["params"], ["sft", "--seed", "0"], ["eval", "--vertical", "ethics"]):
        assert cli.main([*argv, "--params", str(p)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and "\n" not in err, err
        assert expected in err, err


def test_a_seed_outside_the_list_is_refused(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  seeds: [0, 1]\n")
    assert cli.main(["sft", "--seed", "5", "--params", str(p)]) == 2
    assert "--seed 5 is not in train.seeds [0, 1]" in capsys.readouterr().err
    assert cli.main(["params", "--params", str(p)]) == 0
    assert "training seeds [0, 1]" in capsys.readouterr().out


def test_each_seed_has_its_own_models_checkpoints_and_metrics(tmp_path):
    lay = Layout(models_dir=tmp_path / "m", checkpoints_dir=tmp_path / "c", metrics_dir=tmp_path / "x", seed=2)
    assert lay.model("sft") == tmp_path / "m/sft/s2" and lay.model("base") == tmp_path / "m/base"
    assert lay.checkpoints("ppo") == tmp_path / "c/ppo/s2" and lay.metrics("dpo") == tmp_path / "x/dpo/s2.json"
    unseeded = dataclasses.replace(lay, seed=None)
    assert unseeded.model("sft") == tmp_path / "m/sft" and unseeded.metrics("rm") == tmp_path / "x/rm.json"
    assert paths.model_dir("rm", 1) == paths.MODELS / "rm/s1" and paths.model_dir("base", 1) == paths.MODELS / "base"
    assert paths.stage_metrics("ppo", 0) == paths.METRICS / "ppo/s0.json"


def test_eval_runs_the_base_once_and_every_trained_model_per_seed():
    assert eval_stage.cells(["base", "sft", "dpo"], [0, 3]) == [
        ("base", None), ("sft", 0), ("sft", 3), ("dpo", 0), ("dpo", 3)]
    cfg = config.section("eval", {"eval": {"out_dir": "ev"}})
    assert eval_stage.out_paths(cfg, "bias", "ppo", 3)[0].as_posix() == "ev/bias/ppo/s3/metrics.json"
    assert eval_stage.out_paths(cfg, "bias", "base", 3)[1].as_posix() == "ev/bias/base/samples.jsonl.gz"


@pytest.mark.slow
def test_two_seeds_give_different_adapters_and_the_same_seed_identical_ones(tmp_path):
    from rlhf_trust.models import load_stage_info
    from rlhf_trust.train import sft

    layout = make_layout(tmp_path / "src", n_train=8, n_heldout=4)
    cfg = train_cfg("sft", lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1})
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        lay = dataclasses.replace(copy_layout(layout, tmp_path / name), seed=seed)
        sft.run(dataclasses.replace(cfg, seed=seed), lay)
        assert lay.model("sft").name == f"s{seed}" and load_stage_info(lay.model("sft"))["seed"] == seed
        runs[name] = adapter_weights(lay.model("sft"))
    assert runs["a"].keys() == runs["c"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
