"""The report's rows as text, shared by its Markdown (summary.py) and HTML (html.py) renderings."""

from __future__ import annotations

from rlhf_trust.report.collect import STAGES, Cell, Results, Vertical

DASH = "—"
SMOKE_BANNER = "smoke run (random tiny model): numbers are not results"


def is_number(x: object) -> bool:
    """A number an upstream metrics file may hold (not a string, bool or None a format would choke on)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt(x: float | None, digits: int = 3) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def cell_text(c: Cell | None) -> str:
    if c is None or c.value is None:
        return DASH
    return f"{c.value:.3f} [{c.low:.3f}, {c.high:.3f}]" if c.has_ci else f"{c.value:.3f}"


def table_rows(res: Results) -> list[list[str]]:
    rows = []
    for v in res.verticals:
        direction = "higher" if v.higher_is_better else "lower"
        rows.append([v.name, f"{v.headline} ({direction} = more trustworthy)",
                     *(cell_text(v.cells.get(s)) for s in STAGES)])
    return rows


def short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def top_pairs(v: Vertical, k: int) -> list[list[str]]:
    rows = []
    for stage, items in v.top.items():
        for kind in ("helpful", "harmful"):
            picked = [r for r in items if r.get("kind") == kind][:k]
            for r in picked:
                score = r.get("score")
                rows.append([stage, kind, DASH if not is_number(score) else f"{score:.3g}", str(r.get("id", "")),
                             short(r.get("prompt", ""), 90), short(r.get("chosen", ""), 80),
                             short(r.get("rejected", ""), 80)])
    return rows


def stage_rows(res: Results) -> list[list[str]]:
    keys = ("stage_wall_s", "tokens_per_s", "stage_peak_rss_mb")
    rows = []
    for s, m in res.stages.items():
        shown = [f"{k}={m[k]:.1f}" if isinstance(m.get(k), (int, float)) else None for k in keys]
        rows.append([s, ", ".join(x for x in shown if x) or DASH, m.get("mlflow_run_id", DASH)])
    return rows


def significant_first(res: Results) -> list[Vertical]:
    """Verticals with a significant change first, each group in registry order."""
    def sig(v: Vertical) -> bool:
        return any(r.get("significant") for r in res.contrasts.get(v.name, {}).values())
    return sorted(res.verticals, key=lambda v: not sig(v))


def methods(v: Vertical) -> str:
    """The ranking method(s) the vertical's influence stages actually used (`exact`, `datainf`, ...)."""
    used = sorted({str(m["method"]) for m in v.influence.values() if m.get("method")})
    return ", ".join(used) or "method not recorded"


ALIGNMENT_HEADER = ["stage", "held-out metric", "per seed", "mean [95% CI]", "target: CI low >", "met"]


def alignment_rows(res: Results) -> list[list[str]]:
    """One row per alignment stage (report/seeds.py alignment): per-seed values, their mean and CI."""
    rows = []
    for stage, a in res.alignment.items():
        ci = a.get("ci95") or {}
        ci_txt = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci.get("low") is not None else ""
        per = ", ".join(f"s{k}: {v:.3f}" if k != "None" else f"{v:.3f}" for k, v in a["per_seed"].items())
        met = DASH if a["met"] is None else ("yes" if a["met"] else "no")
        if a["n_seeds"] < 2:
            met += " (one seed: conditional on this checkpoint)"
        rows.append([stage, a["metric"], per, f"{a['mean']:.3f}{ci_txt}", f"{a['target']:g}", met])
    return rows
