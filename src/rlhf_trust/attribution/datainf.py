"""Influence math on per-example gradients: DataInf, exact inverse-HVP and identity scores.

Pure, vectorised functions (no loop over examples). Conventions, from the study's copy of
ykwon0407/DataInf `src/influence.py`:

- `train_grads[layer]`: shape (n, *shape), the gradient of example i's training loss w.r.t. one
  LoRA tensor; `test_grad[layer]`: shape (*shape), the mean gradient of the test ("trust") loss.
- Layer-wise damping: lambda_l = damping_scale * mean_i(mean(g_il^2)) (the study's
  `lambda_const_param=10` is damping_scale=0.1).
- DataInf (Kwon et al. 2024): hvp_l = (1/(n lambda_l)) sum_i [v_l - (v_l.g_il)/(lambda_l + ||g_il||^2) g_il],
  a Sherman-Morrison approximation of (G_l + lambda_l I)^-1 v_l, G_l = (1/n) sum_i g_il g_il^T.
- score_i = -sum_l <hvp_l, g_il> (Koh & Liang's sign): the effect on the test loss of up-weighting
  pair i. Negative = the pair lowers the test loss (it helped the model move toward the new
  behaviour); positive = it pushed against it.

The stage streams gradients from disk shards, so the two passes (damping, hvp) are also exposed as
sums over a chunk (`sq_mean_sums`, `datainf_hvp_sums`) that add up across shards.
"""

from __future__ import annotations


def _flat(train_grads: dict, layer: str):
    g = train_grads[layer]
    return g.reshape(g.shape[0], -1).float()


def _check(train_grads: dict, test_grad: dict) -> int:
    if not train_grads:
        raise ValueError("no layers in train_grads")
    missing = sorted(set(train_grads) ^ set(test_grad))
    if missing:
        raise ValueError(f"train and test gradients disagree on layers: {missing[:3]}")
    ns = {g.shape[0] for g in train_grads.values()}
    if len(ns) != 1:
        raise ValueError(f"layers hold different numbers of examples: {sorted(ns)}")
    for name, g in train_grads.items():
        if tuple(g.shape[1:]) != tuple(test_grad[name].shape):
            raise ValueError(f"layer {name}: train shape {tuple(g.shape[1:])} != test {tuple(test_grad[name].shape)}")
    return ns.pop()


# ----------------------------------------------------------------------------------------------
# Pieces (summable over chunks of examples)
# ----------------------------------------------------------------------------------------------
def sq_mean_sums(train_grads: dict) -> dict:
    """Per layer, sum over the chunk's examples of mean(g_il^2) (pass 1 of DataInf)."""
    return {name: _flat(train_grads, name).pow(2).mean(dim=1).sum() for name in train_grads}


def damping_from_sums(sums: dict, n: int, damping_scale: float) -> dict:
    """lambda_l = damping_scale * (1/n) sum_i mean(g_il^2)."""
    return {name: damping_scale * s / n for name, s in sums.items()}


def datainf_hvp_sums(train_grads: dict, test_grad: dict, lam: dict) -> dict:
    """Per layer, sum over the chunk of [v - (v.g_i)/(lambda + ||g_i||^2) g_i] (pass 2 of DataInf)."""
    out = {}
    for name in train_grads:
        g = _flat(train_grads, name)                       # (n, D)
        v = test_grad[name].reshape(-1).float()            # (D,)
        coef = (g @ v) / (lam[name] + g.pow(2).sum(dim=1))  # (n,)
        out[name] = g.shape[0] * v - coef @ g
    return out


def hvp_from_sums(sums: dict, n: int, lam: dict, test_grad: dict) -> dict:
    return {name: (s / (n * lam[name])).reshape(test_grad[name].shape) for name, s in sums.items()}


def scores_from_hvp(train_grads: dict, hvp: dict):
    """score_i = -sum_l <hvp_l, g_il>, for every example of the chunk at once."""
    total = None
    for name in train_grads:
        s = _flat(train_grads, name) @ hvp[name].reshape(-1).float()
        total = s if total is None else total + s
    return -total


