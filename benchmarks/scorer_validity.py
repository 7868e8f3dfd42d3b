"""How well does an offline toxicity scorer agree with the real Perspective API?

The RealToxicityPrompts subsets carry Perspective TOXICITY scores for every prompt and
continuation text (2 x 2,396 texts). We score the same texts with the chosen scorer and report
Pearson / Spearman correlation and ROC AUC for the label Perspective >= 0.5 (the study's
"toxic" threshold), plus agreement at the 0.5 threshold.

    .venv/bin/python benchmarks/scorer_validity.py [--data ../shared/data] [--scorer profanity-check]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data", help="raw-layout or prepared data dir")
    ap.add_argument("--scorer", default="profanity-check")
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()

    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import roc_auc_score

    from rlhf_trust.data import records
    from rlhf_trust.evals.scorers import get_scorer

    texts, truth, kinds = [], [], []
    for r in records.load("toxicity", args.data):
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

    out = {"scorer": args.scorer, "texts_per_s": len(texts) / secs,
           "all": block(np.ones(len(texts), bool)),
           "prompts": block(kinds_a == "prompt"), "continuations": block(kinds_a == "continuation")}
    print(json.dumps(out, indent=2))
    if args.out:
        from rlhf_trust import fileio

        fileio.write_json(args.out, out)


if __name__ == "__main__":
    main()
