"""The report's contrasts (sft-base, ppo-base, dpo-base, ppo-sft, dpo-sft) per vertical, from the
committed per-unit outcomes eval/<vertical>/<model>/units.csv (or, per training seed k,
eval/<vertical>/<model>/s<k>/units.csv), with paired statistics and Holm's adjustment over the whole
table. With two or more seeds a contrast pools over them (pooled.py: training variance
counts); with one it is the unit-level test, conditional on these checkpoints. A missing or unusable
cell skips its contrasts with a note; the rest of the report is unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlhf_trust.errors import DataError
from rlhf_trust.report import paired, pooled

CONTRASTS: tuple[tuple[str, str], ...] = (("sft", "base"), ("ppo", "base"), ("dpo", "base"),
                                          ("ppo", "sft"), ("dpo", "sft"))
NAMES = tuple(f"{b}-{a}" for b, a in CONTRASTS)
DASH = "—"


Job = tuple[pooled.SeedUnits, pooled.SeedUnits, bool]   # A's and B's {seed: units}, higher_is_better


def run_family(jobs: Mapping[Any, Job], notes: list[str], label: Callable[[Any], str] = str,
               stat: Callable[[Any, pooled.SeedUnits, pooled.SeedUnits, str], dict] | None = None
               ) -> dict[Any, dict[str, Any]]:
    """key -> stats of B - A for each job (default: pooled.contrast, seeds paired), Holm-adjusted
    together. A job whose units do not pair is left out with a note."""
    family: dict[Any, dict[str, Any]] = {}
    for key, (a, b, higher) in jobs.items():
        try:
            r = stat(key, a, b, label(key)) if stat else pooled.contrast(a, b, label(key))
        except DataError as e:
            notes.append(f"{label(key)}: skipped: {e}")
            continue
        r["more_trustworthy"] = None if r["delta"] == 0 else bool((r["delta"] > 0) == higher)
        family[key] = r
    return paired.adjust(family)


def load_units(eval_dir: Path, vertical: str, models: tuple[str, ...], notes: list[str]) -> dict[str, dict]:
    """model -> {seed: units}: one entry per s<k>/units.csv, else {pooled.SHARED: units.csv's}."""
    out: dict[str, dict] = {}
    for m in models:
        cell = Path(eval_dir) / vertical / m
        paths = {int(p.parent.name[1:]): p for p in cell.glob("s*/units.csv") if p.parent.name[1:].isdigit()}
        if not paths and (cell / "units.csv").is_file():
            paths = {pooled.SHARED: cell / "units.csv"}
        for seed, p in sorted(paths.items(), key=lambda kv: str(kv[0])):
            try:
                out.setdefault(m, {})[seed] = paired.read_units(p)
            except DataError as e:
                notes.append(f"{vertical} @ {m}: units unusable: {e}")
    return out


def orient(a: pooled.SeedUnits, b: pooled.SeedUnits) -> tuple[dict, dict]:
    """Both sides' units times the sign of A's gap (per seed; a shared A gives one sign)."""
    def sign(u: Mapping[str, float] | None) -> float:
        return -1.0 if u is not None and sum(u.values()) < 0 else 1.0

    def flip(u: Mapping[str, float], s: float) -> dict[str, float]:
        return {k: s * x for k, x in u.items()}

    shared = a.get(pooled.SHARED)
    return ({s: flip(u, sign(u)) for s, u in a.items()},
            {s: flip(u, sign(shared if shared is not None else a.get(s))) for s, u in b.items()})


def abs_mean_headline(vertical: str) -> bool:
    """The vertical's headline is |mean of its units| (e.g. a parity gap: the units' mean is the signed gap
    P(yes|Male) - P(yes|Female), the headline its size). Its contrasts orient both models' units by
    the sign of the first model's gap, so a positive delta means a wider gap whichever sex it favours
    (exactly the change of the headline while the gap keeps its sign)."""
    from rlhf_trust import evals

    return vertical in evals.names() and evals.get(vertical).headline_is_abs_mean


def jobs_digest(jobs: Mapping[Any, Job], notes: list[str]) -> str:
    """sha256 of what the contrasts are computed from: every job's per-seed units and direction, the
    notes so far, and the statistics code (paired.py, pooled.py, this file) that computes them."""
    import hashlib
    import json

    def seeds(x: pooled.SeedUnits) -> list:
        return [[str(s), sorted(u.items())] for s, u in sorted(x.items(), key=lambda kv: str(kv[0]))]

    h = hashlib.sha256()
    for f in (Path(paired.__file__), Path(pooled.__file__), Path(__file__)):
        h.update(f.read_bytes())
    h.update(json.dumps([[list(k), seeds(a), seeds(b), higher]
                         for k, (a, b, higher) in sorted(jobs.items())] + [notes]).encode())
    return h.hexdigest()


def compute(verticals: list[Any], eval_dir: Path, previous: Path | None = None,
            digest_out: dict[str, str] | None = None) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """contrasts[vertical][contrast] = {delta, ci95, p_value, p_holm, significant, n_pairs, mde80, ...}
    and the notes on what was skipped. `verticals`: objects with .name and .higher_is_better.

    `previous`: an earlier trust_summary.json; when its `contrasts_digest` equals this input's
    (`jobs_digest`), its contrasts are returned as they are: the bootstrap and permutation tests
    (and importing scipy.stats, ~1 s) are most of a re-run report's own work. `digest_out["digest"]`
    gets the digest."""
    notes: list[str] = []
    jobs = {}
    for v in verticals:
        units = load_units(eval_dir, v.name, ("base", "sft", "ppo", "dpo"), notes)
        for (b, a), name in zip(CONTRASTS, NAMES, strict=True):
            lacking = [m for m in (a, b) if m not in units]
            if lacking:
                notes.append(f"{v.name} {name}: skipped (no units.csv for {', '.join(lacking)})")
                continue
            ua, ub = units[a], units[b]
            if abs_mean_headline(v.name):  # orient by A's gap: B - A is then the change of |gap|
                ua, ub = orient(ua, ub)
            jobs[(v.name, name)] = (ua, ub, v.higher_is_better)
    digest = jobs_digest(jobs, notes)
    if digest_out is not None:
        digest_out["digest"] = digest
    if previous is not None and Path(previous).is_file():
        import json

        try:
            old = json.loads(Path(previous).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable: computed afresh
            old = None
        if isinstance(old, dict) and old.get("contrasts_digest") == digest and isinstance(old.get("contrasts"), dict):
            return old["contrasts"], list(old.get("contrast_notes") or [])
    family = run_family(jobs, notes, label=lambda k: f"{k[0]} {k[1]}")
    out: dict[str, dict[str, dict]] = {}
    for (vertical, name), r in family.items():
        out.setdefault(vertical, {})[name] = r
    return out, notes


def arrow(r: Mapping[str, Any]) -> str:
    t = r.get("more_trustworthy")
    return "" if t is None else ("▲" if t else "▼")


def text(r: Mapping[str, Any] | None) -> str:
    """`+0.120 ▼* [+0.050, +0.190]`: delta, direction, `*` = significant after Holm, 95% CI."""
    if r is None:
        return DASH
    ci = r["ci95"]
    return f"{r['delta']:+.3f} {arrow(r)}{'*' if r['significant'] else ''} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def p_text(p: float | None) -> str:
    return DASH if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


def rows(contrasts: Mapping[str, Mapping[str, dict]], verticals: list[str],
         names: tuple[str, ...] = NAMES) -> list[list[str]]:
    """One row per vertical and contrast (or model: `names`): delta [CI], p, p_holm, n, MDE80."""
    out = []
    for v in verticals:
        for name in names:
            r = contrasts.get(v, {}).get(name)
            if r is None:
                continue
            mde = DASH if r.get("mde80") is None else f"{r['mde80']:.3f}"
            out.append([v, name, text(r), p_text(r["p_value"]), p_text(r["p_holm"]), str(r["n_pairs"]), mde,
                        seeds_text(r)])
    return out


def seeds_text(r: Mapping[str, Any]) -> str:
    """`3: SD 0.021, 3/3 agree` (pooled over seeds), `1: conditional on these checkpoints`, or
    `untrained` (a model evaluated once, no training variance); then any seeds missing."""
    n = r.get("n_seeds")
    n_txt = "+".join(str(n[k]) for k in ("a", "b")) if isinstance(n, dict) else str(n or 1)
    level = r.get("level", "conditional")
    if level == "two_level":
        agree = r["sign_agreement"]
        out = f"{n_txt}: SD {r['seed_sd']:.3f}" + (f", {agree['agree']}/{agree['of']} agree" if agree else "")
    else:
        out = "untrained" if level == "unit" else f"{n_txt}: {pooled.CONDITIONAL}"
    missing = r.get("seeds_missing") or {}
    gone = "; ".join(f"{k.upper()} lacks s{', s'.join(map(str, v))}" for k, v in missing.items())
    return f"{out} ({gone}; pooled over the rest)" if gone else out


HEADER = ["vertical", "contrast", "Δ [95% CI]", "p", "p (Holm)", "n pairs", "MDE80", "seeds"]
LEGEND = ("Paired over the same units (same item, condition and sample); ▲ more trustworthy, ▼ less; "
          "`*` = significant after Holm's adjustment over the whole table (p_Holm < 0.05). With two or more "
          "training seeds: Δ is the mean over seeds of the per-seed Δ, and CI, p and MDE80 include training "
          "variance (units and seeds crossed, Student's t with Satterthwaite df); seeds: how many, the "
          "between-seed SD of Δ and how many seeds agree in sign. With one seed, conditional on these "
          "checkpoints: CI a bootstrap over units, p exact McNemar for binary units, else a paired sign-flip "
          "permutation test. MDE80: the smallest true change detected with 80% power.")


def mlflow_metrics(contrasts: Mapping[str, Mapping[str, dict]]) -> dict[str, float]:
    """contrast.<vertical>.<contrast>.<stat> for the report's MLflow run."""
    out = {}
    for v, per in contrasts.items():
        for name, r in per.items():
            for k in ("delta", "p_value", "p_holm", "n_pairs", "mde80", "seed_sd", "n_seeds"):
                if isinstance(r.get(k), int | float):
                    out[f"contrast.{v}.{name}.{k}"] = float(r[k])
            out[f"contrast.{v}.{name}.ci95_low"] = r["ci95"]["low"]
            out[f"contrast.{v}.{name}.ci95_high"] = r["ci95"]["high"]
            out[f"contrast.{v}.{name}.significant"] = float(r["significant"])
    return out
