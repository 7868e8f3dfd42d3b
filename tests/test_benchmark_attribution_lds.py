"""benchmarks/attribution_lds.py loads its cached retrains and model files back: the cache is the user's
own directory, never a fixed path in the shared temp dir another user could create first."""

import os
import tempfile
from pathlib import Path

import bench_support

ROOT = Path(__file__).resolve().parents[1]


def test_the_retrain_cache_is_not_a_shared_temp_path():
    mod = bench_support.load("attribution_lds")
    shared = {Path(tempfile.gettempdir()).resolve(), Path("/tmp").resolve(), Path("/var/tmp").resolve()}
    assert not any(d == mod.CACHE.resolve() or d in mod.CACHE.resolve().parents for d in shared)
    assert str(mod.CACHE).startswith(os.path.expanduser("~"))
    source = (ROOT / "benchmarks" / "attribution_lds.py").read_text()
    assert "/tmp" not in source
    assert source.count("torch.load(") == source.count("weights_only=True")   # tensors only, no pickled code
