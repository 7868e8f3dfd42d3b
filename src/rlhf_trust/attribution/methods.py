"""Attribution methods on stored per-example gradients (and hidden representations): one (n, T) matrix.

Every method returns scores in ONE convention, Koh & Liang's up-weighting sign used by DataInf: a
positive score means the training pair pushes test sample j's loss UP (harmful to the new
behaviour), a negative one pushes it down. For influence methods the score is the first-order change
of the test loss per unit of up-weighting; the similarity baselines are minus a cosine (a train pair
whose gradient / representation is like the test sample's is taken to lower its loss).

- `exact`:   -g_i^T (G_l + lambda_l I)^-1 v_j per LoRA tensor l, summed over l (float64; Woodbury
             n x n solve when a tensor has more parameters than examples), damping as DataInf's.
- `datainf`: DataInf's Sherman-Morrison approximation of the same inverse (datainf.py).
- `identity`: -g_i^T v_j (no Hessian).
- `gradsim`: -cos(g_i, v_j) on the concatenation of the selected tensors' gradients.
- `repsim`:  -cos(h_i, h_j), h = mean final-layer hidden state over response tokens (`reps.py`).
- `ekfac`:   kronfluence's EK-FAC (`ekfac.py`): it fits its factors over the model itself, so it is
             not computed from the stored gradients here.

Hand-written (small linear algebra on gradients we already store); kronfluence does EK-FAC.
`test_grads[layer]` has a leading test dimension: (T, *shape); T = 1 for the stage's mean test loss.
"""

from __future__ import annotations

METHODS = ("exact", "datainf", "gradsim", "repsim", "ekfac")   # what influence.method may name
GRAD_METHODS = ("exact", "datainf", "identity", "gradsim")


def _flat(g):
    return g.reshape(g.shape[0], -1)


def exact_memory_bytes(n: int, dims: list[int]) -> int:
    """Bytes the exact solve holds at once: all n train gradients (float32), one tensor's in float64
    twice (copy + product), its n x n system twice, and its (D, T<=n) solution."""
    d_max = max(dims)
    return 4 * n * sum(dims) + 8 * (2 * n * d_max + 2 * n * n + d_max * n)


def check_exact_memory(n: int, dims: list[int], limit_gb: float | None) -> int:
    """Raise UserError (one line, exit 2) when the exact solve needs more than `limit_gb` (None = the
    memory available now)."""
    from rlhf_trust.errors import UserError

    need = exact_memory_bytes(n, dims)
    if limit_gb is None:
        import psutil

        limit = psutil.virtual_memory().available
    else:
        limit = int(limit_gb * 2**30)
    if need > limit:
        raise UserError(f"influence.method exact: {n} pairs x {sum(dims)} gradient values need "
                        f"{need / 2**30:.2f} GiB, more than the {limit / 2**30:.2f} GiB available; use "
                        f"method datainf or gradsim, or lower influence.max_train_pairs")
    return need


def _damping(train_grads: dict, damping_scale: float) -> dict:
    return {k: damping_scale * _flat(g).double().pow(2).mean() for k, g in train_grads.items()}


def grad_scores(method: str, train_grads: dict, test_grads: dict, damping_scale: float = 0.1):
    """(n, T) scores of every train example on every test sample for a gradient method."""
    import torch

    if method not in GRAD_METHODS:
        raise ValueError(f"unknown gradient method {method!r}; known: {GRAD_METHODS}")
    layers = list(train_grads)
    if method == "gradsim":
        g = torch.cat([_flat(train_grads[k]).double() for k in layers], dim=1)
        v = torch.cat([_flat(test_grads[k]).double() for k in layers], dim=1)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return (-(g @ v.T)).float()
    lam = _damping(train_grads, damping_scale)
    total = None
    for k in layers:
        g = _flat(train_grads[k]).double()              # (n, D)
        v = _flat(test_grads[k]).double().T             # (D, T)
        n, d = g.shape
        if method == "identity":
            h = v
        elif method == "datainf":                       # (1/(n lam)) sum_i [v - (g_i.v)/(lam+|g_i|^2) g_i]
            coef = (g @ v) / (lam[k] + g.pow(2).sum(dim=1, keepdim=True))
            h = (n * v - g.T @ coef) / (n * lam[k])
        elif d <= n:                                    # exact, D x D system
            h = torch.linalg.solve(g.T @ g / n + lam[k] * torch.eye(d, dtype=g.dtype), v)
        else:                                           # exact, Woodbury n x n system
            sys = g @ g.T + n * lam[k] * torch.eye(n, dtype=g.dtype)
            h = (v - g.T @ torch.linalg.solve(sys, g @ v)) / lam[k]
        s = -(g @ h)
        total = s if total is None else total + s
    return total.float()


def rep_scores(train_reps, test_reps):
    """(n, T) -cos(h_i, h_j) of final-layer representations."""
    import torch

    a = torch.as_tensor(train_reps).double()
    b = torch.as_tensor(test_reps).double()
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (-(a @ b.T)).float()


def spearman_table(columns: dict) -> dict:
    """{"a~b": Spearman rho} for every pair of score columns (NaN-free: constant columns give 0)."""
    import numpy as np
    from scipy.stats import spearmanr

    names = list(columns)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = np.asarray(columns[a]), np.asarray(columns[b])
            rho = spearmanr(x, y).statistic if len(x) >= 3 and x.std() > 0 and y.std() > 0 else 0.0
            out[f"{a}~{b}"] = float(rho)
    return out
