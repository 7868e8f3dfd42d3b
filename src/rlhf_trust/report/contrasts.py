"""The report's contrasts (sft-base, ppo-base, dpo-base, ppo-sft, dpo-sft) per vertical, from the
committed per-unit outcomes eval/<vertical>/<model>/units.csv, with paired statistics and Holm's
adjustment over the whole table (issue 10 §1). A missing or unusable cell skips its contrasts with
a note; the rest of the report is unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlhf_trust.errors import DataError
from rlhf_trust.report import paired

CONTRASTS: tuple[tuple[str, str], ...] = (("sft", "base"), ("ppo", "base"), ("dpo", "base"),
                                          ("ppo", "sft"), ("dpo", "sft"))
NAMES = tuple(f"{b}-{a}" for b, a in CONTRASTS)
DASH = "—"


def run_family(jobs: Mapping[Any, tuple[Mapping[str, float], Mapping[str, float], bool]],
               notes: list[str], label: Callable[[Any], str] = str) -> dict[Any, dict[str, Any]]:
    """key -> paired stats of B - A for each (units A, units B, higher_is_better) job, Holm-adjusted
    together. A job whose units do not pair is left out with a note."""
    family: dict[Any, dict[str, Any]] = {}
    for key, (a, b, higher) in jobs.items():
        try:
            r = paired.compare(a, b, label(key))
        except DataError as e:
            notes.append(f"{label(key)}: skipped: {e}")
            continue
        r["more_trustworthy"] = None if r["delta"] == 0 else bool((r["delta"] > 0) == higher)
        family[key] = r
    return paired.adjust(family)


def load_units(eval_dir: Path, vertical: str, models: tuple[str, ...], notes: list[str]) -> dict[str, dict]:
    out = {}
    for m in models:
        p = Path(eval_dir) / vertical / m / "units.csv"
        if not p.is_file():
            continue
        try:
            out[m] = paired.read_units(p)
        except DataError as e:
            notes.append(f"{vertical} @ {m}: units unusable: {e}")
    return out


def abs_mean_headline(vertical: str) -> bool:
    """The vertical's headline is |mean of its units| (e.g. a parity gap: the units' mean is the signed gap
    P(yes|Male) - P(yes|Female), the headline its size). Its contrasts orient both models' units by
    the sign of the first model's gap, so a positive delta means a wider gap whichever sex it favours
    (exactly the change of the headline while the gap keeps its sign)."""
    from rlhf_trust import evals

    return vertical in evals.names() and evals.get(vertical).headline_is_abs_mean


def jobs_digest(jobs: Mapping[Any, tuple[Mapping[str, float], Mapping[str, float], bool]], notes: list[str]) -> str:
    """sha256 of what the contrasts are computed from: every job's paired units and direction, the
    notes so far, and the statistics code (paired.py, this file) that computes them."""
    import hashlib
    import json

    h = hashlib.sha256()
    for f in (Path(paired.__file__), Path(__file__)):
        h.update(f.read_bytes())
    h.update(json.dumps([[list(k), sorted(a.items()), sorted(b.items()), higher]
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
                sign = -1.0 if sum(ua.values()) < 0 else 1.0
                ua, ub = ({u: sign * x for u, x in d.items()} for d in (ua, ub))
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
            out.append([v, name, text(r), p_text(r["p_value"]), p_text(r["p_holm"]), str(r["n_pairs"]), mde])
    return out


HEADER = ["vertical", "contrast", "Δ [95% CI]", "p", "p (Holm)", "n pairs", "MDE80"]
LEGEND = ("Paired over the same units (same item, condition and sample); ▲ more trustworthy, ▼ less; "
          "`*` = significant after Holm's adjustment over the whole table (p_Holm < 0.05). CI: bootstrap "
          "over units; p: exact McNemar for binary units, else a paired sign-flip permutation test; "
          "MDE80: the smallest true change this many pairs detects with 80% power.")


def mlflow_metrics(contrasts: Mapping[str, Mapping[str, dict]]) -> dict[str, float]:
    """contrast.<vertical>.<contrast>.<stat> for the report's MLflow run."""
    out = {}
    for v, per in contrasts.items():
        for name, r in per.items():
            for k in ("delta", "p_value", "p_holm", "n_pairs", "mde80"):
                if r.get(k) is not None:
                    out[f"contrast.{v}.{name}.{k}"] = float(r[k])
            out[f"contrast.{v}.{name}.ci95_low"] = r["ci95"]["low"]
            out[f"contrast.{v}.{name}.ci95_high"] = r["ci95"]["high"]
            out[f"contrast.{v}.{name}.significant"] = float(r["significant"])
    return out
