"""The influence losses of the offline arms (KTO, ORPO, SimPO) against a hand computation on a tiny
model: each sequence scored with one plain forward and log_softmax, the loss written out in floats."""

import math

import pytest
import torch
from attribution_setup import hh_rows, lora, tiny_base

from rlhf_trust.attribution import grads, losses

torch.set_num_threads(1)
MAX_LEN = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tiny_base(tmp_path_factory.mktemp("tiny") / "base")
    policy, tok = lora(base)
    ref, _ = lora(base, seed=1)
    return policy, ref, tok


def hand_logp(model, tok, row: dict, side: str) -> tuple[float, int]:
    """(sum of log p(response tokens | prompt), response tokens): one sequence, every logit."""
    p, c, r = losses.encode_pair(tok, row["prompt"], row["chosen"], row["rejected"], MAX_LEN)
    resp = c if side == "chosen" else r
    ids = torch.tensor([p + resp])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(float(logp[len(p) + i - 1, t]) for i, t in enumerate(resp)), len(resp)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def hand_loss(kind: str, policy, ref, tok, row: dict, beta: float, gamma: float) -> float:
    (lw, nw), (ll, nl) = hand_logp(policy, tok, row, "chosen"), hand_logp(policy, tok, row, "rejected")
    if kind == "kto":
        rw = beta * (lw - hand_logp(ref, tok, row, "chosen")[0])
        rl = beta * (ll - hand_logp(ref, tok, row, "rejected")[0])
        return (1 - sigmoid(rw)) + (1 - sigmoid(-rl))
    aw, al = lw / nw, ll / nl
    if kind == "simpo":
        return -math.log(sigmoid(beta * (aw - al) - gamma))
    log_odds = (aw - math.log(1 - math.exp(aw))) - (al - math.log(1 - math.exp(al)))
    return -aw - beta * math.log(sigmoid(log_odds))


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("kind", ["kto", "orpo", "simpo"])
def test_loss_matches_hand_computation(models, kind, pack):
    policy, ref, tok = models
    rows = hh_rows(4)
    beta, gamma = (2.0, 0.5) if kind == "simpo" else (0.5, 0.0)
    with torch.no_grad():
        got, owner = losses.per_example_losses(kind, policy, tok, rows, MAX_LEN, ref_model=ref, beta=beta,
                                               gamma=gamma, pack=pack)
    want = [hand_loss(kind, policy, ref, tok, r, beta, gamma) for r in rows]
    assert got.shape == (4,) and sorted(set(owner.tolist())) == [0, 1, 2, 3]
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-5)


def test_kto_needs_its_reference(models):
    policy, _, tok = models
    with pytest.raises(ValueError, match="kto loss needs the reference"):
        losses.per_example_losses("kto", policy, tok, hh_rows(1), MAX_LEN)


def test_log1mexp_is_stable_at_both_ends():
    x = torch.tensor([-1e-6, -0.5, -0.7, -5.0, -80.0], dtype=torch.float64)
    torch.testing.assert_close(losses._log1mexp(x), torch.log(1 - torch.exp(x)), rtol=1e-6, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["kto", "orpo", "simpo"])
def test_batched_gradients_equal_per_example_backward(models, kind):
    """DataInf's per-example gradients of the new losses equal one backward per pair."""
    policy, ref, tok = models
    layers = grads.select_layers(grads.lora_param_names(policy), "last:1")
    rows = hh_rows(3)
    pe = grads.PerExampleGrads(policy, layers)
    got = pe.compute(lambda: losses.per_example_losses(kind, policy, tok, rows, MAX_LEN, ref_model=ref, beta=0.5),
                     len(rows))
    params = dict(policy.named_parameters())
    for i, r in enumerate(rows):
        policy.zero_grad(set_to_none=True)
        losses.per_example_losses(kind, policy, tok, [r], MAX_LEN, ref_model=ref, beta=0.5)[0].sum().backward()
        for l in layers:
            torch.testing.assert_close(got[l][i], params[l].grad, rtol=1e-4, atol=1e-6)
    assert any(got[l].abs().sum() > 0 for l in layers)
