"""Batched per-example LoRA gradients equal one backward per example, for every loss; the store resumes."""

import pytest
import torch
from attribution_setup import hh_rows, lora, tiny_base

from rlhf_trust.attribution import grads, losses

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("tiny") / "base")


def _one_by_one(model, layers, kind, tok, rows, **kw):
    params = dict(model.named_parameters())
    out = {l: [] for l in layers}
    for r in rows:
        model.zero_grad(set_to_none=True)
        loss, _ = losses.per_example_losses(kind, model, tok, [r], 64, **kw)
        loss.sum().backward()
        for l in layers:
            out[l].append(params[l].grad.detach().clone())
    return {l: torch.stack(v) for l, v in out.items()}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "lm_contrast", "dpo", "bt"])
def test_batched_gradients_equal_per_example_backward(base, kind):
    model, tok = lora(base, task="seq_cls" if kind == "bt" else "causal_lm")
    kw = {}
    if kind == "dpo":
        kw = {"ref_model": lora(base, seed=1)[0], "beta": 0.5}
    layers = grads.select_layers(grads.lora_param_names(model), "all")
    rows = hh_rows(5)  # different lengths -> right padding is exercised
    pe = grads.PerExampleGrads(model, layers)
    got = pe.compute(lambda: losses.per_example_losses(kind, model, tok, rows, 64, **kw), len(rows))
    want = _one_by_one(model, layers, kind, tok, rows, **kw)
    for l in layers:
        assert got[l].shape == (5, *pe.shapes[l])
        torch.testing.assert_close(got[l], want[l], rtol=1e-4, atol=1e-6)
    assert any(got[l].abs().sum() > 0 for l in layers)


def test_layer_selection(base):
    model, _ = lora(base)
    names = grads.lora_param_names(model)
    assert len(names) == 2 * 4 * 2  # 2 blocks x 4 Linear x (A, B)
    last = grads.select_layers(names, "last:1")
    assert len(last) == 8 and all(".layers.1." in n for n in last)
    assert grads.select_layers(names, r"query_key_value") == [n for n in names if "query_key_value" in n]
    from rlhf_trust.errors import UserError
    with pytest.raises(UserError, match="selects none"):
        grads.select_layers(names, "nothing_matches")
    with pytest.raises(UserError, match="last:<int>"):
        grads.select_layers(names, "last:x")


def test_store_round_trip_and_resume(tmp_path):
    shapes = {"a": (2, 3), "b": (4,)}
    data = {"a": torch.randn(7, 2, 3), "b": torch.randn(7, 4)}
    calls = []

    def compute(items):
        calls.append(list(items))
        return {k: v[items] for k, v in data.items()}

    batches = list(grads.shard_batches(list(range(7)), batch_size=2, shard_size=3))
    assert [s for s, _ in batches] == [0, 2, 3, 5, 6]  # no batch crosses a shard boundary
    store = tmp_path / "g"
    grads.write_store(store, batches, compute, 7, ["a", "b"], shapes, 3, "float32")
    got = grads.load_store(store)
    for k, want in data.items():
        torch.testing.assert_close(got[k], want)
    # an interrupted run: shard 1 lost -> only its batches are recomputed
    (store / "shard_00001.npy").unlink()
    calls.clear()
    grads.write_store(store, batches, compute, 7, ["a", "b"], shapes, 3, "float32")
    assert calls == [[3, 4], [5]]
    torch.testing.assert_close(grads.load_store(store)["a"], data["a"])


def test_store_rejects_other_settings_and_fp16(tmp_path):
    from rlhf_trust.errors import UserError

    data = {"a": torch.randn(4, 3)}
    batches = list(grads.shard_batches(list(range(4)), 4, 4))
    grads.write_store(tmp_path, batches, lambda it: {"a": data["a"][it]}, 4, ["a"], {"a": (3,)}, 4, "float16")
    torch.testing.assert_close(grads.load_store(tmp_path)["a"], data["a"], rtol=1e-3, atol=1e-3)
    with pytest.raises(UserError, match="other settings"):
        grads.write_store(tmp_path, batches, lambda it: data, 4, ["a"], {"a": (3,)}, 4, "float32")


def test_trimmed_logits_give_the_same_log_probs(base):
    model, tok = lora(base)
    batch = losses.collate(tok, [(r["prompt"], r["chosen"]) for r in hh_rows(4)], 64)
    with torch.no_grad():
        a, na = losses.sequence_logps(model, batch, trim=True)
        b, nb = losses.sequence_logps(model, batch, trim=False)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(na, nb) and (na > 0).all()


