"""Whole-verdict scoring and contextual calibration of the log-likelihood protocols (bias, ethics,
fairness) with scripted backends on real data samples, the HF engine's multi-token continuations
on the tiny model, the cache keys, and bad calibration params (one line, exit 2)."""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import pytest
from train_support import base_texts

from rlhf_trust import cli
from rlhf_trust.errors import ConfigError
from rlhf_trust.evals import backends, bias, calibration, common, ethics, fairness, run, settings
from rlhf_trust.evals.backends import CallableBackend, HFBackend
from rlhf_trust.evals.cache import Cache, CachedBackend

ROOT = Path(__file__).resolve().parents[1]
PRIOR = 3.0   # nats the frame adds to the first verdict, whatever the item
SIGNAL = 1.0  # nats the item adds to (+) or takes from (-) the first verdict


def item_text(vertical: str, ctx: str) -> str:
    """The item's content in a prompt (what content-free inputs replace)."""
    if vertical == "bias":
        line = ctx.split("\n")[-1]
        return line[:line.index(" Between I agree")]
    if vertical == "ethics":
        return ctx.split("Sentence: ")[1].split("\nBetween")[0]
    person = ctx[ctx.rfind("description:"):]
    return person if "A person in" in person else ""


def sign(vertical: str, ctx: str) -> int:
    """+1 / -1 per real item (a hash of its text), 0 for a content-free input."""
    text = item_text(vertical, ctx)
    if text.strip() in ("", "N/A", "[MASK]"):
        return 0
    return 1 if zlib.crc32(text.encode()) % 2 else -1


def prior_model(vertical: str, options: tuple[str, str], prior=lambda ctx: PRIOR) -> CallableBackend:
    """The first verdict gets `prior(ctx)` nats from the frame plus +-SIGNAL from the item: it wins
    on every item unless calibrated."""
    def loglik(ctx, cont):
        margin = prior(ctx) + SIGNAL * sign(vertical, ctx)
        return 0.0 if cont == options[0] else -margin
    return CallableBackend(lambda p, i: "", loglik=loglik)


CASES = {  # vertical -> (its verdicts, params entry)
    "bias": (bias.VERDICTS, {"limit": 40}),
    "ethics": (ethics.VERDICTS, {"limit": 60, "prompts": ["benign"]}),
    "fairness": (fairness.VERDICTS, {"limit": 30, "conditions": ["zero_shot_br0.5"]}),
}


@pytest.mark.parametrize("vertical", list(CASES))
def test_calibration_recovers_the_item_dependent_verdict(vertical, raw_data):
    options, entry = CASES[vertical]
    be = prior_model(vertical, options)
    plain = run(vertical, be, data_dir=raw_data, n_boot=20,
                settings_entry={"protocol": "loglik", "calibration": "none", **entry})
    assert {r["generation"] for r in plain.rows} == {options[0]}
    assert plain.metrics["constant"] is True  # the prior decides every verdict: nothing could move

    res = run(vertical, be, data_dir=raw_data, n_boot=20, settings_entry={"protocol": "loglik", **entry})
    signs = [sign(vertical, r["prompt"]) for r in res.rows]
    assert {-1, 1} <= set(signs)  # the sample holds items of both kinds
    assert [r["generation"] for r in res.rows] == [options[0] if s > 0 else options[1] for s in signs]
    assert res.metrics["constant"] is False
    # the content-free prior: softmax of (PRIOR, 0) on each of the three inputs; Zhao's factors 1/p
    cal = res.metrics["calibration"]
    assert cal["method"] == "contextual" and cal["content_free"] == ["N/A", "", "[MASK]"]
    rec = next(iter(cal["by_condition"].values()))  # one condition here
    p0 = 1 / (1 + math.exp(-PRIOR))
    assert len(rec["content_free_p"]) == 3 and rec["prior"][options[0].strip()] == pytest.approx(p0)
    f = [1 / p0, 1 / (1 - p0)]
    assert list(rec["factors"].values()) == pytest.approx([2 * x / sum(f) for x in f])
    # before calibration every verdict was the prior's; calibration changed the items with sign -1
    assert res.metrics["uncalibrated"]["changed_by_calibration"] == pytest.approx(signs.count(-1) / len(signs))
    # the calibrated probability of the item's verdict: sigmoid(SIGNAL) either way
    q = 1 / (1 + math.exp(-SIGNAL))
    key = {"bias": "p_agree", "ethics": "p_not_wrong", "fairness": "p_yes"}[vertical]
    first_is_key = vertical != "ethics"  # ethics' graded verdict is its second option, " not wrong"
    for r, s in zip(res.rows, signs):
        assert r[key] == pytest.approx(q if (s > 0) == first_is_key else 1 - q)


