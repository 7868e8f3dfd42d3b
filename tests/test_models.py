import json
import time

import pytest
import torch
from train_support import hh_pairs, tiny_texts, write_jsonl

from rlhf_trust import cli
from rlhf_trust.data.records import split_pair
from rlhf_trust.errors import UserError
from rlhf_trust.models import (
    build_tiny_base,
    hh_prompt,
    load_causal_lm,
    load_stage_info,
    seq_cls_from_causal,
    spec_kind,
)

torch.set_num_threads(1)


@pytest.mark.slow
def test_tiny_base_builds_fast_and_loads_for_inference(tmp_path):
    texts = tiny_texts()
    build_tiny_base(tmp_path / "warm", texts)  # first call pays the lazy transformers imports
    t0 = time.perf_counter()
    out = build_tiny_base(tmp_path / "base", texts, hidden_size=32, layers=1, heads=2, vocab_size=400)
    assert time.perf_counter() - t0 < 2.0
    info = load_stage_info(out)
    assert info["kind"] == "base" and info["task"] == "causal_lm" and info["spec"] == "tiny-gpt-neox"
    assert len(info["md5"]) == 32 and info["sizes"]["hidden_size"] == 32
    model, tok = load_causal_lm(out)
    assert not model.training and tok.pad_token is not None and tok.padding_side == "left"
    from rlhf_trust.models.fused_head import split_head

    head = model.get_output_embeddings()
    assert type(head).__name__ == "RowsFirstLinear"  # models/cpu_head.py
    assert split_head(model)[1] is head  # the fused-head paths still take it
    assert tok.eos_token == "<eos>" and model.config.eos_token_id == tok.eos_token_id
    batch = tok([hh_prompt("Hi there"), hh_prompt("How do I bake bread at home?")], return_tensors="pt",
                padding=True)
    gen = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 2 and batch["input_ids"].shape[1] < gen.shape[1] <= batch["input_ids"].shape[1] + 4


def test_same_seed_same_weights_and_md5(tmp_path):
    texts = tiny_texts()[:60]
    a = load_stage_info(build_tiny_base(tmp_path / "a", texts, seed=3))
    b = load_stage_info(build_tiny_base(tmp_path / "b", texts, seed=3))
    c = load_stage_info(build_tiny_base(tmp_path / "c", texts, seed=4))
    assert a["md5"] == b["md5"] != c["md5"]


def test_seq_cls_shares_backbone(tmp_path):
    model, _ = load_causal_lm(build_tiny_base(tmp_path / "base", tiny_texts()[:60]))
    rm = seq_cls_from_causal(model)
    assert rm.config.num_labels == 1
    assert torch.equal(rm.gpt_neox.embed_in.weight, model.gpt_neox.embed_in.weight)


def test_spec_kinds_and_chat_format(tmp_path):
    assert spec_kind("tiny-gpt-neox") == "tiny"
    assert spec_kind("gemma-3-270m") == "gemma"
    assert spec_kind("EleutherAI/pythia-6.9b") == "hub"
    assert spec_kind(str(tmp_path)) == "local"
    with pytest.raises(UserError):
        spec_kind("./no/such/model/dir")
    p = hh_prompt("Is it safe?", system="Be kind.")
    assert p == "Be kind.\n\n\nHuman: Is it safe?\n\nAssistant:"
    pair = hh_pairs(1)[0]
    assert split_pair(pair["prompt"] + pair["chosen"], pair["prompt"] + pair["rejected"]) == (
        pair["prompt"], pair["chosen"], pair["rejected"])


def test_missing_model_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a model directory"):
        load_stage_info(tmp_path / "nothing")
    with pytest.raises(UserError):
        load_causal_lm(tmp_path / "nothing")


@pytest.mark.slow
def test_base_stage_cli_writes_model_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLHF_TRUST_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    write_jsonl(tmp_path / "outputs/prepared/hh_train.jsonl", hh_pairs(40))
    (tmp_path / "params.yaml").write_text("model:\n  spec: tiny-gpt-neox\n  tiny_hidden_size: 32\n")
    assert cli.main(["base", "--params", "params.yaml"]) == 0
    info = json.loads((tmp_path / "outputs/models/base/stage.json").read_text())
    assert info["spec"] == "tiny-gpt-neox" and info["weights"] == "."
    (tmp_path / "params.yaml").write_text("model:\n  spec: ./missing-model\n")
    assert cli.main(["base", "--params", "params.yaml"]) == 2
    assert json.loads((tmp_path / "outputs/models/base/stage.json").read_text())["md5"] == info["md5"]


@pytest.mark.parametrize("shape", [(1, 8), (3, 5, 8), (64, 8), (65, 8), (2, 40, 8)])
def test_rows_first_head_equals_linear_values_and_gradients(shape):
    """The W @ h^T head (<= 64 rows) and its F.linear fallback (more rows) give F.linear's values
    and gradients, in any leading shape; the weight stays the model's (tied) parameter."""
    from rlhf_trust.models.cpu_head import rows_first_head

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(8, 50, bias=False)

        def get_output_embeddings(self):
            return self.head

    g = torch.Generator().manual_seed(0)
    lm = LM()
    weight = lm.head.weight
    x = torch.randn(*shape, generator=g, requires_grad=True)
    want = torch.nn.functional.linear(x, weight)
    (wx, ww) = torch.autograd.grad(want.square().sum(), (x, weight))
    rows_first_head(lm)
    assert type(lm.head).__name__ == "RowsFirstLinear" and lm.head.weight is weight
    got = lm.head(x)
    assert got.shape == want.shape and got.is_contiguous()
    (gx, gw) = torch.autograd.grad(got.square().sum(), (x, weight))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, wx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, ww, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(lm.head(x), want, rtol=1e-5, atol=1e-6)
