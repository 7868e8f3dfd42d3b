"""`rlhf-trust base`: resolve `model.spec` and write outputs/models/base (DVC stage `base`)."""

from __future__ import annotations

import time

from rlhf_trust import config, fileio, paths


def _tokenizer_texts() -> list[str] | None:
    """tiny-gpt-neox trains its tokenizer on the prepared HH train split when it exists."""
    f = paths.prepared("hh_train")
    if not f.is_file():
        return None
    rows = fileio.read_jsonl(f)
    return [r["prompt"] + r["chosen"] for r in rows] + [r["rejected"] for r in rows]


def run(cfg, out_dir=None) -> dict:
    from rlhf_trust.models.spec import build_base, spec_kind

    out_dir = out_dir or paths.model_dir("base")
    t0 = time.perf_counter()
    texts = _tokenizer_texts() if spec_kind(cfg.spec) == "tiny" else None
    build_base(out_dir, cfg, texts)
    from rlhf_trust.models.store import load_stage_info

    info = load_stage_info(out_dir)
    return {"spec": cfg.spec, "md5": info["md5"], "seconds": round(time.perf_counter() - t0, 2)}


def cli(args) -> int:
    from rlhf_trust.tracking import track_stage

    cfg = config.load("model", args.params)

    def body(sr):
        out = run(cfg)
        sr.set_tags({"model.spec": cfg.spec, "model.md5": out["md5"]})
        return {"seconds": out["seconds"]}

    track_stage("base", body, cfg=cfg, summary=lambda m: f"{cfg.spec} -> {paths.model_dir('base')}")
    return 0
