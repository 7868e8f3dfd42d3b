"""A sqlite cache of generations and log-likelihoods, committed as it goes.

Key = sha256 of (model fingerprint, kind, prompt, generation settings, seed, sample index).
lm-eval's CachingLM is the closest library piece, but it never caches sampled generations
(do_sample=True), and toxicity / bias are sampled: keying on seed + sample index makes those
resumable too. Greedy generations do not depend on the seed, so their key uses seed 0.

`CachedBackend(inner, cache)` is itself a backend: it answers what the cache holds, sends only the
missing units to `inner` in chunks, and commits each chunk, so a killed evaluation resumes where
it stopped and a re-run with nothing changed makes no model calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf_trust.errors import DataError
from rlhf_trust.evals.backends import BaseBackend, Unit
from rlhf_trust.fileio import is_disk_full


def make_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Cache:
    """key -> JSON value in one sqlite table. `path=None` keeps it in memory."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.db = None
        try:
            with self._errors("open"):
                if self.path:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                # several DVC stages may share the file: wait for locks instead of failing
                self.db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=120)
                if self.path:
                    self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self.db.commit()
        except BaseException:
            if self.db is not None:
                self.db.close()
            raise

    @contextlib.contextmanager
    def _errors(self, what: str):
        """A full disk or a file that is not an sqlite database: one line (exit 2). Whatever was
        committed before stays; a re-run resumes from it."""
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            if is_disk_full(e):
                raise DataError(f"no space left on device while writing the generation cache {self.path}; "
                                "free space and re-run (cached generations are kept)") from None
            raise DataError(f"generation cache {self.path}: cannot {what} ({e}); "
                            "delete it or set eval.cache to another path") from None

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), 500):  # sqlite's bound-parameter limit
            chunk = keys[i:i + 500]
            q = f"SELECT key, value FROM cache WHERE key IN ({','.join('?' * len(chunk))})"
            with self._errors("read"):
                rows = list(self.db.execute(q, chunk))
            for k, v in rows:
                found[k] = json.loads(v)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        with self._errors("write"):
            try:
                self.db.executemany("INSERT OR REPLACE INTO cache (key, value) VALUES (?, ?)",
                                    [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()])
                self.db.commit()
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.rollback()
                raise

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class CachedBackend(BaseBackend):
    """Any backend plus the cache; `hits` / `misses` count units answered / sent to the model."""

    def __init__(self, inner: Any, cache: Cache, chunk_size: int | None = None, progress: bool = True):
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.fingerprint = inner.fingerprint
        self.chunk_size = chunk_size or 4 * int(getattr(inner, "batch_size", 8))
        self.progress = progress
        self.hits = 0
        self.misses = 0
        if hasattr(inner, "progress"):
            inner.progress = False  # one overall bar here instead of one per chunk

    def _run(self, keys: list[str], todo: list[Any], call, desc: str) -> list[Any]:
        from tqdm.auto import tqdm

        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        # in prompt order: rows sharing a prompt prefix land in the same chunk (prefix KV reuse)
        missing.sort(key=lambda i: todo[i])
        bar = tqdm(total=len(missing), desc=f"{desc} ({self.name})", unit="seq",
                   disable=not (self.progress and missing))
        for s in range(0, len(missing), self.chunk_size):
            chunk = missing[s:s + self.chunk_size]
            values = call([todo[i] for i in chunk])
            new = {keys[i]: v for i, v in zip(chunk, values)}
            self.cache.put_many(new)  # committed: a kill after this loses nothing
            found.update(new)
            bar.update(len(chunk))
        bar.close()
        return [found[k] for k in keys]

    def generate_units(self, units: Sequence[Unit], *, max_new_tokens: int, temperature: float,
                       seed: int) -> list[str]:
        settings: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature)}
        sampler = getattr(self.inner, "sampler", None)
        if temperature > 0 and sampler not in (None, "multinomial"):
            settings["sampler"] = sampler  # another random stream: never mix its samples with HF multinomial's
        key_seed = seed if temperature > 0 else 0
        units = list(units)
        keys = [make_key(self.fingerprint, "gen", p, settings, key_seed, i) for p, i in units]
        return self._run(keys, units, lambda chunk: self.inner.generate_units(
            chunk, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed), "generate")

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        pairs = list(pairs)
        keys = [make_key(self.fingerprint, "loglik", c, x) for c, x in pairs]
        return self._run(keys, pairs, self.inner.loglikelihood, "loglik")
