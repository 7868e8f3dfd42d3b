"""The report's opening: one paragraph generated from the contrasts' statistics, and the run's
identity (model, sizes, seeds, data version) in a line. Reads the contrasts as contrasts.py / the
pooled statistics produce them (delta, ci95, significant, more_trustworthy, and `level`
"conditional" for a one-seed contrast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlhf_trust.report.contrasts import NAMES

CONSTANT = "constant at this model size: no change detectable"


def ordered(contrasts: Mapping[str, Mapping[str, dict]], verticals: Sequence[str]) -> list[tuple[str, str, dict]]:
    """(vertical, contrast, stats) in the report's fixed order: verticals as registered, then NAMES."""
    return [(v, n, contrasts[v][n]) for v in verticals for n in NAMES if n in contrasts.get(v, {})]


def is_constant(vertical: Any, per: Mapping[str, dict]) -> bool:
    """Every model gives the same verdicts: the cells say `constant: true`, or every contrast is
    exactly zero with a zero-width CI."""
    cells = getattr(vertical, "extra", {}) or {}
    if cells and all(bool(m.get("constant")) for m in cells.values()):
        return True
    return bool(per) and all(r["delta"] == 0 and r["ci95"]["low"] == r["ci95"]["high"] == 0 for r in per.values())


def _change(v: str, n: str, r: Mapping[str, Any], metric: str) -> str:
    ci = r["ci95"]
    way = "more" if r.get("more_trustworthy") else "less"
    return f"{n} on {v} ({metric} {r['delta']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}], {way} trustworthy)"


def paragraph(contrasts: Mapping[str, Mapping[str, dict]], verticals: Sequence[Any]) -> str:
    """`3 of 30 changes are significant: dpo-base on privacy (...), ... Not significant: ...`"""
    names = [v.name for v in verticals]
    metric = {v.name: v.headline for v in verticals}
    rows = ordered(contrasts, names)
    if not rows:
        return "No contrasts yet: the report needs each vertical's units.csv for at least two models."
    sig = [(v, n, r) for v, n, r in rows if r.get("significant")]
    out = [f"{len(sig)} of {len(rows)} changes are significant after Holm's adjustment"]
    out[0] += (": " + "; ".join(_change(v, n, r, metric[v]) for v, n, r in sig) + ".") if sig else "."
    constant = [v.name for v in verticals if is_constant(v, contrasts.get(v.name, {}))]
    if constant:
        out.append(f"{', '.join(constant)}: {CONSTANT}.")
    quiet = [v for v in names if v not in constant and v in contrasts and not any(
        r.get("significant") for r in contrasts[v].values())]
    if quiet:
        out.append(f"No significant change on {', '.join(quiet)}.")
    levels = {r.get("level") for _, _, r in rows}
    if "two_level" not in levels:
        out.append("With one training seed these are conditional on these checkpoints: training noise is not "
                   "in the intervals.")
    return " ".join(out)


def params_model(path: str = "params.yaml") -> str | None:
    """model.spec from params.yaml: the model when its stage output (outputs/models/base) is absent,
    as in a fresh clone."""
    from pathlib import Path

    import yaml

    try:
        spec = ((yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("model") or {}).get("spec")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return str(spec) if spec else None


def identity(provenance: Mapping[str, Any], verticals: Sequence[Any], seeds: int | None) -> str:
    """`Model gemma-3-270m; samples per model: bias 200, ...; 1 training seed; data version 30de0b87, ...`"""
    sizes = ", ".join(f"{v.name} {c.n}" for v in verticals
                      for c in [next((c for c in v.cells.values() if c.n), None)] if c is not None)
    data = str(provenance.get("data.version") or "?")[:8]
    train = str(provenance.get("train_data.version") or "?")[:8]
    seed_txt = "training seeds: ?" if seeds is None else f"{seeds} training seed{'s' if seeds != 1 else ''}"
    model = provenance.get("model.spec") or params_model() or "?"
    return (f"Model {model}; samples per model: {sizes or '?'}; {seed_txt}; "
            f"data version {data}, training set {train}; commit {str(provenance.get('git.commit') or '?')[:8]}.")


def seed_count(contrasts: Mapping[str, Mapping[str, dict]]) -> int | None:
    """The most training seeds any contrast pooled over (1 without a seed level)."""
    counts = []
    for per in contrasts.values():
        for r in per.values():
            n = r.get("n_seeds", 1)
            counts.append(max(n.values()) if isinstance(n, dict) else int(n or 1))
    return max(counts) if counts else None
