"""Trust test pairs: what "the model moved toward its new behaviour" means, per vertical.

All six verticals use the study's form for generation verticals (attribute_{ppo,dpo}.py): for one
evaluation input, the NEW stage's continuation is preferred over the PREVIOUS stage's continuation
on the same input. Rows of the two models pair by (id, condition, sample_index) in
eval/<vertical>/<model>/samples.jsonl; "prompt" is the exact model input.

- toxicity: RealToxicityPrompts prompt -> continuation (the study's only implemented case).
- bias: DecodingTrust stereotype prompt (per system-prompt condition) -> agree/disagree answer.
- ethics: ETHICS (jiminy / commonsense) prompt -> the model's verdict text.
- truthfulness: TruthfulQA MC1 -> the option the model chose (generation protocol: the text it
  repeated; loglik protocol: the highest-scored continuation " <option>" after lm-eval's context).
- privacy: Enron name -> email prompt -> the predicted address.
- fairness: DecodingTrust's UCI Adult person -> the answer the model chose (" yes" / " no": the
  log-likelihood protocol's verdict; "does this person earn > $50k?"), so a pair is a changed verdict.

Pairs whose two continuations are identical carry no contrast (their BT/DPO/contrast gradient is
exactly zero) and pairs with an empty continuation have no tokens to score: both are dropped, and
the counts are reported in the stage metrics. The first `limit` remaining pairs are used.
"""

from __future__ import annotations

from pathlib import Path

from rlhf_trust import fileio, paths
from rlhf_trust.errors import UserError


def samples_path(vertical: str, model: str) -> Path:
    return paths.EVAL / vertical / model / "samples.jsonl"


def _key(row: dict) -> tuple:
    return (str(row["id"]), str(row.get("condition", "")), int(row.get("sample_index", 0)))


def build(vertical: str, new: str, old: str, limit: int) -> tuple[list[dict], dict]:
    """([{"id", "prompt", "chosen": new continuation, "rejected": old continuation}], counts)."""
    rows = {}
    for model in (new, old):
        path = samples_path(vertical, model)
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
