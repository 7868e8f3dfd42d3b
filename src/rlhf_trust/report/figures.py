"""One bar chart per vertical: headline metric per stage with 95% CI whiskers (study style)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rlhf_trust import fileio
from rlhf_trust.report.collect import STAGES, Vertical

COLORS = {"base": "#8c8c8c", "sft": "#4c72b0", "ppo": "#dd8452", "dpo": "#55a868"}


KEY = "rlhf-trust-figure"  # PNG text chunk: the digest of what the figure shows


def _drawn(path: Path, key: str) -> bool:
    """The PNG at `path` already shows exactly this data. Importing matplotlib and drawing five
    figures was ~2 s of every report run, on unchanged results too; PIL only reads the header."""
    if not path.is_file():
        return False
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.text.get(KEY) == key
    except OSError:
        return False


def bar_chart(v: Vertical, path: Path) -> None:
    stages = [s for s in STAGES if s in v.cells and v.cells[s].value is not None]
    vals = [v.cells[s].value for s in stages]
    err = [[max(0.0, v.cells[s].value - v.cells[s].low) if v.cells[s].has_ci else 0.0 for s in stages],
           [max(0.0, v.cells[s].high - v.cells[s].value) if v.cells[s].has_ci else 0.0 for s in stages]]
    shown = [1, v.name, v.headline, v.higher_is_better, stages, vals, err,
             [v.cells[s].high for s in stages]]  # 1: bump when the drawing code changes
    key = hashlib.sha256(json.dumps(shown, default=str).encode()).hexdigest()
    if _drawn(path, key):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=120)
    ax.bar(stages, vals, yerr=err, capsize=4, color=[COLORS[s] for s in stages], edgecolor="black", linewidth=0.5)
    arrow = "↑" if v.higher_is_better else "↓"
    ax.set_ylabel(f"{v.headline} ({arrow} more trustworthy)", fontsize=8)
    ax.set_title(v.name, fontsize=10)
    top = max([v.cells[s].high or v.cells[s].value for s in stages] + [1e-9])
    ax.set_ylim(0, max(1.0, top * 1.1) if top <= 1.0 else top * 1.1)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={KEY: key})
    plt.close(fig)
