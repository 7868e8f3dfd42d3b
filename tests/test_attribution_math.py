"""The influence math against independent references (explicit matrices, the DataInf loop)."""

import numpy as np
import pytest
import torch

from rlhf_trust.attribution import datainf

torch.set_num_threads(1)


def _problem(n=20, seed=0, shapes=((4, 6), (5, 4))):
    g = torch.Generator().manual_seed(seed)
    train = {f"l{i}": torch.randn(n, *s, generator=g) for i, s in enumerate(shapes)}
    test = {f"l{i}": torch.randn(*s, generator=g) for i, s in enumerate(shapes)}
    return train, test


def _loop_datainf(train, test, scale):
    """The DataInf repository's compute_hvp_proposed + compute_IF, one example at a time."""
    n = next(iter(train.values())).shape[0]
    hvp = {}
    for name, v in test.items():
        lam = torch.stack([train[name][i].pow(2).mean() for i in range(n)]).mean() * scale
        h = torch.zeros_like(v)
        for i in range(n):
            g = train[name][i]
            c = (v * g).sum() / (lam + g.pow(2).sum())
            h += (v - c * g) / (n * lam)
        hvp[name] = h
    return torch.stack([-sum((hvp[k] * train[k][i]).sum() for k in test) for i in range(n)])


def test_datainf_matches_reference_loop():
    train, test = _problem()
    ours = datainf.datainf_scores(train, test, damping_scale=0.1)
    ref = _loop_datainf(train, test, 0.1)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_exact_matches_explicit_inverse_both_solvers():
    # layer l0 has D=24 > n=10 (Woodbury path), l1 has D=4 < n (direct solve)
    train, test = _problem(n=10, shapes=((4, 6), (2, 2)))
    ours = datainf.exact_scores(train, test, damping_scale=0.1)
    ref = torch.zeros(10, dtype=torch.float64)
    for name, v in test.items():
        g = train[name].reshape(10, -1).double()
        lam = 0.1 * g.pow(2).mean()
        a = g.T @ g / 10 + lam * torch.eye(g.shape[1], dtype=torch.float64)
        ref -= g @ torch.linalg.inv(a) @ v.reshape(-1).double()
    assert torch.allclose(ours.double(), ref, rtol=1e-4, atol=1e-6)


def test_datainf_equals_exact_for_one_example():
    train, test = _problem(n=1)
    a = datainf.datainf_scores(train, test, 0.1)
    b = datainf.exact_scores(train, test, 0.1)
    assert a.shape == (1,)
    assert torch.allclose(a, b, rtol=1e-4)


def test_identity_scores_are_negative_dot_products():
    train, test = _problem(n=5)
    got = datainf.identity_scores(train, test)
    want = -sum((train[k] * test[k]).flatten(1).sum(1) for k in test)
    assert torch.allclose(got, want)


def test_chunked_sums_equal_whole():
    train, test = _problem(n=30)
    halves = [{k: g[:13] for k, g in train.items()}, {k: g[13:] for k, g in train.items()}]
    sq = [datainf.sq_mean_sums(h) for h in halves]
    lam = datainf.damping_from_sums({k: sq[0][k] + sq[1][k] for k in train}, 30, 0.1)
    parts = [datainf.datainf_hvp_sums(h, test, lam) for h in halves]
    hvp = datainf.hvp_from_sums({k: parts[0][k] + parts[1][k] for k in train}, 30, lam, test)
    chunked = torch.cat([datainf.scores_from_hvp(h, hvp) for h in halves])
    assert torch.allclose(chunked, datainf.datainf_scores(train, test, 0.1), rtol=1e-5, atol=1e-6)
    streamed = datainf.datainf_scores_chunked(lambda: iter(halves), test, 0.1)
    assert torch.allclose(streamed, chunked, rtol=1e-6, atol=1e-7)


def test_sign_convention_gradient_step_on_helpful_example_lowers_test_loss():
    # quadratic test loss 0.5||w - w*||^2 at w=0: v = -w*. A train example whose gradient points along
    # v (a descent step on it moves w toward w*) must get a negative score.
    v = {"w": torch.tensor([-1.0, 0.0])}
    train = {"w": torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])}
    s = datainf.datainf_scores(train, v)
    assert s[0] < 0 < s[1] and abs(s[2]) < 1e-6


def test_normalize_scales_each_side_separately():
    out = datainf.normalize(torch.tensor([-4.0, -1.0, 0.0, 2.0, 0.5]))
    np.testing.assert_allclose(out, [-1.0, -0.25, 0.0, 1.0, 0.25])
    np.testing.assert_allclose(datainf.normalize(np.array([3.0, 1.0])), [1.0, 1 / 3])


def test_mismatched_layers_are_rejected():
    train, test = _problem()
    test.pop("l1")
    with pytest.raises(ValueError, match="disagree"):
        datainf.datainf_scores(train, test)