# ----------------------------------------------------------------------------------------------
# Whole computations
# ----------------------------------------------------------------------------------------------
def layer_damping(train_grads: dict, damping_scale: float = 0.1) -> dict:
    n = next(iter(train_grads.values())).shape[0]
    return damping_from_sums(sq_mean_sums(train_grads), n, damping_scale)


def datainf_hvp(train_grads: dict, test_grad: dict, damping_scale: float = 0.1) -> dict:
    n = _check(train_grads, test_grad)
    lam = layer_damping(train_grads, damping_scale)
    return hvp_from_sums(datainf_hvp_sums(train_grads, test_grad, lam), n, lam, test_grad)


def exact_hvp(train_grads: dict, test_grad: dict, damping_scale: float = 0.1) -> dict:
    """(G_l + lambda_l I)^-1 v_l solved exactly in float64.

    When a layer has more parameters D than examples n, the Woodbury identity
    (lambda I + Gm^T Gm / n)^-1 v = (v - Gm^T (n lambda I + Gm Gm^T)^-1 Gm v) / lambda
    keeps the solve n x n instead of D x D (the DataInf repository's `eig` on D x D needs rank <= 4).
    """
    import torch

    n = _check(train_grads, test_grad)
    lam = layer_damping(train_grads, damping_scale)
    out = {}
    for name in train_grads:
        g = _flat(train_grads, name).double()
        v = test_grad[name].reshape(-1).double()
        lm = lam[name].double()
        d = g.shape[1]
        if d <= n:
            a = g.T @ g / n + lm * torch.eye(d, dtype=g.dtype)
            h = torch.linalg.solve(a, v)
        else:
            k = g @ g.T + n * lm * torch.eye(n, dtype=g.dtype)
            h = (v - g.T @ torch.linalg.solve(k, g @ v)) / lm
        out[name] = h.float().reshape(test_grad[name].shape)
    return out


def datainf_scores(train_grads: dict, test_grad: dict, damping_scale: float = 0.1):
    """DataInf influence of every training example on the mean test loss, shape (n,). Raw scores."""
    return scores_from_hvp(train_grads, datainf_hvp(train_grads, test_grad, damping_scale))


def exact_scores(train_grads: dict, test_grad: dict, damping_scale: float = 0.1):
    """Influence with the exact damped inverse (G_l + lambda_l I)^-1 per layer, shape (n,)."""
    return scores_from_hvp(train_grads, exact_hvp(train_grads, test_grad, damping_scale))


def identity_scores(train_grads: dict, test_grad: dict, damping_scale: float = 0.1):
    """-sum_l <v_l, g_il>: plain gradient similarity (no Hessian). `damping_scale` is unused."""
    _check(train_grads, test_grad)
    return scores_from_hvp(train_grads, test_grad)


def normalize(scores):
    """The study's `normalize_infl`: positives / max positive, negatives / |min negative|, in [-1, 1].

    Signs and the order within each side are kept; the two sides are scaled separately, so
    magnitudes are not comparable across the sign. Accepts a torch tensor or a numpy array.
    """
    import numpy as np

    x = np.asarray(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores, dtype=np.float64)
    out = np.zeros_like(x)
    pos, neg = x > 0, x < 0
    if pos.any():
        out[pos] = x[pos] / x[pos].max()
    if neg.any():
        out[neg] = x[neg] / -x[neg].min()
    return out


def datainf_scores_chunked(chunks, test_grad: dict, damping_scale: float = 0.1):
    """`datainf_scores` over gradients too large for memory: `chunks()` returns a fresh iterable of
    {layer: Tensor(rows, *shape)} (e.g. disk shards); three passes (damping, hvp, scores)."""
    import torch

    n, sq = 0, None
    for c in chunks():
        n += next(iter(c.values())).shape[0]
        s = sq_mean_sums(c)
        sq = s if sq is None else {k: sq[k] + s[k] for k in sq}
    if not n:
        raise ValueError("no training gradients")
    lam = damping_from_sums(sq, n, damping_scale)
    acc = None
    for c in chunks():
        _check(c, test_grad)
        s = datainf_hvp_sums(c, test_grad, lam)
        acc = s if acc is None else {k: acc[k] + s[k] for k in acc}
    hvp = hvp_from_sums(acc, n, lam, test_grad)
    return torch.cat([scores_from_hvp(c, hvp) for c in chunks()])
