"""Full fine-tunes become rank-r LoRA by truncated SVD; the converted model computes the tuned one."""

import copy

import torch
from attribution_setup import tiny_base

from rlhf_trust.attribution import grads, svd

torch.set_num_threads(1)


def test_svd_conversion_recovers_low_rank_delta_and_exact_forward(tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir = tiny_base(tmp_path / "base")
    ref = AutoModelForCausalLM.from_pretrained(str(base_dir))
    tuned = copy.deepcopy(ref)
    g = torch.Generator().manual_seed(0)
    deltas = {}
    with torch.no_grad():
        for name in svd.linear_names(tuned):
            w = dict(tuned.named_modules())[name].weight
            d = torch.randn(w.shape[0], 2, generator=g) @ torch.randn(2, w.shape[1], generator=g) * 0.05
            deltas[name] = d
            w.add_(d)
        tuned.gpt_neox.layers[0].input_layernorm.weight.mul_(1.1)  # a non-Linear change too
    ids = torch.randint(0, 300, (2, 12), generator=g)
    want = tuned(input_ids=ids).logits
    assert "embed_out" not in svd.linear_names(tuned)

    model = svd.lora_from_delta(tuned, ref, rank=4)
    mods = dict(model.named_modules())
    for name, d in deltas.items():
        layer = mods[f"base_model.model.{name}"]
        ba = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        torch.testing.assert_close(ba, d, rtol=1e-3, atol=1e-5)  # rank-2 delta, rank-4 LoRA: exact
    torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-4, atol=1e-5)
    names = grads.lora_param_names(model)
    assert len(names) == 2 * len(deltas)
