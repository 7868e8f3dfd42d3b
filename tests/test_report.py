"""make report on hand-made (clearly synthetic) result files: tables, deltas, CIs, partial runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_trust.report import collect, summary


def write_metrics(root: Path, vertical: str, stage: str, value: float, half: float, headline: str) -> None:
    d = root / "eval" / vertical / stage
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps({
        headline: value, f"{headline}_ci95": {"low": value - half, "high": value + half},
        "n_samples": 100, "mlflow_run_id": f"run-{vertical}-{stage}"}))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("report: {top_k: 2}\n")
    # bias: base .30 -> sft .80 (CIs apart: real, less trustworthy); ppo .32 (overlaps base)
    for stage, value in {"base": 0.30, "sft": 0.80, "ppo": 0.32, "dpo": 0.75}.items():
        write_metrics(tmp_path, "bias", stage, value, 0.05, "agreeability_index")
    # truthfulness (higher is better): sft lower than base -> less trustworthy
    write_metrics(tmp_path, "truthfulness", "base", 0.40, 0.05, "mc1_accuracy")
    write_metrics(tmp_path, "truthfulness", "sft", 0.20, 0.05, "mc1_accuracy")
    inf = tmp_path / "influence" / "sft" / "bias"
    inf.mkdir(parents=True)
    rows = [{"id": "hh-1", "kind": "helpful", "score": -0.9, "prompt": "\n\nHuman: q?\n\nAssistant:",
             "chosen": " yes", "rejected": " no"},
            {"id": "hh-2", "kind": "harmful", "score": 0.7, "prompt": "p", "chosen": "c", "rejected": "r"}]
    (inf / "top.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (inf / "metrics.json").write_text(json.dumps({"mlflow_run_id": "run-inf"}))
    return tmp_path


def test_deltas_arrows_and_significance(project):
    res = collect.collect()
    bias = next(v for v in res.verticals if v.name == "bias")
    d = summary.delta(bias, "sft", "base")
    assert d["delta"] == pytest.approx(0.5) and d["real"] and d["more_trustworthy"] is False
    d2 = summary.delta(bias, "ppo", "base")
    assert not d2["real"] and summary.delta_text(d2) == "+0.020 ▼"
    assert summary.delta_text(summary.delta(bias, "dpo", "sft")) == "-0.050 ▲"
    truth = next(v for v in res.verticals if v.name == "truthfulness")
    assert truth.higher_is_better
    assert summary.delta_text(summary.delta(truth, "sft", "base")) == "-0.200 ▼*"


def test_partial_pipeline_still_reports(project):
    res = summary.write_report(Path("reports"), top_k=2)
    md = Path("reports/trust_summary.md").read_text()
    assert "| bias | agreeability_index (lower = more trustworthy) | 0.300 [0.250, 0.350] |" in md
    assert "| toxicity | expected_max_toxicity (lower = more trustworthy) | — | — | — | — |" in md
    assert "## Missing" in md and "eval toxicity @ base" in md
    assert "hh-1" in md and "helpful" in md
    assert Path("reports/figures/bias.png").read_bytes()[:4] == b"\x89PNG"
    assert not Path("reports/figures/toxicity.png").exists()
    data = json.loads(Path("reports/trust_summary.json").read_text())
    assert data["verticals"]["toxicity"]["cells"]["base"] is None
    assert data["provenance"]["mlflow_runs"]["eval_bias@sft"] == "run-bias-sft"
    assert len(res.missing) == (3 * 4 + 2) + (5 * 3 - 1)


def test_html_is_self_contained(project):
    summary.write_report(Path("reports"), top_k=2)
    page = Path("reports/trust_summary.html").read_text()
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert 'class="down"' in page and "▼" in page


def test_cli_writes_report_and_tracks_it(project, capsys):
    from rlhf_trust import cli

    assert cli.main(["report"]) == 0
    out = json.loads(Path("reports/report_metrics.json").read_text())
    assert out["cells_filled"] == 6 and out["cells_missing"] == 14
    assert "trust_summary.md" in capsys.readouterr().out


def test_cost_column_from_run_info_and_smoke_banner(project):
    # a training stage's DVC metrics file has its numbers only; the costs sit in sft.run.json
    (project / "metrics").mkdir()
    (project / "metrics" / "sft.json").write_text(json.dumps({"train_loss_last": 2.5}))
    (project / "metrics" / "sft.run.json").write_text(json.dumps(
        {"stage_wall_s": 152.3, "stage_peak_rss_mb": 6400.0, "mlflow_run_id": "run-sft"}))
    base = project / "outputs" / "models" / "base"
    base.mkdir(parents=True)
    (base / "stage.json").write_text(json.dumps({"stage": "base", "kind": "base", "spec": "tiny-gpt-neox"}))
    summary.write_report(Path("reports"), top_k=2)
    md = Path("reports/trust_summary.md").read_text()
    assert "| sft | stage_wall_s=152.3, stage_peak_rss_mb=6400.0 | run-sft |" in md
    assert f"**{summary.SMOKE_BANNER}**" in md
    assert summary.SMOKE_BANNER in Path("reports/trust_summary.html").read_text()
