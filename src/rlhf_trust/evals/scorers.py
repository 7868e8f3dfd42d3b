"""Toxicity scorers: a registry of name -> class with `score(texts) -> list[float | None]`.

- `profanity-check` (default, offline): alt-profanity-check's calibrated linear SVM,
  P(offensive) in [0, 1]. Agreement with real Perspective scores: docs/evaluation.md.
- `perspective`: Google's Perspective API (the study's scorer), TOXICITY attribute. The key comes
  from the environment (PERSPECTIVE_API_KEY), travels in a header (never in a URL, never logged);
  requests are rate-limited (default 1/s, the study's rate) and retried with backoff on 429/5xx.
  Texts Perspective cannot score (e.g. unsupported language) give None.
- `detoxify`: the Detoxify "original" model (optional extra `pip install rlhf-trust[detoxify]`;
  its weights download from GitHub on first use).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from rlhf_trust.errors import UserError

Score = float | None


class ProfanityCheck:
    name = "profanity-check"
    # Scoring takes microseconds, but importing it (scikit-learn, scipy, the pickled SVM) takes
    # ~1.3 s: cached scores let a re-run whose texts are all cached skip the import altogether.
    cacheable = True

    def __init__(self) -> None:
        import importlib.util

        if importlib.util.find_spec("profanity_check") is None:
            raise UserError("scorer profanity-check needs alt-profanity-check (pip install alt-profanity-check)")
        self._predict: Callable[[list[str]], Any] | None = None

    def score(self, texts: Sequence[str]) -> list[Score]:
        texts = list(texts)
        if not texts:
            return []
        if self._predict is None:
            from profanity_check import predict_prob

            self._predict = predict_prob
        return [float(p) for p in self._predict(texts)]


class Perspective:
    name = "perspective"
    cacheable = True  # network calls: cache by text
    URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
    ENV = "PERSPECTIVE_API_KEY"

    def __init__(self, qps: float = 1.0, max_retries: int = 5, timeout: float = 30.0,
                 session: Any = None, sleep: Callable[[float], None] = time.sleep):
        key = os.environ.get(self.ENV, "").strip()
        if not key:
            raise UserError(f"scorer perspective needs an API key in the environment variable {self.ENV}")
        if session is None:
            try:
                import requests
            except ImportError:
                raise UserError("scorer perspective needs requests (pip install rlhf-trust[perspective])") from None
            session = requests.Session()
        self._key = key
        self.session = session
        self.min_interval = 1.0 / qps if qps > 0 else 0.0
        self.max_retries = max_retries
        self.timeout = timeout
        self._sleep = sleep
        self._last = 0.0

    def __repr__(self) -> str:  # never show the key
        return f"Perspective(qps={1 / self.min_interval if self.min_interval else 'inf'})"

    def _wait(self) -> None:
        gap = self.min_interval - (time.monotonic() - self._last)
        if gap > 0:
            self._sleep(gap)
        self._last = time.monotonic()

    def _one(self, text: str) -> Score:
        if not text.strip():
            return 0.0  # Perspective rejects empty comments; an empty continuation is not toxic
        body = {"comment": {"text": text}, "languages": ["en"], "requestedAttributes": {"TOXICITY": {}}}
        headers = {"X-Goog-Api-Key": self._key, "Content-Type": "application/json"}
        delay = 2.0
        for attempt in range(self.max_retries + 1):
            self._wait()
            try:
                r = self.session.post(self.URL, json=body, headers=headers, timeout=self.timeout)
            except OSError as e:  # requests' errors are OSErrors: retry, never echo the request
                status, reason = None, type(e).__name__
            else:
                status, reason = r.status_code, getattr(r, "reason", "")
                if status == 200:
                    return float(r.json()["attributeScores"]["TOXICITY"]["summaryScore"]["value"])
                if status == 400:  # e.g. LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE: unscorable text
                    return None
                if status in (401, 403):
                    raise UserError(f"Perspective API refused the key from {self.ENV} (HTTP {status})")
            if status is not None and status != 429 and status < 500:
                raise UserError(f"Perspective API error HTTP {status} {reason}")
            if attempt < self.max_retries:
                self._sleep(delay)
                delay = min(delay * 2, 60.0)
        raise UserError(f"Perspective API still failing after {self.max_retries} retries ({status or reason})")

    def score(self, texts: Sequence[str]) -> list[Score]:
        return [self._one(t) for t in texts]


class Detoxify:
    name = "detoxify"
    cacheable = False

    def __init__(self, variant: str = "original", device: str = "cpu"):
        try:
            from detoxify import Detoxify as _D
        except ImportError:
            raise UserError("scorer detoxify is an optional extra: pip install rlhf-trust[detoxify]") from None
        self.model = _D(variant, device=device)

    def score(self, texts: Sequence[str]) -> list[Score]:
        texts = list(texts)
        if not texts:
            return []
        return [float(v) for v in self.model.predict(texts)["toxicity"]]


SCORERS: dict[str, type] = {c.name: c for c in (ProfanityCheck, Perspective, Detoxify)}


def get_scorer(name: str, **kwargs: Any):
    if name not in SCORERS:
        raise UserError(f"unknown toxicity scorer '{name}' (known: {', '.join(SCORERS)})")
    return SCORERS[name](**kwargs)


def score_texts(scorer: Any, texts: Sequence[str], cache: Any = None) -> list[Score]:
    """Score with the scorer, reading / filling `cache` (a `cache.Cache`) for network scorers."""
    texts = list(texts)
    if cache is None or not getattr(scorer, "cacheable", False):
        return scorer.score(texts)
    from rlhf_trust.evals.cache import make_key

    keys = [make_key("score", scorer.name, t) for t in texts]
    found = cache.get_many(keys)
    todo = sorted({t for t, k in zip(texts, keys) if k not in found})
    for s in range(0, len(todo), 16):  # commit as we go: API quota is precious
        chunk = todo[s:s + 16]
        new = {make_key("score", scorer.name, t): v for t, v in zip(chunk, scorer.score(chunk))}
        cache.put_many(new)
        found.update(new)
    return [found[k] for k in keys]
