"""The one line a stage prints when it ends."""

from __future__ import annotations

from typing import Any


def summary_line(label: str, recorded: dict[str, Any], metric_keys: tuple[str, ...] | None = None,
                 text: str | None = None) -> str:
    """`<stage>: <headline numbers> | <wall> s, peak RSS <MB> MB`."""
    from rlhf_trust import runinfo

    if text is None:
        shown, _ = runinfo.split(recorded, metric_keys)
        text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in shown.items() if isinstance(v, (int, float)))
    return (f"{label}: {text or 'done'} | {recorded.get('stage_wall_s', 0):.1f} s, "
            f"peak RSS {recorded.get('stage_peak_rss_mb', 0):.0f} MB")
