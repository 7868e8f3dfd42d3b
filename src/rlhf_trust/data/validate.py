"""`rlhf-trust validate`: the Great Expectations gate. Bad data stops the pipeline.

One GX suite per dataset, run on dataframes built from the raw layout by the same parsers that
`prepare` uses (plus a few computed columns, e.g. the number of true MC1 answers per item).
Exit 0 valid, 1 invalid (a summary names each failed expectation and up to 5 offending row ids),
2 unusable (missing directory or file, unreadable or corrupt file: raised by `records`).
In the pipeline (no --data-dir) it validates `data/` and the prepared split, writes
outputs/validated/manifest.json (the edge every training stage depends on), Data Docs HTML in
reports/data_docs/ and logs both to MLflow.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, verticals
from rlhf_trust.config import ValidateConfig
from rlhf_trust.data import records
from rlhf_trust.errors import DataError, ValidationFailed

# Real HH data has a handful of pairs whose dialogues diverge before the final turn or whose final
# response is empty (8 of 2,312 in harmless-base test). Those rows are tolerated up to 1%; prepare
# drops them and counts them in metrics/prepare.json.
HH_MOSTLY = 0.99
MAX_IDS = 5


@dataclass
class Failure:
    dataset: str
    expectation: str
    detail: str
    ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        ids = f"; rows: {', '.join(self.ids)}" if self.ids else ""
        return f"  - {self.dataset}: {self.expectation} {self.detail}{ids}"


# ---------------------------------------------------------------------------------------------
# dataframes (one per dataset)
# ---------------------------------------------------------------------------------------------
def frames(raw_dir: Path) -> dict[str, Any]:
    import pandas as pd

    if not raw_dir.is_dir():
        raise DataError(f"missing data directory: {raw_dir}")
    hh = []
    for r in records.load_hh_raw(raw_dir):
        c, j = r["chosen_full"], r["rejected_full"]
        split = records.split_pair(c, j) if isinstance(c, str) and isinstance(j, str) else None
        hh.append({"id": r["id"], "chosen_full": c, "rejected_full": j, "differs": c != j,
                   "splittable": split is not None,
                   "chosen": split[1].strip() if split else "", "rejected": split[2].strip() if split else ""})
    out = {"hh": pd.DataFrame(hh)}
    for spec in verticals.specs():
        rows = spec.load(raw_dir)
        df = pd.DataFrame(rows)
        # scores: absent (null) is allowed, NaN or infinity is not; pandas reads both as NaN, so decide here
        if spec.finite_scores:
            df["scores_finite"] = [all(_finite_or_none(r.get(k)) for k in spec.finite_scores) for r in rows]
        out[spec.dataset] = spec.frame(df, rows) if spec.frame else df
    return out


# C0 control characters other than tab, newline and carriage return, and DEL (NUL included)
CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


def _finite_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


# ---------------------------------------------------------------------------------------------
# suites
# ---------------------------------------------------------------------------------------------
class SuiteKit:
    """What a vertical's `expectations(x)` builds its suite from: the GX expectation classes
    (`x.gxe`), the gate's settings (`x.cfg`) and the checks every text dataset shares."""

    def __init__(self, cfg: ValidateConfig):
        import great_expectations.expectations as gxe

        self.gxe, self.cfg = gxe, cfg

    def text(self, col: str, mostly: float = 1.0) -> list:
        gxe = self.gxe
        return [gxe.ExpectColumnValuesToNotBeNull(column=col),
                gxe.ExpectColumnValueLengthsToBeBetween(column=col, min_value=1, max_value=self.cfg.max_text_chars,
                                                        mostly=mostly),
                gxe.ExpectColumnValuesToNotMatchRegex(column=col, regex=CONTROL_CHARS)]

    def rows(self, n: int) -> Any:
        return self.gxe.ExpectTableRowCountToEqual(value=n)

    def unique(self, *cols: Any) -> list:  # ids, and the content a duplicated or overwritten line repeats
        out = [self.gxe.ExpectColumnValuesToBeUnique(column="id")]
        for c in cols:
            out.append(self.gxe.ExpectColumnValuesToBeUnique(column=c) if isinstance(c, str)
                       else self.gxe.ExpectCompoundColumnsToBeUnique(column_list=list(c)))
        return out

    def finite(self) -> Any:
        return self.gxe.ExpectColumnValuesToBeInSet(column="scores_finite", value_set=[True])