def test_calibration_is_per_condition(raw_data):
    """Two jailbreak prefixes with opposite priors: each condition's own content-free distribution
    removes its own prior."""
    def prior(ctx):
        return PRIOR if ctx.startswith(ethics.PREFIXES["benign"]) else -PRIOR
    be = prior_model("ethics", ethics.VERDICTS, prior)
    res = run("ethics", be, data_dir=raw_data, n_boot=20,
              settings_entry={"protocol": "loglik", "limit": 40, "prompts": ["benign", "prefer_not_wrong"]})
    for r in res.rows:
        assert r["prediction"] == (1 if sign("ethics", r["prompt"]) > 0 else 0)
    by = res.metrics["calibration"]["by_condition"]
    assert by["benign"]["prior"]["wrong"] == pytest.approx(1 / (1 + math.exp(-PRIOR)))
    assert by["prefer_not_wrong"]["prior"]["wrong"] == pytest.approx(1 / (1 + math.exp(PRIOR)))


def test_targeted_system_prompt_has_a_prior_per_group(raw_data):
    be = prior_model("bias", bias.VERDICTS)
    res = run("bias", be, data_dir=raw_data, n_boot=20,
              settings_entry={"protocol": "loglik", "limit": 30, "system_prompts": ["none", "targeted"]})
    groups = {r["target_group"] for r in res.rows}
    assert set(res.metrics["calibration"]["by_condition"]) == {"none"} | {f"targeted|{g}" for g in groups}
    assert [r["generation"] for r in res.rows] == [
        bias.VERDICTS[0] if sign("bias", r["prompt"]) > 0 else bias.VERDICTS[1] for r in res.rows]


def test_whole_verdict_not_first_token(raw_data):
    """Hand-computed: log P(" wrong") = -1.0; log P(" not") = -0.3, log P(" wrong" | " not") = -1.2.
    First tokens would say "not wrong" (-0.3 > -1.0); whole verdicts say "wrong" (-1.0 > -1.5, acc);
    per character (acc_norm) "not wrong" wins (-1.5 / 10 > -1.0 / 6)."""
    asked = []

    def loglik(ctx, cont):
        asked.append(cont)
        return {" wrong": -1.0, " not wrong": -0.3 - 1.2}[cont]
    res = run("ethics", CallableBackend(lambda p, i: "", loglik=loglik), data_dir=raw_data, limit=10, n_boot=20,
              settings_entry={"protocol": "loglik", "calibration": "none", "prompts": ["benign"]})
    assert set(asked) == {" wrong", " not wrong"}
    for r in res.rows:
        assert r["generation"] == " wrong" and r["prediction"] == 1 and r["prediction_raw"] == 1
        assert r["prediction_norm"] == 0
        assert (r["loglik_wrong"], r["loglik_not_wrong"]) == (-1.0, pytest.approx(-1.5))
        assert r["p_not_wrong"] == pytest.approx(1 / (1 + math.exp(0.5)))
    assert res.metrics["uncalibrated"]["false_positive_rate_norm"] == 1.0
    assert res.metrics["false_positive_rate"] == 0.0


def test_verdicts_hand_computed():
    """common.verdicts on two prompts of one condition and their content-free prompts."""
    table = {("a", " x y"): -1.0, ("a", " z"): -2.0, ("b", " x y"): -3.0, ("b", " z"): -1.0,
             ("cf1", " x y"): -1.0, ("cf1", " z"): -1.0 - math.log(3), ("cf2", " x y"): -1.0, ("cf2", " z"): -1.0}
    be = CallableBackend(lambda p, i: "", loglik=lambda c, x: table[(c, x)])
    out, rec = common.verdicts(be, ["a", "b"], [" x y", " z"], content_free={"": ["cf1", "cf2"]})
    # content-free: (3/4, 1/4) and (1/2, 1/2) -> prior (5/8, 3/8)
    assert rec["by_condition"][""]["prior"] == pytest.approx({"x y": 0.625, "z": 0.375})
    pa = 1 / (1 + math.exp(-1.0))  # prompt a: P(" x y") = sigmoid(1)
    qa = (pa / 0.625) / (pa / 0.625 + (1 - pa) / 0.375)
    assert out[0].p[0] == pytest.approx(pa) and out[0].q[0] == pytest.approx(qa)
    assert out[0].verdict == out[0].raw == " x y" and out[0].norm == " x y"  # -1/4 > -2/2
    assert out[1].verdict == out[1].raw == " z"
    assert calibration.apply([0.2, 0.8], None) == [0.2, 0.8]


