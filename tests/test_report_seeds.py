"""The report over training seeds, on hand-made (clearly synthetic) result files: a trained model's cell
pools its seeds, a seed missing beside the others is named and the rest pooled, the alignment checks
carry per-seed values and a seed-level CI, and a layout without seeds reads as one seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_trust.report import collect, seeds, summary


def cell(root: Path, model: str, seed: int | None, value: float, units: list[float] | None) -> None:
    d = root / "eval" / "bias" / model / ("" if seed is None else f"s{seed}")
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps({"agreeability_index": value, "n_samples": 20,
                                                "agreeability_index_ci95": {"low": value - .1, "high": value + .1}}))
    if units is not None:
        (d / "units.csv").write_text("unit_id,value\n" + "".join(f"u{i:02d},{x}\n" for i, x in enumerate(units)))


def stage_metrics(root: Path, stage: str, seed: int, **m) -> None:
    d = root / "metrics" / stage
    d.mkdir(parents=True, exist_ok=True)
    (d / f"s{seed}.json").write_text(json.dumps(m))


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("report: {top_k: 2}\n")
    units = [0.3 + 0.01 * (i % 5) for i in range(20)]
    cell(tmp_path, "base", None, 0.30, units)
    for k, shift in ((0, 0.20), (1, 0.30), (2, 0.25)):
        cell(tmp_path, "sft", k, 0.30 + shift, [u + shift + 0.01 * (i % 3) for i, u in enumerate(units)])
    for k, shift in ((0, 0.05), (1, 0.07)):      # ppo's seed 2 never finished
        cell(tmp_path, "ppo", k, 0.30 + shift, [u + shift for u in units])
    cell(tmp_path, "ppo", 2, 0.4, None)          # its metrics exist, its units.csv does not
    for k, (acc, gain) in enumerate(((0.62, 0.4), (0.60, 0.3), (0.64, 0.5))):
        stage_metrics(tmp_path, "rm", k, heldout_accuracy=acc, heldout_accuracy_ci95={"low": acc - .07, "high": acc + .07})
        stage_metrics(tmp_path, "dpo", k, heldout_accuracy=0.5 + 0.01 * k)
        stage_metrics(tmp_path, "ppo", k, heldout_reward_gain=gain)
    return tmp_path


def test_a_trained_cell_is_the_mean_over_its_seeds_with_a_seed_level_ci(seeded):
    res = collect.collect(verticals=("bias",))
    sft = res.verticals[0].cells["sft"]
    assert sft.value == pytest.approx(0.55)
    t = seeds.t_interval([0.5, 0.6, 0.55])
    assert (sft.low, sft.high) == pytest.approx((t["ci95"]["low"], t["ci95"]["high"]))
    assert res.verticals[0].extra["sft"]["per_seed"]["agreeability_index"] == {"0": 0.5, "1": 0.6, "2": 0.55}
    assert res.verticals[0].cells["base"].value == pytest.approx(0.30)   # evaluated once, no seed level


def test_a_missing_seed_is_named_and_the_others_pooled(seeded):
    res = collect.collect(verticals=("bias",))
    named = [m for m in res.missing if "ppo" in m and "units.csv" in m]
    assert named == [f"eval bias @ ppo ({Path('eval/bias/ppo')}/s<k>/units.csv): seed 2 missing; pooled over seeds 0, 1"]
    ppo = res.contrasts["bias"]["ppo-base"]
    assert ppo["n_seeds"] == 2 and [r["seed"] for r in ppo["per_seed"]] == [0, 1]
    assert res.contrasts["bias"]["ppo-sft"]["seeds_missing"] == {"b": [2]}   # B (ppo) lacks seed 2
    md = summary.markdown(res, {}, 2)
    assert "seed 2 missing; pooled over seeds 0, 1" in md


def test_alignment_checks_per_seed_with_mean_ci_and_targets(seeded):
    res = collect.collect(verticals=("bias",))
    rm, dpo, ppo = res.alignment["rm"], res.alignment["dpo"], res.alignment["ppo"]
    assert rm["per_seed"] == {"0": 0.62, "1": 0.60, "2": 0.64} and rm["mean"] == pytest.approx(0.62)
    assert rm["ci_level"] == "seeds" and rm["ci95"]["low"] > 0.5 and rm["met"] is True
    assert dpo["met"] is False                      # 0.50-0.52: the CI reaches below chance
    assert ppo["met"] is True and ppo["target"] == 0.0
    md = summary.markdown(res, {}, 2)
    assert "## Alignment checks" in md and "s0: 0.620, s1: 0.600, s2: 0.640" in md
    assert summary.as_json(res)["alignment"]["rm"]["n_seeds"] == 3


def test_one_seed_layout_reads_as_one_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    units = [0.3 + 0.01 * (i % 5) for i in range(20)]
    cell(tmp_path, "base", None, 0.30, units)
    cell(tmp_path, "sft", None, 0.50, [u + 0.2 for u in units])
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "rm.json").write_text(json.dumps(
        {"heldout_accuracy": 0.6, "heldout_accuracy_ci95": {"low": 0.53, "high": 0.67}}))
    res = collect.collect(verticals=("bias",))
    assert res.verticals[0].cells["sft"].value == pytest.approx(0.5)
    assert res.verticals[0].cells["sft"].low == pytest.approx(0.4)       # the cell's own CI
    assert not [m for m in res.missing if "seed" in m]
    assert res.alignment["rm"]["met"] is True and res.alignment["rm"]["ci_level"].startswith("one seed")
    assert res.contrasts["bias"]["sft-base"]["level"] == "conditional"


def test_influence_shows_the_seed_ensembles_agreement(seeded):
    d = seeded / "influence" / "dpo" / "bias"
    d.mkdir(parents=True)
    (d / "top.jsonl").write_text(json.dumps({"id": "hh-1", "kind": "helpful", "score": -0.5, "prompt": "p",
                                             "chosen": "c", "rejected": "r"}) + "\n")
    (d / "metrics.json").write_text(json.dumps({"method": "exact", "n_seeds": 3, "seed_spearman_mean": 0.41,
                                                "seed_spearman_min": 0.22}))
    md = summary.markdown(collect.collect(verticals=("bias",)), {}, 2)
    assert "the ensemble of 3 training seeds' scores (Spearman between seeds: mean 0.41, min 0.22)" in md
