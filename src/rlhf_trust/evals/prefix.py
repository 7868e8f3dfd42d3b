"""Shared-prefix planning for `HFBackend`: which rows share a prompt prefix, and how long it is.

DecodingTrust's system prompts and TruthfulQA's 6-shot primer repeat at the start of every row of a
vertical, so a batch of rows that share a prefix runs the model over it once and reuses its KV
cache (the rows' own tokens attend to it exactly as they would to a recomputed copy: same tokens,
same positions). Hugging Face documents prompt reuse for one prompt; batching rows by a shared
prefix is the part no library did for us (vLLM's automatic prefix caching is GPU-server only).
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_PREFIX = 16  # shorter shared prefixes are not worth a separate forward pass


def lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan(seqs: Sequence[Sequence[int]], caps: Sequence[int], batch_size: int,
         min_prefix: int = MIN_PREFIX) -> list[tuple[list[int], int]]:
    """Batches of row indices, each with the length of the prefix its rows share (0 = none).

    Rows are sorted lexicographically (rows sharing a prefix become neighbours), cut into clusters
    wherever two neighbours share fewer than `min_prefix` tokens, and each cluster of at least
    half a batch is batched longest first (little padding); smaller clusters' rows are batched
    together without reuse (fragmented batches cost more than a short prefix saves). A batch's prefix is its cluster's common prefix, at most
    `caps[k]` for each row k (the tokens whose outputs the caller needs must stay outside it)."""
    order = sorted(range(len(seqs)), key=lambda k: tuple(seqs[k]))
    clusters: list[tuple[list[int], int]] = []
    for k in order:
        if clusters:
            members, common = clusters[-1]
            shared = min(common, lcp(seqs[members[-1]], seqs[k]))
            if shared >= min_prefix:
                members.append(k)
                clusters[-1] = (members, shared)
                continue
        clusters.append(([k], len(seqs[k])))
    # a cluster smaller than half a batch would cost more in lost batching than its prefix saves:
    # its rows join the plain batches (no reuse, longest first)
    big = [(m, c) for m, c in clusters if len(m) >= max(2, batch_size // 2)]
    rest = sorted((k for m, c in clusters if len(m) < max(2, batch_size // 2) for k in m), key=lambda k: -len(seqs[k]))
    out = []
    for members, common in big:
        members.sort(key=lambda k: -len(seqs[k]))
        for s in range(0, len(members), batch_size):
            batch = members[s:s + batch_size]
            p = min([common] + [caps[k] for k in batch])
            out.append((batch, p if p >= min_prefix else 0))
    out += [(rest[s:s + batch_size], 0) for s in range(0, len(rest), batch_size)]
    return out
