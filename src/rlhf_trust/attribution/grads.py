"""Per-example LoRA gradients from one batched backward, and their sharded on-disk store.

Why hand-written: a LoRA tensor W (lora_A: r x in, lora_B: out x r) is a bias-free nn.Linear, so the
gradient of example b's loss is sum_t dY[b,t]^T X[b,t]: forward hooks keep X, tensor hooks keep dY,
and one einsum gives all examples' gradients after a single backward of the summed per-example
losses (the "hooks + einsum" trick of Goodfellow 2015 / Opacus). torch.func.vmap over a Hugging Face
model breaks on its data-dependent mask code; the study ran one backward per example instead.
Padding is on the right, so padded positions get dY = 0 and add nothing.

Sequences map to examples through `owner` (a preference pair is two sequences): per-sequence
gradients are summed into their example with one index_add.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.errors import UserError

_BLOCK = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def lora_param_names(model) -> list[str]:
    """Names of the LoRA A/B weight tensors, in model order."""
    return [n for n, _ in model.named_parameters() if re.search(r"\.lora_[AB]\.[^.]+\.weight$", n)]


def select_layers(names: list[str], spec: str) -> list[str]:
    """`all`, `last:N` (LoRA tensors of the last N transformer blocks; the study used the last 4
    blocks of GPT-J, `names[288:-2]`) or a regular expression searched in each name."""
    if spec == "all":
        chosen = list(names)
    elif spec.startswith("last:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise UserError(f"influence.layers: '{spec}' is not last:<int>") from None
        blocks = sorted({int(m.group(1)) for n in names if (m := _BLOCK.search(n))})
        keep = set(blocks[-k:]) if k > 0 else set()
        chosen = [n for n in names if (m := _BLOCK.search(n)) and int(m.group(1)) in keep]
    else:
        try:
            pat = re.compile(spec)
        except re.error as e:
            raise UserError(f"influence.layers: invalid regular expression '{spec}' ({e})") from None
        chosen = [n for n in names if pat.search(n)]
    if not chosen:
        raise UserError(f"influence.layers: '{spec}' selects none of the {len(names)} LoRA tensors")
    return chosen


def merge_unselected(model, selected: set[str]) -> int:
    """Merge into the frozen weights every LoRA adapter none of whose tensors is selected: their
    output is unchanged (W + BA), but the forward skips their two extra matmuls, scale and add."""
    n = 0
    for name, mod in model.named_modules():
        frozen = not any(s.startswith(f"{name}.lora_") for s in selected)
        if hasattr(mod, "lora_A") and hasattr(mod, "merge") and not getattr(mod, "merged", True) and frozen:
            mod.merge()
            n += 1
    return n


class PerExampleGrads:
    """Hooks on the selected LoRA Linear modules; `compute` returns per-example gradients.
    Unselected adapters are merged into their base weights (the model is modified in place)."""

    def __init__(self, model, layers: list[str], merge_frozen: bool = True):
        modules = dict(model.named_modules())
        self.model = model
        self.layers = list(layers)
        self._mods = {}
        for name in self.layers:
            mod = modules.get(name[: -len(".weight")])
            if mod is None or not hasattr(mod, "weight") or getattr(mod, "bias", None) is not None:
                raise UserError(f"LoRA tensor {name} is not the weight of a bias-free Linear")
            self._mods[name] = mod
        wanted = set(self.layers)
        for n, p in model.named_parameters():  # backward only as deep as the first selected tensor
            p.requires_grad_(n in wanted)
        if merge_frozen:
            merge_unselected(model, wanted)
        self.shapes = {n: tuple(self._mods[n].weight.shape) for n in self.layers}
        self._records: dict[str, list] = {}

    def _hook(self, name):
        def fwd(mod, args, out):
            if not out.requires_grad:
                return
            x = args[0].detach()
            slot = [x, None]
            self._records.setdefault(name, []).append(slot)
            out.register_hook(lambda g: slot.__setitem__(1, g.detach()))
        return fwd

    def compute(self, loss_fn: Callable[[], tuple], n_examples: int) -> dict:
        """Run `loss_fn() -> (per_example_losses (n,), owner (n_seq,))`, one backward, return
        {layer: Tensor(n, *shape)} in float32."""
        import torch

        handles = [m.register_forward_hook(self._hook(n)) for n, m in self._mods.items()]
        self._records = {}
        try:
            losses, owner = loss_fn()
            if not torch.isfinite(losses).all():
                raise UserError("influence: a per-example loss is NaN or infinite")
            losses.sum().backward()
        finally:
            for h in handles:
                h.remove()
        out = {}
        for name in self.layers:
            # a call whose output never reached the loss (e.g. a retried forward) has no gradient
            recs = [(x, g) for x, g in self._records.get(name, []) if g is not None]
            if not recs:
                raise UserError(f"influence: no gradient reached {name}")
            per_seq = sum(torch.einsum("bto,bti->boi", g.float(), x.float()) for x, g in recs)
            agg = torch.zeros((n_examples, *per_seq.shape[1:]), dtype=per_seq.dtype, device=per_seq.device)
            out[name] = agg.index_add_(0, owner.to(per_seq.device).long(), per_seq).cpu()
        self._records = {}
        self.model.zero_grad(set_to_none=True)
        return out


# ----------------------------------------------------------------------------------------------
# Sharded store: <dir>/meta.json + shard_00000.npy ... ; resumes by skipping finished shards
# ----------------------------------------------------------------------------------------------
def store_key(**parts) -> str:
    """Names a gradient store by everything its numbers depend on, the gradient code included
    (a store written by older loss or packing code is never resumed into)."""
    from rlhf_trust.models import fused_head

    code = hashlib.sha256()
    here = Path(__file__).parent
    for path in (here / "grads.py", here / "losses.py", here / "packing.py", Path(fused_head.__file__)):
        code.update(path.read_bytes())
    parts = {**parts, "code": code.hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_store(out_dir: str | Path, batches: Iterable[tuple[int, list]], compute: Callable[[list], dict],
                n: int, layers: list[str], shapes: dict, shard_size: int, dtype: str,
                on_skip: Callable[[int], None] | None = None) -> Path:
    """Compute gradients shard by shard; shards already on disk are skipped (resume).

    `batches` yields (start_index, items) with starts aligned so no batch crosses a shard boundary
    (use `shard_batches`; one batch per shard lets `compute` sort by length with `compute_sorted`).
    Each shard is written atomically, so an interrupted run resumes cleanly; `on_skip(k)` reports
    the k items of a batch already on disk.
    """
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"n": n, "layers": layers, "shapes": {k: list(v) for k, v in shapes.items()},
            "shard_size": shard_size, "dtype": dtype}
    meta_path = out_dir / "meta.json"
    if meta_path.is_file() and fileio.read_json(meta_path) != meta:
        raise UserError(f"{out_dir}: gradient store was written with other settings; remove it")
    fileio.write_json(meta_path, meta)
    pending: dict[int, list] = {}
    for start, items in batches:
        k = start // shard_size
        path = out_dir / f"shard_{k:05d}.npy"
        if path.is_file():
            if on_skip:
                on_skip(len(items))
            continue
        g = compute(items)
        pending.setdefault(k, []).append(np.concatenate([g[l].reshape(len(items), -1).numpy() for l in layers],
                                                        axis=1).astype(dtype))
        if sum(len(a) for a in pending[k]) == min(shard_size, n - k * shard_size):
            with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, np.concatenate(pending.pop(k)))
    if pending:
        raise RuntimeError(f"incomplete shards {sorted(pending)} (batches crossed a shard boundary)")
    return out_dir


def compute_sorted(items: list, batch_size: int, fn: Callable[[list], dict], key: Callable[[Any], int],
                   progress: Callable[[int], None] | None = None) -> dict:
    """`fn` over micro-batches of similar length (less padding), rows returned in `items` order."""
    import torch

    order = sorted(range(len(items)), key=lambda i: key(items[i]))
    parts = []
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        parts.append(fn([items[i] for i in idx]))
        if progress:
            progress(len(idx))
    inverse = torch.empty(len(items), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(items))
    return {name: torch.cat([p[name] for p in parts])[inverse] for name in parts[0]}


def shard_batches(items: list, batch_size: int, shard_size: int) -> Iterator[tuple[int, list]]:
    for s0 in range(0, len(items), shard_size):
        s1 = min(s0 + shard_size, len(items))
        for b in range(s0, s1, batch_size):
            yield b, items[b:min(b + batch_size, s1)]


def iter_store(store_dir: str | Path, rows: slice | None = None) -> Iterator[dict]:
    """Yield {layer: Tensor(rows, *shape)} per shard (memory-mapped, upcast to float32)."""
    import numpy as np
    import torch

    store_dir = Path(store_dir)
    meta = fileio.read_json(store_dir / "meta.json")
    sizes = [int(np.prod(meta["shapes"][l])) for l in meta["layers"]]
    n_shards = -(-meta["n"] // meta["shard_size"])
    for k in range(n_shards):
        path = store_dir / f"shard_{k:05d}.npy"
        if not path.is_file():
            raise UserError(f"{store_dir}: missing gradient shard {path.name}; rerun to resume")
        arr = np.load(path, mmap_mode="r")
        out, off = {}, 0
        for l, size in zip(meta["layers"], sizes):
            block = torch.from_numpy(np.array(arr[:, off:off + size], dtype=np.float32))
            out[l] = block.reshape(len(arr), *meta["shapes"][l])
            off += size
        yield out


def load_store(store_dir: str | Path) -> dict:
    """All shards concatenated in memory (small stores, tests, the exact subsample)."""
    import torch

    parts = list(iter_store(store_dir))
    return {l: torch.cat([p[l] for p in parts]) for l in parts[0]}


def gather_store(store_dir: str | Path, index) -> dict:
    """The rows `index` (sorted ints) of a store, read shard by shard."""
    import torch

    index = sorted(int(i) for i in index)
    meta = fileio.read_json(Path(store_dir) / "meta.json")
    size = meta["shard_size"]
    parts = []
    for k, chunk in enumerate(iter_store(store_dir)):
        local = [i - k * size for i in index if k * size <= i < (k + 1) * size]
        if local:
            parts.append({l: g[local] for l, g in chunk.items()})
    return {l: torch.cat([p[l] for p in parts]) for l in meta["layers"]}
