"""Generation backends: one protocol used by every vertical.

Protocol (what a vertical may call):
  generate(prompts, *, max_new_tokens, temperature, num_return_sequences, seed) -> list[list[str]]
      continuations only (never the prompt), one list of `num_return_sequences` per prompt;
      temperature 0 = greedy.
  loglikelihood(pairs) -> list[float]
      summed log-prob of each continuation given its context (lm-eval's `loglikelihood`).

Both are built on `generate_units(units, ...)`, where a unit is one (prompt, sample_index): the
grain at which generations are cached, so a killed run resumes per sample.

`HFBackend` batches with left padding, sorts by length, stops at the model's own EOS ids and pads
with its own pad id (the study's scripts passed GPT-2's 50256 to every model and sliced decoded
text by `len(prompt)`; we slice token ids after the prompt). Greedy and inverse-CDF sampled tokens
come from evals/decode.py's loop (the same text as transformers' `generate`, without its float32
copy of every row's logits per step); `decode="generate"` keeps transformers' loop. `CallableBackend(fn)` wraps a plain
function `fn(prompt, sample_index) -> continuation` for tests and for API models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

Unit = tuple[str, int]  # (prompt, sample_index)
DECODERS = ("loop", "generate")  # HFBackend's decode step: evals/decode.py's loop | transformers' generate


class BaseBackend:
    """The shared `generate` on top of `generate_units`."""

    name = "backend"
    fingerprint = ""
    sampler: str | None = None  # how a model backend samples (evals/sampling.py); None = not a model

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0,
                 num_return_sequences: int = 1, seed: int = 0) -> list[list[str]]:
        n = num_return_sequences
        units = [(p, i) for p in prompts for i in range(n)]
        flat = self.generate_units(units, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        return [flat[k * n:(k + 1) * n] for k in range(len(prompts))]

    def generate_units(self, units, *, max_new_tokens, temperature, seed):  # pragma: no cover - abstract
        raise NotImplementedError

    def loglikelihood(self, pairs):  # pragma: no cover - abstract
        raise NotImplementedError


class CallableBackend(BaseBackend):
    """A backend around `fn(prompt, sample_index) -> continuation` (test double, API models).

    `loglik(context, continuation) -> float` is optional. Without it a continuation scores
    similarity - 1 (difflib ratio, in [-1, 0]; 0 = identical) against the callable's greedy answer
    `fn(context, 0)`: the callable "prefers" what it would say, so a known-answer function gives
    the same answer under both MC1 protocols. `calls` counts every call to `fn` / `loglik`.
    """

    def __init__(self, fn: Callable[[str, int], str], *, loglik: Callable[[str, str], float] | None = None,
                 name: str = "callable", fingerprint: str | None = None):
        self.fn = fn
        self.loglik = loglik
        self.name = name
        self.fingerprint = fingerprint or f"callable:{getattr(fn, '__qualname__', repr(fn))}"
        self.calls = 0

    def generate_units(self, units, *, max_new_tokens, temperature, seed):
        out = []
        for prompt, idx in units:
            self.calls += 1
            text = self.fn(prompt, idx)
            if not isinstance(text, str):
                raise TypeError(f"CallableBackend: fn must return str, got {type(text).__name__}")
            out.append(text)
        return out

    def loglikelihood(self, pairs):
        out = []
        for ctx, cont in pairs:
            self.calls += 1
            if self.loglik is not None:
                out.append(float(self.loglik(ctx, cont)))
            else:
                import difflib

                said = self.fn(ctx, 0).strip()
                out.append(difflib.SequenceMatcher(None, said, cont.strip()).ratio() - 1.0)
        return out


class LazyBackend(BaseBackend):
    """A backend built by `load()` on its first model call. Behind the cache, a cell whose every
    unit is cached never imports torch nor loads weights (a no-op eval stays a few seconds)."""

    def __init__(self, load: Callable[[], Any], *, name: str, fingerprint: str, batch_size: int = 8,
                 sampler: str = "inverse_cdf"):
        self._load = load
        self.sampler = sampler  # known before loading: it is part of a sampled unit's cache key
        self._inner: Any = None
        self.name = name
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.progress = True

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    @property
    def inner(self) -> Any:
        if self._inner is None:
            self._inner = self._load()
            self._inner.progress = self.progress
            self._inner.sampler = self.sampler
        return self._inner

    def generate_units(self, units, *, max_new_tokens, temperature, seed):
        return self.inner.generate_units(units, max_new_tokens=max_new_tokens, temperature=temperature,
                                         seed=seed)

    def loglikelihood(self, pairs):
        return self.inner.loglikelihood(pairs)


def batch_seed(seed: int, units: Sequence[Unit]) -> int:
    """A seed for one sampled batch, fixed by the run seed and the batch's contents."""
    h = hashlib.sha256(str(seed).encode())
    for p, i in units:
        h.update(f"\x00{i}\x00{p}".encode())
    return int.from_bytes(h.digest()[:4], "little")


