"""Does DataInf mean anything on a real (tiny) model? Agreement with exact influence, and whether
removing the pairs it calls harmful/helpful and retraining moves the test loss the predicted way."""

import pytest
import torch
from attribution_setup import TARGETS, hh_rows, tiny_base
from scipy.stats import binomtest, spearmanr

from rlhf_trust.attribution import datainf, grads, losses

torch.set_num_threads(1)
N_TRAIN, N_TEST, MAXLEN, STEPS, LR, DROP = 32, 8, 64, 30, 1.0, 4


class Problem:
    """SFT of a tiny GPTNeoX with rank-4 LoRA on real HH pairs, full-batch gradient descent from a
    fixed init: deterministic, so a retrain differs from the full run only by the removed pairs."""

    def __init__(self, base):
        from transformers import AutoTokenizer

        self.base = base
        self.tok = AutoTokenizer.from_pretrained(str(base))
        rows = hh_rows(N_TRAIN + N_TEST, 60)
        self.train, self.test = rows[:N_TRAIN], rows[N_TRAIN:]

    def fit(self, keep):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(self.base)),
                               LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, lora_dropout=0.0,
                                          init_lora_weights="gaussian"))
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
        rows = [self.train[i] for i in keep]
        for _ in range(STEPS):
            loss, _ = losses.per_example_losses("sft", model, self.tok, rows, MAXLEN)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        return model

    def test_losses(self, model):
        with torch.no_grad():
            return losses.per_example_losses("sft", model, self.tok, self.test, MAXLEN)[0]


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    p = Problem(tiny_base(tmp_path_factory.mktemp("validity") / "base"))
    p.model = p.fit(range(N_TRAIN))
    p.base_test = p.test_losses(p.model)
    pe = grads.PerExampleGrads(p.model, grads.select_layers(grads.lora_param_names(p.model), "all"))
    p.g = pe.compute(lambda: losses.per_example_losses("sft", p.model, p.tok, p.train, MAXLEN), N_TRAIN)
    p.gt = pe.compute(lambda: losses.per_example_losses("sft", p.model, p.tok, p.test, MAXLEN), N_TEST)
    return p


def spearman_vs_exact(problem, damping_scale):
    v = {k: x.mean(0) for k, x in problem.gt.items()}
    a = datainf.datainf_scores(problem.g, v, damping_scale)
    b = datainf.exact_scores(problem.g, v, damping_scale)
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


@pytest.mark.slow
def test_datainf_ranks_like_exact_on_tiny_lora(problem):
    # Rank-4 LoRA on every Linear of a 2-block GPTNeoX (16 tensors), trained. DataInf's
    # average-of-inverses matches the exact damped inverse when lambda is not small next to
    # ||g||^2 / D; at the study's lambda = 0.1 mean(g^2) the agreement is much weaker (docs/influence.md).
    assert spearman_vs_exact(problem, 10.0) >= 0.9
    assert spearman_vs_exact(problem, 0.1) > 0.3


@pytest.mark.slow
def test_retraining_without_top_pairs_moves_test_loss_as_predicted(problem):
    """For each test example: drop its DROP most harmful pairs (largest score) and retrain -> its test
    loss should fall; drop its DROP most helpful (most negative) -> it should rise. Chance = 1/2."""
    hits = 0
    for j in range(N_TEST):
        s = datainf.datainf_scores(problem.g, {k: x[j] for k, x in problem.gt.items()}, 0.1)
        order = torch.argsort(s).tolist()
        for drop, should_fall in ((order[-DROP:], True), (order[:DROP], False)):
            retrained = problem.test_losses(problem.fit([i for i in range(N_TRAIN) if i not in drop]))[j]
            hits += int((retrained < problem.base_test[j]) == should_fall)
    trials = 2 * N_TEST
    # measured 14/16 when written; require better than chance at the 5% level (>= 12/16)
    assert binomtest(hits, trials, 0.5, alternative="greater").pvalue < 0.05, f"{hits}/{trials}"
