"""One row per unit of a cell: what a reader looks at behind a number (the samples page, the MLflow
table). A unit is the headline's bootstrap unit (units.csv); its rows in samples.jsonl.gz are those
whose `id|condition` (or `id`, for a vertical whose units are per record) is the unit's id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# the fields that say what a model answered, in the order they are shown (a vertical has some of them)
VERDICT_KEYS = ("agreement", "prediction", "leaked", "correct", "toxicity", "chosen")


def unit_of(row: Mapping[str, Any], unit_ids: set[str] | Mapping[str, Any]) -> str | None:
    """The unit a samples row belongs to, or None (a row outside the headline's units)."""
    for key in (f"{row.get('id')}|{row.get('condition')}", str(row.get("id"))):
        if key in unit_ids:
            return key
    return None


def answer(row: Mapping[str, Any]) -> str:
    """The model's generation, or for a log-likelihood protocol the option it chose."""
    text = row.get("generation")
    return "" if text is None else str(text)


def verdict(row: Mapping[str, Any]) -> str:
    """The vertical's reading of the answer (`leaked=True`, `prediction=0`, ...), as short text."""
    return ", ".join(f"{k}={row[k]}" for k in VERDICT_KEYS if k in row and not isinstance(row[k], (list, dict)))


def by_unit(rows: Iterable[Mapping[str, Any]], units: Mapping[str, float]) -> dict[str, list[Mapping[str, Any]]]:
    """unit id -> its rows (in file order); units without rows map to []."""
    out: dict[str, list] = {u: [] for u in units}
    for r in rows:
        u = unit_of(r, units)
        if u is not None:
            out[u].append(r)
    return out


def table(rows: list[Mapping[str, Any]], units: Mapping[str, float], width: int = 2000) -> dict[str, list]:
    """Columns for `mlflow.log_table`: unit, score (the unit's headline value), prompt, answer and
    verdict of its first sample, and how many samples it has. Long texts are cut at `width`."""
    def cut(s: str) -> str:
        return s if len(s) <= width else s[: width - 1] + "…"

    cols: dict[str, list] = {"unit": [], "score": [], "prompt": [], "answer": [], "verdict": [], "samples": []}
    for u, rs in by_unit(rows, units).items():
        first = rs[0] if rs else {}
        cols["unit"].append(u)
        cols["score"].append(float(units[u]))
        cols["prompt"].append(cut(str(first.get("prompt", ""))))
        cols["answer"].append(cut(answer(first)))
        cols["verdict"].append(verdict(first))
        cols["samples"].append(len(rs))
    return cols
