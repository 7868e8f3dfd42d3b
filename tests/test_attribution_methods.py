"""Attribution methods against brute-force answers, LDS on a known linear datamodel, bad input."""

import numpy as np
import pytest
import torch

from rlhf_trust.attribution import datainf, lds, methods
from rlhf_trust.errors import UserError

torch.set_num_threads(1)


def _problem(n=6, shapes=((2, 3), (4, 5)), t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    train = {f"l{i}": torch.randn((n, *s), generator=g) for i, s in enumerate(shapes)}
    test = {f"l{i}": torch.randn((t, *s), generator=g) for i, s in enumerate(shapes)}
    return train, test


@pytest.mark.parametrize("n", [4, 40])  # D > n (Woodbury n x n) and D <= n (D x D system)
def test_exact_equals_a_dense_d_by_d_solve(n):
    train, test = _problem(n=n)
    got = methods.grad_scores("exact", train, test, damping_scale=0.1)
    want = np.zeros((n, 3))
    for k in train:
        g = train[k].reshape(n, -1).double().numpy()
        v = test[k].reshape(3, -1).double().numpy()
        lam = 0.1 * (g ** 2).mean()
        h = np.linalg.inv(g.T @ g / n + lam * np.eye(g.shape[1]))   # brute force: D x D inverse
        want -= g @ h @ v.T
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    # one test column = the stage's single (mean) test gradient, the earlier exact_scores
    one = datainf.exact_scores(train, {k: v[0] for k, v in test.items()}, 0.1)
    np.testing.assert_allclose(got[:, 0].numpy(), one.numpy(), rtol=1e-4, atol=1e-6)


def test_datainf_and_identity_match_the_per_test_sample_reference():
    train, test = _problem()
    for m, ref in (("datainf", datainf.datainf_scores), ("identity", datainf.identity_scores)):
        got = methods.grad_scores(m, train, test, 0.1)
        for j in range(3):
            want = ref(train, {k: v[j] for k, v in test.items()}, 0.1)
            np.testing.assert_allclose(got[:, j].numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_gradsim_is_minus_the_cosine_over_all_layers():
    # train rows (over two layers, concatenated): [1,0 | 0], [0,1 | 0], [1,1 | 0], [0,0 | 2]; test [1,0 | 0]
    train = {"a": torch.tensor([[1., 0.], [0., 1.], [1., 1.], [0., 0.]]), "b": torch.tensor([[0.], [0.], [0.], [2.]])}
    test = {"a": torch.tensor([[3., 0.]]), "b": torch.tensor([[0.]])}
    got = methods.grad_scores("gradsim", train, test)[:, 0].numpy()
    np.testing.assert_allclose(got, [-1.0, 0.0, -1 / np.sqrt(2), 0.0], atol=1e-6)


def test_repsim_is_minus_the_cosine_of_representations():
    train = np.array([[1.0, 0.0], [0.0, 5.0], [-2.0, 0.0]])
    test = np.array([[2.0, 0.0], [1.0, 1.0]])
    got = methods.rep_scores(train, test).numpy()
    c = 1 / np.sqrt(2)
    np.testing.assert_allclose(got, [[-1, -c], [0, -c], [1, c]], atol=1e-6)


def test_spearman_table_names_every_pair():
    t = methods.spearman_table({"a": [1, 2, 3, 4], "b": [4, 3, 2, 1], "c": [1, 1, 1, 1]})
    assert t == {"a~b": -1.0, "a~c": 0.0, "b~c": 0.0}


def test_lds_is_one_for_the_true_linear_datamodel_and_zero_for_random_scores():
    rng = np.random.default_rng(0)
    n, t, m = 40, 12, 64
    theta = rng.normal(size=(n, t))                 # the true datamodel: loss_j(S) = sum_{i in S} theta_ij
    masks = lds.subset_masks(n, m, 0.5, seed=1)
    assert masks.shape == (m, n) and (masks.sum(1) == n // 2).all()
    losses = masks @ theta + 1e-6 * rng.normal(size=(m, t))
    true = lds.summary(lds.per_sample(theta, masks, losses))
    assert true["lds"] > 0.99 and true["n_test"] == t
    rand = lds.summary(lds.per_sample(rng.normal(size=(n, t)), masks, losses))
    assert abs(rand["lds"]) < 0.15
    assert rand["ci95"][0] <= rand["lds"] <= rand["ci95"][1]
    flipped = lds.summary(lds.per_sample(-theta, masks, losses))
    assert flipped["lds"] < -0.99                   # the sign convention matters


def test_exact_refuses_past_the_memory_limit_in_one_line():
    with pytest.raises(UserError) as e:
        methods.check_exact_memory(100_000, [200_000, 50_000], limit_gb=1.0)
    msg = str(e.value)
    assert "\n" not in msg and "GiB" in msg and "exact" in msg and e.value.exit_code == 2
    assert methods.check_exact_memory(10, [100], limit_gb=1.0) == methods.exact_memory_bytes(10, [100])


@pytest.mark.parametrize("line, words", [("method: nope", "unknown method 'nope'"),
                                         ("compare: [exact, lissa]", "unknown method(s)")])
def test_unknown_method_is_one_line_exit_2(tmp_path, capsys, monkeypatch, line, words):
    from rlhf_trust import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"influence:\n  {line}\n")
    assert cli.main(["influence", "--params", "params.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_report_names_the_method_its_lds_and_its_agreement_with_datainf():
    from rlhf_trust.report.collect import Vertical
    from rlhf_trust.report.summary import method_notes

    v = Vertical(name="bias", headline="agreeability_index", higher_is_better=False)
    v.influence = {"sft": {"method": "gradsim", "lds": 0.31, "lds_ci95": [0.1, 0.5], "lds_m": 16,
                           "spearman_gradsim_datainf": 0.42},
                   "rm": {"method": "gradsim", "spearman_gradsim_datainf": 0.5}}
    notes = method_notes(v)
    assert notes[0] == "- sft: ranked by `gradsim`, LDS 0.31 [0.10, 0.50] (m=16), Spearman with DataInf 0.42"
    assert notes[1] == "- rm: ranked by `gradsim`, LDS not measured, Spearman with DataInf 0.50"


def test_the_stage_takes_the_lds_from_params_and_the_report_names_its_set_up(tmp_path):
    """influence.validity (params with provenance) -> the stage's metrics -> the report's line, labelled
    with the set-up the LDS was measured at; a stage or method not measured gets nothing."""
    from rlhf_trust import config
    from rlhf_trust.report.collect import Vertical
    from rlhf_trust.report.summary import method_notes

    p = tmp_path / "params.yaml"
    p.write_text("influence:\n  validity:\n    record: docs/measurements/x.md\n    setup: 12 pairs, 2 steps\n"
                 "    m: 8\n    lds: {dpo: {exact: [0.5, 0.37, 0.63]}}\n")
    cfg = config.load("influence", p)
    got = cfg.validity.measured("dpo", "exact")
    assert got == {"lds": 0.5, "lds_ci95": [0.37, 0.63], "lds_m": 8, "lds_setup": "12 pairs, 2 steps",
                   "lds_record": "docs/measurements/x.md"}
    assert cfg.validity.measured("rm", "exact") == {} and cfg.validity.measured("dpo", "gradsim") == {}
    v = Vertical(name="bias", headline="agreeability_index", higher_is_better=False)
    v.influence = {"dpo": {"method": "exact", **got}}
    assert method_notes(v)[0] == "- dpo: ranked by `exact`, LDS 0.50 [0.37, 0.63] (m=8; 12 pairs, 2 steps)"


def test_the_default_params_carry_the_measured_lds_of_the_default_method():
    from pathlib import Path

    from rlhf_trust import config

    cfg = config.load("influence", Path(__file__).resolve().parents[1] / "params.yaml")
    for stage in ("sft", "dpo"):
        assert cfg.validity.measured(stage, cfg.method)["lds_setup"] == cfg.validity.setup
    assert (Path(__file__).resolve().parents[1] / cfg.validity.record).is_file()


@pytest.mark.parametrize("body, words", [
    ("lds: {sft: {exact: [0.5, 0.6, 0.7]}}\n    setup: s", "needs -1 <= low <= lds <= high <= 1"),
    ("lds: {sft: {exact: [0.5, 0.6]}}\n    setup: s", "must be [lds, ci95_low, ci95_high]"),
    ("lds: {sft: {exact: [0.5, 0.4, 0.6]}}", "influence.validity.setup"),
])
def test_bad_validity_entries_are_one_line(tmp_path, body, words):
    from rlhf_trust import config
    from rlhf_trust.errors import ConfigError

    p = tmp_path / "params.yaml"
    p.write_text(f"influence:\n  validity:\n    {body}\n")
    with pytest.raises(ConfigError) as e:
        config.load("influence", p)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_ekfac_through_kronfluence_on_a_tiny_lora(tmp_path):
    """kronfluence's EK-FAC on PEFT LoRA modules (tiny GPT-NeoX, rank-4 LoRA on every Linear, SFT loss):
    a pair up-weighted lowers its own loss (negative self-score, as any positive-definite
    preconditioner gives), and its ranking agrees with exact influence (brute-force damped inverse)."""
    from attribution_setup import hh_rows, lora, tiny_base
    from scipy.stats import spearmanr

    from rlhf_trust.attribution import ekfac, grads, losses

    model, tok = lora(tiny_base(tmp_path / "base"))
    rows = hh_rows(16, 120)
    layers = grads.select_layers(grads.lora_param_names(model), "all")
    got = ekfac.ekfac_scores(model, tok, "sft", "sft", rows, rows[:4], layers, 64, workdir=tmp_path)
    assert tuple(got.shape) == (16, 4) and torch.isfinite(got).all()
    assert (torch.diagonal(got[:4]) < 0).all()
    pe = grads.PerExampleGrads(model, layers, merge_frozen=False)
    g = pe.compute(lambda: losses.per_example_losses("sft", model, tok, rows, 64), len(rows))
    exact = methods.grad_scores("exact", g, {k: v[:4] for k, v in g.items()}, 0.1)
    rho = [spearmanr(got[:, j], exact[:, j]).statistic for j in range(4)]
    assert np.mean(rho) > 0.5, rho
