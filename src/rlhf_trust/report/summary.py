"""`rlhf-trust report --write` (the DVC stage): reports/trust_summary.{md,html,json}, a forest plot of
every contrast, one PNG per vertical and one samples page per vertical (reports/samples/). Without
`--write` (`make report`) the same files go to outputs/report/, untracked: committed results are
rewritten only when asked.

The report opens with its findings (findings.py: a paragraph generated from the contrasts, and the
model, sizes, seeds and data version), then the forest plot (forest.py), the tables and the
influence sections, significant changes first, each labelled with the method that ranked it.

Tables: vertical x stage headline metrics with 95% CIs; the contrasts (sft-base, ppo-base, dpo-base,
ppo-sft, dpo-sft) as paired differences over the same units with their CI, Holm-adjusted p and MDE,
an arrow for more (▲) / less (▼) trustworthy, `*` = significant after Holm (contrasts.py).
"""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths
from rlhf_trust.report import contrasts, findings
from rlhf_trust.report.collect import STAGES, Results, Vertical, collect
from rlhf_trust.report.tables import (
    ALIGNMENT_HEADER,
    DASH,
    SMOKE_BANNER,
    alignment_rows,
    methods,
    significant_first,
    stage_rows,
    table_rows,
    top_pairs,
)
from rlhf_trust.report.tables import is_number as _num


def md_text(x: Any) -> str:
    """A value from data, params or an upstream file as Markdown text on one line: HTML escaped, so a
    `<script>` or `<img onerror>` in it is shown, not rendered (e.g. in a CI job summary)."""
    import html

    return html.escape(" ".join(str(x).splitlines()), quote=False)


def md_code(x: Any) -> str:
    """A value as a Markdown code span (HTML inside is literal); a backtick in it cannot end the span."""
    return "`" + " ".join(str(x).replace("`", "'").splitlines()) + "`"


