"""Markdown reports (trust_summary.md, compare.md) end up in CI job summaries, which render HTML: every
value from data, params or an upstream file is escaped there, and a number that is not a number is
shown as "not measured" rather than crashing the report."""

from __future__ import annotations

import re

from rlhf_trust.report import compare, summary
from rlhf_trust.report.collect import Results, Vertical

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>"]


def _no_markup(md: str) -> None:
    """No tag outside code spans (whose content Markdown shows literally)."""
    assert not re.search(r"<(script|img)\b", re.sub(r"`[^`\n]*`", "", md), re.IGNORECASE), md


def test_summary_markdown_escapes_html_from_data_and_upstream_files():
    v = Vertical(name="toxicity", headline="expected_max_toxicity", higher_is_better=False,
                 top={"dpo": [{"kind": "harmful", "score": -1.0, "id": XSS[1], "prompt": XSS[0],
                               "chosen": XSS[1], "rejected": "a | b"}]},
                 influence={"dpo": {"method": XSS[1], "lds": 0.5, "lds_ci95": ["<b>", 1], "lds_m": XSS[0],
                                    f"spearman_{XSS[1]}_datainf": "<i>"}})
    res = Results(verticals=[v], stages={XSS[0]: {"mlflow_run_id": XSS[1]}},
                  provenance={"git.commit": "`" + XSS[0], "data.version": XSS[1], "train_data.version": None,
                              "params.sha256": "x"},
                  missing=[XSS[0]], notes=[XSS[1]])
    md = summary.markdown(res, {}, k=3)
    _no_markup(md)
    assert "&lt;img src=x onerror=alert(2)&gt;" in md and "a \\| b" in md
    assert "LDS not measured" in md     # a CI bound that is not a number
    assert "- git commit: `'<script>" in md    # literal in a code span, which the backtick cannot end


def test_compare_markdown_escapes_labels_params_and_versions():
    side = {"label": XSS[0], "commit": "0123456789abcdef", "data.version": XSS[1], "train_data.version": "`x`"}
    res = {"a": side, "b": {**side, "label": "workspace"}, "rows": {}, "regressions": [XSS[1]], "predicted": [],
           "params_changed": [{"key": "eval.note", "a": XSS[0], "b": XSS[1]}]}
    md = compare.markdown(res)
    _no_markup(md)
    assert md.startswith("# Compare &lt;script&gt;alert(1)&lt;/script&gt; → workspace")
    assert "&lt;img src=x onerror=alert(2)&gt;" in md


def test_numbers_that_are_not_numbers_in_upstream_files_are_missing_not_a_crash(tmp_path):
    import json

    from rlhf_trust.report import collect

    d = tmp_path / "eval" / "toxicity" / "base"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"expected_max_toxicity": "<b>0.5</b>", "expected_max_toxicity_ci95": [1, 2]}))
    d = tmp_path / "eval" / "toxicity" / "sft"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"expected_max_toxicity": 0.25, "expected_max_toxicity_ci95": {"low": "x", "high": 0.3},
                                                "n_samples": "many"}))
    top = tmp_path / "influence" / "dpo" / "toxicity"
    top.mkdir(parents=True)
    (top / "top.jsonl").write_text(json.dumps({"kind": "harmful", "score": "1e9", "id": "p1"}) + "\n")
    res = collect.collect(tmp_path / "eval", tmp_path / "influence", tmp_path / "metrics", verticals=("toxicity",))
    v = res.verticals[0]
    assert "base" not in v.cells and any("expected_max_toxicity is not a number" in m for m in res.missing)
    assert v.cells["sft"].value == 0.25 and not v.cells["sft"].has_ci and v.cells["sft"].n is None
    md = summary.markdown(res, {}, k=3)
    assert "| dpo | harmful | — | p1 |" in md and "<b>" not in md


def test_html_summary_escapes_the_provenance_too(tmp_path):
    from rlhf_trust.report import html

    res = Results(verticals=[], stages={}, missing=[],
                  provenance={"git.commit": "abc", "git.dirty": XSS[1], "data.version": None})
    page = html.render(res, {}, tmp_path, 3)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page


def test_compare_reads_another_revisions_manifest_without_trusting_its_numbers():
    from rlhf_trust.report.sides import Side

    side = Side("b", "0" * 40)
    side.manifest = {"enabled": True, "n_in": "30",
                     "sources": [{"stage": "dpo", "vertical": "toxicity", "n_scored": "<b>"}, {"stage": "../x"}, 7],
                     "dropped": [{"scores": {"dpo/toxicity": 2.0}}, {"scores": {"dpo/toxicity": "9e9"}},
                                 {"scores": {"dpo/toxicity": float("nan")}}, "junk"]}
    out = compare.predicted(side, {})
    assert [(p["stage"], p["n_dropped"], p["predicted_test_loss_change"]) for p in out] == [("dpo", 1, -2.0)]


def test_a_direction_that_is_not_a_boolean_falls_back_to_the_registry():
    from rlhf_trust.report.sides import Side

    side = Side("a", "0" * 40, summary={"verticals": {"toxicity": {"higher_is_better": "true"}}})
    assert side.higher_is_better("toxicity") is False     # toxicity: lower is more trustworthy
    side.summary = {"verticals": {"toxicity": {"higher_is_better": True}}}
    assert side.higher_is_better("toxicity") is True