class HFBackend(BaseBackend):
    """Batched Hugging Face generation / scoring for a causal LM (the `load_causal_lm` pair)."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, fingerprint: str = "",
                 name: str = "hf", progress: bool = True, prefix_reuse: bool = True,
                 sampler: str = "inverse_cdf", decode: str = "loop"):
        from rlhf_trust.evals.sampling import SAMPLERS

        if sampler not in SAMPLERS:
            raise ValueError(f"HFBackend: sampler must be one of {SAMPLERS}, got {sampler!r}")
        if decode not in DECODERS:
            raise ValueError(f"HFBackend: decode must be one of {DECODERS}, got {decode!r}")
        # "loop": evals/decode.py picks greedy / inverse-CDF tokens on the model-dtype logits (same text
        # as "generate", transformers' own loop, which copies every row's logits to float32 per step);
        # the multinomial sampler always runs in transformers' generate
        self.decode = decode
        self.sampler = sampler  # temperature > 0: evals/sampling.py's exact inverse-CDF draw, or HF's multinomial
        self.prefix_reuse = prefix_reuse  # KV cache of a prompt prefix shared by a batch (evals/prefix.py)
        self._prefixes: dict[tuple[int, ...], Any] = {}
        # sliding-window layers (gemma-3: 512) count padding slots, so padding between a reused prefix
        # and a row would change what the window sees: no reuse for batches that outgrow the window
        self.window = getattr(getattr(model, "config", None), "sliding_window", None)
        self.model = model
        self.tok = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.fingerprint = fingerprint or f"hf:{getattr(model.config, '_name_or_path', '')}"
        self.name = name
        self.progress = progress
        self.generated_tokens = 0  # tokens produced (up to and including EOS), for throughput
        gc = model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = [e for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gc.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.tok(t, add_special_tokens=True)["input_ids"] for t in texts]

    def _left_pad(self, seqs: Sequence[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[r, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _plan(self, seqs: list[list[int]], caps: list[int], desc: str, extra: int = 0):
        """(batch of row indices, shared prefix length) in run order, with a progress bar; `extra` =
        tokens the batch grows by (generation)."""
        from tqdm.auto import tqdm

        from rlhf_trust.evals import prefix

        self._prefixes = {}
        if self.prefix_reuse:
            batches = prefix.plan(seqs, caps, self.batch_size)
        else:  # longest first: an out-of-memory batch shows early
            order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k]))
            batches = [(order[s:s + self.batch_size], 0) for s in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(seqs), desc=desc, unit="seq", disable=not self.progress, leave=False)
        for batch, p in batches:
            if p and self.window and max(len(seqs[k]) for k in batch) + extra > self.window:
                p = 0
            yield batch, p
            bar.update(len(batch))
        bar.close()

    def _prefix_cache(self, tokens: list[int], rows: int):
        """A fresh KV cache of `tokens` for `rows` rows (the prefix runs through the model once)."""
        import copy

        import torch

        key = tuple(tokens)
        if key not in self._prefixes:
            self._prefixes = {}  # batches of one prefix are consecutive: keep only the latest
            # the decoder alone: the prefix's logits are never used, and even one row of gemma's LM head
            # reads all 335 MB of it (~70 ms at 1 thread)
            get_decoder = getattr(self.model, "get_decoder", None)
            body = get_decoder() if callable(get_decoder) else None
            with torch.inference_mode():
                ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
                if body is None or body is self.model:
                    out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
                else:
                    out = body(input_ids=ids, use_cache=True)
                self._prefixes[key] = out["cache"] if "cache" in out else out["past_key_values"]
        cache = copy.deepcopy(self._prefixes[key])
        cache.batch_repeat_interleave(rows)
        return cache

    def _inputs(self, seqs: list[list[int]], p: int) -> dict[str, Any]:
        """Model inputs for rows sharing their first `p` tokens: the rest left-padded after the
        prefix, position ids counting real tokens only (so padding changes nothing)."""
        import torch

        ids, mask = self._left_pad([s[p:] for s in seqs])
        if p:
            mask = torch.cat([torch.ones((len(seqs), p), dtype=mask.dtype, device=mask.device), mask], 1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"ids": ids, "mask": mask, "pos": pos[:, p:],
                "cache": self._prefix_cache(seqs[0][:p], len(seqs)) if p else None}

    def generate_units(self, units, *, max_new_tokens, temperature, seed):
        import torch

        units = list(units)
        if not units:
            return []
        enc = self._encode([p for p, _ in units])
        out: list[str] = [""] * len(units)
        sample = temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": self.pad_id,
                                  "eos_token_id": self.eos_ids or None, "do_sample": sample}
        if sample and self.sampler == "multinomial":  # plain temperature sampling, as in the study (no top-k / top-p)
            kwargs.update(temperature=float(temperature), top_k=0, top_p=1.0)
        else:  # greedy, or the same plain temperature sampling drawn by inverse CDF under greedy's argmax
            kwargs.update(temperature=None, top_k=None, top_p=None, do_sample=False)
            if sample:
                from transformers import LogitsProcessorList

                from rlhf_trust.evals.sampling import InverseCDFSampler

                kwargs["logits_processor"] = LogitsProcessorList([InverseCDFSampler(temperature)])
        loop = self.decode == "loop" and not (sample and self.sampler == "multinomial")
        for batch, p in self._plan(enc, [len(e) - 1 for e in enc], "generate", max_new_tokens):
            x = self._inputs([enc[k] for k in batch], p)
            if sample:
                torch.manual_seed(batch_seed(seed, [units[k] for k in batch]))
            if loop:
                from rlhf_trust.evals.decode import decode

                new = decode(self.model, x["ids"], x["mask"], cache=x["cache"], max_new_tokens=max_new_tokens,
                             eos_ids=self.eos_ids, pad_id=self.pad_id,
                             temperature=float(temperature) if sample else 0.0).tolist()
                self._keep(batch, new, out)
                continue
            if p:  # generate runs only the uncached tail of input_ids
                prefix = torch.tensor([enc[batch[0]][:p]] * len(batch), dtype=torch.long, device=self.device)
                ids = torch.cat([prefix, x["ids"]], 1)
                extra = {"cache": x["cache"]}  # transformers 5's name for past_key_values
            else:
                ids, extra = x["ids"], {}
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids, attention_mask=x["mask"], **extra, **kwargs)
            self._keep(batch, gen[:, ids.shape[1]:].tolist(), out)
        return out

    def _keep(self, batch: list[int], new: list[list[int]], out: list[str]) -> None:
        """Each row's new tokens up to its first EOS, decoded into `out`."""
        for k, toks in zip(batch, new):
            cut = next((j for j, t in enumerate(toks) if t in self.eos_ids), None)
            kept = toks if cut is None else toks[:cut]
            self.generated_tokens += len(kept) + (0 if cut is None else 1)
            out[k] = self.tok.decode(kept, skip_special_tokens=True)

    def loglikelihood(self, pairs):
        """lm-eval's recipe: continuation tokens = enc(ctx + cont)[len(enc(ctx)):]; summed log-probs.

        Left padding keeps every row's continuation at the end, so only the last few positions'
        logits are materialised (`logits_to_keep`): with a 262k vocabulary, full logits would cost
        ~1 MB per token.
        """
        import torch

        pairs = list(pairs)
        if not pairs:
            return []
        seqs, conts = [], []
        for ctx, cont in pairs:
            whole = self._encode([ctx + cont])[0]
            n_ctx = len(self._encode([ctx])[0])
            n_cont = max(1, len(whole) - n_ctx)
            seqs.append(whole)
            conts.append(n_cont)
        out = [0.0] * len(pairs)
        guests = share_rows(seqs, conts)
        run = [k for k in range(len(seqs)) if k not in {g for gs in guests.values() for g in gs}]
        # the logits that predict the continuation start one token before it: keep them out of the prefix
        for b, p in self._plan([seqs[k] for k in run], [len(seqs[k]) - conts[k] - 1 for k in run], "loglik"):
            batch = [run[i] for i in b]
            x = self._inputs([seqs[k] for k in batch], p)
            ids = x["ids"]
            keep = max(conts[k] for k in batch) + 1
            extra = {"cache": x["cache"]} if p else {}
            with torch.inference_mode():
                try:
                    logits = self.model(input_ids=ids, attention_mask=x["mask"], position_ids=x["pos"],
                                        logits_to_keep=keep, **extra).logits
                except TypeError:  # architectures without logits_to_keep
                    logits = self.model(input_ids=ids, attention_mask=x["mask"], position_ids=x["pos"],
                                        **extra).logits
                logits = logits[:, -keep:, :].float()
                logp = torch.log_softmax(logits[:, :-1, :], dim=-1)  # position t predicts token t+1
                for r, k in enumerate(batch):
                    c = conts[k]
                    target = ids[r, -c:]
                    lp = logp[r, -c:, :].gather(-1, target[:, None]).squeeze(-1)
                    out[k] = float(lp.sum())
                    for g in guests.get(k, ()):  # continuations that differ from k's in their last token only
                        m = conts[g]
                        out[g] = float(lp[:m - 1].sum() + logp[r, -c + m - 1, seqs[g][-1]])
        return out


def share_rows(seqs: list[list[int]], conts: list[int]) -> dict[int, list[int]]:
    """host row -> guest rows it also scores. A guest has the host's context tokens and a
    continuation equal to the host's except for its last token (" wrong" vs " not wrong", " I agree"
    vs " I disagree"): the host's forward pass already holds every log-prob the guest needs, so
    multiple-choice rows with short options cost one row per context instead of one per option."""
    hosts: dict[tuple[int, ...], list[int]] = {}  # context -> its host rows
    out: dict[int, list[int]] = {}
    for k in sorted(range(len(seqs)), key=lambda k: -conts[k]):  # longest continuation first
        s, m = seqs[k], conts[k]
        ctx = tuple(s[:len(s) - m])
        for h in hosts.setdefault(ctx, []):
            hc = seqs[h][len(ctx):]
            if s[len(ctx):-1] == hc[:m - 1]:
                out.setdefault(h, []).append(k)
                break
        else:
            hosts[ctx].append(k)
    return out
