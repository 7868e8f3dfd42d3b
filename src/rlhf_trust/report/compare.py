"""`rlhf-trust compare A B` (`make compare`, `make check-trust`): two pipeline runs (two data
versions) side by side with paired statistics.

For each vertical and model, B - A over the same units (CI, p, Holm across the whole table, MDE80),
both sides' data versions, the params that differ and, when B is a curated run, the change its
dropped pairs' influence predicts beside the measured change. A trained model with two or more seeds
on both sides is compared beyond training noise (pooled.two_sample); with one seed on a side its
cells are the unit-level test, conditional on these checkpoints; the base model (untrained) is the
unit-level test. Writes compare.{md,html,json} (outputs/compare/, reports/ with --write, or --out-dir)
only after both sides are read and checked:
bad input is one line, exit 2, nothing written. `--fail-on-regression` exits 1 when a cell that is
not conditional is significantly (Holm) less trustworthy in B: a conditional cell cannot tell a
regression from another training seed, so it is reported and does not fail the gate.
"""

from __future__ import annotations

import html as _html
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, pipeline
from rlhf_trust.errors import DataError
from rlhf_trust.report import contrasts, paired, pooled
from rlhf_trust.report.sides import Side, load, params_diff

# which model's change an influence stage attributes (PPO through its reward model)
STAGE_MODEL = {stage: spec.new for stage, spec in pipeline.INFLUENCE.items()}
HEADER = ["vertical", "model", "Δ B − A [95% CI]", "p", "p (Holm)", "n pairs", "MDE80", "seeds A+B"]
SEEDS_LEGEND = ("Here a trained model with two or more seeds on both sides is B's mean over seeds minus A's "
                "(seeds unpaired: independent trainings); `seeds A+B`: how many on each side, the between-seed "
                "SD and how many of B's seeds fall on Δ's side of A's mean. The base model is untrained: "
                "unit-level test. Cells conditional on these checkpoints do not fail `--fail-on-regression`.")
UNTRAINED = ("base",)   # evaluated once, no training variance: the unit-level test is the whole story


def check(a: Side, b: Side) -> None:
    """Same verticals, models and items on both sides, or one line naming the difference."""
    va, vb = {v for v, _ in a.units}, {v for v, _ in b.units}
    if va != vb:
        raise DataError(f"the sides evaluate different verticals (only in {a.label}: {sorted(va - vb)}, "
                        f"only in {b.label}: {sorted(vb - va)})")
    if set(a.units) != set(b.units):
        gone = sorted(f"{v}@{m}" for v, m in set(a.units) ^ set(b.units))
        raise DataError(f"a model is missing on one side: {', '.join(gone)}")
    for key in sorted(a.units):
        paired.pair(a.units[key], b.units[key], f"{key[0]} @ {key[1]}: different items")


def predicted(b: Side, rows: dict[tuple[str, str], dict]) -> list[dict[str, Any]]:
    """Per curate source of B: the test-loss change its dropped pairs predict (Koh and Liang: removing
    pair i changes the test loss by about -score_i / n), beside the measured change of that model.
    Positive = the stage's new behaviour becomes less preferred, i.e. its change shrinks."""
    from rlhf_trust.report.collect import number

    m = b.manifest
    if not m.get("enabled") or not isinstance(m.get("dropped"), list) or not m["dropped"]:
        return []
    dropped = [d.get("scores") for d in m["dropped"] if isinstance(d, dict) and isinstance(d.get("scores"), dict)]
    out = []
    for s in m.get("sources") or []:   # another revision's manifest: only well-formed sources and numbers count
        if not isinstance(s, dict) or s.get("stage") not in STAGE_MODEL or not isinstance(s.get("vertical"), str):
            continue
        key = f"{s['stage']}/{s['vertical']}"
        raw = [d[key] for d in dropped if number(d.get(key)) is not None]
        n = next((x for x in (s.get("n_scored"), m.get("n_in")) if isinstance(number(x), int) and x > 0), 1)
        r = rows.get((s["vertical"], STAGE_MODEL[s["stage"]]))
        out.append({"stage": s["stage"], "vertical": s["vertical"], "harmful": s.get("harmful"),
                    "n_dropped": len(raw), "predicted_test_loss_change": -sum(raw) / n,
                    "measured": None if r is None else {k: r[k] for k in ("delta", "ci95", "p_holm", "more_trustworthy")}})
    return out


