"""One forest plot of every contrast: Δ with its 95% CI per (vertical, contrast) in the report's
fixed order; significant changes coloured (green more trustworthy, red less) and marked, the rest
grey. Each vertical keeps its own metric's scale: a row's x is its own Δ."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from rlhf_trust import fileio
from rlhf_trust.report.figures import KEY, _drawn
from rlhf_trust.report.findings import ordered

MORE, LESS, GREY = "#1a7f37", "#c62828", "#9e9e9e"


def colour(r: Mapping) -> str:
    if not r.get("significant"):
        return GREY
    return MORE if r.get("more_trustworthy") else LESS


def draw(contrasts: Mapping[str, Mapping[str, dict]], verticals: Sequence[str], path: Path) -> bool:
    """Write the PNG (skipped when it already shows these numbers); False when there is nothing to draw."""
    rows = ordered(contrasts, verticals)
    if not rows:
        return False
    shown = [1, [[v, n, r["delta"], r["ci95"]["low"], r["ci95"]["high"], bool(r.get("significant")),
                  r.get("more_trustworthy")] for v, n, r in rows]]
    key = hashlib.sha256(json.dumps(shown, default=str).encode()).hexdigest()
    if _drawn(path, key):
        return True
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.24 * len(rows)), dpi=120)
    for i, (_, _, r) in enumerate(rows):
        y, c = len(rows) - 1 - i, colour(r)
        lo, hi = r["ci95"]["low"], r["ci95"]["high"]
        ax.errorbar(r["delta"], y, xerr=[[max(0.0, r["delta"] - lo)], [max(0.0, hi - r["delta"])]], fmt="o",
                    color=c, ecolor=c, capsize=2, markersize=5 if r.get("significant") else 3)
        if r.get("significant"):
            ax.annotate("*", (hi, y), xytext=(3, -3), textcoords="offset points", color=c, fontsize=10)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{v}  {n}" for v, n, _ in reversed(rows)], fontsize=7)
    ax.set_xlabel("Δ B − A with 95% CI (each vertical's own metric; * significant after Holm; "
                  "green more, red less trustworthy)", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={KEY: key})
    plt.close(fig)
    return True
