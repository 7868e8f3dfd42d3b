"""Units vs minutes per vertical, from a finished run's own files (the sample-size trade-off).

Reads what `dvc repro` commits: each cell's `wall_s` (eval/<vertical>/<model>/metrics.run.json),
its units (units.csv) and each vertical's largest MDE80 against base (reports/trust_summary.json).
Scales both to other sizes: the wall in proportion to the units (each cell's model load is in its
wall, so a smaller size saves slightly less than predicted), the MDE80 by sqrt(n_now / n).
No model runs, so the table is exact for the run it reads and a prediction for the others.

    python benchmarks/eval_tradeoff.py [--budget-min 20]

It reads files only, so `--quick` is the same computation (seconds).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import harness

MODELS = ("base", "sft", "ppo", "dpo")
FLOORS = {"toxicity": 100, "privacy": 100}  # the floors: >= 200 units per vertical, these >= 100
FLOOR = 200
MDE_TARGET = 0.12


def measured(eval_dir: Path, summary: Path) -> dict:
    contrasts = json.loads(summary.read_text())["contrasts"]
    out = {}
    for vdir in sorted(p for p in eval_dir.iterdir() if p.is_dir()):
        cells = [vdir / m for m in MODELS]
        if not all((c / "metrics.run.json").is_file() and (c / "units.csv").is_file() for c in cells):
            continue
        with open(cells[0] / "units.csv", newline="") as f:
            n = sum(1 for _ in csv.DictReader(f))
        wall = sum(json.loads((c / "metrics.run.json").read_text())["wall_s"] for c in cells)
        mde = max((c["mde80"] for k, c in contrasts.get(vdir.name, {}).items() if k.endswith("-base")), default=0.0)
        out[vdir.name] = {"units": n, "wall_s_4_models": round(wall, 1), "s_per_unit_4_models": round(wall / n, 3),
                          "mde80_vs_base": round(mde, 4)}
    return out


def at(row: dict, units: int) -> dict:
    return {"units": units, "minutes": round(row["s_per_unit_4_models"] * units / 60, 2),
            "mde80": round(row["mde80_vs_base"] * math.sqrt(row["units"] / units), 3)}


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--eval-dir", type=Path, default=Path("eval"))
    ap.add_argument("--summary", type=Path, default=Path("reports/trust_summary.json"))
    ap.add_argument("--budget-min", type=float, default=20.0)
    a = ap.parse_args()
    for path in (a.eval_dir, a.summary):
        if not path.exists():
            print(f"error: {path} is missing: run `make repro` (or pass --eval-dir / --summary)", file=sys.stderr)
            raise SystemExit(2)
    try:
        rows = measured(a.eval_dir, a.summary)
    except (KeyError, ValueError) as e:  # a truncated or foreign metrics.run.json / trust_summary.json
        print(f"error: {a.eval_dir} or {a.summary} is not a run's output ({type(e).__name__}: {e})", file=sys.stderr)
        raise SystemExit(2) from None
    if not rows:
        print(f"error: no vertical in {a.eval_dir} has metrics.run.json and units.csv for all of {MODELS}",
              file=sys.stderr)
        raise SystemExit(2)
    sizes = (50, 100, 150, 200, 300, 400)
    print(f"{'vertical':13} {'n now':>5} {'s/unit x4':>9} " + " ".join(f"{'n=' + str(s) + ' min|mde':>15}" for s in sizes))
    for v, r in rows.items():
        cells = [at(r, s) for s in sizes]
        print(f"{v:13} {r['units']:5d} {r['s_per_unit_4_models']:9.2f} "
              + " ".join(f"{c['minutes']:7.1f}|{c['mde80']:.3f}".rjust(15) for c in cells))
        r["at"] = cells
    now = sum(r["wall_s_4_models"] for r in rows.values()) / 60
    floor = {v: at(r, FLOORS.get(v, FLOOR)) for v, r in rows.items()}
    floor_min = sum(c["minutes"] for c in floor.values())
    # the largest common size (units per vertical, floors ignored) that fits the budget
    rate = sum(r["s_per_unit_4_models"] for r in rows.values()) / 60
    fit = int(a.budget_min / rate)
    worst = max(at(r, fit)["mde80"] for r in rows.values())
    result = {"verticals": rows, "now_minutes": round(now, 2), "floor_sizes": floor,
              "floor_minutes": round(floor_min, 2), "budget_minutes": a.budget_min,
              "budget_fits_units_per_vertical": fit, "mde80_worst_at_fit": worst}
    print(f"now: {now:.1f} min of cells; at the floors (>= {FLOOR} units, "
          f"{', '.join(f'{k} >= {v}' for k, v in FLOORS.items())}): {floor_min:.1f} min, "
          f"MDE80 <= {max(c['mde80'] for c in floor.values()):.3f}; {a.budget_min:g} min holds "
          f"{fit} units per vertical (worst MDE80 {worst:.3f}, target {MDE_TARGET})")
    harness.write_result("eval_tradeoff", a, result, setup={"eval_dir": str(a.eval_dir), "summary": str(a.summary),
                                                            "run_commit": harness.last_commit(a.summary)})


if __name__ == "__main__":
    main()
