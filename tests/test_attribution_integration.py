"""Influence on model directories written by the real trainers (TRL SFT, reward model, DPO)."""

import math

import numpy as np
import pytest
import torch

from rlhf_trust import config, fileio

torch.set_num_threads(1)


@pytest.mark.slow
def test_attributor_on_trained_sft_rm_dpo(tmp_path, monkeypatch):
    from train_support import hh_pairs, make_layout, train_cfg

    from rlhf_trust.attribution.stage import Attributor
    from rlhf_trust.train import dpo, rm, sft

    root = tmp_path / "proj"
    layout = make_layout(root / "outputs", n_train=12, n_heldout=4)  # models in <root>/outputs/models
    for stage in (sft, rm, dpo):
        stage.run(train_cfg(stage.__name__.rsplit(".", 1)[1], max_steps=2), layout)
    monkeypatch.chdir(root)
    rows = fileio.read_jsonl(layout.split("hh_train"))
    test_rows = [{"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                 for r in hh_pairs(3, offset=180, max_chars=120)]
    cfg = config.section("influence", {"influence": {"layers": "last:1", "batch_size": 4, "shard_size": 8,
                                                     "max_length": 64, "device": "cpu"}})
    for stage in ("sft", "rm", "dpo"):
        att = Attributor(stage, cfg, rows, "md5")
        att.train_grads()
        res = att.score(test_rows)
        assert res["scores"].shape == (len(rows),) and np.isfinite(res["scores"]).all()
        assert np.abs(res["scores"]).max() > 0, stage
        assert math.isfinite(res["metrics"]["spearman_datainf_exact"])