def test_loglik_cache_keys_follow_the_request(raw_data, tmp_path):
    """Another verdict or content-free input is another request, so another cache key; a re-run
    asks the model nothing."""
    calls = []
    be = CallableBackend(lambda p, i: "", loglik=lambda c, x: calls.append((c, x)) or -float(len(c) % 7))
    entry = {"protocol": "loglik", "limit": 10, "prompts": ["benign"]}

    def cached():
        return CachedBackend(be, Cache(tmp_path / "c.sqlite"), progress=False)
    run("ethics", cached(), data_dir=raw_data, n_boot=10, settings_entry=entry)
    assert len(calls) == (10 + 3) * 2 and {x for _, x in calls} == {" wrong", " not wrong"}
    again = cached()
    run("ethics", again, data_dir=raw_data, n_boot=10, settings_entry=entry)
    assert again.misses == 0 and len(calls) == 26
    other = cached()
    run("ethics", other, data_dir=raw_data, n_boot=10, settings_entry={**entry, "content_free": ["N/A", "-", "?"]})
    assert other.misses == 2 * 2 and len(calls) == 30  # only the two new content-free inputs' pairs


@pytest.mark.parametrize("vertical", ["bias", "ethics", "fairness"])
@pytest.mark.parametrize("value, problem", [
    ([], "needs at least 3 distinct content-free inputs"),
    (["N/A", "N/A", ""], "needs at least 3 distinct content-free inputs"),
    ("N/A", "must be a list"),
])
def test_bad_content_free_is_one_line(vertical, value, problem):
    with pytest.raises(ConfigError, match=re.escape(f"eval.verticals.{vertical}.content_free: {problem}")):
        settings(vertical, {"protocol": "loglik", "content_free": value})
    with pytest.raises(ConfigError, match="calibration: must be one of"):
        settings(vertical, {"calibration": "platt"})
    settings(vertical, {"calibration": "none", "content_free": []})  # unused without calibration


def test_missing_content_free_list():
    with pytest.raises(ConfigError, match=r"content_free: is missing"):
        calibration.check("contextual", None, "eval.verticals.x")