def build(a: Side, b: Side) -> dict[str, Any]:
    check(a, b)
    jobs = {key: (a.seeds.get(key) or {pooled.SHARED: a.units[key]}, b.seeds.get(key) or {pooled.SHARED: b.units[key]},
                  b.higher_is_better(key[0])) for key in sorted(a.units)}
    notes: list[str] = []
    rows = contrasts.run_family(jobs, notes, label=lambda k: f"{k[0]} @ {k[1]}", stat=cell_stat)
    if notes:   # check() already paired every cell: a note here is a bug, not bad input
        raise RuntimeError("; ".join(notes))
    worse, conditional = gate(rows)
    table: dict[str, dict[str, dict]] = {}
    for (v, m), r in rows.items():
        table.setdefault(v, {})[m] = r
    return {"a": side_info(a), "b": side_info(b), "rows": table, "regressions": worse,
            "conditional_regressions": conditional, "one_seed": one_seed(a, b),
            "params_changed": [{"key": k, "a": x, "b": y} for k, x, y in params_diff(a, b)],
            "predicted": predicted(b, rows)}


def cell_stat(key: tuple[str, str], a: pooled.SeedUnits, b: pooled.SeedUnits, label: str) -> dict[str, Any]:
    """B - A of one model: two runs' seeds are independent, so unpaired at the seed level."""
    r = pooled.two_sample(a, b, label)
    if key[1] in UNTRAINED and r["level"] == "conditional":
        r.update({"level": "unit", "method": r["test"]})
        r.pop("conditional", None)
    return r


def gate(rows: dict[tuple[str, str], dict]) -> tuple[list[str], list[str]]:
    """(regressions that fail the gate, conditional ones that cannot): significant after Holm and
    less trustworthy in B; a conditional cell is one seed of a trained model on a side."""
    worse = [(f"{v}@{m}", r["level"] == "conditional") for (v, m), r in sorted(rows.items())
             if r["significant"] and r["more_trustworthy"] is False]
    return [k for k, c in worse if not c], [k for k, c in worse if c]


def one_seed(a: Side, b: Side) -> list[str]:
    """The sides whose trained models have one seed (their cells are conditional on these checkpoints)."""
    return [s.label for s in (a, b)
            if any(len(s.seeds.get(k) or [None]) < 2 for k in s.units if k[1] not in UNTRAINED)]


def side_info(s: Side) -> dict[str, Any]:
    prov = s.summary.get("provenance") or {}
    return {"label": s.label, "commit": s.ref, "data.version": s.data_version,
            "train_data.version": s.train_data_version or prov.get("train_data.version"),
            "curate": {k: s.manifest.get(k) for k in ("enabled", "mode", "n_in", "n_out")} if s.manifest else None,
            "report_commit": prov.get("git.commit")}


def table_rows(res: dict[str, Any]) -> list[list[str]]:
    models = [m for m in ("base", "sft", "ppo", "dpo") if any(m in per for per in res["rows"].values())]
    models += sorted({m for per in res["rows"].values() for m in per} - set(models))
    return contrasts.rows(res["rows"], sorted(res["rows"]), tuple(models))


def markdown(res: dict[str, Any]) -> str:
    from rlhf_trust.report.summary import md_code, md_text

    a, b = res["a"], res["b"]

    def code(x: Any) -> str:   # a code span inside a table row: no `|` to end the cell
        return md_code(x).replace("|", "\\|")

    out = [f"# Compare {md_text(a['label'])} → {md_text(b['label'])}", "",
           "| | A | B |", "|---|---|---|",
           (f"| revision | {code(a['label'])} ({md_text(a['commit'][:12])}) | {code(b['label'])} "
            f"({md_text(b['commit'][:12])}) |"),
           f"| data version (`data.dvc` md5) | {code(a['data.version'])} | {code(b['data.version'])} |",
           f"| training set (curated HH md5) | {code(a['train_data.version'])} | {code(b['train_data.version'])} |",
           "",
           "## B − A per vertical and model", "", contrasts.LEGEND.replace("the whole table", "this table"),
           "", SEEDS_LEGEND, "",
           _md(HEADER, table_rows(res)), "",
           "**Significant regressions (less trustworthy in B):** "
           + (md_text(", ".join(res["regressions"])) if res["regressions"] else "none"), ""]
    if res.get("conditional_regressions"):
        out += ["**Conditional on these checkpoints (one seed on a side, not gated):** "
                + md_text(", ".join(res["conditional_regressions"])), ""]
    out += [f"{md_text(lbl)}: one seed per trained model; its cells are conditional on these checkpoints." for lbl in
            res.get("one_seed", [])] + ([""] if res.get("one_seed") else [])
    if res["predicted"]:
        out += ["## Predicted (influence of the dropped pairs) vs measured", "",
                _md(["stage", "vertical", "dropped", "predicted Δ test loss (+ = the stage's change shrinks)",
                     "measured Δ of the model [CI]"], predicted_rows(res)), ""]
    out += ["## Params that differ", ""]
    out += [_md(["key", "A", "B"], [[p["key"], str(p["a"]), str(p["b"])] for p in res["params_changed"]])
            if res["params_changed"] else "none", ""]
    return "\n".join(out)


