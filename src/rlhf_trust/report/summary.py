"""`rlhf-trust report` / `make report`: reports/trust_summary.{md,html,json} + one PNG per vertical.

Tables: vertical x stage headline metrics with 95% CIs; the contrasts (sft-base, ppo-base, dpo-base,
ppo-sft, dpo-sft) as paired differences over the same units with their CI, Holm-adjusted p and MDE,
an arrow for more (▲) / less (▼) trustworthy, `*` = significant after Holm (contrasts.py).
"""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.report import contrasts
from rlhf_trust.report.collect import STAGES, Results, Vertical, collect
from rlhf_trust.report.tables import DASH, SMOKE_BANNER, stage_rows, table_rows, top_pairs
from rlhf_trust.report.tables import is_number as _num


def md_text(x: Any) -> str:
    """A value from data, params or an upstream file as Markdown text on one line: HTML escaped, so a
    `<script>` or `<img onerror>` in it is shown, not rendered (e.g. in a CI job summary)."""
    import html

    return html.escape(" ".join(str(x).splitlines()), quote=False)


def md_code(x: Any) -> str:
    """A value as a Markdown code span (HTML inside is literal); a backtick in it cannot end the span."""
    return "`" + " ".join(str(x).replace("`", "'").splitlines()) + "`"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return md_text(x).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def method_notes(v: Vertical) -> list[str]:
    """Per influence stage: the ranking method, its LDS measured by retraining (95% CI and the set-up it
    was measured at: params influence.validity) and its Spearman agreement with the study's DataInf
    (influence metrics, docs/influence.md)."""
    out = []
    for stage, m in v.influence.items():
        method = m.get("method")
        if not method:
            continue
        ci = m.get("lds_ci95")
        setup = f"; {md_text(m['lds_setup'])}" if isinstance(m.get("lds_setup"), str) and m["lds_setup"] else ""
        lds = (f"LDS {m['lds']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] (m={md_text(m.get('lds_m'))}{setup})"
               if _num(m.get("lds")) and isinstance(ci, list) and len(ci) == 2 and all(map(_num, ci))
               else "LDS not measured")
        rho = m.get(f"spearman_{method}_datainf", m.get(f"spearman_datainf_{method}"))
        agree = "" if method == "datainf" or not _num(rho) else f", Spearman with DataInf {rho:.2f}"
        out.append(f"- {md_text(stage)}: ranked by {md_code(method)}, {lds}{agree}")
    return [*out, ""] if out else []


def markdown(res: Results, figures: dict[str, str], k: int) -> str:
    p = res.provenance
    out = ["# Trustworthiness summary", "", *([f"**{SMOKE_BANNER}**", ""] if p.get("smoke") else []),
           "Headline metric per trust vertical and alignment stage, with bootstrap 95% CIs.", "",
           md_table(["vertical", "metric", *STAGES], table_rows(res)), "",
           "## Changes", "", contrasts.LEGEND, "",
           md_table(contrasts.HEADER, contrasts.rows(res.contrasts, [v.name for v in res.verticals])), ""]
    if res.notes:
        out += [f"{len(res.notes)} contrast(s) skipped:", "", *(f"- {md_text(n)}" for n in res.notes), ""]
    for v in res.verticals:
        out += [f"## {md_text(v.name)}", ""]
        if v.name in figures:
            out += [f"![{md_text(v.name)}]({figures[v.name]})", ""]
        rows = top_pairs(v, k)
        if rows:
            out += [("Most influential HH pairs (negative score = the pair lowers the test loss, "
                     "i.e. pushed the model toward its new behaviour):"), "", *method_notes(v),
                    md_table(["stage", "kind", "score", "pair", "prompt", "chosen", "rejected"], rows), ""]
        elif v.top:
            out += [("Influence ran, but the stages' continuations did not differ on these samples: "
                     "nothing to attribute."), ""]
        else:
            out += ["No influence results for this vertical yet.", ""]
    if res.stages:
        out += ["## Stages", "", md_table(["stage", "cost", "MLflow run"], stage_rows(res)), ""]
    out += ["## Provenance", "",
            f"- git commit: {md_code(p.get('git.commit'))} (dirty: {md_text(p.get('git.dirty'))})",
            f"- data version (`data.dvc` md5): {md_code(p.get('data.version'))}",
            f"- training set (curated HH set md5): {md_code(p.get('train_data.version'))}",
            f"- params.yaml sha256: {md_code(p.get('params.sha256'))}",
            f"- MLflow runs: {len(p.get('mlflow_runs', {}))} (ids in trust_summary.json)", ""]
    if res.missing:
        out += ["## Missing", "", f"{len(res.missing)} result(s) not found; their cells show {DASH}:", ""]
        out += [f"- {md_text(m)}" for m in res.missing] + [""]
    return "\n".join(out)


