"""`rlhf-trust curate`: the HH training set the training stages read (outputs/curated/), a data version.

Off (`curate.enabled: false`, the default) it copies outputs/prepared/hh_{train,heldout}.jsonl byte
for byte, so the default run trains on exactly the prepared data. On, it ranks the training pairs by
the influence scores of an earlier run (influence/<stage>/<vertical>/scores.parquet, for the chosen
stages and verticals) and writes a new data version:

- `drop_harmful`: drop the top_k (or top_fraction) most trust-harmful pairs;
- `keep_helpful`: keep only the trust-helpful pairs.

Trust-harmful is direction-aware. A negative DataInf score means the pair pushed the stage's model
towards its new behaviour (docs/influence.md). If that change made the vertical less trustworthy
(the report's contrast for the stage, ▼), the pairs pushing towards it are the harmful ones
(`harmful: toward_change`); if it made it more trustworthy, the pairs resisting it are
(`against_change`). `harmful: auto` reads the direction from reports/trust_summary.json. With several
sources each pair's harm is the mean of its signed normalised scores ([-1, 1] per source).

Kept lines are copied unchanged. metrics/curate_manifest.json lists every dropped pair id with its
score; the curated set's content md5 (`train_data.version`) goes to MLflow (tag + dataset input on
this run and the pipeline's parent run) and to the report's provenance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, pipeline
from rlhf_trust.errors import ConfigError, DataError, UserError

CURATED = paths.CURATED
MANIFEST = paths.METRICS / "curate_manifest.json"
SPLITS = ("hh_train", "hh_heldout")
# influence stage -> the report contrast its test pairs attribute (sft-base, ppo-sft, dpo-sft)
CONTRAST = {stage: f"{spec.new}-{spec.old}" for stage, spec in pipeline.INFLUENCE.items()}


def direction(cfg: Any, stage: str, vertical: str) -> str:
    """toward_change | against_change: which side of the scores is trust-harmful for this source."""
    if cfg.harmful != "auto":
        return cfg.harmful
    summary = fileio.read_json(cfg.summary) if Path(cfg.summary).is_file() else {}
    r = (summary.get("contrasts") or {}).get(vertical, {}).get(CONTRAST[stage]) or {}
    worse = r.get("more_trustworthy")
    if not isinstance(worse, bool):  # a string "false" would read as true: the wrong side dropped
        raise UserError(f"curate.harmful: auto: {cfg.summary} has no {vertical} {CONTRAST[stage]} contrast "
                        "with a direction; set curate.harmful to toward_change or against_change")
    return "against_change" if worse else "toward_change"


def check_verticals(names: list[str]) -> None:
    """Only registered verticals: a name is also a directory under scores_dir (no `../`). The config
    checks this too (config/data.py CurateConfig); this guards a config built any other way."""
    from rlhf_trust import verticals

    known = verticals.names()
    bad = [v for v in names if v not in known]
    if bad:
        raise ConfigError(f"params: curate.verticals: unknown vertical(s) {', '.join(map(repr, bad))} "
                          f"(known: {', '.join(known)})")


def read_scores(path: Path, train_ids: set[str] | None = None):
    """One source's scores: id, score, score_normalized, every score finite and every id a training
    pair (else one line: the curated set would silently drop or keep the wrong pairs)."""
    import numpy as np
    import pandas as pd

    if not path.is_file():
        raise DataError(f"curate: no influence scores at {path}; run the default pipeline "
                        "(or its influence stages) first")
    try:
        df = pd.read_parquet(path, columns=["id", "score", "score_normalized"])
    except (OSError, ValueError, KeyError, ImportError) as e:  # pyarrow: truncated file, missing column
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"curate: unreadable influence scores {path} ({why}); re-run its influence stage") from None
    try:
        raw = df["score"].astype(float).to_numpy()
        norm = df["score_normalized"].astype(float).to_numpy()
    except (TypeError, ValueError):
        raise DataError(f"curate: {path}: score columns are not numbers; re-run its influence stage") from None
    bad = int((~np.isfinite(raw) | ~np.isfinite(norm)).sum())
    if len(df) == 0 or bad:
        what = "no scores" if len(df) == 0 else f"{bad} of {len(df)} pairs have a NaN or infinite score"
        raise DataError(f"curate: {path}: {what}; re-run its influence stage")
    if train_ids is not None:
        foreign = sorted(set(df["id"].astype(str)) - train_ids)
        if foreign:
            raise DataError(f"curate: {path}: {len(foreign)} of {len(df)} scored ids are not in the training "
                            f"set (e.g. {foreign[0]!r}); the scores come from another data version")
    return df


def harm_scores(cfg: Any, scores_dir: Path, train_ids: set[str] | None = None) -> tuple[dict[str, float], list[dict]]:
    """pair id -> mean signed normalised score (> 0 = trust-harmful), and the sources used."""
    check_verticals(cfg.verticals)
    total: dict[str, float] = {}
    sources = []
    for stage in cfg.stages:
        for vertical in cfg.verticals:
            path = Path(scores_dir) / stage / vertical / "scores.parquet"
            df = read_scores(path, train_ids)
            way = direction(cfg, stage, vertical)
            sign = -1.0 if way == "toward_change" else 1.0
            for i, s in zip(df["id"].astype(str), df["score_normalized"].astype(float), strict=True):
                total[i] = total.get(i, 0.0) + sign * s
            sources.append({"stage": stage, "vertical": vertical, "harmful": way, "scores_md5": fileio.md5_file(path),
                            "raw": dict(zip(df["id"].astype(str), df["score"].astype(float), strict=True)),
                            "n_scored": len(df)})
    n = len(sources)
    return {i: v / n for i, v in total.items()}, sources


def select(ids: list[str], harm: dict[str, float], cfg: Any) -> set[str]:
    """The ids to drop, in the order of the set (deterministic: ties broken by position)."""
    cand = ids[: cfg.within_first] if cfg.within_first else ids
    if cfg.mode == "keep_helpful":
        keep = set(cand)
        return {i for i in ids if i not in keep or harm.get(i, 0.0) >= 0.0}
    k = cfg.top_k if cfg.top_k is not None else max(1, round(cfg.top_fraction * len(cand)))
    ranked = sorted((i for i in cand if harm.get(i, 0.0) > 0.0), key=lambda i: -harm[i])
    return set(ranked[:k])


def curate(cfg: Any, prepared: Path = paths.PREPARED, out: Path = CURATED, scores_dir: Path | None = None,
           manifest_path: Path = MANIFEST) -> dict[str, Any]:
    prepared, out = Path(prepared), Path(out)
    for split in SPLITS:
        if not (prepared / f"{split}.jsonl").is_file():
            raise DataError(f"curate: missing {prepared / f'{split}.jsonl'}; run `rlhf-trust prepare` first")
    src = (prepared / "hh_train.jsonl").read_bytes()
    manifest: dict[str, Any] = {"enabled": cfg.enabled, "mode": cfg.mode if cfg.enabled else "pass_through",
                                "prepared_md5": fileio.md5_file(prepared / "hh_train.jsonl"), "sources": [], "dropped": []}
    if not cfg.enabled:
        kept = src
    else:
        lines = src.decode("utf-8").splitlines(keepends=True)
        ids = [str(json.loads(line)["id"]) for line in lines if line.strip()]
        harm, sources = harm_scores(cfg, Path(scores_dir or cfg.scores_dir), set(ids))
        drop = select(ids, harm, cfg)
        kept = "".join(line for line in lines if line.strip() and str(json.loads(line)["id"]) not in drop).encode()
        if not kept:
            raise DataError("curate: every training pair would be dropped; lower top_k or use drop_harmful")
        manifest["sources"] = [{k: v for k, v in s.items() if k != "raw"} for s in sources]
        manifest["dropped"] = [{"id": i, "harm": harm.get(i, 0.0),
                                "scores": {f"{s['stage']}/{s['vertical']}": s["raw"].get(i) for s in sources}}
                               for i in ids if i in drop]
    _write_bytes(out / "hh_train.jsonl", kept)
    _write_bytes(out / "hh_heldout.jsonl", (prepared / "hh_heldout.jsonl").read_bytes())
    version = fileio.md5_file(out / "hh_train.jsonl")
    n_in = sum(1 for line in src.splitlines() if line.strip())
    manifest.update({"train_data.version": version, "n_in": n_in, "n_out": n_in - len(manifest["dropped"])})
    fileio.write_json(manifest_path, manifest)
    return manifest


def _write_bytes(path: Path, data: bytes) -> None:
    with fileio.atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def cli(args) -> int:
    from rlhf_trust import config, tracking

    cfg = config.load("curate", args.params)

    def work(sr) -> dict:
        m = curate(cfg)
        tags = {"train_data.version": m["train_data.version"], "train_data.mode": m["mode"]}
        sr.set_tags(tags)
        tracking.log_datasets(sr, "curate", [CURATED / "hh_train.jsonl"])
        parent = sr.run.data.tags.get("mlflow.parentRunId")
        if parent:   # the pipeline's run carries the data version its models were trained on
            sr._guard(sr._mlflow.tracking.MlflowClient().set_tag, parent, "train_data.version",
                      m["train_data.version"])
        sr.log_artifact(MANIFEST)
        return {"n_in": m["n_in"], "n_out": m["n_out"], "n_dropped": len(m["dropped"]),
                "train_data.version": m["train_data.version"], "mode": m["mode"]}

    tracking.track_stage("curate", work, cfg=cfg, inputs=[paths.prepared("hh_train")],
                         metrics_path=paths.stage_metrics("curate"), metric_keys=("n_in", "n_out", "n_dropped"),
                         summary=lambda m: (f"{CURATED}/hh_train.jsonl: {m['n_out']}/{m['n_in']} pairs "
                                            f"({m['mode']}), md5 {m['train_data.version']}"))
    return 0
