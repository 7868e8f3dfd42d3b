"""Trust test pairs: what "the model moved toward its new behaviour" means, per vertical.

Every vertical uses the study's form for generation verticals (attribute_{ppo,dpo}.py): for one
evaluation input, the NEW stage's continuation is preferred over the PREVIOUS stage's continuation
on the same input. Rows of the two models pair by (id, condition, sample_index) in
eval/<vertical>/<model>/samples.jsonl.gz; "prompt" is the exact model input, and what the
continuation is (a generated text, or the option a log-likelihood protocol chose) is the
vertical's own: its spec's `test_loss` says it in words.

Pairs whose two continuations are identical carry no contrast (their BT/DPO/contrast gradient is
exactly zero) and pairs with an empty continuation have no tokens to score: both are dropped, and
the counts are reported in the stage metrics. The first `limit` remaining pairs are used.
"""

from __future__ import annotations

from pathlib import Path

from rlhf_trust import fileio, paths
from rlhf_trust.errors import UserError


def samples_path(vertical: str, model: str, seed: int | None = None) -> Path:
    """eval/<vertical>/<model>/samples.jsonl.gz (base, or no seed), or that seed's eval/<vertical>/<model>/s<k>/."""
    d = paths.EVAL / vertical / model
    return (d if seed is None or model == "base" else d / paths.seed_part(seed)) / "samples.jsonl.gz"


def _key(row: dict) -> tuple:
    return (str(row["id"]), str(row.get("condition", "")), int(row.get("sample_index", 0)))


def build(vertical: str, new: str, old: str, limit: int, seed: int | None = None) -> tuple[list[dict], dict]:
    """([{"id", "prompt", "chosen": new continuation, "rejected": old continuation}], counts): the
    continuations of training seed `seed`'s models (the base model has one)."""
    rows = {}
    for model in (new, old):
        path = samples_path(vertical, model, seed)
        if not path.is_file():
            raise UserError(f"missing {path}; run `rlhf-trust eval --vertical {vertical} --model {model}` first")
        rows[model] = {_key(r): r for r in fileio.read_jsonl(path)}
    out, same, empty = [], 0, 0
    for key, r_new in rows[new].items():
        r_old = rows[old].get(key)
        if r_old is None:
            continue
        a, b = r_new.get("generation") or "", r_old.get("generation") or ""
        if not a.strip() or not b.strip():
            empty += 1
            continue
        if a == b:
            same += 1
            continue
        if len(out) < limit:
            out.append({"id": "|".join(map(str, key)), "prompt": r_new["prompt"], "chosen": a, "rejected": b})
    counts = {"test_pairs": len(out), "test_identical_dropped": same, "test_empty_dropped": empty}
    # No pair whose continuations differ = the stage did not change this behaviour on these
    # samples: nothing to attribute (every score is 0), which the stage records instead of failing.
    return out, counts