@pytest.mark.parametrize("block", [4096, 16])
@pytest.mark.parametrize("cap", [None, 2.0])
def test_fused_head_log_probs_and_gradients_equal_the_plain_head(cap, block, monkeypatch):
    from rlhf_trust.models import fused_head

    monkeypatch.setattr(fused_head, "CHUNK_ELEMENTS", 3 * 50)  # several chunks of 3 tokens
    monkeypatch.setattr(fused_head, "VOCAB_BLOCK", block)  # 16: vocabulary blocks of 16, 16, 16 and 2
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(50, 8, generator=g), torch.randn(50, generator=g)
    h = torch.randn(7, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 50, (7,), generator=g)
    coef = torch.randn(7, generator=g)
    stats = {}
    got = fused_head.token_logps(h, w, b, y, cap, stats)
    (gh,) = torch.autograd.grad((got * coef).sum(), h)
    z = torch.nn.functional.linear(h, w, b)
    z = cap * torch.tanh(z / cap) if cap else z
    logp = torch.log_softmax(z, -1)
    want = logp.gather(1, y[:, None])[:, 0]
    (wh,) = torch.autograd.grad((want * coef).sum(), h)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gh, wh, rtol=1e-5, atol=1e-6)
    assert stats["correct"].item() == (z.argmax(-1) == y).sum().item()
    torch.testing.assert_close(stats["entropy_sum"], -(logp.exp() * logp).sum().detach(), rtol=1e-5, atol=1e-5)


def test_per_example_gradients_through_the_fused_head_equal_the_plain_head(base):
    model, tok = lora(base)
    layers = grads.select_layers(grads.lora_param_names(model), "all")
    rows = hh_rows(4)
    pe = grads.PerExampleGrads(model, layers)
    fused = pe.compute(lambda: losses.per_example_losses("lm_contrast", model, tok, rows, 64), len(rows))
    assert losses._FUSED_OK[type(model).__name__] is True  # the fused path ran (checked against the model once)
    plain = pe.compute(lambda: losses.per_example_losses("lm_contrast", model, tok, rows, 64, trim=False), len(rows))
    for l in layers:
        torch.testing.assert_close(fused[l], plain[l], rtol=1e-4, atol=1e-6)


def test_merging_unselected_adapters_keeps_the_model_output(base):
    model, tok = lora(base)
    rows = hh_rows(3)
    with torch.no_grad():
        before = losses.per_example_losses("sft", model, tok, rows, 64)[0]
    grads.PerExampleGrads(model, grads.select_layers(grads.lora_param_names(model), "last:1"))
    merged = [m for m in model.modules() if hasattr(m, "lora_A") and getattr(m, "merged", False)]
    assert len(merged) == 4  # block 0's four adapters; block 1's stay unmerged for the hooks
    with torch.no_grad():
        torch.testing.assert_close(losses.per_example_losses("sft", model, tok, rows, 64)[0], before,
                                   rtol=1e-5, atol=1e-5)


def test_length_sorted_micro_batches_return_rows_in_order():
    items = [{"prompt": "p" * n, "chosen": "c", "rejected": ""} for n in (5, 1, 9, 3, 7)]
    seen = []

    def fn(batch):
        seen.append([len(r["prompt"]) for r in batch])
        return {"g": torch.tensor([[float(len(r["prompt"]))] for r in batch])}

    out = grads.compute_sorted(items, 2, fn, lambda r: len(r["prompt"]))
    assert seen == [[1, 3], [5, 7], [9]]
    assert out["g"][:, 0].tolist() == [5, 1, 9, 3, 7]


def test_rows_are_sorted_by_the_tokens_each_loss_runs(base):
    _, tok = lora(base)
    row = hh_rows(1, chars=400)[0]
    p, c, r = losses.encode_pair(tok, row["prompt"], row["chosen"], row["rejected"], 64)
    assert losses.row_tokens("dpo", tok, row, 64) == len(p) + len(c) + len(r)  # a packed pair
    assert losses.row_tokens("sft", tok, row, 64) == len(losses.encode(tok, row["prompt"], row["chosen"], 64)[0])
    assert losses.row_tokens("sft", tok, row, 64) <= 64