def predicted_rows(res: dict[str, Any]) -> list[list[str]]:
    return [[p["stage"], p["vertical"], str(p["n_dropped"]), f"{p['predicted_test_loss_change']:+.4g}",
             contrasts.text({**p["measured"], "significant": p["measured"]["p_holm"] < paired.ALPHA})
             if p["measured"] else contrasts.DASH] for p in res["predicted"]]


def _md(header: list[str], rows: list[list[str]]) -> str:
    from rlhf_trust.report.summary import md_table

    return md_table(header, rows)


def html_page(res: dict[str, Any]) -> str:
    from rlhf_trust.report.html import CSS, _table

    a, b = res["a"], res["b"]
    e = _html.escape
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>Compare</title><style>{CSS}</style>"
              f"</head><body><h1>Compare {e(a['label'])} → {e(b['label'])}</h1>"),
             _table(["", "A", "B"], [["revision", a["commit"], b["commit"]],
                                     ["data version", str(a["data.version"]), str(b["data.version"])],
                                     ["training set", str(a["train_data.version"]), str(b["train_data.version"])]]),
             f"<h2>B − A</h2><p>{e(contrasts.LEGEND)}</p><p>{e(SEEDS_LEGEND)}</p>", _table(HEADER, table_rows(res)),
             f"<p><strong>Significant regressions:</strong> {e(', '.join(res['regressions']) or 'none')}</p>"]
    if res.get("conditional_regressions"):
        parts.append(f"<p>Conditional on these checkpoints (not gated): {e(', '.join(res['conditional_regressions']))}</p>")
    parts += [f"<p>{e(lbl)}: one seed per trained model; its cells are conditional on these checkpoints.</p>"
              for lbl in res.get("one_seed", [])]
    if res["predicted"]:
        parts += ["<h2>Predicted vs measured</h2>",
                  _table(["stage", "vertical", "dropped", "predicted Δ test loss", "measured Δ"], predicted_rows(res))]
    parts += ["<h2>Params that differ</h2>",
              _table(["key", "A", "B"], [[p["key"], str(p["a"]), str(p["b"])] for p in res["params_changed"]]),
              "</body></html>"]
    return "\n".join(parts)


def write(res: dict[str, Any], out_dir: Path) -> None:
    out_dir = Path(out_dir)
    fileio.write_json(out_dir / "compare.json", res)
    fileio.write_text(out_dir / "compare.md", markdown(res))
    fileio.write_text(out_dir / "compare.html", html_page(res))


def out_dir(args) -> Path:
    """--out-dir, else reports/ with --write (committed results), else outputs/compare/ (untracked)."""
    if getattr(args, "out_dir", None):
        return Path(args.out_dir)
    return paths.REPORTS if getattr(args, "write", False) else paths.OUTPUTS / "compare"


def cli(args) -> int:
    a, b = load(args.a), load(args.b)
    if a.ref == b.ref:
        print(f"compare: note: {args.a} and {args.b} are the same commit ({a.ref[:12]}): every Δ is 0")
    res = build(a, b)
    where = out_dir(args)
    write(res, where)
    for lbl in res["one_seed"]:
        print(f"{lbl}: one seed per trained model; its cells are conditional on these checkpoints and do not "
              "fail the gate (train two or more seeds to compare beyond training noise)")
    n = sum(map(len, res["rows"].values()))
    sig = sum(r["significant"] for per in res["rows"].values() for r in per.values())
    print(f"compare {args.a} -> {args.b}: {n} cells, {sig} significant after Holm, "
          f"regressions: {', '.join(res['regressions']) or 'none'}"
          + (f", conditional (not gated): {', '.join(res['conditional_regressions'])}"
             if res["conditional_regressions"] else "") + f" ({where}/compare.md)")
    return 1 if args.fail_on_regression and res["regressions"] else 0
