"""Linear datamodeling score (LDS, dattri's / TRAK's definition) and its bootstrap CI.

For test sample j: rho_j = Spearman over M training subsets S_m between sum_{i in S_m} score_ij and
the test loss of sample j under a model retrained on S_m. Scores use the up-weighting sign (positive =
raises the loss), so a faithful method correlates POSITIVELY with the loss. LDS = mean_j rho_j.
Hand-written: dattri's `calculate_lds_score` needs dattri's whole stack (and torch.func retraining
loops); this is the same few lines of numpy on retrained losses we already have.
"""

from __future__ import annotations


def subset_masks(n: int, m: int, frac: float = 0.5, seed: int = 0):
    """(m, n) bool: m random subsets of round(frac * n) training examples each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = max(1, round(frac * n))
    masks = np.zeros((m, n), dtype=bool)
    for r in range(m):
        masks[r, rng.choice(n, size=k, replace=False)] = True
    return masks


def per_sample(scores, masks, losses):
    """rho_j for every test sample: scores (n, T), masks (M, n), losses (M, T) -> (T,).
    A sample whose retrained losses (or predictions) do not vary gets NaN (no ranking exists)."""
    import numpy as np
    from scipy.stats import spearmanr

    pred = np.asarray(masks, dtype=np.float64) @ np.asarray(scores, dtype=np.float64)   # (M, T)
    losses = np.asarray(losses, dtype=np.float64)
    out = np.full(pred.shape[1], np.nan)
    for j in range(pred.shape[1]):
        if pred[:, j].std() > 0 and losses[:, j].std() > 0:
            out[j] = spearmanr(pred[:, j], losses[:, j]).statistic
    return out


def summary(rho, n_boot: int = 2000, seed: int = 0) -> dict:
    """{"lds": mean rho, "ci95": [lo, hi] percentile bootstrap over test samples, "n_test": T used}."""
    import numpy as np

    rho = np.asarray(rho, dtype=np.float64)
    rho = rho[np.isfinite(rho)]
    if not len(rho):
        return {"lds": float("nan"), "ci95": [float("nan"), float("nan")], "n_test": 0}
    rng = np.random.default_rng(seed)
    boots = rho[rng.integers(0, len(rho), size=(n_boot, len(rho)))].mean(axis=1)
    return {"lds": float(rho.mean()), "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "n_test": len(rho)}
