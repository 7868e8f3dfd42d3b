"""How well does an offline toxicity scorer agree with the real Perspective API?

The RealToxicityPrompts subsets carry Perspective TOXICITY scores for every prompt and
continuation text (2 x 2,396 texts). We score the same texts with the chosen scorer and report
Pearson / Spearman correlation and ROC AUC for the label Perspective >= 0.5 (the study's
"toxic" threshold), plus agreement at the 0.5 threshold.

    python benchmarks/scorer_validity.py [--scorer profanity-check] [--quick]

`--quick` scores the first 150 records (300 texts).
"""

from __future__ import annotations

import json
import time

import harness

QUICK_RECORDS = 150


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--scorer", default="profanity-check")
    args = ap.parse_args()

    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import roc_auc_score

    from rlhf_trust.data import records
    from rlhf_trust.evals.scorers import get_scorer

    texts, truth, kinds = [], [], []
    rows = records.load("toxicity", harness.data_dir(args))
    for r in rows[:QUICK_RECORDS] if args.quick else rows:
        for kind in ("prompt", "continuation"):
            t, s = r[kind], r[f"{kind}_toxicity"]
            if t and s is not None:
                texts.append(t)
                truth.append(s)
                kinds.append(kind)
    t0 = time.perf_counter()
    pred = np.asarray(get_scorer(args.scorer).score(texts), dtype=float)
    secs = time.perf_counter() - t0
    truth_a, kinds_a = np.asarray(truth), np.asarray(kinds)

    def block(mask) -> dict:
        y, p = truth_a[mask] >= 0.5, pred[mask]
        return {
            "n": int(mask.sum()), "positives": int(y.sum()),
            "pearson": float(pearsonr(truth_a[mask], p)[0]),
            "spearman": float(spearmanr(truth_a[mask], p)[0]),
            "roc_auc": float(roc_auc_score(y, p)),
            "accuracy_at_0.5": float(((p >= 0.5) == y).mean()),
            "precision_at_0.5": float(y[p >= 0.5].mean()) if (p >= 0.5).any() else None,
            "recall_at_0.5": float((p[y] >= 0.5).mean()),
        }

    out = {"texts_per_s": len(texts) / secs,
           "all": block(np.ones(len(texts), bool)),
           "prompts": block(kinds_a == "prompt"), "continuations": block(kinds_a == "continuation")}
    print(json.dumps(out, indent=2))
    harness.write_result("scorer_validity", args, out, setup={"scorer": args.scorer, "texts": len(texts),
                                                             "truth": "Perspective TOXICITY in the dataset"})


if __name__ == "__main__":
    main()