def suites(cfg: ValidateConfig) -> dict[str, list]:
    """HH's suite here; each benchmark's from its vertical's spec."""
    x = SuiteKit(cfg)
    gxe = x.gxe
    hh = [gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_hh_pairs), *x.unique(),
          *x.text("chosen_full"), *x.text("rejected_full"),
          gxe.ExpectColumnValuesToMatchRegex(column="chosen_full", regex=r"\n\nAssistant:"),
          gxe.ExpectColumnValuesToMatchRegex(column="rejected_full", regex=r"\n\nAssistant:"),
          gxe.ExpectColumnValuesToBeInSet(column="differs", value_set=[True]),
          gxe.ExpectCompoundColumnsToBeUnique(column_list=["chosen_full", "rejected_full"]),
          gxe.ExpectColumnValuesToBeInSet(column="splittable", value_set=[True], mostly=HH_MOSTLY),
          gxe.ExpectColumnValueLengthsToBeBetween(column="chosen", min_value=1, mostly=HH_MOSTLY),
          gxe.ExpectColumnValueLengthsToBeBetween(column="rejected", min_value=1, mostly=HH_MOSTLY)]
    return {"hh": hh, **{spec.dataset: spec.expectations(x) for spec in verticals.specs()}}


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(site_name="rlhf_trust", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return ctx


def _failures(dataset: str, result: Any) -> list[Failure]:
    out = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k in ("column", "column_list", "value", "min_value",
                                                               "max_value", "value_set", "mostly")}
        name = f"{cfg.type}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        if r.exception_info and r.exception_info.get("raised_exception"):
            msg = str(r.exception_info.get("exception_message", "")).splitlines()[0][:160]
            out.append(Failure(dataset, name, f"could not be evaluated ({msg})"))
            continue
        res = r.result or {}
        ids = [str(x.get("id")) for x in (res.get("unexpected_index_list") or [])[:MAX_IDS] if isinstance(x, dict)]
        if "unexpected_count" in res:
            detail = f"{res['unexpected_count']} unexpected of {res.get('element_count', '?')}"
        else:
            detail = f"observed {res.get('observed_value')}"
        out.append(Failure(dataset, name, detail, ids))
    return out


def validate_frames(dfs: dict[str, Any], cfg: ValidateConfig, docs_dir: Path | None = None,
                    extra: dict[str, list] | None = None) -> tuple[list[Failure], dict[str, dict]]:
    """Run each dataset's suite on its dataframe (Data Docs written when docs_dir is given)."""
    import great_expectations as gx

    ctx = _context(docs_dir)
    source = ctx.data_sources.add_pandas("raw")
    failures, stats = [], {}
    all_suites = {**suites(cfg), **(extra or {})}
    no_suite = sorted(set(dfs) - set(all_suites))
    if no_suite:  # a dataset nobody checks is a bug, not a pass
        raise DataError(f"no Great Expectations suite for dataset(s) {', '.join(no_suite)}")
    for name, expectations in all_suites.items():
        if name not in dfs:
            continue
        batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_def, suite=suite))
        fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]}
        result = vd.run(batch_parameters={"dataframe": dfs[name]}, result_format=fmt)
        failures += _failures(name, result)
        stats[name] = {"rows": len(dfs[name]), "expectations": len(expectations),
                       "failed": sum(1 for r in result.results if not r.success)}
    if docs_dir is not None:
        _build_docs(ctx)
    return failures, stats


