"""The influence stage end to end on tiny adapter / full fine-tuned stages and real data samples."""

import argparse
import json

import pandas as pd
import pytest
import torch
from attribution_setup import DATA, TARGETS, hh_rows, tiny_base

from rlhf_trust import fileio, runinfo
from rlhf_trust.errors import UserError

torch.set_num_threads(1)

PARAMS = """
train:
  seeds: [0]
influence:
  stages: [sft, rm, dpo]
  verticals: [toxicity, ethics]
  max_test_samples: 4
  layers: "last:1"
  shard_size: 8
  batch_size: 4
  max_length: 48
  top_k: 3
  device: cpu
  grad_dtype: float16
"""


def _adapter(model, out, task="CAUSAL_LM", seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=2, target_modules=TARGETS, init_lora_weights=False,
                                            task_type=task))
    peft.save_pretrained(out)
    return peft


def _stage_dir(root, name, kind, task, parent, save):
    from transformers import AutoTokenizer

    from rlhf_trust.models import write_stage_info

    out = root / name / "s0"   # training seed 0's model
    out.mkdir(parents=True)
    save(out)
    AutoTokenizer.from_pretrained(str(root / "base")).save_pretrained(out)
    parent_dir = root / parent if parent == "base" else root / parent / "s0"
    write_stage_info(out, {"stage": name, "kind": kind, "task": task, "spec": "tiny-gpt-neox", "parent": parent,
                           "parent_dir": str(parent_dir), "data_md5": None, "dtype": "float32"})


def _samples(vertical, model, prompts, gens):
    rows = [{"id": f"{vertical}-{i}", "vertical": vertical, "model": model, "condition": "benign",
             "sample_index": 0, "prompt": p, "generation": g} for i, (p, g) in enumerate(zip(prompts, gens))]
    from rlhf_trust.attribution import testpairs

    fileio.write_jsonl(testpairs.samples_path(vertical, model, 0), rows)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from rlhf_trust.data import records
    from rlhf_trust.models import load_merged_causal_lm, seq_cls_from_causal

    root = tmp_path_factory.mktemp("proj")
    models = root / "outputs" / "models"
    tiny_base(models / "base")
    _stage_dir(models, "sft", "adapter", "causal_lm", "base",
               lambda out: _adapter(AutoModelForCausalLM.from_pretrained(str(models / "base")), out))
    _stage_dir(models, "rm", "adapter", "seq_cls", "sft",
               lambda out: _adapter(seq_cls_from_causal(load_merged_causal_lm(models / "sft" / "s0")), out,
                                    task="SEQ_CLS", seed=1))

    def full_dpo(out):  # a full fine-tune of SFT: exercises the SVD conversion
        m = load_merged_causal_lm(models / "sft" / "s0")
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * torch.randn_like(p))
        m.save_pretrained(out)
    _stage_dir(models, "dpo", "full", "causal_lm", "sft", full_dpo)

    (root / "outputs" / "curated").mkdir(parents=True)
    fileio.write_jsonl(root / "outputs" / "curated" / "hh_train.jsonl", hh_rows(20, 80))
    (root / "params.yaml").write_text(PARAMS)
    tox = [r["prompt"] for r in records.load("toxicity", DATA)[:6]]
    eth = [r["input"][:150] for r in records.load("ethics", DATA)[:6]]
    hh = [r["chosen"] for r in hh_rows(40, 40)[20:]]
    return root, {"toxicity": tox, "ethics": eth}, hh


def _run(root, monkeypatch, **kw):
    from rlhf_trust.attribution import stage

    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    monkeypatch.setenv("RLHF_TRUST_ROOT", str(root))
    args = argparse.Namespace(params=kw.get("params", "params.yaml"), stage=kw.get("stage"), vertical=kw.get("vertical"))
    return stage.cli(args)


