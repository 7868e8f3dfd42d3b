"""The LM head of a few rows at a time (decode steps, PPO's response logits) on a CPU, as
weight @ hidden^T instead of hidden @ weight^T.

Why hand-written: `F.linear(h, W)` with a handful of rows and gemma-3's 262,144 x 640 float32 head
(671 MB) runs at ~3 GB/s of weight reads on this project's 2-core AVX2 CPU; the same product
ordered as `W @ h^T` streams the weight at close to memory speed. Measured there, 2 threads, one
process: 2-3x faster for 2-16 rows, 1.3x at 34, 1.2-1.5x at 64, no gain or slower from ~200 rows,
so it applies up to `MAX_ROWS` rows and `F.linear` runs everything else. Every generation step of
the evals and of PPO's rollouts and held-out responses runs the head on one row per sequence.
Neither transformers nor torch pick the product's order by shape. Same values as `F.linear` up to
float rounding (the summation order can differ); on other devices nothing changes.
"""

from __future__ import annotations

from typing import Any

MAX_ROWS = 64

_CLASS: dict[str, type] = {}


def _rows_first_linear() -> type:
    """nn.Linear whose forward takes the `W @ h^T` order for <= MAX_ROWS CPU rows (built once,
    lazily: importing torch takes seconds)."""
    if "cls" not in _CLASS:
        import torch

        class RowsFirstLinear(torch.nn.Linear):
            def forward(self, x):
                rows = x.numel() // max(1, x.shape[-1])
                if x.device.type != "cpu" or self.bias is not None or not 0 < rows <= MAX_ROWS:
                    return torch.nn.functional.linear(x, self.weight, self.bias)
                out = torch.matmul(self.weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
                return out.reshape(*x.shape[:-1], self.weight.shape[0])

        _CLASS["cls"] = RowsFirstLinear
    return _CLASS["cls"]


def is_plain_linear(module: Any) -> bool:
    """An nn.Linear computed as torch's own (not a LoRA, quantised or other subclass), this
    module's head included: the test the fused-head and frozen-weight paths take."""
    import torch

    return type(module) is torch.nn.Linear or (bool(_CLASS) and type(module) is _CLASS["cls"])


def rows_first_head(model: Any) -> Any:
    """`model` with its output embedding (the LM head, weights kept and still tied) computed by
    `RowsFirstLinear`; a head that is not a plain nn.Linear is left as it is."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is torch.nn.Linear:
        head.__class__ = _rows_first_linear()
    return model
