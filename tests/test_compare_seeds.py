"""`rlhf-trust compare` and the regression gate with training seeds: two runs of the same code and
params with disjoint seeds pass the gate, a planted regression of MDE80 size fails it, a side with
one seed is conditional and says so."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlhf_trust import cli
from rlhf_trust.report import compare, pooled
from rlhf_trust.report.sides import Side

VERTICALS = {"truthfulness": True, "toxicity": False, "bias": False}   # name: higher_is_better
TRAINED = ("sft", "ppo", "dpo")


def null_run(rng, items: dict, seeds: range, sd_seed: float = 0.03) -> Side:
    """One pipeline run: per vertical and trained model, each seed shifts every unit by its own
    training effect; binary units for truthfulness, continuous for the others. Same items, same
    distribution for every run."""
    side = Side(f"run{seeds[0]}", "workspace",
                summary={"verticals": {v: {"higher_is_better": h} for v, h in VERTICALS.items()}})
    for (v, m), p in items.items():
        per = {}
        for k in seeds:
            shift = rng.normal(0, sd_seed)
            x = (rng.random(p.size) < np.clip(p + shift, 0, 1)) if v == "truthfulness" else rng.normal(p + shift, 0.2)
            per[k] = {f"q{i:03d}": float(val) for i, val in enumerate(x)}
        side.seeds[(v, m)] = per
        side.units[(v, m)] = per[min(per)]
    return side


def test_same_code_disjoint_seeds_passes_the_gate_in_at_least_95_percent():
    rng = np.random.default_rng(0)
    fails = 0
    n = 200
    for i in range(n):
        items = {(v, m): rng.uniform(0.3, 0.7, 120) for v in VERTICALS for m in TRAINED}
        a, b = null_run(rng, items, range(3)), null_run(rng, items, range(3, 6))
        res = compare.build(a, b)
        assert all(r["level"] == "two_level" for per in res["rows"].values() for r in per.values())
        fails += bool(res["regressions"])
    assert fails / n <= 0.05, fails


def test_unit_level_gate_would_fail_on_the_same_runs():
    """The same kind of null runs (binary units: McNemar is fast) compared on one seed each: the
    unit-level test calls training noise a regression far more often, which is why those cells do
    not gate."""
    rng = np.random.default_rng(1)
    flagged = 0
    for _ in range(100):   # seed SD 0.05: about the truthfulness move between two re-runs of one commit
        items = {("truthfulness", m): rng.uniform(0.3, 0.7, 200) for m in TRAINED}
        a, b = null_run(rng, items, range(1), 0.05), null_run(rng, items, range(1, 2), 0.05)
        res = compare.build(a, b)
        assert res["regressions"] == [] and res["one_seed"] == [a.label, b.label]
        flagged += bool(res["conditional_regressions"])
    assert flagged >= 20, flagged   # 28 measured, vs <= 5% with three seeds a side (test above)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def write(path: str, units: dict[str, float]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("unit_id,value\n" + "".join(f"{u},{v!r}\n" for u, v in units.items()))


def commit(msg: str) -> str:
    git("add", "-A")
    git("commit", "-q", "-m", msg)
    return git("rev-parse", "HEAD")


def seeded_run(rng, item: np.ndarray, seeds: range, shift: float = 0.0) -> None:
    """eval/bias/ppo/s<k>/units.csv for these seeds only: item effect + the seed's shift + noise."""
    shutil.rmtree("eval/bias/ppo", ignore_errors=True)
    for k in seeds:
        x = item + rng.normal(0, 0.04) + rng.normal(0, 0.1, item.size) + shift
        write(f"eval/bias/ppo/s{k}/units.csv", {f"q{i:03d}": float(v) for i, v in enumerate(x)})


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    Path("params.yaml").write_text("train: {seeds: [0, 1, 2]}\n")
    return tmp_path


def test_planted_regression_of_mde80_size_fails_the_gate(repo, capsys):
    rng = np.random.default_rng(3)
    item = rng.uniform(0.2, 0.6, 150)
    seeded_run(rng, item, range(3))
    a = commit("seeds 0-2")
    state = rng.bit_generator.state
    seeded_run(rng, item, range(3, 6))
    b = commit("seeds 3-5")
    assert cli.main(["compare", a, b, "--fail-on-regression"]) == 0
    r = json.loads(Path("outputs/compare/compare.json").read_text())["rows"]["bias"]["ppo"]
    assert r["level"] == "two_level" and r["n_seeds"] == {"a": 3, "b": 3} and r["seeds"]["b"] == [3, 4, 5]
    assert "one seed" not in capsys.readouterr().out
    # the same B, every unit worse (bias: lower is better) by the MDE80 of that comparison
    rng.bit_generator.state = state
    seeded_run(rng, item, range(3, 6), shift=r["mde80"])
    worse = commit("seeds 3-5, worse")
    assert cli.main(["compare", a, worse, "--fail-on-regression"]) == 1
    res = json.loads(Path("outputs/compare/compare.json").read_text())
    assert res["regressions"] == ["bias@ppo"] and res["rows"]["bias"]["ppo"]["more_trustworthy"] is False
    assert "seeds" in Path("outputs/compare/compare.md").read_text() and "3+3: SD" in Path("outputs/compare/compare.md").read_text()


def test_a_one_seed_side_says_so_and_is_labelled(repo, capsys):
    rng = np.random.default_rng(4)
    item = rng.uniform(0.2, 0.6, 150)
    write("eval/bias/base/units.csv", {f"q{i:03d}": float(v) for i, v in enumerate(item)})
    seeded_run(rng, item, range(3))
    a = commit("seeds 0-2")
    seeded_run(rng, item, range(7, 8), shift=0.3)
    b = commit("one seed, much worse")
    assert cli.main(["compare", a, b, "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert out.count("one seed per trained model") == 1 and b in out
    res = json.loads(Path("outputs/compare/compare.json").read_text())
    assert res["rows"]["bias"]["ppo"]["level"] == "conditional" and res["conditional_regressions"] == ["bias@ppo"]
    assert res["rows"]["bias"]["base"]["level"] == "unit" and res["one_seed"] == [b]
    for f in ("compare.md", "compare.html", "compare.json"):
        assert pooled.CONDITIONAL in Path("outputs/compare", f).read_text()
