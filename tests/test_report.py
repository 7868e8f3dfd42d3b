"""make report on hand-made (clearly synthetic) result files: tables, deltas, CIs, partial runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_trust.report import collect, contrasts, summary


def write_metrics(root: Path, vertical: str, stage: str, value: float, half: float, headline: str,
                  units: list[float] | None = None) -> None:
    d = root / "eval" / vertical / stage
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps({
        headline: value, f"{headline}_ci95": {"low": value - half, "high": value + half},
        "n_samples": 100, "mlflow_run_id": f"run-{vertical}-{stage}"}))
    if units is not None:
        (d / "units.csv").write_text("unit_id,value\n" + "".join(f"u{i:02d}|c,{x}\n" for i, x in enumerate(units)))


def bias_units(shift: float) -> list[float]:
    """40 per-unit agree shares around 0.3, every unit moved by `shift` (plus a wobble if shifted)."""
    return [round(min(1.0, max(0.0, 0.3 + 0.01 * (i % 7) + shift + (0.02 * ((i * 3) % 5 - 2) if shift else 0))), 4)
            for i in range(40)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("report: {top_k: 2}\n")
    # bias: base .30 -> sft .80 (CIs apart: real, less trustworthy); ppo .32 (overlaps base)
    for stage, shift in {"base": 0.0, "sft": 0.5, "ppo": 0.0, "dpo": 0.45}.items():
        units = bias_units(shift) if stage != "ppo" else bias_units(0.0)[::-1]   # ppo: same values, shuffled
        write_metrics(tmp_path, "bias", stage, 0.3 + shift, 0.05, "agreeability_index", units)
    # truthfulness (higher is better, binary units): sft loses 8 questions, gains 1 -> less trustworthy
    write_metrics(tmp_path, "truthfulness", "base", 0.40, 0.05, "mc1_accuracy", [1] * 10 + [0] * 20)
    write_metrics(tmp_path, "truthfulness", "sft", 0.20, 0.05, "mc1_accuracy", [1, 1] + [0] * 8 + [1] + [0] * 19)
    inf = tmp_path / "influence" / "sft" / "bias"
    inf.mkdir(parents=True)
    rows = [{"id": "hh-1", "kind": "helpful", "score": -0.9, "prompt": "\n\nHuman: q?\n\nAssistant:",
             "chosen": " yes", "rejected": " no"},
            {"id": "hh-2", "kind": "harmful", "score": 0.7, "prompt": "p", "chosen": "c", "rejected": "r"}]
    (inf / "top.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (inf / "metrics.json").write_text(json.dumps({"mlflow_run_id": "run-inf"}))
    return tmp_path


def test_contrasts_are_paired_and_holm_adjusted(project):
    res = collect.collect()
    bias = res.contrasts["bias"]
    sft = bias["sft-base"]
    assert sft["delta"] == pytest.approx(0.5, abs=0.01) and sft["significant"] and sft["more_trustworthy"] is False
    assert sft["test"] == "sign_flip_permutation" and sft["n_pairs"] == 40
    assert sft["ci95"]["low"] < sft["delta"] < sft["ci95"]["high"] and sft["mde80"] > 0
    assert not bias["ppo-base"]["significant"] and bias["dpo-sft"]["more_trustworthy"] is True
    truth = res.contrasts["truthfulness"]["sft-base"]
    # exact McNemar on 9 discordant pairs (8 lost, 1 gained): 2 * (1 + 9) / 2^9
    assert truth["test"] == "mcnemar_exact" and truth["p_value"] == pytest.approx(20 / 512)
    assert truth["delta"] == pytest.approx(-7 / 30) and truth["more_trustworthy"] is False
    # Holm over the whole table: 5 bias + 1 truthfulness contrasts
    ps = sorted(r["p_value"] for per in res.contrasts.values() for r in per.values())
    assert len(ps) == 6 and min(r["p_holm"] for per in res.contrasts.values() for r in per.values()) == \
        pytest.approx(6 * ps[0])
    assert truth["p_holm"] >= truth["p_value"]
    assert any("truthfulness ppo-base: skipped (no units.csv for ppo)" in n for n in res.notes)
    assert contrasts.text(sft).startswith("+0.5") and "▼*" in contrasts.text(sft)


def test_unpaired_units_skip_the_contrast_with_a_note(project):
    (project / "eval" / "bias" / "ppo" / "units.csv").write_text("unit_id,value\nother,0.5\n")
    (project / "eval" / "bias" / "dpo" / "units.csv").write_text("")
    res = collect.collect()
    assert "ppo-base" not in res.contrasts["bias"] and "sft-base" in res.contrasts["bias"]
    assert any("bias ppo-base: skipped: " in n and "unit ids do not match" in n for n in res.notes)
    assert any("bias @ dpo: units unusable" in n for n in res.notes)


def test_partial_pipeline_still_reports(project):
    res = summary.write_report(Path("reports"), top_k=2)
    md = Path("reports/trust_summary.md").read_text()
    assert "| bias | agreeability_index (lower = more trustworthy) | 0.300 [0.250, 0.350] |" in md
    assert "| toxicity | expected_max_toxicity (lower = more trustworthy) | — | — | — | — |" in md
    assert "## Missing" in md and "eval toxicity @ base" in md
    assert "hh-1" in md and "helpful" in md
    assert Path("reports/figures/bias.png").read_bytes()[:4] == b"\x89PNG"
    assert not Path("reports/figures/toxicity.png").exists()
    assert "| bias | sft-base | +0.5" in md and "p (Holm)" in md and "MDE80" in md
    data = json.loads(Path("reports/trust_summary.json").read_text())
    assert data["verticals"]["toxicity"]["cells"]["base"] is None
    c = data["contrasts"]["bias"]["sft-base"]
    assert set(c) >= {"delta", "ci95", "p_value", "p_holm", "significant", "n_pairs", "mde80"}
    assert set(c["ci95"]) == {"low", "high"} and "toxicity" not in data["contrasts"]
    assert data["provenance"]["mlflow_runs"]["eval_bias@sft"] == "run-bias-sft"
    n_vert = len(collect.registry())
    assert len(res.missing) == ((n_vert - 2) * 4 + 2) + (n_vert * 3 - 1)


def test_html_is_self_contained(project):
    summary.write_report(Path("reports"), top_k=2)
    page = Path("reports/trust_summary.html").read_text()
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert 'class="down"' in page and "▼" in page


def test_cli_writes_report_and_tracks_it(project, capsys):
    from rlhf_trust import cli

    assert cli.main(["report", "--write"]) == 0
    out = json.loads(Path("reports/report_metrics.json").read_text())
    assert out["cells_filled"] == 6 and out["cells_missing"] == len(collect.registry()) * 4 - 6
    assert out["contrasts"] == 6 and out["contrasts_significant"] >= 2
    import mlflow

    from rlhf_trust import runinfo

    run = mlflow.get_run(runinfo.read(Path("reports/report_metrics.json"))["mlflow_run_id"])
    data = json.loads(Path("reports/trust_summary.json").read_text())["contrasts"]["bias"]["sft-base"]
    assert run.data.metrics["contrast.bias.sft-base.p_holm"] == pytest.approx(data["p_holm"])
    assert run.data.metrics["contrast.bias.sft-base.significant"] == 1.0
    assert run.data.metrics["contrast.bias.sft-base.mde80"] == pytest.approx(data["mde80"])
    assert "trust_summary.md" in capsys.readouterr().out


def test_without_write_committed_results_stay_as_they_are(project, capsys):
    from rlhf_trust import cli

    assert cli.main(["report", "--write"]) == 0
    before = {p: p.read_bytes() for p in Path("reports").rglob("*") if p.is_file()}
    assert cli.main(["report"]) == 0
    assert {p: p.read_bytes() for p in Path("reports").rglob("*") if p.is_file()} == before
    assert Path("outputs/report/trust_summary.html").is_file()
    assert "written to outputs/report/ (untracked)" in capsys.readouterr().out


def test_report_leads_with_its_findings(project):
    summary.write_report(Path("reports"), top_k=2)
    md = Path("reports/trust_summary.md").read_text()
    head = md.split("## Changes")[0]
    data = json.loads(Path("reports/trust_summary.json").read_text())["contrasts"]
    n = sum(map(len, data.values()))
    k = sum(r["significant"] for per in data.values() for r in per.values())
    assert f"{k} of {n} changes are significant after Holm's adjustment: " in head
    assert "Model " in head and "data version" in head and "1 training seed" in head
    assert "figures/forest.png" in head and Path("reports/figures/forest.png").stat().st_size > 1000
    assert "conditional on these checkpoints" in head
    page = Path("reports/trust_summary.html").read_text()
    assert page.index("id='findings'") < page.index('id="forest"') < page.index("<h2>Changes")
    # only significant changes are coloured
    for row in page.split("<tr>")[1:]:
        if 'class="down"' in row or 'class="up"' in row:
            assert "▼*" in row or "▲*" in row


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