def as_json(res: Results) -> dict[str, Any]:
    return {
        "verticals": {v.name: {
            "headline": v.headline, "higher_is_better": v.higher_is_better,
            "cells": {s: (None if (c := v.cells.get(s)) is None else
                          {"value": c.value, "ci95": [c.low, c.high], "n": c.n, "mlflow_run_id": c.run_id})
                      for s in STAGES},
        } for v in res.verticals},
        "contrasts": res.contrasts, "contrast_notes": res.notes, "contrasts_digest": res.contrasts_digest,
        "provenance": res.provenance, "missing": res.missing,
    }


def plot_csv(v: Vertical) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["stage", "value", "ci_low", "ci_high", "metric"])  # one schema for every vertical (dvc.yaml plots)
    for s in STAGES:
        c = v.cells.get(s)
        if c is not None and c.value is not None:
            w.writerow([s, c.value, c.low, c.high, v.headline])
    return buf.getvalue()


def write_report(out_dir: Path, top_k: int = 3, res: Results | None = None) -> Results:
    from rlhf_trust.report import figures, html

    out_dir = Path(out_dir)
    res = res or collect(previous=out_dir / "trust_summary.json")
    fig_dir = out_dir / "figures"
    figs = {}
    for v in res.verticals:
        if v.cells:
            path = fig_dir / f"{v.name}.png"
            figures.bar_chart(v, path)
            figs[v.name] = path.relative_to(out_dir).as_posix()
        fileio.write_text(out_dir / "plots" / f"{v.name}.csv", plot_csv(v))
    md = markdown(res, figs, top_k)
    fileio.write_text(out_dir / "trust_summary.md", md)
    fileio.write_json(out_dir / "trust_summary.json", as_json(res))
    fileio.write_text(out_dir / "trust_summary.html", html.render(res, figs, out_dir, top_k))
    return res


def cli(args) -> int:
    from rlhf_trust import config, tracking

    cfg = config.load("report", args.params)

    def work(sr) -> dict:
        res = write_report(Path(cfg.out_dir), cfg.top_k)
        for name in ("trust_summary.md", "trust_summary.html", "trust_summary.json"):
            sr.log_artifact(Path(cfg.out_dir) / name)
        sr.log_artifact(Path(cfg.out_dir) / "figures", "figures")
        filled = sum(len(v.cells) for v in res.verticals)
        sr.log_metrics(contrasts.mlflow_metrics(res.contrasts))
        sr.set_tags({"train_data.version": res.provenance.get("train_data.version")})
        # the pipeline's parent run carries the report's headline numbers (compare runs in the UI)
        parent = sr.run.data.tags.get("mlflow.parentRunId")
        if parent:
            sr.log_metrics_to(parent, {f"{v.name}.{s}.{v.headline}": c.value for v in res.verticals
                                       for s, c in v.cells.items() if c.value is not None})
        n_sig = sum(r["significant"] for per in res.contrasts.values() for r in per.values())
        return {"cells_filled": filled, "cells_missing": len(res.verticals) * len(STAGES) - filled,
                "missing_results": len(res.missing), "contrasts": sum(map(len, res.contrasts.values())),
                "contrasts_significant": n_sig}

    tracking.track_stage("report", work, cfg=cfg, metrics_path=Path(cfg.out_dir) / "report_metrics.json",
                         summary=lambda m: (f"{cfg.out_dir}/trust_summary.md and .html ({m['cells_filled']} cells, "
                                            f"{m['contrasts_significant']}/{m['contrasts']} contrasts "
                                            f"significant, {m['missing_results']} missing results)"))
    return 0