ALIGNMENT_LEGEND = ("Held-out checks of the alignment stages, per training seed; the mean's 95% CI is a "
                    "Student-t interval over seeds (training variance). Targets: RM and DPO accuracy above "
                    "chance (CI low > 0.5), PPO's reward gain over SFT above 0.")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return md_text(x).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def method_notes(v: Vertical) -> list[str]:
    """Per influence stage: the ranking method, its LDS measured by retraining (95% CI and the set-up it
    was measured at: params influence.validity), its Spearman agreement with the study's DataInf and,
    over training seeds, the seeds' agreement
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
        n = m.get("n_seeds")
        if isinstance(n, int) and n > 1 and _num(m.get("seed_spearman_mean")) and _num(m.get("seed_spearman_min")):
            agree += (f"; the ensemble of {n} training seeds' scores (Spearman between seeds: mean "
                      f"{m['seed_spearman_mean']:.2f}, min {m['seed_spearman_min']:.2f})")
        out.append(f"- {md_text(stage)}: ranked by {md_code(method)}, {lds}{agree}")
    return [*out, ""] if out else []


def markdown(res: Results, figures: dict[str, str], k: int, pages: dict[str, str] | None = None) -> str:
    p = res.provenance
    pages = pages or {}
    out = ["# Trustworthiness summary", "", *([f"**{SMOKE_BANNER}**", ""] if p.get("smoke") else []),
           md_text(findings.identity(p, res.verticals, findings.seed_count(res.contrasts))), "",
           md_text(findings.paragraph(res.contrasts, res.verticals)), ""]
    if "forest" in figures:
        out += [f"![every contrast: Δ with 95% CI]({figures['forest']})", ""]
    out += ["Headline metric per trust vertical and alignment stage, with bootstrap 95% CIs.", "",
            md_table(["vertical", "metric", *STAGES], table_rows(res)), "",
            *(["## Alignment checks", "", ALIGNMENT_LEGEND, "", md_table(ALIGNMENT_HEADER, alignment_rows(res)), ""]
              if res.alignment else []),
            "## Changes", "", contrasts.LEGEND, "",
            md_table(contrasts.HEADER, contrasts.rows(res.contrasts, [v.name for v in res.verticals])), ""]
    if pages:
        out += ["Per-unit samples behind each contrast (prompt, each model's answer, score, paired difference): "
                + ", ".join(f"[{v}]({u})" for v, u in pages.items()), ""]
    if res.notes:
        out += [f"{len(res.notes)} contrast(s) skipped:", "", *(f"- {md_text(n)}" for n in res.notes), ""]
    for v in significant_first(res):
        out += [f"## {md_text(v.name)}", ""]
        if findings.is_constant(v, res.contrasts.get(v.name, {})):
            out += [f"{md_text(v.name)}: {findings.CONSTANT}.", ""]
        if v.name in figures:
            out += [f"![{md_text(v.name)}]({figures[v.name]})", ""]
        rows = top_pairs(v, k)
        if rows:
            out += [(f"Most influential HH pairs, ranked by {md_text(methods(v))} (negative score = the pair lowers the "
                     "test loss, i.e. pushed the model toward its new behaviour):"), "", *method_notes(v),
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
        "provenance": res.provenance, "missing": res.missing, "alignment": res.alignment,
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


def sample_pages(res: Results, out_dir: Path, eval_dir: Path = paths.EVAL) -> dict[str, str]:
    """reports/samples/<vertical>.html for each vertical with units for every model (all four side by
    side, every contrast's paired difference): vertical -> its path relative to the report."""
    from rlhf_trust.errors import UserError
    from rlhf_trust.report import samples

    out = {}
    for v in res.verticals:
        if v.name not in res.contrasts:
            continue
        try:
            page = samples.load(v.name, [m for m in STAGES if m in v.cells], eval_dir=eval_dir)
        except UserError:
            continue
        rel = f"samples/{v.name}.html"
        samples.write_page(page, out_dir / rel, back="../trust_summary.html")
        out[v.name] = rel
    return out


def write_report(out_dir: Path, top_k: int = 3, res: Results | None = None,
                 previous: Path | None = None) -> Results:
    """`previous`: the trust_summary.json whose contrasts may be reused (default: out_dir's)."""
    from rlhf_trust.report import figures, forest, html

    out_dir = Path(out_dir)
    res = res or collect(previous=previous or out_dir / "trust_summary.json")
    fig_dir = out_dir / "figures"
    figs = {}
    if forest.draw(res.contrasts, [v.name for v in res.verticals], fig_dir / "forest.png"):
        figs["forest"] = "figures/forest.png"
    pages = sample_pages(res, out_dir)
    for v in res.verticals:
        if v.cells:
            path = fig_dir / f"{v.name}.png"
            figures.bar_chart(v, path)
            figs[v.name] = path.relative_to(out_dir).as_posix()
        fileio.write_text(out_dir / "plots" / f"{v.name}.csv", plot_csv(v))
    md = markdown(res, figs, top_k, pages)
    fileio.write_text(out_dir / "trust_summary.md", md)
    fileio.write_json(out_dir / "trust_summary.json", as_json(res))
    fileio.write_text(out_dir / "trust_summary.html", html.render(res, figs, out_dir, top_k, pages))
    return res


UNTRACKED = paths.OUTPUTS / "report"   # where `rlhf-trust report` writes without --write


def cli(args) -> int:
    from rlhf_trust import config, tracking

    cfg = config.load("report", args.params)
    out_dir = Path(cfg.out_dir) if getattr(args, "write", False) else UNTRACKED

    def work(sr) -> dict:
        res = write_report(out_dir, cfg.top_k, previous=Path(cfg.out_dir) / "trust_summary.json")
        for name in ("trust_summary.md", "trust_summary.html", "trust_summary.json"):
            sr.log_artifact(out_dir / name)
        sr.log_artifact(out_dir / "figures", "figures")
        sr.log_artifact(out_dir / "samples", "samples")
        filled = sum(len(v.cells) for v in res.verticals)
        sr.log_metrics(contrasts.mlflow_metrics(res.contrasts))
        sr.set_tags({"train_data.version": res.provenance.get("train_data.version")})
        # the pipeline's parent run carries the report's headline numbers (compare runs in the UI)
        parent = sr.run.data.tags.get("mlflow.parentRunId")
        if parent:
            # a trained model's cells and the alignment checks are their means over the training seeds
            sr.log_metrics_to(parent, {**{f"{v.name}.{s}.{v.headline}": c.value for v in res.verticals
                                          for s, c in v.cells.items() if c.value is not None},
                                       **{f"alignment.{s}.{a['metric']}": a["mean"] for s, a in res.alignment.items()}})
        n_sig = sum(r["significant"] for per in res.contrasts.values() for r in per.values())
        return {"cells_filled": filled, "cells_missing": len(res.verticals) * len(STAGES) - filled,
                "missing_results": len(res.missing), "contrasts": sum(map(len, res.contrasts.values())),
                "contrasts_significant": n_sig}

    tracking.track_stage("report", work, cfg=cfg, metrics_path=out_dir / "report_metrics.json",
                         summary=lambda m: (f"{out_dir}/trust_summary.md and .html ({m['cells_filled']} cells, "
                                            f"{m['contrasts_significant']}/{m['contrasts']} contrasts "
                                            f"significant, {m['missing_results']} missing results)"))
    if out_dir != Path(cfg.out_dir):
        print(f"report: written to {out_dir}/ (untracked); `rlhf-trust report --write` updates {cfg.out_dir}/")
    return 0