@pytest.mark.slow
def test_stage_writes_scores_top_hist_metrics_and_resumes(project, monkeypatch):
    root, prompts, hh = project
    monkeypatch.chdir(root)
    for v, ps in prompts.items():
        for j, model in enumerate(["base", "sft", "ppo", "dpo"]):
            gens = [hh[(i + 5 * j) % len(hh)] for i in range(len(ps))]
            gens[0] = hh[0]  # identical for every model: must be dropped
            _samples(v, model, ps, gens)
    assert _run(root, monkeypatch) == 0
    for stage in ("sft", "rm", "dpo"):
        for v in ("toxicity", "ethics"):
            d = root / "influence" / stage / v
            df = pd.read_parquet(d / "scores.parquet")
            assert len(df) == 20 and df["score"].notna().all()
            assert df["score_normalized"].between(-1, 1).all()
            top = fileio.read_jsonl(d / "top.jsonl")
            assert [t["kind"] for t in top] == ["helpful"] * 3 + ["harmful"] * 3
            assert top[0]["score"] == df["score"].min() and top[3]["score"] == df["score"].max()
            assert top[0]["prompt"] and top[0]["chosen"]
            pairs = {"spearman_datainf_exact", "spearman_exact_gradsim", "spearman_exact_repsim",
                     "spearman_datainf_gradsim", "spearman_datainf_repsim", "spearman_gradsim_repsim"}
            assert set(json.loads((d / "metrics.json").read_text())) == {
                "n_train", "n_test", *pairs}  # the DVC metrics; the rest: metrics.run.json
            m = runinfo.read(d / "metrics.json")
            assert m["n_train"] == 20 and m["n_test"] == 4 and m["test_identical_dropped"] == 1
            assert all(-1 <= m[k] <= 1 for k in pairs) and m["method"] == "exact"
            for method in ("exact", "datainf", "gradsim", "repsim"):  # one column per computed method
                assert df[f"score_{method}"].notna().all()
            assert (df["score"] == df["score_exact"]).all()
            assert (d / "hist.png").stat().st_size > 1000
    shards = sorted((root / "outputs" / "influence_grads" / "sft").rglob("shard_*.npy"))
    assert len(shards) == 3  # 20 pairs in shards of 8
    before = {p: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()  # an interrupted run: only the missing shard is recomputed
    old = pd.read_parquet(root / "influence/sft/toxicity/scores.parquet")
    assert _run(root, monkeypatch, stage="sft", vertical="toxicity") == 0
    assert shards[0].stat().st_mtime_ns == before[shards[0]] and shards[1].is_file()
    new = pd.read_parquet(root / "influence/sft/toxicity/scores.parquet")
    pd.testing.assert_series_equal(old["score"], new["score"], rtol=1e-5)


def test_missing_eval_samples_is_a_user_error(project, monkeypatch, tmp_path):
    root, _, _ = project
    with pytest.raises(UserError, match="privacy"):
        _run(root, monkeypatch, stage="rm", vertical="privacy")
    with pytest.raises(UserError, match="unknown vertical"):
        _run(root, monkeypatch, stage="rm", vertical="nope")


def test_no_behaviour_change_records_zero_influence(project, monkeypatch):
    """Every continuation identical between the two stages: nothing to attribute, and no failure."""
    root, prompts, hh = project
    monkeypatch.chdir(root)
    ps = prompts["ethics"]
    for model in ("sft", "dpo"):
        _samples("ethics", model, ps, [hh[i] for i in range(len(ps))])
    assert _run(root, monkeypatch, stage="dpo", vertical="ethics") == 0
    d = root / "influence" / "dpo" / "ethics"
    assert (pd.read_parquet(d / "scores.parquet")["score"] == 0).all()
    assert fileio.read_jsonl(d / "top.jsonl") == []
    m = runinfo.read(d / "metrics.json")
    assert m["n_test"] == 0 and m["no_behaviour_change"] == 1 and m["test_identical_dropped"] == len(ps)


@pytest.mark.parametrize("stage", ["rm", "dpo"])  # sft's loss: test_attribution_methods
def test_stage_ranks_by_ekfac_through_kronfluence(project, monkeypatch, stage):
    """influence.method ekfac: kronfluence's EK-FAC on each stage's LoRA modules (the reward model's
    Bradley-Terry, DPO with its reference, a full fine-tune converted to LoRA), beside exact."""
    root, prompts, hh = project
    monkeypatch.chdir(root)
    ps = prompts["toxicity"]
    for j, model in enumerate(["base", "sft", "ppo", "dpo"]):
        _samples("toxicity", model, ps, [hh[(i + 5 * j) % len(hh)] for i in range(len(ps))])
    (root / "ekfac.yaml").write_text(PARAMS + "  method: ekfac\n  compare: [exact]\n")
    assert _run(root, monkeypatch, params="ekfac.yaml", stage=stage, vertical="toxicity") == 0
    d = root / "influence" / stage / "toxicity"
    df = pd.read_parquet(d / "scores.parquet")
    assert len(df) == 20 and (df["score"] == df["score_ekfac"]).all() and df["score_exact"].notna().all()
    assert df["score"].std() > 0
    m = runinfo.read(d / "metrics.json")
    assert m["method"] == "ekfac" and -1 <= m["spearman_ekfac_exact"] <= 1 and m["ekfac_s"] > 0


def test_fairness_test_pairs_contrast_the_two_models_verdicts(tmp_path, monkeypatch):
    """Fairness (log-likelihood protocol) as an influence vertical: its samples' "generation" is the
    chosen answer, so a test pair is a person whose verdict changed, new verdict preferred over old."""
    from rlhf_trust.attribution import testpairs
    from rlhf_trust.evals import fairness
    from rlhf_trust.evals.backends import CallableBackend

    monkeypatch.setenv("RLHF_TRUST_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    people = fairness.load(DATA)
    # uncalibrated: these scripted answers ignore the person, so a content-free one would tie them
    s = fairness.Settings(limit=6, conditions=["zero_shot_br0.5"], calibration="none")
    verdicts = {"old": lambda p, c: 1.0 if c == " no" else 0.0,               # always " no"
                "new": lambda p, c: 1.0 if (c == " yes") == (len(p) % 2 == 0) else 0.0}  # some " yes"
    rows = {}
    for model, loglik in verdicts.items():
        _, rows[model] = fairness.run(CallableBackend(lambda p, i: "", loglik=loglik), people, s, seed=0, n_boot=10,
                                      model=model)
        fileio.write_jsonl(testpairs.samples_path("fairness", model), rows[model])
    pairs, counts = testpairs.build("fairness", "new", "old", limit=100)
    changed = [r for r in rows["new"] if r["generation"] == " yes"]
    assert changed and len(pairs) == len(changed) == counts["test_pairs"]
    assert counts["test_identical_dropped"] == len(rows["new"]) - len(changed)
    assert all(p["chosen"] == " yes" and p["rejected"] == " no" for p in pairs)
    assert {p["prompt"] for p in pairs} == {r["prompt"] for r in changed}