def test_empty_content_free_from_the_cli(tmp_path, capsys):
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(\n    ethics: \{)", r"\1content_free: [], ", text, count=1)
    assert "content_free: []" in text
    p = tmp_path / "params.yaml"
    p.write_text(text, encoding="utf-8")
    rc = cli.main(["eval", "--vertical", "ethics", "--params", str(p)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err
    assert "eval.verticals.ethics.content_free: needs at least 3 distinct content-free inputs" in err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlhf_trust.models import build_tiny_base, load_causal_lm

    return load_causal_lm(build_tiny_base(tmp_path_factory.mktemp("tiny") / "base", base_texts()))


def test_hf_scores_multi_token_verdicts_whole(tiny, raw_data):
    """The HF engine on the ethics frame: each verdict's log-likelihood is the sum over all its tokens
    (an unpadded forward per pair), with the shared-prefix cache on or off; " wrong" is read off the
    " not wrong" row's first position (backends.share_rows)."""
    import torch

    from rlhf_trust.data import records

    model, tok = tiny
    items = [r for r in records.load("ethics", raw_data) if r["is_short"]][:3]
    ctxs = [ethics.FRAME.format(prefix=ethics.PREFIXES["benign"], input=r["input"]) for r in items]
    ctxs.append(ethics.FRAME.format(prefix=ethics.PREFIXES["benign"], input="N/A"))
    # " not" (one token here) is the first token of " not wrong": the old first-token score
    pairs = [(c, v) for c in ctxs for v in (*ethics.VERDICTS, " not")]
    seqs = [tok(c + v)["input_ids"] for c, v in pairs]
    conts = [len(x) - len(tok(c)["input_ids"]) for x, (c, _) in zip(seqs, pairs)]
    assert conts[:3] == [4, 5, 1] and backends.share_rows(seqs, conts)  # " not" rides on " not wrong"'s row
    ref = []
    for ctx, cont in pairs:
        ids = tok(ctx + cont)["input_ids"]
        n_ctx = len(tok(ctx)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        ref.append(sum(float(logp[t - 1, ids[t]]) for t in range(n_ctx, len(ids))))
    for reuse in (True, False):
        got = HFBackend(model, tok, batch_size=4, progress=False, prefix_reuse=reuse).loglikelihood(pairs)
        assert got == pytest.approx(ref, abs=1e-4)
    assert all(ref[3 * k + 1] < ref[3 * k + 2] for k in range(len(ctxs)))  # the whole verdict, not its first token
    pairs, ref = [x for k, x in enumerate(pairs) if k % 3 != 2], [x for k, x in enumerate(ref) if k % 3 != 2]
    out, _ = common.verdicts(HFBackend(model, tok, batch_size=4, progress=False), ctxs, ethics.VERDICTS)
    assert [x for v in out for x in v.loglik] == pytest.approx(ref, abs=1e-4)


STAGE_PARAMS = """
eval:
  models: [base]
  data_dir: {data}
  out_dir: eval
  batch_size: 4
  threads: 1
  cache: cache/gen.sqlite
  bootstrap_samples: 100
  verticals:
    ethics: {{limit: 12, prompts: [benign], protocol: loglik}}
    privacy: {{limit: 1, pii_types: [ssn], enron_shots: [one_shot], max_new_tokens: 4}}
"""


def test_stage_writes_graded_units_and_logs_the_calibration(tmp_path, raw_data, monkeypatch):
    """One eval cell on the tiny model: units_graded.csv pairs with units.csv, and the content-free
    inputs and factors reach metrics.run.json and MLflow; a vertical without a graded metric writes
    the header only."""
    import mlflow

    from rlhf_trust import runinfo
    from rlhf_trust.evals.stage import read_units
    from rlhf_trust.models import build_tiny_base

    build_tiny_base(tmp_path / "outputs" / "models" / "base", base_texts())
    (tmp_path / "params.yaml").write_text(STAGE_PARAMS.format(data=raw_data))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", "--vertical", "ethics", "--model", "base"]) == 0
    cell = tmp_path / "eval" / "ethics" / "base"
    m = runinfo.read(cell / "metrics.json")
    units, graded = read_units(cell / "units.csv"), read_units(cell / "units_graded.csv")
    assert [u for u, _ in graded] == [u for u, _ in units] and len(units) > 0
    assert m["graded"] == "false_positive_probability" and isinstance(m["constant"], bool)
    assert sum(v for _, v in graded) / len(graded) == pytest.approx(m["false_positive_probability"])
    assert all(0.0 < v < 1.0 for _, v in graded)
    factors = m["calibration"]["by_condition"]["benign"]["factors"]
    assert set(factors) == {"wrong", "not wrong"} and sum(factors.values()) == pytest.approx(2.0)
    assert m["settings"]["content_free"] == ["N/A", "", "[MASK]"] and m["settings"]["calibration"] == "contextual"
    run = mlflow.get_run(m["mlflow_run_id"]).data
    assert run.metrics["calibration.by_condition.benign.factors.not wrong"] == pytest.approx(factors["not wrong"])
    assert run.metrics["false_positive_probability"] == pytest.approx(m["false_positive_probability"])
    assert run.params["settings.content_free"] == "['N/A', '', '[MASK]']"

    assert cli.main(["eval", "--vertical", "privacy", "--model", "base"]) == 0
    cell = tmp_path / "eval" / "privacy" / "base"
    assert (cell / "units_graded.csv").read_text() == "unit_id,value\n"
    assert runinfo.read(cell / "metrics.json")["graded"] is None


def test_few_shot_fairness_has_a_prior_per_person(raw_data):
    """16-shot demonstrations differ per person, so each person's content-free prompt keeps them; the
    record summarises those priors per setting and each row keeps its own."""
    be = prior_model("fairness", fairness.VERDICTS)
    res = run("fairness", be, data_dir=raw_data, n_boot=20,
              settings_entry={"protocol": "loglik", "limit": 4, "conditions": ["zero_shot_br0.5", "few_shot16_br0.5"]})
    by = res.metrics["calibration"]["by_condition"]
    assert set(by) == {"zero_shot_br0.5", "few_shot16_br0.5"}
    assert by["few_shot16_br0.5"]["per_person"] is True and by["few_shot16_br0.5"]["n_priors"] == 4
    p0 = 1 / (1 + math.exp(-PRIOR))
    assert by["few_shot16_br0.5"]["prior"]["yes"] == pytest.approx(p0)
    assert all(r["p_yes_content_free"] == pytest.approx(p0) for r in res.rows)
    assert [r["generation"] for r in res.rows] == [
        " yes" if sign("fairness", r["prompt"]) > 0 else " no" for r in res.rows]
