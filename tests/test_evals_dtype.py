"""`eval.dtype`: the eval model computes in bfloat16 when asked, its log-likelihoods stay close to
float32's, and the dtype is part of the cache key (float32 and bfloat16 results never mix)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from train_support import base_texts

from rlhf_trust.evals import stage, truthfulness
from rlhf_trust.evals.cache import Cache, CachedBackend


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from rlhf_trust.models import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("tiny-dtype") / "base", base_texts())


def cfg(dtype: str):
    return SimpleNamespace(dtype=dtype, threads=1, device="cpu", batch_size=4)


@pytest.fixture
def native_bf16(monkeypatch):
    """These tests check the bfloat16 path itself: run it even where torch emulates bf16."""
    from rlhf_trust.models import store

    monkeypatch.setattr(store, "cpu_bf16_native", lambda: True)


def real_pairs(raw_data):
    from rlhf_trust.data import records

    qa = records.load("truthfulness", raw_data)[:2]
    return [(truthfulness.loglik_context(r["question"]), " " + c) for r in qa for c in r["mc1_choices"]]


def test_bfloat16_loglikelihoods_are_close_to_float32(tiny_dir, raw_data, native_bf16):
    import torch

    pairs = real_pairs(raw_data)
    fp32, bf16 = stage.hf_backend(tiny_dir, cfg("float32")), stage.hf_backend(tiny_dir, cfg("bfloat16"))
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.model.parameters()).dtype == torch.float32
    a, b = fp32.loglikelihood(pairs), bf16.loglikelihood(pairs)
    n_tok = [len(bf16.tok(c + x)["input_ids"]) - len(bf16.tok(c)["input_ids"]) for c, x in pairs]
    per_token = [abs(x - y) / n for x, y, n in zip(a, b, n_tok)]
    assert a != b  # bfloat16 really ran
    assert max(per_token) < 0.01, per_token  # measured ~1e-3 nat per token or less
    assert max(abs(x) for x in a) > 1  # the scores are not trivially small


def test_dtype_enters_the_cache_key(tiny_dir, raw_data, native_bf16):
    assert stage.model_fingerprint(tiny_dir, "bfloat16") != stage.model_fingerprint(tiny_dir, "float32")
    assert stage.model_fingerprint(tiny_dir, "auto") == stage.model_fingerprint(tiny_dir, "float32")
    pairs = real_pairs(raw_data)[:3]
    cache = Cache(None)
    first = CachedBackend(stage.lazy_backend(tiny_dir, cfg("float32")), cache, progress=False)
    a = first.loglikelihood(pairs)
    other = CachedBackend(stage.lazy_backend(tiny_dir, cfg("bfloat16")), cache, progress=False)
    b = other.loglikelihood(pairs)
    assert (other.hits, other.misses) == (0, len(pairs))  # no float32 value answers a bfloat16 call
    assert a != b
    again = CachedBackend(stage.lazy_backend(tiny_dir, cfg("auto")), cache, progress=False)
    assert again.loglikelihood(pairs) == a and again.misses == 0 and not again.inner.loaded
    cache.close()


def test_bfloat16_without_native_support_runs_float32(tiny_dir, monkeypatch, capsys):
    """On a CPU where torch emulates bf16 (AVX2 only: ~5x slower than float32) `eval.dtype:
    bfloat16` runs float32 with one warning, and the cache key says float32, so the values are
    shared with float32 runs and never filed as bfloat16 ones."""
    import torch

    from rlhf_trust.models import store

    monkeypatch.setattr(store, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(store, "_BF16_WARNED", set())
    assert stage.eval_dtype(tiny_dir, "bfloat16") == "float32"
    assert stage.model_fingerprint(tiny_dir, "bfloat16") == stage.model_fingerprint(tiny_dir, "float32")
    assert next(stage.hf_backend(tiny_dir, cfg("bfloat16")).model.parameters()).dtype == torch.float32
    assert capsys.readouterr().err.count("no native bf16") == 1