def escape_values(value: Any) -> Any:
    """Every string inside `value` HTML-escaped (dicts, lists and tuples walked)."""
    import html

    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {escape_values(k): escape_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(escape_values(v) for v in value)
    return value


def _build_docs(ctx: Any) -> None:
    """Data Docs from the stored results with every data value HTML-escaped: GX's renderer inserts
    unexpected values into the page as they are, so a raw `<script>` would run in the reader's browser."""
    store = ctx.validation_results_store
    for key in store.list_keys():
        suite_result = store.get(key)
        for r in suite_result.results:
            r.result = escape_values(r.result or {})
            if r.exception_info:
                r.exception_info = escape_values(r.exception_info)
        store.set(key, suite_result)
    ctx.build_data_docs(site_names=["rlhf_trust"])


def prepared_frame(prepared_dir: Path) -> Any:
    import pandas as pd

    rows = []
    for split in ("hh_train", "hh_heldout"):
        for r in fileio.read_jsonl(prepared_dir / f"{split}.jsonl"):
            rows.append({**r, "split": split})
    return pd.DataFrame(rows)


def prepared_suite() -> list:
    import great_expectations.expectations as gxe

    return [gxe.ExpectTableRowCountToBeBetween(min_value=2),
            gxe.ExpectColumnValuesToBeUnique(column="id"),  # no pair in both train and held-out
            gxe.ExpectColumnValuesToMatchRegex(column="prompt", regex=r"\n\nAssistant:$"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="chosen", min_value=1),
            gxe.ExpectColumnValueLengthsToBeBetween(column="rejected", min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["hh_train", "hh_heldout"])]


def file_set_failures(raw_dir: Path) -> list[Failure]:
    """The exact file set per dataset: a stray file (e.g. hh_rlhf/extra.jsonl) fails the gate."""
    return [Failure(name, "exact file set", f"unexpected file(s) {', '.join(files[:MAX_IDS])}")
            for name, files in records.unexpected_files(raw_dir).items()]


def summary(failures: list[Failure], stats: dict[str, dict]) -> str:
    bad = sorted({f.dataset for f in failures})
    head = f"validation failed: {len(failures)} expectation(s) in {', '.join(bad)}"
    return "\n".join([head, *(f.line() for f in failures)])


def check_dir(raw_dir: Path, cfg: ValidateConfig, docs_dir: Path | None = None) -> dict[str, dict]:
    """Validate a raw-layout directory; raises DataError (2) or ValidationFailed (1)."""
    failures, stats = validate_frames(frames(raw_dir), cfg, docs_dir)
    failures = file_set_failures(raw_dir) + failures
    if failures:
        raise ValidationFailed(summary(failures, stats))
    return stats


def run_pipeline(raw_dir: Path, cfg: ValidateConfig, sr: Any) -> dict[str, Any]:
    try:
        return _run_pipeline(raw_dir, cfg, sr)
    except (ValidationFailed, DataError) as e:
        withdraw_verdicts(str(e).splitlines()[0])
        raise


def withdraw_verdicts(reason: str) -> None:
    """A failed gate: every earlier `valid: true` under outputs/validated/ becomes `valid: false`, so a
    stage run by hand (outside `dvc repro`, which stops here) does not read rejected data."""
    for target in sorted(paths.VALIDATED.glob("*.json")):
        fileio.write_json(target, {"valid": False, "dataset": target.stem, "reason": reason})


def _run_pipeline(raw_dir: Path, cfg: ValidateConfig, sr: Any) -> dict[str, Any]:
    docs_dir = Path(cfg.docs_dir)
    dfs = frames(raw_dir)
    if paths.PREPARED.is_dir():
        dfs["prepared_hh"] = prepared_frame(paths.PREPARED)
    with fileio.atomic_path(docs_dir) as tmp_docs:
        tmp_docs.mkdir(parents=True)
        failures, stats = validate_frames(dfs, cfg, tmp_docs.resolve(), extra={"prepared_hh": prepared_suite()})
    sr.log_artifact(docs_dir, "data_docs")
    failures = file_set_failures(raw_dir) + failures
    if failures:
        raise ValidationFailed(summary(failures, stats))
    files = {p.relative_to(raw_dir).as_posix(): fileio.md5_file(p) for p in sorted(raw_dir.rglob("*")) if p.is_file()}
    prepared = {p.name: fileio.md5_file(p) for p in sorted(paths.PREPARED.glob("*.jsonl"))}
    from rlhf_trust.tracking import data_version

    manifest = {"valid": True, "data_version": data_version(), "datasets": stats,
                "raw_files": files, "prepared_files": prepared}
    fileio.write_json(paths.MANIFEST, manifest)
    sr.log_artifact(paths.MANIFEST)
    for name, part in dataset_manifests(files, prepared, stats).items():
        fileio.write_json(paths.validated(name), part)
    return {name: {"rows": s["rows"], "expectations": s["expectations"]} for name, s in stats.items()}


def dataset_manifests(files: dict[str, str], prepared: dict[str, str], stats: dict[str, dict]) -> dict[str, dict]:
    """outputs/validated/<dataset>.json: the gate's verdict on one dataset and the md5s of its own
    raw and prepared files only (no data version, no timestamp). A stage depends on its dataset's
    file, so adding or changing another dataset leaves it cached (the HH stages on hh.json)."""
    raw, others = records.raw_files(), records.other_files()
    out = {}
    for name, patterns in raw.items():
        globs = patterns + others.get(name, [])
        mine = {f: md5 for f, md5 in files.items() if any(fnmatch.fnmatch(f, g) for g in globs)}
        stems = ("hh_train", "hh_heldout") if name == "hh" else (name,)
        out[name] = {"valid": True, "dataset": name, "rows": stats.get(name, {}).get("rows"),
                     "raw_files": mine, "prepared_files": {f"{s}.jsonl": prepared.get(f"{s}.jsonl") for s in stems}}
    return out


def _counts(stats: dict[str, dict]) -> str:
    return ", ".join(f"{k}: {v['rows']} rows" for k, v in stats.items())


def cli(args) -> int:
    from rlhf_trust import config, tracking

    raw = config.read_params(args.params)
    cfg = config.section("validate", raw)
    if args.data_dir:
        stats = check_dir(Path(args.data_dir), cfg)
        print(f"valid: {args.data_dir} ({_counts(stats)})")
        return 0
    config.load_all(args.params)
    raw_dir = Path(config.section("data", raw).dir)
    stats = tracking.track_stage("validate", lambda sr: run_pipeline(raw_dir, cfg, sr), cfg=cfg,
                                 inputs=["data.dvc"], metrics_path=paths.stage_metrics("validate"))
    print(f"valid: {raw_dir} ({_counts(stats)})")
    return 0
