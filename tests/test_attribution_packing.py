"""A preference pair as one row (prompt once, then chosen, then rejected) gives the numbers and the
per-example gradients of its two separate sequences, on GPT-NeoX and on Gemma 3 (sliding window)."""

import pytest
import torch
from attribution_setup import hh_rows, lora, tiny_base

from rlhf_trust.attribution import grads, losses, packing

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("tiny") / "base")


class _Tok:
    pad_token_id = 0


def test_layout_positions_mask_and_predictions():
    p = packing.pack(_Tok(), [([11, 12], [13], [14, 15])])
    assert p["input_ids"].tolist() == [[11, 12, 13, 14, 15]]
    assert p["position_ids"].tolist() == [[0, 1, 2, 2, 3]]  # rejected restarts after the prompt
    allowed = p["allowed"][0].int().tolist()
    assert allowed[2] == [1, 1, 1, 0, 0]   # chosen sees prompt + itself
    assert allowed[3] == [1, 1, 0, 1, 0]   # rejected sees prompt + itself, never chosen
    assert allowed[4] == [1, 1, 0, 1, 1]
    # (source position -> target position, branch): the last prompt token predicts both first tokens
    got = list(zip(p["src"].tolist(), p["tgt"].tolist(), p["branch"].tolist()))
    assert got == [(1, 2, 0), (1, 3, 1), (3, 4, 1)]
    assert p["last"].tolist() == [[2, 4]]


def test_padding_rows_attend_only_to_themselves():
    p = packing.pack(_Tok(), [([1], [2], [3]), ([1, 2, 3], [4, 5], [6, 7])])
    a = p["allowed"][0]
    assert a[3:].int().tolist() == torch.eye(7, dtype=torch.int)[3:].tolist()  # pads of the short row


def _grads(model, layers, kind, tok, rows, pack, **kw):
    pe = grads.PerExampleGrads(model, layers, merge_frozen=False)
    out = {}

    def fn():
        loss, owner = losses.per_example_losses(kind, model, tok, rows, 48, pack=pack, **kw)
        out["loss"], out["rows"] = loss.detach(), len(owner)
        return loss, owner

    return pe.compute(fn, len(rows)), out


@pytest.mark.parametrize("kind", ["lm_contrast", "dpo", "bt"])
def test_packed_pairs_give_the_gradients_of_separate_sequences(base, kind):
    model, tok = lora(base, task="seq_cls" if kind == "bt" else "causal_lm")
    kw = {"ref_model": lora(base, seed=1)[0], "beta": 0.5} if kind == "dpo" else {}
    layers = grads.select_layers(grads.lora_param_names(model), "all")
    rows = hh_rows(5, chars=200)  # max_length 48 cuts some prompts: the shared-prompt truncation is exercised
    packed, a = _grads(model, layers, kind, tok, rows, True, **kw)
    separate, b = _grads(model, layers, kind, tok, rows, False, **kw)
    assert a["rows"] == 5 and b["rows"] == 10  # one forward row per pair when packed
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    for l in layers:
        torch.testing.assert_close(packed[l], separate[l], rtol=1e-4, atol=1e-6)


def _tiny_gemma3(tok, window: int, seq_cls: bool = False):
    from transformers import Gemma3ForCausalLM, Gemma3ForSequenceClassification, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=window,
                           layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=16,
                           pad_token_id=tok.pad_token_id, num_labels=1)
    torch.manual_seed(0)
    return (Gemma3ForSequenceClassification if seq_cls else Gemma3ForCausalLM)(cfg).eval()


@pytest.mark.parametrize("kind", ["lm_contrast", "bt"])
@pytest.mark.parametrize("window", [64, 16])
def test_gemma3_packs_only_where_the_sliding_window_never_binds(base, kind, window):
    _, tok = lora(base)
    model = _tiny_gemma3(tok, window, seq_cls=kind == "bt")
    rows = hh_rows(4, chars=200)
    with torch.no_grad():
        got, owner = losses.per_example_losses(kind, model, tok, rows, 48)
        want, owner_sep = losses.per_example_losses(kind, model, tok, rows, 48, pack=False)
    assert len(owner) == (4 if window >= 48 else 8)  # 48-token sequences overrun a 16-token window
    assert len(owner_sep) == 8
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
