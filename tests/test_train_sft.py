import math

import pytest
import torch
from train_support import KillAt, check_resume, hh_pairs, make_layout, merged_differs, train_cfg, write_jsonl

from rlhf_trust import cli
from rlhf_trust.errors import ConfigError, DataError, UserError
from rlhf_trust.models import build_tiny_base, load_causal_lm, load_peft_model, load_stage_info
from rlhf_trust.train import sft

pytestmark = pytest.mark.slow


def test_sft_trains_lora_and_reloads(tmp_path):
    layout = make_layout(tmp_path)
    m = sft.run(train_cfg("sft"), layout)
    assert m["train_steps"] == 6 and math.isfinite(m["train_loss_last"]) and math.isfinite(m["train_loss_mean"])
    assert 0 < m["params_trainable"] < m["params_total"] and m["train_tokens"] > 0
    assert math.isfinite(m["heldout_chosen_nll_per_token"])
    out = layout.model("sft")
    info = load_stage_info(out)
    assert info["kind"] == "adapter" and info["parent"] == "base" and (out / "tokenizer.json").is_file()
    assert merged_differs(out, layout.model("base"))
    model, tok = load_causal_lm(out)
    assert not model.training and tok.pad_token_id is not None
    peft_model, _ = load_peft_model(out)
    assert any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n)
    assert not layout.checkpoints("sft").exists()  # checkpoints go once the model dir exists


def test_sft_full_finetune(tmp_path):
    layout = make_layout(tmp_path, n_train=8)
    m = sft.run(train_cfg("sft", lora={"enabled": False}), layout)
    assert m["params_trainable"] == m["params_total"]
    assert load_stage_info(layout.model("sft"))["kind"] == "full"
    assert merged_differs(layout.model("sft"), layout.model("base"))


def test_sft_resume_after_kill_matches_uninterrupted_run(tmp_path):
    layout = make_layout(tmp_path, n_train=16)
    check_resume(sft, train_cfg("sft", save_steps=2), layout,
                 ("train_loss_last", "train_loss_mean", "heldout_chosen_nll_per_token"))


def test_sft_changed_params_discard_stale_checkpoints(tmp_path):
    layout = make_layout(tmp_path, n_train=16)
    with pytest.raises(KeyboardInterrupt):
        sft.run(train_cfg("sft", save_steps=2), layout, callbacks=[KillAt(3)])
    m = sft.run(train_cfg("sft", save_steps=2, learning_rate=1e-3), layout)
    assert m["resumed_from_step"] == 0


def test_sft_bad_inputs(tmp_path):
    layout = make_layout(tmp_path, n_train=8)
    cfg = train_cfg("sft")
    empty = tmp_path / "empty"
    write_jsonl(empty / "hh_train.jsonl", [])
    with pytest.raises(DataError, match="empty"):
        sft.run(cfg, type(layout)(data_dir=empty, models_dir=layout.models_dir))
    with pytest.raises(UserError, match="upstream model 'base' not found"):
        sft.run(cfg, type(layout)(data_dir=layout.data_dir, models_dir=tmp_path / "nomodels"))
    with pytest.raises(ConfigError, match="max_prompt_length"):
        train_cfg("sft", max_prompt_length=200, max_length=96)
    with pytest.raises(ConfigError, match="params: sft: .*nope"):
        sft.run(train_cfg("sft", optimizer="nope"), layout)
    # a base model whose weights are NaN: the loss is NaN at the first step
    nan_models = tmp_path / "nan_models"
    build_tiny_base(nan_models / "base", [r["prompt"] + r["chosen"] for r in hh_pairs(40)])
    from safetensors.torch import load_file, save_file

    f = nan_models / "base" / "model.safetensors"
    sd = load_file(str(f))
    sd = {k: torch.full_like(v, float("nan")) if "embed_in" in k else v for k, v in sd.items()}
    save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.raises(UserError, match="became nan"):
        sft.run(cfg, type(layout)(data_dir=layout.data_dir, models_dir=nan_models,
                                  checkpoints_dir=tmp_path / "ck"))
    assert not (nan_models / "sft").exists()


def test_sft_cli_tracked_run_and_failed_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layout = make_layout(tmp_path / "tmp", n_train=8)
    import shutil

    shutil.copytree(layout.data_dir, tmp_path / "outputs" / "curated")
    (tmp_path / "params.yaml").write_text(
        "sft:\n  max_length: 96\n  max_prompt_length: 48\n  batch_size: 4\n  logging_steps: 1\n  threads: 1\n"
        "  device: cpu\n")
    # no base model yet: one line, exit 2, run FAILED, nothing written
    assert cli.main(["sft", "--params", "params.yaml"]) == 2
    assert not (tmp_path / "outputs/models/sft/s0").exists() and not (tmp_path / "metrics/sft/s0.json").exists()
    shutil.copytree(layout.model("base"), tmp_path / "outputs/models/base")
    assert cli.main(["sft", "--params", "params.yaml"]) == 0
    from rlhf_trust import runinfo

    metrics = runinfo.read(tmp_path / "metrics/sft/s0.json")
    import mlflow

    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "sft"
    assert "loss" in run.data.metrics and run.data.metrics["train_loss_last"] == pytest.approx(metrics["train_loss_last"])
    assert run.data.tags["model.md5"] == load_stage_info(tmp_path / "outputs/models/sft/s0")["md5"]
    failed = [r for r in mlflow.search_runs(experiment_names=["rlhf-trust"], output_format="list",
                                            filter_string="tags.stage = 'sft'") if r.info.status == "FAILED"]
    assert failed
